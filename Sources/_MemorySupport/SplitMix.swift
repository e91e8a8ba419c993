import Foundation

/// SplitMix64's finaliser: a bijective 64-bit mix (also the keyed addressing's hash).
@inlinable @inline(__always)
package func mix64(_ x: UInt64) -> UInt64 {
    var z = x
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
}

/// One step of SplitMix64, the seeded generator behind synthetic data.
@inlinable @inline(__always)
package func splitMix(_ state: inout UInt64) -> UInt64 {
    state &+= 0x9E37_79B9_7F4A_7C15
    return mix64(state)
}

/// A seeded, repeatable generator (SplitMix64) for synthetic data, benchmarks and tests.
package struct SeededGenerator: RandomNumberGenerator, Sendable {
    package var state: UInt64
    package init(seed: UInt64) { state = seed }
    package mutating func next() -> UInt64 { splitMix(&state) }

    /// A uniformly random permutation of `0 ..< count` (Fisher-Yates, so the same on every platform).
    package mutating func permutation(_ count: Int) -> [Int64] {
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
    package mutating func normal() -> Float {
        let u1 = (Double(next() >> 11) + 1) * 0x1p-53
        let u2 = Double(next() >> 11) * 0x1p-53
        return Float((-2 * log(u1)).squareRoot() * cos(2 * .pi * u2))
    }
}
