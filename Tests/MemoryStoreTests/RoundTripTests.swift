import CLMDB
import Foundation
import MemoryBenchmarks
import Testing
import _MemorySupport
import TestSupport
@testable import MemoryStore

@Suite struct RoundTripTests {
    static let variants: [(CodecKind, Bool)] = [(.raw, false), (.zstd, false), (.zstd, true)]

    @Test(arguments: ElementType.valueTypes, [0, 1, 2])
    func everyTypeAndCodec(type: ElementType, variant: Int) throws {
        let (codec, dictionary) = Self.variants[variant]
        let dir = ScratchDirectory()
        // 1000 rows over 64-row shards: the last shard is partial.
        let layout = TableLayout(elementType: type, rows: 1000, dim: 24, rowsPerShard: 64, codec: codec, dictionary: dictionary)
        let bytes = try writeTable(dir.file("t.pkm"), layout)
        let store = try Store.open(at: dir.file("t.pkm"))
        #expect(store.isComplete)
        #expect(store.layout == layout)
        for i in [0, 1, 63, 64, 500, 998, 999] {
            #expect(try store.row(i) == referenceRow(bytes, i, dim: 24, type: type))
        }
        // Every shard's stored bytes are the input's, bit for bit.
        var read: [UInt8] = []
        for s in 0..<layout.shardCount { try store.withShardRows(s) { read.append(contentsOf: $0) } }
        #expect(read == bytes)
        #expect(try store.verify().isSound)
    }

    @Test(arguments: [(1, 1), (1, 4096), (7, 1), (300, 4096), (5, 3)])
    func edgeShapes(rows: Int, dim: Int) throws {
        for codec in [CodecKind.raw, .zstd] {
            let dir = ScratchDirectory()
            let layout = TableLayout(elementType: .bf16, rows: rows, dim: dim, codec: codec)
            let bytes = try writeTable(dir.file("t.pkm"), layout)
            let store = try Store.open(at: dir.file("t.pkm"))
            for i in Set([0, rows / 2, rows - 1]) {
                #expect(try store.row(i) == referenceRow(bytes, i, dim: dim, type: .bf16))
            }
        }
    }

