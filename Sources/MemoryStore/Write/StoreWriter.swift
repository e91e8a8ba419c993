import Foundation
import _MemorySupport

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
    public internal(set) var rowsCommitted: Int
    var pending: [UInt8] = []
    var options: Options
    let env: Environment
    var dictionary: ZstdDictionary?
    /// A nibble table's code: trained on the first commit's rows, stored with them.
    var nibbleCode: NibbleCode?
    var workers: [ShardEncoder] = []
    /// Whether every row is stored and the store marked complete: nothing more can be written.
    /// Set by `finish`, whose commit must stay the last one.
    public internal(set) var isComplete = false

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
        guard manifest.isWritable else {
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
    static func readHead(_ path: String) throws -> (Manifest?, ImportState?) {
        let probe = try OpenEnvironments.readOnly(path: path)
        return try probe.read { txn in
            let manifest = try StoredRecords.manifest(txn, env: probe)
            return try (manifest, manifest.map { try StoredRecords.state(txn, env: probe, version: $0.formatVersion) } ?? nil)
        }
    }

    init(path: String, layout: TableLayout, metadata: [String: String], options: Options, fresh: Bool) throws {
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
                (try StoredRecords.state(txn, env: env, version: Manifest.currentVersion), txn.count(env.shards))
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
            dictionary = try env.read { try StoredRecords.dictionary($0, env: env, version: Manifest.currentVersion) }
        }
        if !fresh, layout.codec == .nibble {
            nibbleCode = try env.read { try StoredRecords.nibbleCode($0, env: env, version: Manifest.currentVersion) }
        }
    }
}
