import CGatherKernel
import CLMDB
import Foundation
import _MemorySupport
import Synchronization

/// A store opened for reading: the manifest, the named tensors and the value table.
///
/// Opening checks LMDB's branch and leaf pages (BENCHMARKS.md: 4-7 ms for the 139,520 shards
/// of a 2^30-slot memory, about 60 ms from a cold page cache) and reads two small records.
/// Reads are thread-safe and lock-free on LMDB's side; decoded `zstd` shards go through a
/// shared ``cacheBytes`` budget, `raw` shards are read in place from the map.
///
/// ```swift
/// let store = try Store.open(at: "memory.pkm")
/// var out = [Float](repeating: 0, count: store.layout.dim)
/// try store.gatherReduce(indices: [3, 17], weights: [0.25, 0.75], into: &out)
/// ```
public final class Store: @unchecked Sendable {
    // Invariant: every stored property is immutable after init (a resident table's memory is
    // filled in init, before the store is shared); mutable state lives in the
    // thread-safe ShardCache, AtomicBitmap and ReaderContextPool.
    public let path: String
    public let manifest: Manifest
    /// Import progress at the time of opening.
    public let state: ImportState
    /// How long `open` took (including the load of a resident table). Set in init only.
    public private(set) var openDuration: Duration
    let env: Environment
    let cache: ShardCache
    let dictionary: ZstdDictionary?
    let checkedRawShards: AtomicBitmap
    /// Reads compressed blobs, and whole raw shards, from the file instead of the map (raw rows
    /// are read in place); nil when the map cannot be located.
    let blobs: BlobReader?
    /// Where raw blobs with row checksums (versions 3 and later) keep rows and checksums, or nibble
    /// blobs their slots; nil for older stores.
    let rawShards: RawShardLayout?
    /// The nibble table's code (tensor `__nibble_codes`); nil for other codecs.
    let nibbleCode: NibbleCode?
    /// Direct row access for complete raw tables of version 3 and later and complete nibble tables; nil otherwise.
    let rawRows: RawRowIndex?
    /// Whether the background check reads the pages of the table that are on storage (a raw or
    /// nibble table read in place, with checks in the background, whose rows fit in half the
    /// memory available at open): then the map is advised to read them in 2 MiB folios
    /// (``RawRowIndex/adviseLargeFolios()``), by reads and by the check alike.
    let readsWholeTable: Bool
    /// The whole table decoded into huge-page memory at open (``open(at:cacheBytes:checksRows:resident:)``):
    /// rows back to back, read there without checks; nil otherwise. Filled in init, read-only after.
    let residentRows: HugePageBuffer?
    /// A nibble table's slots, copied by the background check when they fit the cache budget; nil otherwise.
    let slotsInMemory: SlotsInMemory?
    let contexts: ReaderContextPool
    let decoded = Atomic<Int>(0)
    let rowScratch = RowScratchPool()
    /// Whether rows of complete raw tables are checked when first read (``open(at:cacheBytes:checksRows:)``).
    public let checksRows: Bool
    /// Whether a thread checks the table's groups in memory after the first read
    /// (``open(at:cacheBytes:checksRows:checksInBackground:resident:)``).
    public let checksInBackground: Bool
    /// That thread, once started (by the first read that finds every shard's address known).
    let backgroundCheck = Locked<BackgroundCheck?>(nil)
    /// Whether `backgroundCheck` was started (or never will be), read by every reduce.
    let backgroundCheckStarted = Atomic<Bool>(false)
    /// Whether the last batch sampled read from storage (``noteStorageReads(since:rows:)``): then batches prefetch.
    let readingFromDisk = Atomic<Bool>(true)
    /// Small batches since open, to sample `readingFromDisk` on every 16th (Store+Rows.swift).
    let smallBatches = Atomic<Int>(0)

    public var layout: TableLayout { manifest.table }
    /// Readers this store serves at once; more wait, so the environment's slots are never exhausted.
    public var readerSlotLimit: Int { contexts.maxConcurrent }
    public var isComplete: Bool { state.complete }
    /// Whether the table was loaded into memory at open (``open(at:cacheBytes:checksRows:resident:)``).
    public var isResident: Bool { residentRows != nil }
    /// Whether reduces read a nibble table's slots copied into memory (``SlotsInMemory``).
    public var readsSlotsInMemory: Bool { slotsInMemory?.base != nil }
    /// Rows that can be read: all of them once complete, the committed prefix otherwise.
    public var readableRows: Int { state.complete ? layout.rows : state.rowsCommitted }

