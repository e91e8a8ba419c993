import Foundation
import MemoryBenchmarks
@testable import MemoryStore
import _MemorySupport

/// Writes a synthetic table and returns its stored bytes.
@discardableResult
func writeTable(_ path: String, _ layout: TableLayout, seed: UInt64 = 1, options: StoreWriter.Options = .init()) throws -> [UInt8] {
    let bytes = SyntheticRows(seed: seed, dim: layout.dim).bytes(0..<layout.rows, as: layout.elementType)
    let writer = try StoreWriter.create(at: path, layout: layout, options: options)
    try writer.append(bytes)
    try writer.finish()
    return bytes
}

/// The batched `store.gatherReduce` into a fresh output of `outputs` rows.
func batchedReduce(_ store: Store, indices: [Int], weights: [Float], chunks: Int, targets: [Int], outputs: Int) throws -> [Float] {
    var out = [Float](repeating: 0, count: outputs * store.layout.dim)
    try store.gatherReduce(indices: indices, weights: weights, chunks: chunks, targets: targets, into: &out)
    return out
}

/// Rewrites the blob of shard `index` through `edit`, bypassing the writer.
func tamperShard(_ path: String, _ index: Int, _ edit: (inout [UInt8]) -> Void) throws {
    let env = try Environment(path: path, readOnly: false)
    try env.write { txn in
        try withShardKey(index) { key in
            guard var blob = try txn.get(env.shards, key: key) else { return }
            edit(&blob)
            try blob.withUnsafeBytes { try txn.put(env.shards, key: key, value: $0) }
        }
    }
}

/// Replaces a `meta` record with `value`, sealed as a writer would.
func rewriteMeta(_ path: String, _ key: String, _ value: String) throws {
    let env = try Environment(path: path, readOnly: false)
    try env.write { txn in
        try withName(key) { k in try MetaRecord.seal(Array(value.utf8), key: key).withUnsafeBytes { try txn.put(env.meta, key: k, value: $0) } }
    }
}