    @Test func rowsAndGatherReduceMatchAnIndependentSum() throws {
        let dir = ScratchDirectory()
        let layout = TableLayout(elementType: .bf16, rows: 5000, dim: 32, rowsPerShard: 100)
        let bytes = try writeTable(dir.file("t.pkm"), layout)
        let store = try Store.open(at: dir.file("t.pkm"), cacheBytes: 1 << 16)
        var rng = SeededGenerator(seed: 42)
        for _ in 0..<20 {
            let indices = (0..<50).map { _ in Int.random(in: 0..<5000, using: &rng) }
            // rows(_:into:) keeps the caller's order even though it reads in storage order.
            var out = [Float](repeating: .nan, count: 50 * 32)
            try out.withUnsafeMutableBufferPointer { try store.rows(indices, into: $0) }
            for (p, r) in indices.enumerated() {
                #expect(Array(out[(p * 32)..<((p + 1) * 32)]) == referenceRow(bytes, r, dim: 32, type: .bf16))
            }
            // gatherReduce with 2 chunks: chunk t of row i weighted by w[i*2+t].
            let weights = (0..<100).map { _ in Float.random(in: -1...1, using: &rng) }
            var sum = [Float](repeating: 0, count: 32)
            try store.gatherReduce(indices: indices, weights: weights, chunks: 2, into: &sum)
            var expected = [Double](repeating: 0, count: 32)
            for (p, r) in indices.enumerated() {
                let row = referenceRow(bytes, r, dim: 32, type: .bf16)
                for j in 0..<32 { expected[j] += Double(weights[p * 2 + j / 16]) * Double(row[j]) }
            }
            for j in 0..<32 { #expect(abs(Double(sum[j]) - expected[j]) <= 1e-5 * max(1, abs(expected[j]))) }
        }
        let stats = store.cacheStatistics
        #expect(stats.hits > 0 && stats.misses > 0)
        #expect(stats.bytes <= stats.budget)
    }

    @Test func tensorsRoundTrip() throws {
        let dir = ScratchDirectory()
        let layout = TableLayout(elementType: .f32, rows: 10, dim: 4)
        let writer = try StoreWriter.create(at: dir.file("t.pkm"), layout: layout)
        let keys = try Tensor(shape: [2, 3, 4], floats: (0..<24).map { Float($0) / 7 })
        let map = try Tensor(dtype: .i64, shape: [5], bytes: [Int64](arrayLiteral: 4, 3, 2, 1, 0).withUnsafeBytes { Array($0) })
        try writer.putTensor("row_keys", keys)
        try writer.putTensor("virtual_map", map)
        try writer.append([Float](repeating: 1, count: 40))
        try writer.finish()
        let store = try Store.open(at: dir.file("t.pkm"))
        #expect(try store.tensorNames() == ["row_keys", "virtual_map"])
        #expect(try store.tensor(named: "row_keys") == keys)
        #expect(try store.tensor(named: "virtual_map").integers() == [4, 3, 2, 1, 0])
        #expect(throws: StoreError.tensorNotFound("cores")) { try store.tensor(named: "cores") }
    }

    @Test func reopenSeesTheSameData() throws {
        let dir = ScratchDirectory()
        let layout = TableLayout(elementType: .f16, rows: 777, dim: 10, rowsPerShard: 50)
        let bytes = try writeTable(dir.file("t.pkm"), layout)
        for _ in 0..<3 {
            let store = try Store.open(at: dir.file("t.pkm"))
            #expect(try store.row(776) == referenceRow(bytes, 776, dim: 10, type: .f16))
        }
    }

    @Test func mapGrowsDuringImport() throws {
        let dir = ScratchDirectory()
        // 8 MiB of rows into a 1 MiB initial map, committed in 1 MiB batches.
        let layout = TableLayout(elementType: .f32, rows: 1 << 15, dim: 64, codec: .raw)
        var options = StoreWriter.Options()
        options.initialMapSize = 1 << 20
        options.batchBytes = 1 << 20
        let bytes = try writeTable(dir.file("t.pkm"), layout, options: options)
        let store = try Store.open(at: dir.file("t.pkm"))
        #expect(try store.storageStatistics().mapSize > 8 << 20)
        #expect(try store.row(32767) == referenceRow(bytes, 32767, dim: 64, type: .f32))
    }

    @Test func writerRefusesWrongRowCounts() throws {
        let dir = ScratchDirectory()
        let layout = TableLayout(elementType: .f32, rows: 4, dim: 2)
        let writer = try StoreWriter.create(at: dir.file("t.pkm"), layout: layout)
        #expect(throws: StoreError.self) { try writer.append([Float](repeating: 0, count: 10)) }
        try writer.append([Float](repeating: 0, count: 6))
        #expect(throws: StoreError.self) { try writer.finish() }
        #expect(throws: StoreError.self) { try StoreWriter.create(at: dir.file("t.pkm"), layout: layout) }
    }

    @Test func incompleteStoreServesItsPrefixAndResumes() throws {
        let dir = ScratchDirectory()
        let layout = TableLayout(elementType: .bf16, rows: 1000, dim: 8, rowsPerShard: 100)
        let bytes = SyntheticRows(seed: 3, dim: 8).bytes(0..<1000, as: .bf16)
        var options = StoreWriter.Options()
        options.batchBytes = 100 * 16
        do {
            let writer = try StoreWriter.create(at: dir.file("t.pkm"), layout: layout, options: options)
            try bytes.withUnsafeBytes { try writer.append(UnsafeRawBufferPointer(rebasing: $0[0..<(450 * 16)])) }
            // Dropped without finish(): as if the process had died here.
        }
        do {
            let partial = try Store.open(at: dir.file("t.pkm"))
            #expect(!partial.isComplete)
            #expect(partial.state.rowsCommitted == 400)
            #expect(try partial.row(399) == referenceRow(bytes, 399, dim: 8, type: .bf16))
            #expect(throws: StoreError.incomplete(rowsCommitted: 400, rows: 1000)) { try partial.row(400) }
            #expect(try partial.verify().isSound)
            // A process may not write a store it holds open for reading (LMDB's locks forbid it).
            #expect(throws: StoreError.self) { try StoreWriter.createOrResume(at: dir.file("t.pkm"), layout: layout) }
        }

        let other = TableLayout(elementType: .bf16, rows: 1000, dim: 8, rowsPerShard: 50)
        #expect(throws: StoreError.self) { try StoreWriter.createOrResume(at: dir.file("t.pkm"), layout: other) }

        let writer = try StoreWriter.createOrResume(at: dir.file("t.pkm"), layout: layout)
        #expect(writer.rowsCommitted == 400)
        try bytes.withUnsafeBytes { try writer.append(UnsafeRawBufferPointer(rebasing: $0[(400 * 16)...])) }
        try writer.finish()
        let done = try Store.open(at: dir.file("t.pkm"))
        #expect(done.isComplete)
        var read: [UInt8] = []
        for s in 0..<10 { try done.withShardRows(s) { read.append(contentsOf: $0) } }
        #expect(read == bytes)
    }

    @Test func creationKilledBeforeItsFirstCommitIsTakenOver() throws {
        let dir = ScratchDirectory()
        let path = dir.file("t.pkm")
        // An LMDB file with no databases in it: what a creation killed right after mdb_env_open leaves.
        var env: OpaquePointer?
        #expect(mdb_env_create(&env) == 0)
        #expect(mdb_env_open(env, path, UInt32(MDB_NOSUBDIR), 0o644) == 0)
        mdb_env_close(env)
        #expect(throws: StoreError.self) { try Store.open(at: path) }
        let layout = TableLayout(elementType: .f32, rows: 3, dim: 2)
        let writer = try StoreWriter.createOrResume(at: path, layout: layout)
        #expect(writer.rowsCommitted == 0)
        try writer.append([Float](repeating: 2, count: 6))
        try writer.finish()
        #expect(try Store.open(at: path).row(2) == [2, 2])
    }

    @Test func aFileThatIsNotAStoreIsNeverOverwritten() throws {
        let dir = ScratchDirectory()
        let path = dir.file("notes.txt")
        let text = Data(String(repeating: "precious notes\n", count: 1000).utf8)
        #expect(FileManager.default.createFile(atPath: path, contents: text))
        let layout = TableLayout(elementType: .f32, rows: 3, dim: 2)
        #expect(throws: StoreError.self) { try StoreWriter.createOrResume(at: path, layout: layout) }
        #expect(throws: StoreError.self) { try StoreWriter.create(at: path, layout: layout) }
        #expect(try Data(contentsOf: URL(fileURLWithPath: path)) == text)
    }
}
