import Foundation
import MemoryLayer
import MemoryStore
import Testing
import TestSupport
@testable import MemoryRetrieval

@Suite struct StoreBackedTests {
    /// The golden cases give the same slots, weights and outputs when the values, tensors and
    /// parameters are written into a store and served from it, through every codec.
    @Test(arguments: GoldenCase.all(), CodecKind.allCases)
    func goldenCasesThroughAStore(_ golden: GoldenCase, codec: CodecKind) throws {
        let scratch = ScratchDirectory()
        let path = scratch.file("golden.pkm")
        let c = golden.config
        // Small shards, so one batch spans many of them.
        let layout = TableLayout(elementType: .f32, rows: c.poolRows, dim: c.tableDim, rowsPerShard: 7, codec: codec)
        let writer = try StoreWriter.create(at: path, layout: layout)
        try MemoryLayer.write(config: c, tensors: golden.tensors, to: writer)
        try writer.append(golden.values)
        try writer.finish()

        let layer = try MemoryLayer(store: Store.open(at: path, cacheBytes: 4096))
        #expect(layer.config == c)
        let (output, found) = try layer.lookup(queries: golden.queries, batch: golden.batch, gateInputs: golden.gateInputs)
        #expect(found.indices == golden.indices)
        #expect(zip(found.weights, golden.weights).allSatisfy { close($0, $1) })
        #expect(zip(output, golden.output).allSatisfy { close($0, $1) })
    }

    @Test func aValueTableWithoutRetrievalParametersIsNamed() throws {
        let scratch = ScratchDirectory()
        let path = scratch.file("plain.pkm")
        let writer = try StoreWriter.create(at: path, layout: TableLayout(elementType: .f32, rows: 4, dim: 2))
        try writer.append([Float](repeating: 1, count: 8))
        try writer.finish()
        do {
            _ = try MemoryLayer(store: Store.open(at: path))
            Issue.record("a store without a layer opened as one")
        } catch let error as StoreError {
            #expect("\(error)".contains("holds no memory layer"))
        }
    }
}
