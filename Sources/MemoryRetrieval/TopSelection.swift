/// Keeps the best `capacity` (score, index) pairs seen, in rank order: larger score first,
/// equal scores by smaller index (Spec/RETRIEVAL.md, "Ranking and ties").
///
/// - Complexity: O(1) for a candidate that does not make the cut, O(capacity) for one that does;
///   over n random candidates about O(n + capacity · log(n) · capacity).
struct TopSelection {
    private(set) var scores: [Float]
    private(set) var indices: [Int]
    let capacity: Int

    init(capacity: Int) {
        self.capacity = capacity
        scores = []
        indices = []
        scores.reserveCapacity(capacity)
        indices.reserveCapacity(capacity)
    }

    mutating func reset() {
        scores.removeAll(keepingCapacity: true)
        indices.removeAll(keepingCapacity: true)
    }

    /// Whether (a, i) ranks before (b, j).
    @inline(__always)
    static func ranksBefore(_ a: Float, _ i: Int, _ b: Float, _ j: Int) -> Bool {
        a > b || (a == b && i < j)
    }

    /// Offers a candidate.
    @inline(__always)
    mutating func offer(_ score: Float, _ index: Int) {
        if scores.count == capacity {
            guard Self.ranksBefore(score, index, scores[capacity - 1], indices[capacity - 1]) else { return }
            scores.removeLast()
            indices.removeLast()
        }
        // Insertion point: after every kept entry that ranks before the candidate.
        var lo = 0, hi = scores.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if Self.ranksBefore(scores[mid], indices[mid], score, index) { lo = mid + 1 } else { hi = mid }
        }
        scores.insert(score, at: lo)
        indices.insert(index, at: lo)
    }

    /// Offers `scores[i]` with index `i` for every i, in order.
    mutating func offerAll(_ candidates: UnsafeBufferPointer<Float>) {
        var i = 0
        // Fill, then only compare against the current threshold until something beats it.
        while i < candidates.count && scores.count < capacity {
            offer(candidates[i], i)
            i += 1
        }
        while i < candidates.count {
            var threshold = scores[capacity - 1]
            while i < candidates.count && !(candidates[i] > threshold) { i += 1 }
            if i == candidates.count { break }
            // candidates[i] > threshold; indices grow, so a strictly larger score is needed to enter.
            offer(candidates[i], i)
            threshold = scores[capacity - 1]
            i += 1
        }
    }
}
