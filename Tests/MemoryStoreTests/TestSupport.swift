import Foundation
@testable import MemoryStore

/// A fresh directory removed when the value is released.
final class TemporaryDirectory {
    let path: String
    init() {
        path = (NSTemporaryDirectory() as NSString).appendingPathComponent("pkm-tests-\(UUID().uuidString)")
        try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }
    deinit { try? FileManager.default.removeItem(atPath: path) }
    func file(_ name: String) -> String { (path as NSString).appendingPathComponent(name) }
}

/// Writes a synthetic table and returns its stored bytes.
@discardableResult
func writeTable(_ path: String, _ layout: TableLayout, seed: UInt64 = 1, options: StoreWriter.Options = .init()) throws -> [UInt8] {
    let bytes = SyntheticRows(seed: seed, dim: layout.dim).bytes(0..<layout.rows, as: layout.elementType)
    let writer = try StoreWriter.create(at: path, layout: layout, options: options)
    try writer.append(bytes)
    try writer.finish()
    return bytes
}

/// Row `i` of stored bytes converted to Float by an independent path (Foundation/Swift conversions).
func referenceRow(_ bytes: [UInt8], _ i: Int, dim: Int, type: ElementType) -> [Float] {
    (0..<dim).map { j in
        let k = i * dim + j
        switch type {
        case .f32:
            return Float(bitPattern: UInt32(bytes[4 * k]) | UInt32(bytes[4 * k + 1]) << 8 | UInt32(bytes[4 * k + 2]) << 16 | UInt32(bytes[4 * k + 3]) << 24)
        case .f16:
            return Float(Float16(bitPattern: UInt16(bytes[2 * k]) | UInt16(bytes[2 * k + 1]) << 8))
        case .bf16:
            return Float(bitPattern: (UInt32(bytes[2 * k]) | UInt32(bytes[2 * k + 1]) << 8) << 16)
        }
    }
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
