import CKeyScoring
import Testing
import _MemorySupport
@testable import MemoryRetrieval

/// Small batches select from bfloat16 scores and rescore the keys that can matter in f32
/// (Spec/RETRIEVAL.md, "Exact selection from approximate scores"); large batches score every key
/// in f32. Both must give the brute force's slots, on data where f32 arithmetic is exact, so
/// that every tie and near-tie is decided by the spec's rule and not by rounding.
@Suite struct ExactSelectionTests {
    /// Keys that bfloat16 cannot tell apart (1 + m·2^-12 all round to 1), many exact ties
    /// (values on a coarse grid), and queries of small multiples of 1/64: every f32 score is exact.
    static func adversarialKeys(_ count: Int, dim: Int, rng: inout SeededGenerator) -> [Float] {
        (0..<(count * dim)).map { e in
            switch (e / dim) % 3 {
            case 0: 1 + Float(rng.next() % 16) * 0x1p-12             // collide in bfloat16
            case 1: Float(Int(rng.next() % 5) - 2) / 4                // ties
            default: Float(Int(rng.next() % 129) - 64) / 64
            }
        }
    }

    @Test(arguments: [Scoring.pkm, .tucker])
    func smallBatchesSelectExactlyWhatTheBruteForceSelects(scoring: Scoring) throws {
        var rng = SeededGenerator(seed: 77)
        let heads = 2, d = 16, n = 96, k = 8
        let c = RetrievalConfig(scoring: scoring, heads: heads, keyDim: d, gridRows: n, gridCols: n, rank: scoring == .pkm ? 1 : 2,
                                cores: scoring == .pkm ? 1 : 2, physicalRows: n * n, valueDim: 4, topK: k, topM: scoring == .pkm ? 0 : n)
        let r = c.rank
        let t = RetrievalTensors(rowKeys: Self.adversarialKeys(heads * r * n, dim: d, rng: &rng),
                                 colKeys: Self.adversarialKeys(heads * r * n, dim: d, rng: &rng),
                                 cores: scoring == .pkm ? nil : (0..<(heads * 2 * r * r)).map { _ in Float(Int(rng.next() % 9) - 4) / 8 })
        let batch = 40
        let q = (0..<(batch * heads * 2 * d)).map { _ in Float(Int(rng.next() % 33) - 16) / 64 }
        let index = try ProductKeyIndex(config: c, tensors: t, threads: 2, limitsBLASThreads: true, approximateBatch: 4)
        #expect(index.approximateTables != nil)
        let large = try index.search(queries: q, batch: batch)            // f32 keys, every one scored
        let per = heads * 2 * d
        for b in 0..<batch {
            let one = try index.search(queries: Array(q[(b * per)..<((b + 1) * per)]), batch: 1)
            #expect(one.indices == Array(large.indices[(b * heads * k)..<((b + 1) * heads * k)]), "query \(b)")
            if scoring == .pkm {
                for h in 0..<heads {
                    #expect(Array(one.indices[(h * k)..<((h + 1) * k)]) == bruteForce(c, t, query: Array(q[(b * per)..<((b + 1) * per)]), head: h))
                }
            }
        }
        for small in [2, 3, 4] {
            let few = try index.search(queries: Array(q[0..<(small * per)]), batch: small)
            #expect(few.indices == Array(large.indices[0..<(small * heads * k)]), "batch \(small)")
        }
    }

    /// The bound holds for keys of every magnitude bfloat16 represents, and the rescoring keeps
    /// the rank order of f32 scores computed in another order.
    @Test func selectionEqualsTheTopOfF32ScoresOnGaussianKeys() {
        var rng = SeededGenerator(seed: 5)
        let n = 5000, d = 48
        for scale: Float in [1e-6, 1, 1e6] {
            let keys = (0..<(n * d)).map { _ in rng.normal() * scale }
            let q = (0..<d).map { _ in rng.normal() }
            let table = keys.withUnsafeBufferPointer { ApproximateKeys(keys: $0.baseAddress!, count: n, dim: d) }
            var approximate = [Float](repeating: 0, count: n)
            q.withUnsafeBufferPointer { table.score($0.baseAddress!, stride: d, batch: 1, into: &approximate) }
            var selection = ExactSelection()
            let kept = keys.withUnsafeBufferPointer { k in
                q.withUnsafeBufferPointer { selection.select(count: 32, approximate: &approximate, table: table, keys: k.baseAddress!, query: $0.baseAddress!) }
            }
            let exact = (0..<n).map { i in keys.withUnsafeBufferPointer { k in q.withUnsafeBufferPointer { KeyScoring.dot(k.baseAddress! + i * d, $0.baseAddress!, d) } } }
            let expected = (0..<n).sorted { exact[$0] > exact[$1] || (exact[$0] == exact[$1] && $0 < $1) }.prefix(32).sorted()
            #expect(kept == Array(expected), "scale \(scale)")
        }
    }

