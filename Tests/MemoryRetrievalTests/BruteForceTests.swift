import Foundation
import MemoryStore
import Testing
import _MemorySupport
@testable import MemoryRetrieval

func gaussian(_ n: Int, _ rng: inout SeededGenerator, scale: Float = 1) -> [Float] {
    (0..<n).map { _ in rng.normal() * scale }
}

/// Scores every slot of the grid directly from the definition, in Double, and ranks them.
func bruteForce(_ c: RetrievalConfig, _ t: RetrievalTensors, query q: [Float], head h: Int) -> [Int] {
    let d = c.keyDim, r = c.rank
    func dot(_ keys: [Float], _ offset: Int, _ q: ArraySlice<Float>) -> Double {
        (0..<d).reduce(0.0) { $0 + Double(keys[offset + $1]) * Double(q[q.startIndex + $1]) }
    }
    let qRow = q[((h * 2) * d)..<((h * 2 + 1) * d)], qCol = q[((h * 2 + 1) * d)..<((h * 2 + 2) * d)]
    let sRow = (0..<r).map { a in (0..<c.gridRows).map { i in dot(t.rowKeys, ((h * r + a) * c.gridRows + i) * d, qRow) } }
    let sCol = (0..<r).map { b in (0..<c.gridCols).map { j in dot(t.colKeys, ((h * r + b) * c.gridCols + j) * d, qCol) } }
    var scored: [(Double, Int)] = []
    for i in 0..<c.gridRows {
        for j in 0..<c.gridCols {
            var total = 0.0
            if c.scoring == .pkm {
                total = sRow[0][i] + sCol[0][j]
            } else {
                for tt in 0..<c.cores { for a in 0..<r { for b in 0..<r {
                    total += sRow[a][i] * Double(t.cores![((h * c.cores + tt) * r + a) * r + b]) * sCol[b][j]
                } } }
            }
            scored.append((total, i * c.gridCols + j))
        }
    }
    scored.sort { $0.0 > $1.0 || ($0.0 == $1.0 && $0.1 < $1.1) }
    return scored.prefix(c.topK).map(\.1)
}

func randomTensors(_ c: RetrievalConfig, seed: UInt64) -> RetrievalTensors {
    var rng = SeededGenerator(seed: seed)
    let s = 1 / Float(c.keyDim).squareRoot()
    return RetrievalTensors(
        rowKeys: gaussian(c.heads * c.rank * c.gridRows * c.keyDim, &rng, scale: s),
        colKeys: gaussian(c.heads * c.rank * c.gridCols * c.keyDim, &rng, scale: s),
        cores: c.scoring == .pkm ? nil : gaussian(c.heads * c.cores * c.rank * c.rank, &rng),
        projectors: c.expansion > 1 ? gaussian(c.expansion * c.valueDim * c.outputDim, &rng, scale: 0.1) : nil)
}

@Suite struct BruteForceTests {
    @Test(arguments: [(64, 64, 8), (16, 128, 32), (100, 30, 30)])
    func pkmEqualsExhaustiveSearch(rows: Int, cols: Int, k: Int) throws {
        let c = RetrievalConfig(scoring: .pkm, heads: 3, keyDim: 24, gridRows: rows, gridCols: cols,
                                physicalRows: rows * cols, valueDim: 4, topK: k)
        let t = randomTensors(c, seed: UInt64(rows * cols + k))
        let index = try ProductKeyIndex(config: c, tensors: t)
        var rng = SeededGenerator(seed: 7)
        let q = gaussian(20 * c.heads * 2 * c.keyDim, &rng)
        let found = try index.search(queries: q, batch: 20)
        for b in 0..<20 {
            let query = Array(q[(b * c.heads * 2 * c.keyDim)..<((b + 1) * c.heads * 2 * c.keyDim)])
            for h in 0..<c.heads {
                let slot = (b * c.heads + h) * k
                #expect(Array(found.indices[slot..<(slot + k)]) == bruteForce(c, t, query: query, head: h))
            }
        }
    }

    @Test(arguments: [(2, 2), (3, 1), (1, 3)])
    func tuckerExactEqualsExhaustiveSearch(rank: Int, cores: Int) throws {
        let c = RetrievalConfig(scoring: .tuckerExact, heads: 2, keyDim: 16, gridRows: 24, gridCols: 20, rank: rank,
                                cores: cores, physicalRows: 480, valueDim: 6, topK: 7)
        let t = randomTensors(c, seed: UInt64(rank * 10 + cores))
        let index = try ProductKeyIndex(config: c, tensors: t)
        var rng = SeededGenerator(seed: 11)
        let q = gaussian(10 * c.heads * 2 * c.keyDim, &rng)
        let found = try index.search(queries: q, batch: 10)
        for b in 0..<10 {
            let query = Array(q[(b * c.heads * 2 * c.keyDim)..<((b + 1) * c.heads * 2 * c.keyDim)])
            for h in 0..<c.heads {
                let slot = (b * c.heads + h) * c.topK
                #expect(Array(found.indices[slot..<(slot + c.topK)]) == bruteForce(c, t, query: query, head: h))
            }
        }
    }