    /// Opens the store at `path` read-only.
    /// - Parameters:
    ///   - cacheBytes: budget for decoded shards of zstd tables (0 disables the cache), and for a
    ///     nibble table's slots in memory: with the background check, a nibble table whose slots
    ///     fit it (and a quarter of the memory available) has them copied into memory once every
    ///     group is checked, and reduces read them there from then on (``SlotsInMemory``; the sums
    ///     keep their bits).
    ///   - checksRows: whether rows of complete raw tables are checked against their checksums
    ///     (the first time each is read after opening; Spec/GUARANTEES.md). Pass false only to
    ///     measure what the checks cost, or for a store `verify` has passed that nothing can
    ///     have changed since.
    ///   - checksInBackground: with `checksRows`, for tables read in place, check in a thread
    ///     of idle priority, from the first read on, every row group whose pages are in memory,
    ///     once, then, when the table's rows fit in half the memory available, the groups on
    ///     storage too (reading the table into the page cache), so that reads stop testing
    ///     whether each row's group was checked when all have been (Spec/GUARANTEES.md). Pass
    ///     false where the process reads the whole table itself (verifying, exporting,
    ///     compacting), reads little of it, or must read nothing it was not asked for.
    ///   - resident: decode and check the whole value table at open into anonymous memory in
    ///     huge pages (as much memory as the raw rows), and serve every row read from there: for
    ///     tables that fit in memory, reads at the memory system's limit whatever the codec
    ///     (BENCHMARKS.md, "Resident tables"). The store must be complete; opening then takes
    ///     as long as reading the table once.
    public static func open(at path: String, cacheBytes: Int = 256 << 20, checksRows: Bool = true, checksInBackground: Bool = true,
                            resident: Bool = false) throws -> Store {
        let clock = ContinuousClock()
        let start = clock.now
        let env = try OpenEnvironments.readOnly(path: path)
        return try Store(env: env, cacheBytes: cacheBytes, checksRows: checksRows, checksInBackground: checksInBackground,
                         resident: resident, started: start)
    }

    private init(env: Environment, cacheBytes: Int, checksRows: Bool, checksInBackground: Bool, resident: Bool,
                 started: ContinuousClock.Instant) throws {
        self.env = env
        self.checksRows = checksRows
        self.checksInBackground = checksInBackground
        path = env.path
        let (manifest, state, shardEntries) = try env.read { txn in
            let manifest = try StoredRecords.manifest(txn, env: env)
            return try (manifest, manifest.map { try StoredRecords.state(txn, env: env, version: $0.formatVersion) }, txn.count(env.shards))
        }
        guard let manifest else { throw StoreError.notAStore(path: env.path, reason: "it holds no manifest (its creation was interrupted)") }
        guard let state = state ?? nil else { throw StoreError.inconsistent("the import state record is missing") }
        self.manifest = manifest
        self.state = state
        let table = manifest.table
        guard state.rowsCommitted >= 0, state.rowsCommitted <= table.rows else {
            throw StoreError.inconsistent("\(state.rowsCommitted) rows committed, but the table has \(table.rows)")
        }
        guard !state.complete || state.rowsCommitted == table.rows else {
            throw StoreError.inconsistent("marked complete with \(state.rowsCommitted) of \(table.rows) rows")
        }
        let expectedShards = (state.rowsCommitted + table.rowsPerShard - 1) / table.rowsPerShard
        guard shardEntries == expectedShards else {
            throw StoreError.inconsistent("\(shardEntries) shards stored, the manifest and import state imply \(expectedShards)")
        }
        dictionary = table.dictionary ? try env.read { try StoredRecords.dictionary($0, env: env, version: manifest.formatVersion) } : nil
        cache = ShardCache(budget: table.codec == .raw ? 0 : cacheBytes, shardBytes: table.rowsPerShard * table.rowBytes)
        checkedRawShards = AtomicBitmap(count: table.shardCount)
        let version = manifest.formatVersion
        let nibbleCode = table.codec == .nibble ? try env.read { try StoredRecords.nibbleCode($0, env: env, version: version) } : nil
        self.nibbleCode = nibbleCode
        let slotBytes = NibbleCode.slotBytes(dim: table.dim, elementType: table.elementType)
        rawShards = table.codec == .nibble ? (version >= 7 ? .nibblePages(slotBytes: slotBytes) : .nibble(slotBytes: slotBytes))
            : version >= 3 ? RawShardLayout(version: version, rowBytes: table.rowBytes) : nil
        rawRows = state.complete ? try rawShards.flatMap {
            try RawRowIndex(env: env, layout: table, raw: $0, codes: nibbleCode, version: version)
        } : nil
        blobs = shardEntries == 0 ? nil : try env.read { txn in
            try withShardKey(0) { try txn.withValue(env.shards, key: $0) { $0.flatMap { BlobReader(env: env, locating: $0) } } }
        }
        contexts = ReaderContextPool(env: env)
        var buffer: HugePageBuffer?
        if resident {
            guard state.complete else { throw StoreError.incomplete(rowsCommitted: state.rowsCommitted, rows: table.rows) }
            let available = HugePageBuffer.availableBytes
            guard table.rawBytes <= available - available / 8 else {
                throw StoreError.invalidArgument("the table's \(table.rawBytes) bytes do not fit the \(available) bytes of memory available (less an eighth) to open it resident; open it mapped instead")
            }
            buffer = HugePageBuffer(count: table.rawBytes)
            guard buffer != nil else { throw StoreError.invalidArgument("cannot allocate \(table.rawBytes) bytes to hold the table in memory") }
        }
        residentRows = buffer
        // Only the kernel that sums bf16 slots as it decodes them reads the copy.
        slotsInMemory = table.codec == .nibble && rawRows != nil && checksRows && checksInBackground && !resident
            && table.elementType == .bf16 && pkm_nibble_gather_reduce_fits(table.dim, 1) != 0 && table.rows * slotBytes <= cacheBytes
            ? SlotsInMemory(rows: table.rows, slotBytes: slotBytes) : nil
        readsWholeTable = checksRows && checksInBackground && !resident && rawRows?.remembersChecks == true
            && table.rawBytes <= HugePageBuffer.availableBytes / 2
        // Before any read: a page read in alone would keep its 2 MiB span in 4 KiB pages.
        if readsWholeTable { rawRows?.adviseLargeFolios() }
        openDuration = .zero
        if let buffer { try fillResidentRows(buffer) }
        openDuration = ContinuousClock().now - started
    }

