import Foundation
import Testing
import TestSupport
@testable import MemoryStore

/// Stores opened with `resident: true`: the table decoded and checked at open into huge-page
/// memory, then every read served from there.
@Suite struct ResidentTests {
    @Test(arguments: ElementType.valueTypes, [CodecKind.raw, .zstd])
    func residentReadsEqualTheStoredRows(type: ElementType, codec: CodecKind) throws {
        let dir = ScratchDirectory()
        // 1000 rows over 64-row shards: the last shard is partial.
        let layout = TableLayout(elementType: type, rows: 1000, dim: 24, rowsPerShard: 64, codec: codec)
        let bytes = try writeTable(dir.file("t.pkm"), layout)
        let store = try Store.open(at: dir.file("t.pkm"), resident: true)
        #expect(store.isResident)
        #expect(store.cacheStatistics.bytes == 0, "the load keeps no decoded shard in the cache")
        for i in [0, 1, 63, 64, 500, 998, 999] { #expect(try store.row(i) == referenceRow(bytes, i, dim: 24, type: type)) }
        var read: [UInt8] = []
        for s in 0..<layout.shardCount { try store.withShardRows(s) { read.append(contentsOf: $0) } }
        #expect(read == bytes)
        // Batches, and the fused reduce with chunks and targets, as from the mapped store.
        let mapped = try Store.open(at: dir.file("t.pkm"), cacheBytes: 0)
        let indices = (0..<3000).map { ($0 * 7919) % 1000 }, targets = indices.indices.map { $0 % 5 }
        let weights = indices.indices.flatMap { [Float($0 % 11) / 11, Float($0 % 3) - 1] }
        func reduce(_ s: Store) throws -> [Float] {
            try batchedReduce(s, indices: indices, weights: weights, chunks: 2, targets: targets, outputs: 5)
        }
        // In the order given, as raw rows are read; a compressed table is summed shard by shard.
        let (resident, stored) = (try reduce(store), try reduce(mapped))
        if codec == .raw {
            #expect(resident == stored)
        } else {
            let scale = stored.map(abs).max() ?? 1
            #expect(zip(resident, stored).allSatisfy { abs($0 - $1) <= 1e-5 * scale })
        }
        var a = [Float](repeating: 0, count: indices.count * 24), b = a
        try a.withUnsafeMutableBufferPointer { try store.rows(indices, into: $0) }
        try b.withUnsafeMutableBufferPointer { try mapped.rows(indices, into: $0) }
        #expect(a == b)
        #expect(throws: StoreError.rowOutOfRange(row: 1000, rows: 1000)) { try store.row(1000) }
    }

    /// A compressed store sums each output's rows in the same order whether its shards are
    /// decoded or cached, and whatever the other rows of the call: the same bits every time.
    @Test func compressedSumsDoNotDependOnTheCache() throws {
        let dir = ScratchDirectory()
        let layout = TableLayout(elementType: .bf16, rows: 1000, dim: 64, rowsPerShard: 64, codec: .zstd)
        try writeTable(dir.file("t.pkm"), layout)
        let cached = try Store.open(at: dir.file("t.pkm"), cacheBytes: 1 << 20), uncached = try Store.open(at: dir.file("t.pkm"), cacheBytes: 0)
        let indices = (0..<2048).map { ($0 * 7919) % 1000 }, targets = indices.indices.map { $0 / 128 }
        let weights = indices.indices.map { Float($0 % 13) / 13 - 0.5 }
        func reduce(_ s: Store, _ range: Range<Int>) throws -> [Float] {
            try batchedReduce(s, indices: Array(indices[range]), weights: Array(weights[range]), chunks: 1,
                              targets: targets[range].map { $0 - targets[range.lowerBound] }, outputs: 16)
        }
        let first = try reduce(cached, 0..<2048)
        #expect(try reduce(cached, 0..<2048) == first)      // now from the cache
        #expect(try reduce(uncached, 0..<2048) == first)    // decoded every time
        // Query 3 alone (its 128 rows, no others in the call) sums as it did among all 16.
        #expect(Array(try reduce(cached, 384..<512)[0..<64]) == Array(first[(3 * 64)..<(4 * 64)]))
    }

    @Test(arguments: [CodecKind.raw, .zstd])
    func aDamagedShardFailsTheResidentOpenByName(codec: CodecKind) throws {
        let dir = ScratchDirectory()
        let layout = TableLayout(elementType: .bf16, rows: 1000, dim: 24, rowsPerShard: 64, codec: codec)
        try writeTable(dir.file("t.pkm"), layout)
        try tamperShard(dir.file("t.pkm"), 9) { $0[$0.count - 3] ^= 0x10 }
        do {
            _ = try Store.open(at: dir.file("t.pkm"), resident: true)
            Issue.record("a damaged shard loaded")
        } catch let error as StoreError {
            #expect("\(error)".contains("shard 9"), "\(error)")
        }
        // Opened mapped, the other shards still read.
        #expect(try Store.open(at: dir.file("t.pkm")).row(0).count == 24)
    }

    @Test func anIncompleteStoreIsNotLoaded() throws {
        let dir = ScratchDirectory()
        let layout = TableLayout(elementType: .f32, rows: 1000, dim: 8, rowsPerShard: 100)
        var options = StoreWriter.Options()
        options.batchBytes = 100 * 32
        do {
            let writer = try StoreWriter.create(at: dir.file("t.pkm"), layout: layout, options: options)
            try writer.append([Float](repeating: 1, count: 500 * 8))
            // Dropped without finish(): as if the process had died here.
        }
        #expect(throws: StoreError.incomplete(rowsCommitted: 500, rows: 1000)) { try Store.open(at: dir.file("t.pkm"), resident: true) }
    }
}
