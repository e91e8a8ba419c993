/// Conversions between Float and the two 16-bit float formats of stored values.
package enum HalfPrecision {
    /// f16 bit pattern to Float, for all 65,536 patterns (256 KiB, stays in cache).
    package static let f16Table: [Float] = (0..<65536).map { Float(Float16(bitPattern: UInt16($0))) }

    /// Rounds a Float to bfloat16 (nearest, ties to even), keeping NaN a NaN.
    @inlinable @inline(__always)
    package static func bfloat16Bits(_ x: Float) -> UInt16 {
        let bits = x.bitPattern
        if x.isNaN { return UInt16(bits >> 16) | 0x40 }
        let rounding = 0x7FFF + ((bits >> 16) & 1)
        return UInt16((bits &+ rounding) >> 16)
    }

    /// `count` bf16 elements at `source` as Float.
    @inlinable
    package static func widenBFloat16(_ source: UnsafePointer<UInt16>, count: Int, into out: UnsafeMutablePointer<Float>) {
        for i in 0..<count { out[i] = Float(bitPattern: UInt32(source[i]) << 16) }
    }

    /// `count` f16 elements at `source` as Float.
    @inlinable
    package static func widenFloat16(_ source: UnsafePointer<UInt16>, count: Int, into out: UnsafeMutablePointer<Float>) {
        f16Table.withUnsafeBufferPointer { t in
            for i in 0..<count { out[i] = t[Int(source[i])] }
        }
    }
}
