import CKeyScoring
import _MemorySupport

/// A key table in bfloat16, with per key the bound that lets an exact selection start from its
/// scores (Spec/RETRIEVAL.md, "Exact selection from approximate scores"): half the bytes to
/// stream for the small batches whose search is bound by reading the keys.
struct ApproximateKeys: Sendable {
    /// The keys rounded to bfloat16 (nearest, ties to even; subnormal results flushed to signed
    /// zero), `[count, dim]`.
    let bits: [UInt16]
    /// Per key i, at least `‖k_i − k̃_i‖ + γ_d (‖k̃_i‖ + ‖k_i‖)`, γ_d = d·u / (1 − d·u), u = 2^-24,
    /// so that for any query q, |fl(q·k̃_i) − fl(q·k_i)| ≤ ‖q‖ · slack[i] whatever the summation order.
    let slack: [Float]
    /// The largest slack, and the largest ‖k̃_i‖ (rounded up): the uniform bound of ``ExactSelection/selectPairs``.
    let maxSlack: Float, maxNorm: Float
    /// ``bits`` in the layout of `pkm_score_bf16_pairs` when this CPU runs it (AVX512-BF16), else empty.
    let pairs: [UInt16]
    let count: Int, dim: Int

    init(keys: UnsafePointer<Float>, count: Int, dim: Int) {
        self.count = count
        self.dim = dim
        let unit = 0x1p-24, gamma = Double(dim) * unit / (1 - Double(dim) * unit)
        var bits = [UInt16](repeating: 0, count: count * dim), slack = [Float](repeating: 0, count: count)
        var largestNorm = 0.0
        for i in 0..<count {
            var error = 0.0, norm = 0.0, roundedNorm = 0.0
            for j in 0..<dim {
                var b = HalfPrecision.bfloat16Bits(keys[i * dim + j])
                if b & 0x7F80 == 0 { b &= 0x8000 }  // subnormal: the pairs kernel reads it as zero
                let k = keys[i * dim + j]
                bits[i * dim + j] = b
                let rounded = Double(Float(bitPattern: UInt32(b) << 16)), exact = Double(k)
                error += (exact - rounded) * (exact - rounded)
                norm += exact * exact
                roundedNorm += rounded * rounded
            }
            // A relative margin for the square roots and this sum, and rounding up to Float.
            let bound = (error.squareRoot() + gamma * (norm.squareRoot() + roundedNorm.squareRoot())) * (1 + 1e-6)
            slack[i] = Float(bound).nextUp
            largestNorm = max(largestNorm, roundedNorm.squareRoot())
        }
        self.bits = bits
        self.slack = slack
        maxSlack = slack.max() ?? 0
        maxNorm = Float(largestNorm * (1 + 1e-6)).nextUp
        if pkm_bf16_pairs_supported() != 0 {
            var packed = [UInt16](repeating: 0, count: pkm_bf16_pairs_size(count, dim) / 2)
            bits.withUnsafeBufferPointer { b in packed.withUnsafeMutableBufferPointer { pkm_pack_bf16_pairs(b.baseAddress, count, dim, $0.baseAddress) } }
            pairs = packed
        } else {
            pairs = []
        }
    }

    /// Whether ``scorePairs(_:into:)`` can run here.
    var hasPairs: Bool { !pairs.isEmpty }

    /// `out[b * count + i]` = the bfloat16 product of key i with the packed query `b` of `queries`
    /// (``QueryPairs``), for `batch` queries.
    func scorePairs(_ queries: QueryPairs, batch: Int, into out: UnsafeMutablePointer<Float>) {
        pairs.withUnsafeBufferPointer { k in
            queries.pairs.withUnsafeBufferPointer { pkm_score_bf16_pairs(k.baseAddress, count, dim, $0.baseAddress, batch, out) }
        }
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
    private var positions: [UInt32] = []
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

    /// ``select(count:approximate:table:keys:query:)`` from scores of the pairs kernel, whose query
    /// was rounded too: with `term` ≥ ‖q − q̃‖ + γ_d‖q̃‖, every key's error is at most the uniform
    /// E = ‖q‖·maxSlack + term·maxNorm + 2d·(2^-126 + 2^-149) (Spec/RETRIEVAL.md). The keys that can be among
    /// the best are those within 2E of the count-th largest approximate score: one selection and
    /// one comparison per key, then the candidates rescored in f32.
    mutating func selectPairs(count: Int, approximate: UnsafeMutablePointer<Float>, table: ApproximateKeys,
                              keys: UnsafePointer<Float>, query q: UnsafePointer<Float>, term: Double) -> [Int] {
        let n = table.count, d = table.dim
        var squares = 0.0
        for j in 0..<d { squares += Double(q[j]) * Double(q[j]) }
        let margin = (squares.squareRoot() * Double(table.maxSlack) + term * Double(table.maxNorm)) * (1 + 1e-6) + Double(2 * d) * (0x1p-126 + 0x1p-149)
        selection.select(UnsafeBufferPointer(start: approximate, count: n), count: count)
        guard margin.isFinite, let kth = selection.scores.last, kth.isFinite else {
            return selectAll(count: count, approximate: approximate, n: n, d: d, keys: keys, query: q)
        }
        // In double, then rounded down: a key at the threshold is kept.
        let threshold = Float(Double(kth) - 2 * margin - 0x1p-20 * (abs(Double(kth)) + 2 * margin)).nextDown
        candidates.removeAll(keepingCapacity: true)
        candidateScores.removeAll(keepingCapacity: true)
        if positions.count < n { positions = [UInt32](repeating: 0, count: n) }
        let found = positions.withUnsafeMutableBufferPointer { pkm_positions_at_least(approximate, n, threshold, $0.baseAddress) }
        for i in positions[0..<found].lazy.map(Int.init) {
            candidates.append(i)
            let exact = KeyScoring.dot(keys + i * d, q, d)
            approximate[i] = exact
            candidateScores.append(exact)
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

/// A block of queries of one side rounded to bfloat16 pairs for ``ApproximateKeys/scorePairs(_:batch:into:)``,
/// with per query the term ‖q − q̃‖ + γ_d‖q̃‖ of the bound (rounded up; infinite when rounding overflowed).
struct QueryPairs: Sendable {
    var pairs: [UInt32] = []
    var terms: [Double] = []

    /// Rounds `batch` queries of `dim` floats, `stride` floats apart.
    mutating func prepare(_ queries: UnsafePointer<Float>, stride: Int, batch: Int, dim: Int) {
        let width = (dim + 1) / 2
        if pairs.count < batch * width { pairs = [UInt32](repeating: 0, count: batch * width) }
        if terms.count < batch { terms = [Double](repeating: 0, count: batch) }
        let gamma = Double(dim) * 0x1p-24 / (1 - Double(dim) * 0x1p-24)
        pairs.withUnsafeMutableBufferPointer { p in
            for b in 0..<batch {
                var residual = 0.0, rounded = 0.0
                pkm_pack_query_pairs(queries + b * stride, dim, p.baseAddress! + b * width, &residual, &rounded)
                terms[b] = (residual.squareRoot() + gamma * rounded.squareRoot()) * (1 + 1e-6)
            }
        }
    }
}

/// The bfloat16 tables of an index's first-stage selection, per head: its row and column keys
/// (PKM) or its rank-1 ranking tables (Tucker).
struct ApproximateTables: Sendable {
    let rows: [ApproximateKeys]
    let cols: [ApproximateKeys]
}
