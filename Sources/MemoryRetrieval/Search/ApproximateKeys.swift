import CKeyScoring
import _MemorySupport

/// A key table in bfloat16, with per key the bound that lets an exact selection start from its
/// scores (Spec/RETRIEVAL.md, "Exact selection from approximate scores"): half the bytes to
/// stream for the small batches whose search is bound by reading the keys.
struct ApproximateKeys: Sendable {
    /// The keys rounded to bfloat16 (nearest, ties to even), `[count, dim]`.
    let bits: [UInt16]
    /// Per key i, at least `‖k_i − k̃_i‖ + γ_d (‖k̃_i‖ + ‖k_i‖)`, γ_d = d·u / (1 − d·u), u = 2^-24,
    /// so that for any query q, |fl(q·k̃_i) − fl(q·k_i)| ≤ ‖q‖ · slack[i] whatever the summation order.
    let slack: [Float]
    let count: Int, dim: Int

    init(keys: UnsafePointer<Float>, count: Int, dim: Int) {
        self.count = count
        self.dim = dim
        let unit = 0x1p-24, gamma = Double(dim) * unit / (1 - Double(dim) * unit)
        var bits = [UInt16](repeating: 0, count: count * dim), slack = [Float](repeating: 0, count: count)
        for i in 0..<count {
            var error = 0.0, norm = 0.0, roundedNorm = 0.0
            for j in 0..<dim {
                let k = keys[i * dim + j], b = HalfPrecision.bfloat16Bits(k)
                bits[i * dim + j] = b
                let rounded = Double(Float(bitPattern: UInt32(b) << 16)), exact = Double(k)
                error += (exact - rounded) * (exact - rounded)
                norm += exact * exact
                roundedNorm += rounded * rounded
            }
            // A relative margin for the square roots and this sum, and rounding up to Float.
            let bound = (error.squareRoot() + gamma * (norm.squareRoot() + roundedNorm.squareRoot())) * (1 + 1e-6)
            slack[i] = Float(bound).nextUp
        }
        self.bits = bits
        self.slack = slack
    }

    /// `out[b * count + i]` = fl(k̃_i · query b) for `batch` queries `stride` floats apart.
    func score(_ queries: UnsafePointer<Float>, stride: Int, batch: Int, into out: UnsafeMutablePointer<Float>) {
        bits.withUnsafeBufferPointer { pkm_score_bf16($0.baseAddress, count, dim, queries, stride, batch, out) }
    }
}

/// Working memory of one exact selection from approximate scores.
struct ExactSelection: Sendable {
    private var lower: [Float] = []
    private var candidates: [Int] = []
    private var candidateScores: [Float] = []
    private var selection = TopSelection()

    /// The best `count` keys of `table` for query `q` by their f32 scores fl(q·k_i), ties by smaller
    /// index, in ascending index order, from the approximate scores `approximate[0 ..< n]`: every
    /// key whose upper bound reaches the count-th largest lower bound is rescored from `keys`
    /// (f32, `[n, d]`) and its f32 score written over its approximate one.
    mutating func select(count: Int, approximate: UnsafeMutablePointer<Float>, table: ApproximateKeys,
                         keys: UnsafePointer<Float>, query q: UnsafePointer<Float>) -> [Int] {
        let n = table.count, d = table.dim
        var squares = 0.0
        for j in 0..<d { squares += Double(q[j]) * Double(q[j]) }
        // ‖q‖ and the margins rounded up, so that in binary32 E_i ≥ ‖q‖·slack_i + 2d·2^-149 and
        // the bounds, off by a few roundings of 2^-24 relative each, are widened by 2^-20 of their terms.
        let norm = Float(squares.squareRoot() * (1 + 1e-6)).nextUp
        let underflow = Float(2 * d) * 0x1p-149, widen: Float = 0x1p-20
        guard norm.isFinite else { return selectAll(count: count, approximate: approximate, n: n, d: d, keys: keys, query: q) }
        if lower.count < n { lower = [Float](repeating: 0, count: n) }
        let usable = table.slack.withUnsafeBufferPointer { slack in
            lower.withUnsafeMutableBufferPointer { low in
                var finite = true
                for i in 0..<n {
                    let s = approximate[i], e = norm * slack[i] + underflow
                    low[i] = (s - e) - (abs(s) + e) * widen
                    finite = finite && low[i].isFinite
                }
                if finite { selection.select(UnsafeBufferPointer(rebasing: low[0..<n]), count: count) }
                return finite
            }
        }
        // Scores that overflowed leave no usable bound: then every key is rescored.
        guard usable, let threshold = selection.scores.last else {
            return selectAll(count: count, approximate: approximate, n: n, d: d, keys: keys, query: q)
        }
        candidates.removeAll(keepingCapacity: true)
        candidateScores.removeAll(keepingCapacity: true)
        table.slack.withUnsafeBufferPointer { slack in
            // The count-th largest lower bound `threshold`: `count` keys have f32 scores at least this.
            for i in 0..<n {
                let s = approximate[i], e = norm * slack[i] + underflow
                guard (s + e) + (abs(s) + e) * widen >= threshold else { continue }
                let exact = KeyScoring.dot(keys + i * d, q, d)
                approximate[i] = exact
                candidates.append(i)
                candidateScores.append(exact)
            }
        }
        return bestCandidates(count: count)
    }

    /// Every key rescored: for a query whose bound is not finite.
    private mutating func selectAll(count: Int, approximate: UnsafeMutablePointer<Float>, n: Int, d: Int,
                                    keys: UnsafePointer<Float>, query q: UnsafePointer<Float>) -> [Int] {
        candidates = Array(0..<n)
        candidateScores = (0..<n).map { i in
            approximate[i] = KeyScoring.dot(keys + i * d, q, d)
            return approximate[i]
        }
        return bestCandidates(count: count)
    }

    private mutating func bestCandidates(count: Int) -> [Int] {
        // Candidates are in index order, so the selection's position order is the tie rule's.
        candidateScores.withUnsafeBufferPointer { selection.select($0, count: count) }
        return selection.positions.map { candidates[$0] }.sorted()
    }
}

/// The bfloat16 tables of an index's first-stage selection, per head: its row and column keys
/// (PKM) or its rank-1 ranking tables (Tucker).
struct ApproximateTables: Sendable {
    let rows: [ApproximateKeys]
    let cols: [ApproximateKeys]
}