    @Test func tuckerWithFullPreselectionIsExact() throws {
        var c = RetrievalConfig(scoring: .tucker, heads: 2, keyDim: 16, gridRows: 20, gridCols: 20, rank: 2, cores: 2,
                                physicalRows: 400, valueDim: 6, topK: 5, topM: 20)
        let t = randomTensors(c, seed: 5)
        var rng = SeededGenerator(seed: 3)
        let q = gaussian(8 * c.heads * 2 * c.keyDim, &rng)
        let approx = try ProductKeyIndex(config: c, tensors: t).search(queries: q, batch: 8)
        c.scoring = .tuckerExact
        let exact = try ProductKeyIndex(config: c, tensors: t).search(queries: q, batch: 8)
        #expect(approx.indices == exact.indices)
        #expect(zip(approx.weights, exact.weights).allSatisfy { close($0, $1) })
    }

    @Test func threadsDoNotChangeResults() throws {
        let c = RetrievalConfig(scoring: .tucker, heads: 4, keyDim: 32, gridRows: 64, gridCols: 64, rank: 2, cores: 2,
                                expansion: 4, physicalRows: 1024, valueDim: 16, outputDim: 8, topK: 8, topM: 16,
                                addressing: .keyed, addressKey: 99)
        let t = randomTensors(c, seed: 9)
        var rng = SeededGenerator(seed: 4)
        let q = gaussian(100 * c.heads * 2 * c.keyDim, &rng)
        let values = DenseValueRows(values: gaussian(1024 * 16, &rng, scale: 0.02), dim: 16)
        let one = try ProductKeyIndex(config: c, tensors: t, threads: 1).lookup(queries: q, batch: 100, values: values)
        let many = try ProductKeyIndex(config: c, tensors: t, threads: 4).lookup(queries: q, batch: 100, values: values)
        #expect(one.search == many.search)
        #expect(one.output == many.output)
    }

    /// Small batches split the heads across workers (ProductKeyIndex.headSplitBatch), three heads
    /// over two workers unevenly: the same slots, weights and outputs as one worker, and as the
    /// brute force for PKM.
    @Test(arguments: [Scoring.pkm, .tucker], [1, 5, 16])
    func smallBatchesSplitByHeadGiveTheSameResults(scoring: Scoring, batch: Int) throws {
        let c = RetrievalConfig(scoring: scoring, heads: 3, keyDim: 16, gridRows: 32, gridCols: 48, rank: scoring == .pkm ? 1 : 2,
                                cores: scoring == .pkm ? 1 : 2, physicalRows: 32 * 48, valueDim: 8, topK: 6, topM: scoring == .pkm ? 0 : 12)
        let t = randomTensors(c, seed: UInt64(batch))
        var rng = SeededGenerator(seed: 21)
        let q = gaussian(batch * c.heads * 2 * c.keyDim, &rng)
        let values = DenseValueRows(values: gaussian(c.physicalRows * 8, &rng, scale: 0.02), dim: 8)
        let one = try ProductKeyIndex(config: c, tensors: t, threads: 1).lookup(queries: q, batch: batch, values: values)
        let two = try ProductKeyIndex(config: c, tensors: t, threads: 2).lookup(queries: q, batch: batch, values: values)
        #expect(one.search == two.search)
        #expect(one.output == two.output)
        if scoring == .pkm {
            for b in 0..<batch {
                for h in 0..<c.heads {
                    let expected = bruteForce(c, t, query: Array(q[(b * c.heads * 2 * c.keyDim)..<((b + 1) * c.heads * 2 * c.keyDim)]), head: h)
                    #expect(Array(two.search.indices[((b * c.heads + h) * c.topK)..<((b * c.heads + h + 1) * c.topK)]) == expected)
                }
            }
        }
    }

    @Test func keyedAddressingIsABijection() throws {
        for slots in [1, 2, 3, 4, 5, 17, 1000, 4096, 5000] {
            let address = try VirtualAddress(map: .keyed(0xABCDEF), virtualSlots: slots, physicalRows: slots)
            let image = Set((0..<slots).map { address.id(of: $0) })
            #expect(image.count == slots && image.allSatisfy { $0 >= 0 && $0 < slots })
        }
    }

    @Test func topSelectionKeepsTheBestInRankOrder() {
        var rng = SeededGenerator(seed: 1)
        for _ in 0..<50 {
            let scores = (0..<500).map { _ in Float(Int.random(in: 0..<40, using: &rng)) }  // many ties
            let want = Int.random(in: 1...600, using: &rng)
            var top = TopSelection()
            scores.withUnsafeBufferPointer { top.select($0, count: want) }
            let expected = scores.enumerated().sorted { $0.element > $1.element || ($0.element == $1.element && $0.offset < $1.offset) }.prefix(want)
            #expect(top.positions == expected.map(\.offset))
            #expect(top.scores == expected.map(\.element))
        }
    }

    @Test func leadingPairMatchesKnownMatrices() {
        // diag(1, 3): the leading pair is the second axis.
        let (u, v) = leadingSingularPair([1, 0, 0, 3], size: 2)
        #expect(u == [0, 1] && v == [0, 1])
        // A negative leading entry: signs flip together so u's largest entry is positive.
        let (u2, v2) = leadingSingularPair([-2, 0, 0, 1], size: 2)
        #expect(u2 == [1, 0] && v2 == [-1, 0])
    }
}
