import Foundation

/// Deterministic Gaussian rows for synthetic memories and tests: element `j` of row `i` depends
/// only on (seed, i, j), so any range of rows can be generated on its own (resumed imports,
/// parallel generation) and always gives the same values.
public struct SyntheticRows: Sendable {
    public var seed: UInt64
    public var dim: Int
    public var standardDeviation: Float

    public init(seed: UInt64, dim: Int, standardDeviation: Float = 0.02) {
        self.seed = seed
        self.dim = dim
        self.standardDeviation = standardDeviation
    }

    /// Rows `range` as Float, row-major.
    public func floats(_ range: Range<Int>) -> [Float] {
        var out = [Float](repeating: 0, count: range.count * dim)
        out.withUnsafeMutableBufferPointer { o in
            var k = 0
            for i in range {
                // Hash (seed, row) so that rows start at unrelated points of the SplitMix sequence.
                var state = mix64(seed ^ mix64(UInt64(i) &+ 0x632B_E59B_D9B4_E019))
                var j = 0
                while j < dim {
                    // Box-Muller on two uniforms in (0, 1].
                    let u1 = (Double(splitMix(&state) >> 11) + 1) * 0x1p-53
                    let u2 = Double(splitMix(&state) >> 11) * 0x1p-53
                    let r = (-2 * log(u1)).squareRoot()
                    o[k] = Float(r * cos(2 * .pi * u2)) * standardDeviation
                    if j + 1 < dim { o[k + 1] = Float(r * sin(2 * .pi * u2)) * standardDeviation }
                    k += min(2, dim - j)
                    j += 2
                }
            }
        }
        return out
    }

    /// Rows `range` as little-endian bytes of `type` (bf16 and f16 rounded to nearest even).
    public func bytes(_ range: Range<Int>, as type: ElementType) -> [UInt8] {
        type.encode(floats(range))
    }
}

/// SplitMix64, the seeded generator behind synthetic data.
@inline(__always)
func splitMix(_ state: inout UInt64) -> UInt64 {
    state &+= 0x9E37_79B9_7F4A_7C15
    return mix64(state)
}

/// A seeded, repeatable generator (SplitMix64) for synthetic data and benchmarks.
public struct SeededGenerator: RandomNumberGenerator, Sendable {
    public var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 { splitMix(&state) }

    /// A uniformly random permutation of `0 ..< count` (Fisher-Yates, so the same on every platform).
    public mutating func permutation(_ count: Int) -> [Int64] {
        var p = (0..<Int64(count)).map { $0 }
        var i = count - 1
        while i > 0 {
            let j = Int(next() % UInt64(i + 1))
            p.swapAt(i, j)
            i -= 1
        }
        return p
    }

    /// A standard normal draw (Box-Muller).
    public mutating func normal() -> Float {
        let u1 = (Double(next() >> 11) + 1) * 0x1p-53
        let u2 = Double(next() >> 11) * 0x1p-53
        return Float((-2 * log(u1)).squareRoot() * cos(2 * .pi * u2))
    }
}

/// SplitMix64's finaliser: a bijective 64-bit mix.
@inline(__always)
func mix64(_ x: UInt64) -> UInt64 {
    var z = x
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
}

/// Rounds a Float to bfloat16 (nearest, ties to even), keeping NaN a NaN.
public func bfloat16Bits(_ x: Float) -> UInt16 {
    let bits = x.bitPattern
    if x.isNaN { return UInt16(bits >> 16) | 0x40 }
    let rounding = 0x7FFF + ((bits >> 16) & 1)
    return UInt16((bits &+ rounding) >> 16)
}
