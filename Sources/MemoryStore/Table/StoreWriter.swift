import _MemorySupport
import Dispatch
import Foundation

/// Streams a value table into a new store: shards are compressed on all cores and appended in
/// key order (`MDB_APPEND`), and each batch commits together with the import state, so a
/// process killed at any point leaves a store that opens and holds a whole-shard prefix.
///
/// ```swift
/// let writer = try StoreWriter.createOrResume(at: "m.pkm", layout: layout)
/// // feed rows from writer.rowsCommitted on
/// try writer.append(rowBytes)
/// try writer.finish()
/// ```
public final class StoreWriter {
    public struct Options: Sendable {
        /// Worker threads compressing shards.
        public var threads = ProcessInfo.processInfo.activeProcessorCount
        /// Raw bytes of rows per write transaction.
        public var batchBytes = 64 << 20
        /// The initial LMDB map size; the map grows whenever it fills.
        public var initialMapSize: Int?
        /// Called after each commit with (rows committed, rows in the table).
        public var progress: (@Sendable (Int, Int) -> Void)?
        /// The manifest's `createdBy`: the program and version creating the store.
        public var createdBy = "MemoryStore"

        public init() {}
    }

    public let path: String
    public let layout: TableLayout
    /// Rows durably stored; a resumed import continues from here.
    public private(set) var rowsCommitted: Int
    private var pending: [UInt8] = []
    private var options: Options
    private let env: Environment
    private var dictionary: ZstdDictionary?
    private var workers: [ShardEncoder] = []
    /// Whether every row is stored and the store marked complete: nothing more can be written.
    /// Set by `finish`, whose commit must stay the last one.
    public private(set) var isComplete = false

    /// Creates a new store at `path`; fails when a store is already there.
    public static func create(at path: String, layout: TableLayout, metadata: [String: String] = [:],
                              options: Options = Options()) throws -> StoreWriter {
        try layout.validate()
        if FileManager.default.fileExists(atPath: path) && !Environment.isEmptyEnvironment(at: path) {
            if try readHead(path).0 != nil {
                throw StoreError.invalidArgument("a store already exists at '\(path)'")
            }
            // A file without a manifest is a creation that was killed before its first commit: start over.
        }
        return try StoreWriter(path: path, layout: layout, metadata: metadata, options: options, fresh: true)
    }

    /// Opens an incomplete store with the same layout to continue its import, or creates it.
    /// A store already completed with the same layout and metadata gives a writer that
    /// ``isComplete`` (re-running a finished import is a no-op); any other store throws.
    public static func createOrResume(at path: String, layout: TableLayout, metadata: [String: String] = [:],
                                      options: Options = Options()) throws -> StoreWriter {
        try layout.validate()
        guard FileManager.default.fileExists(atPath: path), !Environment.isEmptyEnvironment(at: path) else {
            return try create(at: path, layout: layout, metadata: metadata, options: options)
        }
        let (manifest, state) = try readHead(path)
        guard let manifest else { return try create(at: path, layout: layout, metadata: metadata, options: options) }
        guard manifest.formatVersion == Manifest.currentVersion else {
            throw StoreError.layoutMismatch("the store at '\(path)' was started in format version \(manifest.formatVersion); this memtool writes \(Manifest.currentVersion)")
        }
        guard manifest.table == layout else {
            throw StoreError.layoutMismatch("the store at '\(path)' was started with \(describe(manifest.table)), this import has \(describe(layout))")
        }
        guard let state else { throw StoreError.inconsistent("the import state record is missing") }
        guard !state.complete || manifest.metadata == metadata else {
            throw StoreError.invalidArgument("a complete store from another source (\(manifest.metadata)) is already at '\(path)'")
        }
        return try StoreWriter(path: path, layout: layout, metadata: metadata, options: options, fresh: false)
    }

    /// The manifest and import state of the store at `path`; its environment is closed on return.
    private static func readHead(_ path: String) throws -> (Manifest?, ImportState?) {
        let probe = try OpenEnvironments.readOnly(path: path)
        return try probe.read { txn in
            let manifest = try Store.readManifest(txn, env: probe)
            return try (manifest, manifest.map { try Store.readState(txn, env: probe, version: $0.formatVersion) } ?? nil)
        }
    }

