import CKeyScoring

/// Selection of the top n scores, larger first, equal scores by smaller position
/// (Spec/RETRIEVAL.md, "Ranking and ties"). Callers present candidates in index order, so
/// position order is index order.
///
/// The maxima of about 4n blocks bound the n-th largest score from below (n blocks hold a
/// value at least as large as their maximum), one pass keeps the few candidates at or above
/// that bound, and sorting them as packed (score, position) words orders the winners. Exact,
/// ties included, and branch-predictable where a quickselect over random scores is not.
struct TopSelection {
    private var maxima: [Float] = []
    private var above: [UInt32] = []
    private var keys: [UInt64] = []
    /// The selected positions, in rank order.
    private(set) var positions: [Int] = []
    /// Their scores, in the same order.
    private(set) var scores: [Float] = []

    /// Selects the top `count` of `candidates` (fewer than 2^32).
    /// - Complexity: O(n) plus O(m log m) for the m candidates above the bound (a small multiple of `count`).
    mutating func select(_ candidates: UnsafeBufferPointer<Float>, count: Int) {
        let n = candidates.count, want = min(count, n)
        positions.removeAll(keepingCapacity: true)
        scores.removeAll(keepingCapacity: true)
        guard want > 0 else { return }
        var bound = -Float.infinity
        if n >= 8 * want {
            let block = n / (4 * want)
            let blocks = n / block
            if maxima.count < blocks { maxima = [Float](repeating: 0, count: blocks) }
            bound = maxima.withUnsafeMutableBufferPointer { m in
                pkm_block_maxima(candidates.baseAddress, block, blocks, m.baseAddress)
                return Self.kthLargest(UnsafeMutableBufferPointer(rebasing: m[0..<blocks]), want - 1)
            }
        }
        keys.removeAll(keepingCapacity: true)
        if above.count < n { above = [UInt32](repeating: 0, count: n) }
        above.withUnsafeMutableBufferPointer { a in
            let found = pkm_positions_at_least(candidates.baseAddress, n, bound, a.baseAddress)
            for p in a[0..<found].lazy.map(Int.init) {
                keys.append(UInt64(~Self.orderedBits(candidates[p])) << 32 | UInt64(p))
            }
        }
        keys.sort()
        for key in keys.prefix(want) {
            let p = Int(key & 0xFFFF_FFFF)
            positions.append(p)
            scores.append(candidates[p])
        }
    }

    /// A UInt32 that orders like the Float (for finite values and infinities).
    @inline(__always)
    static func orderedBits(_ x: Float) -> UInt32 {
        let b = x.bitPattern
        return b & 0x8000_0000 == 0 ? b | 0x8000_0000 : ~b
    }

    /// The value at descending position `k` (0-based): quickselect with a median-of-three pivot.
    static func kthLargest(_ a: UnsafeMutableBufferPointer<Float>, _ k: Int) -> Float {
        var lo = 0, hi = a.count - 1
        while lo < hi {
            let mid = lo + (hi - lo) / 2
            if a[mid] > a[lo] { a.swapAt(mid, lo) }
            if a[hi] > a[lo] { a.swapAt(hi, lo) }
            if a[hi] > a[mid] { a.swapAt(hi, mid) }
            let pivot = a[mid]
            var i = lo, j = hi
            while i <= j {
                while a[i] > pivot { i += 1 }
                while a[j] < pivot { j -= 1 }
                if i <= j {
                    a.swapAt(i, j)
                    i += 1
                    j -= 1
                }
            }
            if k <= j { hi = j } else if k >= i { lo = i } else { return a[k] }
        }
        return a[k]
    }
}
