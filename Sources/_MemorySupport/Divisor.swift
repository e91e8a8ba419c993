/// Division by a divisor fixed at run time, by a multiplication when the dividends fit in 32
/// bits (Lemire, Kaser and Kurz, "Faster remainder by direct computation", 2019): a slot's
/// physical row and a row's shard are found for every row a lookup reads, and a 64-bit
/// division costs as much as the rest of the row's address computation.
@usableFromInline
package struct Divisor: Sendable {
    @usableFromInline package let divisor: Int
    /// ⌈2^64 / divisor⌉, or 0 when the plain division is used.
    @usableFromInline package let multiplier: UInt64

    /// - Parameter limit: every dividend will be below this.
    @inlinable
    package init(_ divisor: Int, dividendsBelow limit: Int) {
        precondition(divisor >= 1)
        self.divisor = divisor
        multiplier = divisor > 1 && divisor < 1 << 32 && limit <= 1 << 32 ? UInt64.max / UInt64(divisor) + 1 : 0
    }

    /// `n / divisor` for 0 ≤ n < the limit given at init.
    @inlinable @inline(__always)
    package func divide(_ n: Int) -> Int {
        multiplier == 0 ? n / divisor : Int(truncatingIfNeeded: multiplier.multipliedFullWidth(by: UInt64(truncatingIfNeeded: n)).high)
    }
}