    private init(path: String, layout: TableLayout, metadata: [String: String], options: Options, fresh: Bool) throws {
        // Two environments of one file in a process break LMDB's locks (see OpenEnvironments).
        guard !OpenEnvironments.isOpen(path: path) else {
            throw StoreError.invalidArgument("'\(path)' is open for reading in this process; release its Store objects before writing it")
        }
        self.path = path
        self.layout = layout
        self.options = options
        let existing = fileSize(atPath: path)
        let mapSize = options.initialMapSize ?? max(64 << 20, layout.rawBytes + layout.rawBytes / 4 + (64 << 20))
        let env = try Environment(path: path, readOnly: false, create: fresh, mapSize: max(mapSize, existing + (16 << 20)))
        self.env = env
        if fresh {
            let manifest = MetaRecord.seal(try Array(Manifest(table: layout, createdBy: options.createdBy, metadata: metadata).encoded()), key: "manifest")
            let state = MetaRecord.seal(try Array(JSONEncoder().encode(ImportState(rowsCommitted: 0, complete: false))), key: "state")
            try env.write { txn in
                try withName("manifest") { key in try manifest.withUnsafeBytes { try txn.put(env.meta, key: key, value: $0) } }
                try withName("state") { key in try state.withUnsafeBytes { try txn.put(env.meta, key: key, value: $0) } }
                try Self.updateCatalog(txn, env: env) { _ in }
            }
            rowsCommitted = 0
        } else {
            let (state, shards) = try env.read { txn in
                (try Store.readState(txn, env: env, version: Manifest.currentVersion), txn.count(env.shards))
            }
            rowsCommitted = state?.rowsCommitted ?? 0
            isComplete = state?.complete ?? false
            let expected = isComplete ? layout.shardCount : rowsCommitted / layout.rowsPerShard
            guard shards == expected, isComplete || rowsCommitted % layout.rowsPerShard == 0 else {
                throw StoreError.inconsistent("\(shards) shards stored for \(rowsCommitted) committed rows")
            }
        }
        workers = (0..<max(1, options.threads)).map { _ in ShardEncoder() }
        if !fresh, layout.dictionary, rowsCommitted > 0 {
            // Through the writer's own environment: opening a second one on the file and closing
            // it would drop this process's POSIX locks on it (Spec/GUARANTEES.md, concurrency).
            dictionary = try env.read { try Store.readDictionary($0, env: env, version: Manifest.currentVersion) }
        }
    }

    /// Appends whole rows (little-endian elements of the layout's type), `rows.count` a multiple of the row size.
    public func append(_ rows: UnsafeRawBufferPointer) throws {
        try requireIncomplete()
        let rowBytes = layout.rowBytes
        guard rows.count % rowBytes == 0 else {
            throw StoreError.invalidArgument("\(rows.count) bytes is not a whole number of \(rowBytes)-byte rows")
        }
        let incoming = rows.count / rowBytes
        guard rowsCommitted + pending.count / rowBytes + incoming <= layout.rows else {
            throw StoreError.invalidArgument("more rows than the \(layout.rows) the layout declares")
        }
        var shardsPerBatch = max(1, options.batchBytes / (layout.rowsPerShard * rowBytes))
        // The first commit of a store with a dictionary trains it: give it enough shards.
        if layout.dictionary && rowsCommitted == 0 { shardsPerBatch = max(shardsPerBatch, Self.dictionaryTrainingShards) }
        let batch = shardsPerBatch * layout.rowsPerShard * rowBytes
        var offset = 0
        while offset < rows.count {
            let take = min(batch - pending.count, rows.count - offset)
            pending.append(contentsOf: UnsafeRawBufferPointer(rebasing: rows[offset..<(offset + take)]))
            offset += take
            if pending.count == batch { try flush(final: false) }
        }
    }

    /// Convenience for arrays of rows in the stored element type.
    public func append<T>(_ values: [T]) throws {
        try values.withUnsafeBytes { try append($0) }
    }

