/// Conversions and the weighted row accumulation behind `gatherReduce`, over raw element bytes.
/// Accumulation is always in Float.
enum RowKernels {
    /// f16 bit pattern to Float, for all 65,536 patterns (256 KiB, stays in cache).
    static let halfTable: [Float] = (0..<65536).map { Float(Float16(bitPattern: UInt16($0))) }

    /// Converts `count` elements of `type` at `source` to Float.
    static func convert(_ source: UnsafeRawPointer, type: ElementType, count: Int, into out: UnsafeMutablePointer<Float>) {
        switch type {
        case .f32:
            out.update(from: source.assumingMemoryBound(to: Float.self), count: count)
        case .bf16:
            let s = source.assumingMemoryBound(to: UInt16.self)
            for i in 0..<count { out[i] = Float(bitPattern: UInt32(s[i]) << 16) }
        case .f16:
            let s = source.assumingMemoryBound(to: UInt16.self)
            halfTable.withUnsafeBufferPointer { t in
                for i in 0..<count { out[i] = t[Int(s[i])] }
            }
        }
    }

    /// `out[j] += weight * row[j]` for `count` elements.
    @inline(__always)
    static func axpy(_ weight: Float, _ row: UnsafeRawPointer, type: ElementType, count: Int, into out: UnsafeMutablePointer<Float>) {
        switch type {
        case .f32:
            let s = row.assumingMemoryBound(to: Float.self)
            for i in 0..<count { out[i] += weight * s[i] }
        case .bf16:
            let s = row.assumingMemoryBound(to: UInt16.self)
            for i in 0..<count { out[i] += weight * Float(bitPattern: UInt32(s[i]) << 16) }
        case .f16:
            let s = row.assumingMemoryBound(to: UInt16.self)
            halfTable.withUnsafeBufferPointer { t in
                for i in 0..<count { out[i] += weight * t[Int(s[i])] }
            }
        }
    }

    /// Adds one row to `out`, chunk `t` of `chunks` equal parts weighted by `weights[t]`.
    @inline(__always)
    static func accumulate(_ row: UnsafeRawPointer, type: ElementType, dim: Int, chunks: Int,
                           weights: UnsafePointer<Float>, into out: UnsafeMutablePointer<Float>) {
        let width = dim / chunks
        for t in 0..<chunks {
            axpy(weights[t], row + t * width * type.size, type: type, count: width, into: out + t * width)
        }
    }
}
