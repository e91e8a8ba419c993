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
        let claim = PathClaim(path)  // before the file is probed (see PathClaim)
        defer { withExtendedLifetime(claim) {} }
        do {
            return try createUnlessMade(at: path, layout: layout, metadata: metadata, options: options)
        } catch is MadeMeanwhile {
            throw StoreError.invalidArgument("a store already exists at '\(path)' (another process made it while this one waited)")
        }
    }

    /// Why a writer of the store at `path` opened now would wait (``WriterLock``), in any process:
    /// nil when it would not.
    public static func wouldWait(at path: String) -> WriterWait? {
        switch WriterLock.holder(storeFilePath(path)) {
        case .writer: .writer
        case .locklessReader: .locklessReader
        case nil: nil
        }
    }

    /// What a writer of a store waits for.
    public enum WriterWait: Sendable {
        /// An import, a create, a layer change or an in-place compaction of the store.
        case writer
        /// A reader that cannot open the store's lock file (another user's), held until it closes the store.
        case locklessReader
    }

    /// Another writer made the store while this one waited for it (``WriterLock``).
    private struct MadeMeanwhile: Error {}

    /// `create`, throwing MadeMeanwhile when another process made the store first.
    private static func createUnlessMade(at path: String, layout: TableLayout, metadata: [String: String],
                                         options: Options) throws -> StoreWriter {
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
        let claim = PathClaim(path)  // before the file is probed (see PathClaim)
        defer { withExtendedLifetime(claim) {} }
        let (found, state) = FileManager.default.fileExists(atPath: path) && !Environment.isEmptyEnvironment(at: path) ? try readHead(path) : (nil, nil)
        guard let manifest = found else {
            do {
                return try createUnlessMade(at: path, layout: layout, metadata: metadata, options: options)
            } catch is MadeMeanwhile {
                return try createOrResume(at: path, layout: layout, metadata: metadata, options: options)  // now there: check it
            }
        }
        guard manifest.isWritable else {
            throw StoreError.layoutMismatch("the store at '\(path)' was started in format version \(manifest.formatVersion); this memtool writes \(Manifest.currentVersion)")
        }
        guard manifest.table == layout else {
            throw StoreError.layoutMismatch("the store at '\(path)' was started with \(describe(manifest.table)), this import has \(describe(layout))")
        }
        guard let state else { throw StoreError.inconsistent("the import state record is missing") }
        guard manifest.metadata == metadata else {
            // An unfinished one too: resuming it would add this source's rows to the other's.
            throw StoreError.invalidArgument(state.complete
                ? "a complete store from another source (\(manifest.metadata)) is already at '\(path)'"
                : "an unfinished store from another source (\(manifest.metadata)) is at '\(path)' (still being written, or interrupted): finish it with the command that started it, or remove it")
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

    /// - Parameters:
    ///   - fresh: make the store (none may be there by the time this writer holds the file);
    ///     otherwise open it, as found with `layout` and `metadata` before the writer held it.
    ///   - editing: the writer changes layers only: it takes the store's layout as it finds it once
    ///     it holds the file (a compaction may have rewritten it meanwhile), instead of requiring
    ///     `layout` and `metadata`.
    init(path: String, layout: TableLayout, metadata: [String: String], options: Options, fresh: Bool, editing: Bool = false) throws {
        // Two environments of one file in a process break LMDB's locks (see OpenEnvironments).
        guard !OpenEnvironments.isOpen(path: path) else {
            throw StoreError.invalidArgument("'\(path)' is open for reading in this process; release its Store objects before writing it")
        }
        self.path = path
        self.options = options
        let existing = fileSize(atPath: path)
        let mapSize = options.initialMapSize ?? max(64 << 20, layout.rawBytes + layout.rawBytes / 4 + (64 << 20))
        let env = try Environment(path: path, readOnly: false, create: fresh, mapSize: max(mapSize, existing + (16 << 20)))
        self.env = env
        // What was found before this writer held the store (WriterLock) may have changed while it
        // waited: another writer may have made it or finished it, a compaction rewritten it.
        let found = try env.read { try StoredRecords.manifest($0, env: env) }
        if fresh, found != nil { throw MadeMeanwhile() }
        if !fresh, !editing, let found, found.table != layout || found.metadata != metadata {
            throw StoreError.invalidArgument("the store at '\(path)' was changed by another process while this one waited for it (it now holds \(found.metadata)); run the command again")
        }
        self.layout = editing ? found?.table ?? layout : layout
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
            let expected = isComplete ? self.layout.shardCount : rowsCommitted / self.layout.rowsPerShard
            guard shards == expected, isComplete || rowsCommitted % self.layout.rowsPerShard == 0 else {
                throw StoreError.inconsistent("\(shards) shards stored for \(rowsCommitted) committed rows")
            }
        }
        workers = (0..<max(1, options.threads)).map { _ in ShardEncoder() }
        if !fresh, self.layout.dictionary, rowsCommitted > 0 {
            // Through the writer's own environment: opening a second one on the file and closing
            // it would drop this process's POSIX locks on it (Spec/GUARANTEES.md, concurrency).
            dictionary = try env.read { try StoredRecords.dictionary($0, env: env, version: Manifest.currentVersion) }
        }
        if !fresh, self.layout.codec == .nibble {
            nibbleCode = try env.read { try StoredRecords.nibbleCode($0, env: env, version: Manifest.currentVersion) }
        }
    }
}