    /// Stores (or replaces) a named tensor.
    public func putTensor(_ name: String, _ tensor: Tensor) throws {
        guard !name.isEmpty, name.utf8.count <= 400 else {
            throw StoreError.invalidArgument("tensor names must be 1 to 400 bytes of UTF-8")
        }
        try requireIncomplete()
        try commitWithGrowth { txn in try self.putTensor(name, tensor, txn) }
    }

    /// Stores (or replaces) a `meta` record such as `retrieval`; `manifest` and `state` belong to the writer.
    public func putRecord(_ name: String, _ bytes: [UInt8]) throws {
        guard !Catalog.reservedRecords.contains(name), !name.isEmpty, name.utf8.count <= 400 else {
            throw StoreError.invalidArgument("'\(name)' cannot be written as a meta record")
        }
        try requireIncomplete()
        try commitWithGrowth { txn in
            try withName(name) { key in try MetaRecord.seal(bytes, key: name).withUnsafeBytes { try txn.put(env.meta, key: key, value: $0) } }
            try Self.updateCatalog(txn, env: env) { if !$0.records.contains(name) { $0.records = ($0.records + [name]).sorted() } }
        }
    }

    /// Writes the remaining rows and marks the store complete; throws if rows are missing.
    public func finish() throws {
        let total = rowsCommitted + pending.count / layout.rowBytes
        guard total == layout.rows else {
            throw StoreError.invalidArgument("the import supplied \(total) rows, the layout declares \(layout.rows)")
        }
        try requireIncomplete()
        try flush(final: true)
        isComplete = true
    }

    private func requireIncomplete() throws {
        guard !isComplete else { throw StoreError.invalidArgument("the store at '\(path)' is complete; nothing more can be written") }
    }

    /// Compresses the pending rows on all workers and commits them with the new import state.
    private func flush(final: Bool) throws {
        let rowBytes = layout.rowBytes
        let shardBytes = layout.rowsPerShard * rowBytes
        let firstShard = rowsCommitted / layout.rowsPerShard
        let count = (pending.count + shardBytes - 1) / shardBytes
        // Trained once, on the first commit (the dictionary is stored with shard 0). A table too
        // small to train on is compressed without one (its shards leave flag bit 0 clear).
        if layout.dictionary && dictionary == nil && firstShard == 0 && count > 0 { dictionary = try? trainDictionary() }
        nonisolated(unsafe) var blobs = [[UInt8]](repeating: [], count: count)
        let table = layout, dict = dictionary
        nonisolated(unsafe) let workers = self.workers
        try pending.withUnsafeBytes { (source: UnsafeRawBufferPointer) in
            nonisolated(unsafe) let source = source
            try blobs.withUnsafeMutableBufferPointer { out in
                nonisolated(unsafe) let out = out
                DispatchQueue.concurrentPerform(iterations: workers.count) { w in
                    for s in stride(from: w, to: count, by: workers.count) {
                        let range = (s * shardBytes)..<min(source.count, (s + 1) * shardBytes)
                        out[s] = workers[w].encode(UnsafeRawBufferPointer(rebasing: source[range]), shard: firstShard + s,
                                                   layout: table, dictionary: dict)
                    }
                }
                if out.contains(where: \.isEmpty) && count > 0 { throw StoreError.codec("a shard failed to encode") }
            }
        }
        let newRows = rowsCommitted + pending.count / rowBytes
        let complete = final && newRows == layout.rows
        try commitWithGrowth { txn in
            if let dict = self.dictionary, firstShard == 0 {
                try self.putTensor(Store.dictionaryTensor, Tensor(dtype: .u8, shape: [dict.bytes.count], bytes: dict.bytes), txn)
            }
            for (s, blob) in blobs.enumerated() {
                try withShardKey(firstShard + s) { key in try blob.withUnsafeBytes { try txn.put(env.shards, key: key, value: $0, append: true) } }
            }
            try self.putState(ImportState(rowsCommitted: newRows, complete: complete), txn)
        }
        rowsCommitted = newRows
        pending.removeAll(keepingCapacity: true)
        options.progress?(rowsCommitted, layout.rows)
    }

    /// Shards the first commit holds when the store trains a dictionary on them.
    static let dictionaryTrainingShards = 64