    /// Decodes (zstd) or checks and copies (raw) every shard into `buffer`, in order: `withShard`
    /// with `contiguous` hands out the rows back to back.
    private func fillResidentRows(_ buffer: HugePageBuffer) throws {
        let context = try contexts.acquire()
        defer { contexts.release(context) }
        for s in 0..<layout.shardCount {
            let rows = layout.rowRange(ofShard: s)
            try withShard(s, context: context, contiguous: true, caching: false) { shard in
                (buffer.base + rows.lowerBound * layout.rowBytes).copyMemory(from: shard.base, byteCount: rows.count * layout.rowBytes)
            }
        }
    }

    // MARK: Background check

    /// Starts the ``BackgroundCheck`` of a table read in place, once, when reads check rows and
    /// remember it, and every shard's address is known (learned by the first read). Costs a
    /// reduce one relaxed load once started.
    @inline(__always)
    func startBackgroundCheck() {
        guard !backgroundCheckStarted.load(ordering: .relaxed) else { return }
        guard checksRows && checksInBackground && residentRows == nil, let rawRows, rawRows.remembersChecks else {
            backgroundCheckStarted.store(true, ordering: .relaxed)
            return
        }
        guard rawRows.everyShardKnown else { return }
        backgroundCheck.withLock { check in
            guard !backgroundCheckStarted.load(ordering: .relaxed) else { return }
            check = BackgroundCheck(rawRows, readsStorage: readsWholeTable, copying: slotsInMemory)
            backgroundCheckStarted.store(true, ordering: .releasing)
        }
    }

    /// Waits, up to `timeout`, for the background check to finish its pass (returning at once
    /// when none was started); returns how many groups it checked, or nil when none ran or it
    /// has not finished. For benchmarks, which measure reads once a table served from memory has
    /// been checked, as a long-running reader's are.
    package func waitForBackgroundCheck(timeout: Duration) -> Int? {
        guard let check = backgroundCheck.withLock({ $0 }) else { return nil }
        let clock = ContinuousClock(), deadline = clock.now + timeout
        while !check.isFinished && clock.now < deadline { usleep(1000) }
        return check.groupsChecked
    }

    /// Whether every row of the value table has been checked since open, so that reads check
    /// nothing more: a resident table's at open; a raw or nibble table's once its reads and its
    /// background check have checked every row group; never a zstd table's, whose shards are
    /// checked each time they are decoded, nor one opened without row checks.
    public var everyRowChecked: Bool { checksRows && (residentRows != nil || rawRows?.everyGroupChecked == true) }

    /// Waits, up to `timeout`, for the background check to finish its pass (it starts with the
    /// first read; returns at once when none is running), and returns ``everyRowChecked``: for a
    /// server that reads its table once and waits before taking traffic, so that its latency from
    /// the first request is that of reads that test nothing. False when rows were left to the
    /// reads: pages on storage of a table larger than half the memory available, or a damaged
    /// group.
    public func waitUntilEveryRowChecked(timeout: Duration) -> Bool {
        _ = waitForBackgroundCheck(timeout: timeout)
        return everyRowChecked
    }

    // MARK: Statistics

    /// Bytes of shards decoded (decompressed) since open.
    public var bytesDecoded: Int { decoded.load(ordering: .relaxed) }

    /// Decoded-shard cache figures since open.
    public var cacheStatistics: (hits: Int, misses: Int, bytes: Int, budget: Int) {
        let s = cache.statistics
        return (s.hits, s.misses, s.bytes, cache.budget)
    }
}
