import Dispatch
import Foundation
import Testing
import _MemorySupport
import TestSupport
@testable import MemoryStore

/// Pointers into decoded shards stay valid for as long as they are used, whatever the cache
/// does: with a budget smaller than one shard every decoded shard is declined by the cache and
/// owned by the reading call alone, and many threads evict each other's shards. Tools/sanitize.sh
/// runs these under AddressSanitizer and ThreadSanitizer.
@Suite struct LifetimeTests {
    @Test(arguments: [0, 1_000, 300_000])
    func readsWithTinyCachesMatchTheStoredRows(cacheBytes: Int) throws {
        let dir = ScratchDirectory()
        let path = dir.file("m.pkm")
        let layout = TableLayout(elementType: .bf16, rows: 20_000, dim: 32, rowsPerShard: 1000)
        let bytes = try writeTable(path, layout)
        let store = try Store.open(at: path, cacheBytes: cacheBytes)
        let failures = Locked(0)
        DispatchQueue.concurrentPerform(iterations: 8) { worker in
            var rng = UInt64(worker + 1)
            for _ in 0..<50 {
                let indices = (0..<64).map { _ -> Int in
                    rng = rng &* 6364136223846793005 &+ 1442695040888963407
                    return Int(rng >> 33) % layout.rows
                }
                var out = [Float](repeating: 0, count: indices.count * layout.dim)
                do {
                    try out.withUnsafeMutableBufferPointer { try store.rows(indices, into: $0) }
                    for (i, r) in indices.enumerated() where Array(out[(i * layout.dim)..<((i + 1) * layout.dim)]) != referenceRow(bytes, r, dim: layout.dim, type: .bf16) {
                        failures.withLock { $0 += 1 }
                    }
                    let shard = indices[0] / layout.rowsPerShard
                    let whole = try store.withShardRows(shard) { Array($0) }
                    if whole != Array(bytes[(shard * 1000 * layout.rowBytes)..<((shard + 1) * 1000 * layout.rowBytes)]) { failures.withLock { $0 += 1 } }
                } catch {
                    failures.withLock { $0 += 1 }
                }
            }
        }
        #expect(failures.withLock { $0 } == 0)
    }

    /// The C API will hand over empty buffers: no rows is no work, not a trap.
    @Test func emptyBatchesAddNothing() throws {
        let dir = ScratchDirectory()
        let path = dir.file("m.pkm")
        let layout = TableLayout(elementType: .f32, rows: 10, dim: 4)
        try writeTable(path, layout)
        let store = try Store.open(at: path)
        var out = [Float](repeating: 1, count: 4)
        try store.gatherReduce(indices: [], weights: [], into: &out)
        #expect(out == [1, 1, 1, 1])
        try out.withUnsafeMutableBufferPointer { o in
            try store.gatherReduce(indices: UnsafeBufferPointer(start: nil, count: 0), weights: UnsafeBufferPointer(start: nil, count: 0),
                                   chunks: 1, targets: UnsafeBufferPointer(start: nil, count: 0), into: o)
            try store.rows([], into: UnsafeMutableBufferPointer(start: nil, count: 0))
        }
        #expect(out == [1, 1, 1, 1])
    }
}