    /// A zstd dictionary trained on the byte planes of the first pending shards.
    private func trainDictionary() throws -> ZstdDictionary {
        let shardBytes = layout.rowsPerShard * layout.rowBytes
        let s = layout.elementType.size
        var samples: [[UInt8]] = []
        pending.withUnsafeBytes { src in
            var offset = 0
            while offset < src.count && samples.count < 64 {
                let size = min(shardBytes, src.count - offset)
                let n = size / s
                var planes = [UInt8](repeating: 0, count: size)
                planes.withUnsafeMutableBytes { BytePlanes.split(src.baseAddress! + offset, count: n, elementSize: s, into: $0.baseAddress!) }
                for p in 0..<s { samples.append(Array(planes[(p * n)..<((p + 1) * n)])) }
                offset += shardBytes
            }
        }
        return try ZstdDictionary(bytes: ZstdDictionary.train(samples: samples, capacity: 16 << 10))
    }

    /// Stores a tensor record and its catalog entry in `txn`.
    private func putTensor(_ name: String, _ tensor: Tensor, _ txn: WriteTransaction) throws {
        let record = tensor.record(name: name)
        try withName(name) { key in try record.withUnsafeBytes { try txn.put(env.tensors, key: key, value: $0) } }
        let checksum = record.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 8, as: UInt64.self).littleEndian }
        try Self.updateCatalog(txn, env: env) { $0.tensors[name] = checksum }
    }

    /// Rewrites `meta/catalog` in `txn` with `change` applied (an empty catalog when there is none yet).
    private static func updateCatalog(_ txn: WriteTransaction, env: Environment, _ change: (inout Catalog) -> Void) throws {
        var catalog = Catalog()
        if let stored = try withName(Catalog.key, { try txn.get(env.meta, key: $0) }) {
            catalog = try stored.withUnsafeBytes { try Catalog.decode(MetaRecord.payload($0, key: Catalog.key, version: Manifest.currentVersion)) }
        }
        change(&catalog)
        let sealed = MetaRecord.seal(try catalog.encoded(), key: Catalog.key)
        try withName(Catalog.key) { key in try sealed.withUnsafeBytes { try txn.put(env.meta, key: key, value: $0) } }
    }

    private func putState(_ state: ImportState, _ txn: WriteTransaction) throws {
        let bytes = MetaRecord.seal(Array(try JSONEncoder().encode(state)), key: "state")
        try withName("state") { key in try bytes.withUnsafeBytes { try txn.put(env.meta, key: key, value: $0) } }
    }

    /// Runs a write transaction, doubling the map and retrying whenever LMDB says it is full.
    private func commitWithGrowth(_ body: (WriteTransaction) throws -> Void) throws {
        while true {
            do {
                try env.write(body)
                return
            } catch LMDBError.mapFull {
                let size = env.info.mapSize
                try env.setMapSize(size * 2)
            } catch where isOutOfSpace(error, near: path, needed: 2 * options.batchBytes + (16 << 20)) {
                throw StoreError.diskFull(path: path, freeBytes: freeBytes(near: path) ?? 0,
                                          kept: "the store keeps its last commit (\(rowsCommitted) rows); free space and run the same command to resume")
            }
        }
    }
}

/// One worker's compression context and scratch space.
final class ShardEncoder {
    private var compressors: [Int: ZstdCompressor] = [:]
    private var scratch: [UInt8] = []

    func encode(_ rows: UnsafeRawBufferPointer, shard: Int, layout: TableLayout, dictionary: ZstdDictionary?) -> [UInt8] {
        var compressor: ZstdCompressor?
        if layout.codec == .zstd {
            compressor = compressors[layout.level] ?? ZstdCompressor(level: layout.level, dictionary: dictionary)
            compressors[layout.level] = compressor
        }
        return ShardCodec.encode(rows, shard: shard, layout: layout, compressor: compressor, scratch: &scratch)
    }
}

func describe(_ t: TableLayout) -> String {
    "\(t.rows) rows x \(t.dim) \(t.elementType.rawValue), \(t.rowsPerShard) rows per shard, codec \(t.codec.rawValue) level \(t.level)\(t.dictionary ? " with dictionary" : "")"
}
