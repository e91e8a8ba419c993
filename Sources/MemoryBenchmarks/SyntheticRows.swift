import Foundation
import MemoryFormat
import _MemorySupport

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
