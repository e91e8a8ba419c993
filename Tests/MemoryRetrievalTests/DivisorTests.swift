import Testing
import _MemorySupport

@Suite struct DivisorTests {
    /// The multiply-and-shift division equals `/` for every divisor kind (1, powers of two,
    /// odd, near 2^32) and dividends up to the limit, including the limit's neighbourhood.
    @Test(arguments: [1, 2, 3, 7, 64, 341, 481, 511, 1000, 65_535, 1 << 20, (1 << 31) - 1, (1 << 32) - 1])
    func multiplicationEqualsDivision(divisor: Int) {
        let limit = 1 << 32
        let d = Divisor(divisor, dividendsBelow: limit)
        var x: UInt64 = 0x9E37_79B9_7F4A_7C15
        var samples = Array(0..<4096) + Array((limit - 4096)..<limit) + [divisor - 1, divisor, divisor + 1].filter { $0 >= 0 && $0 < limit }
        for _ in 0..<100_000 {
            x = x &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            samples.append(Int(x >> 32))
        }
        for n in samples { #expect(d.divide(n) == n / divisor, "\(n) / \(divisor)") }
        // Dividends beyond 32 bits take the plain division.
        let wide = Divisor(divisor, dividendsBelow: 1 << 40)
        for n in [0, 1 << 33, (1 << 40) - 1, 123_456_789_012] { #expect(wide.divide(n) == n / divisor) }
    }
}
