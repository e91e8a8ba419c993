/// The element-aware byte transform of the `zstd` codec (Spec/FORMAT.md, "Byte planes").
///
/// Each element is rotated left by one bit, so the sign moves to the lowest bit and the
/// exponent fills the top byte on its own; then byte `s-1-p` of every element goes to plane `p`
/// (plane 0 holds the exponent bytes, which is where nearly all the redundancy of trained
/// or Gaussian weights lives).
enum BytePlanes {
    /// Splits `count` little-endian elements of `elementSize` bytes from `source` into planes in `planes`.
    static func split(_ source: UnsafeRawPointer, count: Int, elementSize: Int, into planes: UnsafeMutableRawPointer) {
        let out = planes.assumingMemoryBound(to: UInt8.self)
        switch elementSize {
        case 2:
            let hi = out, lo = out + count
            for i in 0..<count {
                let x = source.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)
                let r = (x << 1) | (x >> 15)
                hi[i] = UInt8(truncatingIfNeeded: r >> 8)
                lo[i] = UInt8(truncatingIfNeeded: r)
            }
        case 4:
            let p0 = out, p1 = out + count, p2 = out + 2 * count, p3 = out + 3 * count
            for i in 0..<count {
                let x = source.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self)
                let r = (x << 1) | (x >> 31)
                p0[i] = UInt8(truncatingIfNeeded: r >> 24)
                p1[i] = UInt8(truncatingIfNeeded: r >> 16)
                p2[i] = UInt8(truncatingIfNeeded: r >> 8)
                p3[i] = UInt8(truncatingIfNeeded: r)
            }
        default:
            preconditionFailure("element size \(elementSize) has no plane transform")
        }
    }

    /// The inverse of ``split``.
    static func join(_ planes: UnsafeRawPointer, count: Int, elementSize: Int, into destination: UnsafeMutableRawPointer) {
        let src = planes.assumingMemoryBound(to: UInt8.self)
        switch elementSize {
        case 2:
            let hi = src, lo = src + count
            let out = destination.assumingMemoryBound(to: UInt16.self)
            for i in 0..<count {
                let r = UInt16(hi[i]) << 8 | UInt16(lo[i])
                out[i] = (r >> 1) | (r << 15)
            }
        case 4:
            let p0 = src, p1 = src + count, p2 = src + 2 * count, p3 = src + 3 * count
            let out = destination.assumingMemoryBound(to: UInt32.self)
            for i in 0..<count {
                let r = UInt32(p0[i]) << 24 | UInt32(p1[i]) << 16 | UInt32(p2[i]) << 8 | UInt32(p3[i])
                out[i] = (r >> 1) | (r << 31)
            }
        default:
            preconditionFailure("element size \(elementSize) has no plane transform")
        }
    }
}