    /// The bfloat16 kernel, one query and several at once (dims with and without a tail), within
    /// γ_d of the exact dot products of the rounded keys.
    @Test(arguments: [1, 2, 3, 4, 5], [8, 20, 128])
    func bfloat16ScoresAreDotProductsOfTheRoundedKeys(batch: Int, dim: Int) {
        var rng = SeededGenerator(seed: UInt64(batch * 1000 + dim))
        let n = 37
        let keys = (0..<(n * dim)).map { _ in rng.normal() }
        let stride = dim + 3
        let q = (0..<(batch * stride)).map { _ in rng.normal() }
        let table = keys.withUnsafeBufferPointer { ApproximateKeys(keys: $0.baseAddress!, count: n, dim: dim) }
        var out = [Float](repeating: .nan, count: batch * n)
        q.withUnsafeBufferPointer { table.score($0.baseAddress!, stride: stride, batch: batch, into: &out) }
        let gamma = Double(dim) * 0x1p-24 / (1 - Double(dim) * 0x1p-24)
        for b in 0..<batch {
            for i in 0..<n {
                var exact = 0.0, magnitude = 0.0
                for j in 0..<dim {
                    let k = Double(Float(bitPattern: UInt32(table.bits[i * dim + j]) << 16)), x = Double(q[b * stride + j])
                    exact += k * x
                    magnitude += abs(k * x)
                }
                #expect(abs(Double(out[b * n + i]) - exact) <= gamma * magnitude, "query \(b), key \(i)")
            }
        }
    }

    // Large batches on CPUs with AVX512-BF16: keys and queries rounded to bfloat16, the bound
    // widened by the query's rounding (Spec/RETRIEVAL.md, "Exact selection from approximate scores").

    @Test(.enabled(if: pkm_bf16_pairs_supported() != 0, "this CPU has no AVX512-BF16"), arguments: [Scoring.pkm, .tucker])
    func pairBatchesSelectExactlyWhatTheBruteForceSelects(scoring: Scoring) throws {
        var rng = SeededGenerator(seed: 78)
        let heads = 2, d = 17, n = 101, k = 8
        let c = RetrievalConfig(scoring: scoring, heads: heads, keyDim: d, gridRows: n, gridCols: n, rank: scoring == .pkm ? 1 : 2,
                                cores: scoring == .pkm ? 1 : 2, physicalRows: n * n, valueDim: 4, topK: k, topM: scoring == .pkm ? 0 : 24)
        let r = c.rank
        let t = RetrievalTensors(rowKeys: Self.adversarialKeys(heads * r * n, dim: d, rng: &rng),
                                 colKeys: Self.adversarialKeys(heads * r * n, dim: d, rng: &rng),
                                 cores: scoring == .pkm ? nil : (0..<(heads * 2 * r * r)).map { _ in Float(Int(rng.next() % 9) - 4) / 8 })
        let batch = 45
        // Half the queries exact in bfloat16 (ties decided by the rule), half not (1 + m·2^-12: rounded).
        let q = (0..<(batch * heads * 2 * d)).map { e in
            e % 2 == 0 ? Float(Int(rng.next() % 33) - 16) / 64 : (1 + Float(rng.next() % 16) * 0x1p-12) * Float(Int(rng.next() % 5) - 2)
        }
        let pairs = try ProductKeyIndex(config: c, tensors: t, threads: 2, limitsBLASThreads: true, approximateBatch: 1, pairsBatch: 2)
        let f32 = try ProductKeyIndex(config: c, tensors: t, threads: 2, limitsBLASThreads: true, approximateBatch: 1, pairsBatch: .max)
        #expect(pairs.approximateTables?.rows.first?.hasPairs == true)
        let got = try pairs.search(queries: q, batch: batch), expected = try f32.search(queries: q, batch: batch)
        #expect(got.indices == expected.indices)
        // The weights of the f32 scores, summed in KeyScoring.dot's order instead of sgemm's.
        #expect(zip(got.weights, expected.weights).allSatisfy { abs($0 - $1) <= 1e-5 * max(abs($1), 1e-30) })
        if scoring == .pkm {
            let per = heads * 2 * d
            for b in 0..<batch {
                for h in 0..<heads {
                    let start = (b * heads + h) * k
                    #expect(Array(got.indices[start..<(start + k)]) == bruteForce(c, t, query: Array(q[(b * per)..<((b + 1) * per)]), head: h), "query \(b)")
                }
            }
        }
    }

