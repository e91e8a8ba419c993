import Foundation
import MemoryStore
import Testing
import _MemorySupport
@testable import MemoryRetrieval

@Suite struct ValidationTests {
    let base = RetrievalConfig(scoring: .tucker, heads: 2, keyDim: 8, gridRows: 16, gridCols: 16, rank: 2, cores: 2,
                               physicalRows: 256, valueDim: 8, topK: 4, topM: 6)

    func error(_ change: (inout RetrievalConfig) -> Void) -> String? {
        var c = base
        change(&c)
        do { try c.validate(); return nil } catch { return "\(error)" }
    }

    @Test func configErrorsNameTheField() {
        #expect(error { $0.topM = 3 }?.contains("'topM': m = 3 is smaller than k = 4") == true)
        #expect(error { $0.topK = 300 }?.contains("'topK'") == true)
        #expect(error { $0.expansion = 2 }?.contains("must equal expansion x physicalRows") == true)
        #expect(error { $0.valueDim = 7 }?.contains("not divisible by 2 cores") == true)
        #expect(error { $0.scoring = .pkm }?.contains("PKM scoring needs rank 1") == true)
        #expect(error { $0.topM = 17 }?.contains("exceeds the grid") == true)
        #expect(error { $0.heads = 0 }?.contains("'heads'") == true)
        #expect(error { _ in } == nil)
    }

    @Test func badTensorsAndQueriesAreRefused() throws {
        var t = randomTensors(base, seed: 1)
        t.rowKeys.removeLast()
        #expect(throws: RetrievalError.tensorShape(name: "row_keys", expected: [2, 2, 16, 8], got: [511])) {
            try ProductKeyIndex(config: base, tensors: t)
        }
        var nanKeys = randomTensors(base, seed: 1)
        nanKeys.colKeys[5] = .nan
        #expect(throws: RetrievalError.invalidTensor(name: "col_keys", reason: "contains NaN or infinity")) {
            try ProductKeyIndex(config: base, tensors: nanKeys)
        }
        var noCores = randomTensors(base, seed: 1)
        noCores.cores = nil
        #expect(throws: RetrievalError.missingTensor("cores")) { try ProductKeyIndex(config: base, tensors: noCores) }

        var badMap = base
        badMap.addressing = .table
        var mapped = randomTensors(base, seed: 1)
        mapped.virtualMap = Array(repeating: 0, count: 256)
        #expect(throws: RetrievalError.self) { try ProductKeyIndex(config: badMap, tensors: mapped) }

        let index = try ProductKeyIndex(config: base, tensors: randomTensors(base, seed: 1))
        #expect(throws: RetrievalError.queryShape(expected: "[2, 2, 2, 8] = 64", got: 63)) {
            try index.search(queries: [Float](repeating: 0, count: 63), batch: 2)
        }
        var q = [Float](repeating: 0.1, count: 64)
        q[40] = .infinity
        #expect(throws: RetrievalError.nonFiniteQuery(query: 1, head: 0)) { try index.search(queries: q, batch: 2) }
    }
}