    /// The uniform bound of the pairs kernel holds at every magnitude, subnormal products included.
    @Test(.enabled(if: pkm_bf16_pairs_supported() != 0, "this CPU has no AVX512-BF16"),
          arguments: [(Float(1e-6), Float(1)), (1, 1), (1e6, 1), (1e-30, 1e-9), (1, 1e-37)])
    func pairSelectionEqualsTheTopOfF32ScoresOnGaussianKeys(keyScale: Float, queryScale: Float) {
        var rng = SeededGenerator(seed: 6)
        let n = 5003, d = 48, batch = 3
        let keys = (0..<(n * d)).map { _ in rng.normal() * keyScale }
        let q = (0..<(batch * d)).map { _ in rng.normal() * queryScale }
        let table = keys.withUnsafeBufferPointer { ApproximateKeys(keys: $0.baseAddress!, count: n, dim: d) }
        var rounded = QueryPairs()
        q.withUnsafeBufferPointer { rounded.prepare($0.baseAddress!, stride: d, batch: batch, dim: d) }
        var approximate = [Float](repeating: .nan, count: batch * n)
        approximate.withUnsafeMutableBufferPointer { table.scorePairs(rounded, batch: batch, into: $0.baseAddress!) }
        for b in 0..<batch {
            var selection = ExactSelection()
            let kept = keys.withUnsafeBufferPointer { k in
                q.withUnsafeBufferPointer { qq in
                    approximate.withUnsafeMutableBufferPointer {
                        selection.selectPairs(count: 32, approximate: $0.baseAddress! + b * n, table: table, keys: k.baseAddress!,
                                              query: qq.baseAddress! + b * d, term: rounded.terms[b])
                    }
                }
            }
            let exact = (0..<n).map { i in keys.withUnsafeBufferPointer { k in q.withUnsafeBufferPointer { KeyScoring.dot(k.baseAddress! + i * d, $0.baseAddress! + b * d, d) } } }
            let expected = (0..<n).sorted { exact[$0] > exact[$1] || (exact[$0] == exact[$1] && $0 < $1) }.prefix(32).sorted()
            #expect(kept == Array(expected), "scales \(keyScale), \(queryScale), query \(b)")
        }
    }

    /// The pairs kernel (key counts off the 16- and 64-key blocks, odd dims, batches off its
    /// 6-query blocks) is within γ_d (and the flushed subnormals) of the exact products of the rounded keys and queries.
    @Test(.enabled(if: pkm_bf16_pairs_supported() != 0, "this CPU has no AVX512-BF16"), arguments: [1, 6, 7, 13], [7, 20, 128])
    func pairScoresAreDotProductsOfTheRoundedKeysAndQueries(batch: Int, dim: Int) {
        var rng = SeededGenerator(seed: UInt64(batch * 1000 + dim))
        let n = 141
        let keys = (0..<(n * dim)).map { _ in rng.normal() }
        let q = (0..<(batch * dim)).map { _ in rng.normal() }
        let table = keys.withUnsafeBufferPointer { ApproximateKeys(keys: $0.baseAddress!, count: n, dim: dim) }
        var rounded = QueryPairs()
        q.withUnsafeBufferPointer { rounded.prepare($0.baseAddress!, stride: dim, batch: batch, dim: dim) }
        var out = [Float](repeating: .nan, count: batch * n)
        out.withUnsafeMutableBufferPointer { table.scorePairs(rounded, batch: batch, into: $0.baseAddress!) }
        let gamma = Double(dim) * 0x1p-24 / (1 - Double(dim) * 0x1p-24), width = (dim + 1) / 2
        for b in 0..<batch {
            for i in 0..<n {
                var exact = 0.0, magnitude = 0.0
                for j in 0..<dim {
                    let k = Double(Float(bitPattern: UInt32(table.bits[i * dim + j]) << 16))
                    let x = Double(Float(bitPattern: (rounded.pairs[b * width + j / 2] >> (16 * UInt32(j % 2))) << 16))
                    exact += k * x
                    magnitude += abs(k * x)
                }
                #expect(abs(Double(out[b * n + i]) - exact) <= gamma * magnitude + Double(2 * dim) * 0x1p-126, "query \(b), key \(i)")
            }
        }
    }
}
