import CLMDB
import Foundation
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
    // Invariant: every stored property is immutable after init; mutable state lives in the
    // thread-safe ShardCache, AtomicBitmap and ReaderContextPool.
    public let path: String
    public let manifest: Manifest
    /// Import progress at the time of opening.
    public let state: ImportState
    /// How long `open` took.
    public let openDuration: Duration
    let env: Environment
    let cache: ShardCache
    let dictionary: ZstdDictionary?
    private let checkedRawShards: AtomicBitmap
    /// Reads compressed blobs, and whole raw shards, from the file instead of the map (raw rows
    /// are read in place); nil when the map cannot be located.
    private let blobs: BlobReader?
    /// Direct row access for complete raw tables of version 3; nil otherwise.
    private let rawRows: RawRowIndex?
    private let contexts: ReaderContextPool
    private let decoded = Atomic<Int>(0)
    /// Whether a recent batch read from storage (see `storageReads`): then batches prefetch.
    private let readingFromDisk = Atomic<Bool>(true)

    public var layout: TableLayout { manifest.table }
    /// Readers this store serves at once; more wait, so the environment's slots are never exhausted.
    public var readerSlotLimit: Int { contexts.maxConcurrent }
    public var isComplete: Bool { state.complete }
    /// Rows that can be read: all of them once complete, the committed prefix otherwise.
    public var readableRows: Int { state.complete ? layout.rows : state.rowsCommitted }

    static let dictionaryTensor = "__zstd_dictionary"

    /// Opens the store at `path` read-only.
    /// - Parameter cacheBytes: budget for decoded shards of compressed tables (0 disables the cache).
    public static func open(at path: String, cacheBytes: Int = 256 << 20) throws -> Store {
        let clock = ContinuousClock()
        let start = clock.now
        let env = try OpenEnvironments.readOnly(path: path)
        return try Store(env: env, cacheBytes: cacheBytes, started: start)
    }

    private init(env: Environment, cacheBytes: Int, started: ContinuousClock.Instant) throws {
        self.env = env
        path = env.path
        let (manifest, state, shardEntries) = try env.read { txn in
            let manifest = try Self.readManifest(txn, env: env)
            return try (manifest, manifest.map { try Self.readState(txn, env: env, version: $0.formatVersion) }, txn.count(env.shards))
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
        dictionary = table.dictionary ? try Self.readDictionary(env: env, version: manifest.formatVersion) : nil
        cache = ShardCache(budget: table.codec == .raw ? 0 : cacheBytes, shardBytes: table.rowsPerShard * table.rowBytes)
        checkedRawShards = AtomicBitmap(count: table.shardCount)
        rawRows = state.complete && manifest.formatVersion >= 3 ? try RawRowIndex(env: env, layout: table) : nil
        blobs = shardEntries == 0 ? nil : try env.read { txn in
            try withShardKey(0) { try txn.withValue(env.shards, key: $0) { $0.flatMap { BlobReader(env: env, locating: $0) } } }
        }
        contexts = ReaderContextPool(env: env)
        openDuration = ContinuousClock().now - started
    }

    /// The trained zstd dictionary the manifest names (tensor ``dictionaryTensor``), read through
    /// `env`: a writer resuming an import reads it through its own environment.
    static func readDictionary(env: Environment, version: Int) throws -> ZstdDictionary {
        let record = try env.read { txn in
            try withName(dictionaryTensor) { try txn.withValue(env.tensors, key: $0) { $0.map(Array.init) } }
        }
        guard let record else { throw StoreError.inconsistent("the manifest names a zstd dictionary the store does not hold") }
        let tensor = try record.withUnsafeBytes { try Tensor.decode(record: $0, name: dictionaryTensor, version: version) }
        return try ZstdDictionary(bytes: tensor.bytes)
    }

    static func readManifest(_ txn: ReadTransaction, env: Environment) throws -> Manifest? {
        try withName("manifest") { key in
            try txn.withValue(env.meta, key: key) { bytes in try bytes.map { try Manifest.decodeRecord($0) } }
        }
    }

    static func readState(_ txn: ReadTransaction, env: Environment, version: Int) throws -> ImportState? {
        try withName("state") { key in
            try txn.withValue(env.meta, key: key) { bytes in
                try bytes.map {
                    let json = try MetaRecord.payload($0, key: "state", version: version)
                    do { return try JSONDecoder().decode(ImportState.self, from: Data(json)) } catch {
                        throw StoreError.inconsistent("the import state record is not valid JSON")
                    }
                }
            }
        }
    }

    // MARK: Records

    /// The `meta` record `name` (for example `retrieval`), or nil when absent.
    public func record(named name: String) throws -> [UInt8]? {
        try env.read { txn in
            let json = try withName(name) { key in
                try txn.withValue(env.meta, key: key) { bytes in
                    try bytes.map { Array(try MetaRecord.payload($0, key: name, version: manifest.formatVersion)) }
                }
            }
            if json == nil, try catalog(txn)?.records.contains(name) == true {
                throw StoreError.corruptRecord(name: name, reason: "the catalog lists it, but it is missing")
            }
            return json
        }
    }

    /// The store's catalog (format version 3 on; nil before): the authoritative list of its
    /// tensors and records, which LMDB's unchecked B-tree pages could otherwise hide.
    func catalog(_ txn: ReadTransaction) throws -> Catalog? {
        guard manifest.formatVersion >= 3 else { return nil }
        return try withName(Catalog.key) { key in
            try txn.withValue(env.meta, key: key) { bytes in
                guard let bytes else { throw StoreError.corruptRecord(name: Catalog.key, reason: "it is missing") }
                return try Catalog.decode(MetaRecord.payload(bytes, key: Catalog.key, version: manifest.formatVersion))
            }
        }
    }

    // MARK: Tensors

    /// Names of the tensors in the store, in key order (from the catalog, from version 3).
    public func tensorNames() throws -> [String] {
        if let catalog = try env.read({ try catalog($0) }) { return catalog.tensors.keys.sorted { Array($0.utf8).lexicographicallyPrecedes($1.utf8) } }
        return try keys(of: env.tensors)
    }

    /// Names of the `meta` records other than the manifest, import state and catalog (from the
    /// catalog, from version 3).
    func recordNames() throws -> [String] {
        if let catalog = try env.read({ try catalog($0) }) { return catalog.records }
        return try keys(of: env.meta).filter { !Catalog.reservedRecords.contains($0) }
    }

    /// The keys of database `dbi` as UTF-8 names, in key order.
    func keys(of dbi: MDB_dbi) throws -> [String] {
        try env.read { txn in
            var cursor: OpaquePointer?
            try check(mdb_cursor_open(txn.handle, dbi, &cursor))
            defer { mdb_cursor_close(cursor) }
            var names: [String] = []
            var k = MDB_val(), v = MDB_val()
            var op = MDB_FIRST
            while mdb_cursor_get(cursor, &k, &v, op) == 0 {
                names.append(String(decoding: UnsafeRawBufferPointer(start: k.mv_data, count: k.mv_size), as: UTF8.self))
                op = MDB_NEXT
            }
            return names
        }
    }

    /// The tensor stored under `name`, checksum-verified.
    public func tensor(named name: String) throws -> Tensor {
        try env.read { txn in
            try withName(name) { key in
                let catalog = try catalog(txn)
                let listed = catalog?.tensors[name]
                return try txn.withValue(env.tensors, key: key) { record in
                    guard let record else {
                        if listed != nil { throw StoreError.corruptTensor(name: name, reason: "the catalog lists it, but it is missing") }
                        throw StoreError.tensorNotFound(name)
                    }
                    let tensor = try Tensor.decode(record: record, name: name, version: manifest.formatVersion)
                    if catalog != nil {
                        guard let listed else { throw StoreError.corruptTensor(name: name, reason: "it is not in the catalog") }
                        guard listed == record.loadUnaligned(fromByteOffset: 8, as: UInt64.self).littleEndian else {
                            throw StoreError.corruptTensor(name: name, reason: "it is not the version the catalog lists")
                        }
                    }
                    return tensor
                }
            }
        }
    }

    /// Whether a tensor named `name` exists.
    public func hasTensor(_ name: String) throws -> Bool {
        try env.read { txn in try withName(name) { try txn.withValue(env.tensors, key: $0) { $0 != nil } } }
    }

    // MARK: Rows

    /// Row `index` as Float.
    public func row(_ index: Int) throws -> [Float] {
        var out = [Float](repeating: 0, count: layout.dim)
        try out.withUnsafeMutableBufferPointer { try row(index, into: $0) }
        return out
    }

    /// Decodes row `index` into the first `dim` floats of `output`, without allocating.
    public func row(_ index: Int, into output: UnsafeMutableBufferPointer<Float>) throws {
        let dim = layout.dim
        guard output.count >= dim else { throw StoreError.invalidArgument("output holds \(output.count) floats, a row has \(dim)") }
        guard index >= 0, index < readableRows else {
            if index >= readableRows && index < layout.rows { throw StoreError.incomplete(rowsCommitted: state.rowsCommitted, rows: layout.rows) }
            throw StoreError.rowOutOfRange(row: index, rows: layout.rows)
        }
        let shard = index / layout.rowsPerShard
        let r = index - shard * layout.rowsPerShard
        if layout.codec == .zstd, let cached = cache.lookup(shard) {
            cache.record(hits: 1, misses: 0)
            cached.withBytes { RowKernels.convert($0.baseAddress! + r * layout.rowBytes, type: layout.elementType, count: dim, into: output.baseAddress!) }
            return
        }
        let context = try contexts.acquire()
        defer { contexts.release(context) }
        if layout.codec == .zstd { cache.record(hits: 0, misses: 1) }
        try withShard(shard, context: context) { rows in
            RowKernels.convert(try rows.row(r, shard: shard, layout: layout), type: layout.elementType, count: dim, into: output.baseAddress!)
        }
    }

    /// Decodes the rows at `indices` to Float, row `i` of the output holding `indices[i]`.
    /// - Complexity: O(n log n) to group rows by shard; each shard is decoded once per call.
    public func rows(_ indices: [Int], into output: UnsafeMutableBufferPointer<Float>) throws {
        let dim = layout.dim
        guard output.count >= indices.count * dim else {
            throw StoreError.invalidArgument("output holds \(output.count) floats, \(indices.count) rows of \(dim) need \(indices.count * dim)")
        }
        let type = layout.elementType
        try indices.withUnsafeBufferPointer { idx in
            try forEachRowByShard(idx) { position, row in
                RowKernels.convert(row, type: type, count: dim, into: output.baseAddress! + position * dim)
            }
        }
    }

    /// Adds the weighted sum of rows to `output`: `output[chunk t] += weights[i*chunks + t] * row(indices[i])[chunk t]`.
    ///
    /// The fused lookup-reduce of Spec/RETRIEVAL.md: rows are visited in storage order, each
    /// shard is decoded (or, raw, read in place) once per call, and nothing of size k x dim is
    /// materialised. Accumulation is Float whatever the stored type.
    /// - Parameters:
    ///   - chunks: the row splits into this many equal parts, each with its own weight (MCS); 1 for a plain weighted sum.
    public func gatherReduce(indices: UnsafeBufferPointer<Int>, weights: UnsafeBufferPointer<Float>, chunks: Int = 1,
                             into output: UnsafeMutableBufferPointer<Float>) throws {
        let dim = layout.dim
        guard chunks >= 1, dim % chunks == 0 else {
            throw StoreError.invalidArgument("row dimension \(dim) does not split into \(chunks) equal chunks")
        }
        guard weights.count == indices.count * chunks else {
            throw StoreError.invalidArgument("\(weights.count) weights for \(indices.count) rows x \(chunks) chunks")
        }
        guard output.count == dim else { throw StoreError.invalidArgument("output holds \(output.count) floats, rows have \(dim)") }
        guard let w = weights.baseAddress, let out = output.baseAddress, !indices.isEmpty else { return }  // no rows: nothing to add
        let type = layout.elementType
        try forEachRowByShard(indices) { position, row in
            RowKernels.accumulate(row, type: type, dim: dim, chunks: chunks, weights: w + position * chunks, into: out)
        }
    }

    /// The batched form: row `i` adds into output row `targets[i]` of `output` (`targets.max + 1` rows of `dim`).
    /// One call for a whole batch of queries reads each shard once for all of them.
    public func gatherReduce(indices: UnsafeBufferPointer<Int>, weights: UnsafeBufferPointer<Float>, chunks: Int,
                             targets: UnsafeBufferPointer<Int>, into output: UnsafeMutableBufferPointer<Float>) throws {
        let dim = layout.dim
        guard chunks >= 1, dim % chunks == 0 else {
            throw StoreError.invalidArgument("row dimension \(dim) does not split into \(chunks) equal chunks")
        }
        guard weights.count == indices.count * chunks, targets.count == indices.count else {
            throw StoreError.invalidArgument("\(weights.count) weights and \(targets.count) targets for \(indices.count) rows x \(chunks) chunks")
        }
        let outputs = output.count / dim
        guard output.count % dim == 0, targets.allSatisfy({ $0 >= 0 && $0 < outputs }) else {
            throw StoreError.invalidArgument("targets must index the \(outputs) output rows of \(dim)")
        }
        guard let w = weights.baseAddress, let out = output.baseAddress, !indices.isEmpty else { return }  // no rows: nothing to add
        let type = layout.elementType
        try forEachRowByShard(indices) { position, row in
            RowKernels.accumulate(row, type: type, dim: dim, chunks: chunks, weights: w + position * chunks,
                                  into: out + targets[position] * dim)
        }
    }

    /// Convenience over arrays.
    public func gatherReduce(indices: [Int], weights: [Float], chunks: Int = 1, into output: inout [Float]) throws {
        try indices.withUnsafeBufferPointer { i in
            try weights.withUnsafeBufferPointer { w in
                try output.withUnsafeMutableBufferPointer { try gatherReduce(indices: i, weights: w, chunks: chunks, into: $0) }
            }
        }
    }

    /// Calls `body` with the stored bytes (little-endian elements of `layout.elementType`) of shard `index`.
    /// The buffer must not escape `body`, and `body` should not read from this store: it holds
    /// one of the store's limited concurrent reader slots.
    public func withShardRows<T>(_ index: Int, _ body: (UnsafeRawBufferPointer) throws -> T) throws -> T {
        guard index >= 0, index < layout.shardCount else {
            throw StoreError.invalidArgument("shard \(index) is out of range (the table has \(layout.shardCount) shards)")
        }
        let rows = layout.rowRange(ofShard: index)
        guard rows.upperBound <= readableRows else { throw StoreError.incomplete(rowsCommitted: state.rowsCommitted, rows: layout.rows) }
        if layout.codec == .zstd, let cached = cache.lookup(index) {
            return try cached.withBytes { try body(UnsafeRawBufferPointer(start: $0.baseAddress!, count: rows.count * layout.rowBytes)) }
        }
        let context = try contexts.acquire()
        defer { contexts.release(context) }
        return try withShard(index, context: context, contiguous: true) { shard in
            try body(UnsafeRawBufferPointer(start: shard.base, count: rows.count * layout.rowBytes))
        }
    }

    /// Visits `indices` grouped by shard in storage order: `visit(position in indices, the row's stored bytes)`.
    private func forEachRowByShard(_ indices: UnsafeBufferPointer<Int>,
                                   _ visit: (Int, UnsafeRawPointer) -> Void) throws {
        let readable = readableRows, perShard = layout.rowsPerShard
        for r in indices where r < 0 || r >= readable {
            if r >= readable && r < layout.rows { throw StoreError.incomplete(rowsCommitted: state.rowsCommitted, rows: layout.rows) }
            throw StoreError.rowOutOfRange(row: r, rows: layout.rows)
        }
        if let rawRows { return try forEachRawRow(indices, rawRows, visit) }
        // Sort (row, position) packed in one word: rows < 2^40 (Spec/FORMAT.md limits), positions < 2^24.
        let packed = indices.count < 1 << 24
        let order: [UInt64] = packed
            ? indices.enumerated().map { UInt64($0.element) << 24 | UInt64($0.offset) }.sorted()
            : indices.indices.sorted { indices[$0] < indices[$1] }.map { UInt64($0) }
        // A read transaction is taken only when a shard is not in the cache.
        var context: ReaderContext?
        defer { if let context { contexts.release(context) } }
        let readsBefore = storageReads()
        if order.count > 1 && readingFromDisk.load(ordering: .relaxed) {
            context = try contexts.acquire()
            try prefetchUncachedShards(order, packed: packed, indices: indices, context: context!)
        }
        defer { readingFromDisk.store(storageReads() > readsBefore, ordering: .relaxed) }
        var i = 0
        var hits = 0, misses = 0
        while i < order.count {
            let first = packed ? Int(order[i] >> 24) : indices[Int(order[i])]
            let shard = first / perShard
            let shardStart = shard * perShard
            func visitGroup(_ rows: ShardRows) throws {
                while i < order.count {
                    let position = packed ? Int(order[i] & 0xFF_FFFF) : Int(order[i])
                    let row = indices[position]
                    if row / perShard != shard { break }
                    visit(position, try rows.row(row - shardStart, shard: shard, layout: layout))
                    i += 1
                }
            }
            if layout.codec == .zstd, let cached = cache.lookup(shard) {
                hits += 1
                try cached.withBytes { try visitGroup(ShardRows(decoded: $0.baseAddress!, rowBytes: layout.rowBytes)) }
                continue
            }
            misses += 1
            if context == nil { context = try contexts.acquire() }
            try withShard(shard, context: context!) { rows in try visitGroup(rows) }
        }
        if layout.codec == .zstd { cache.record(hits: hits, misses: misses) }
    }

    /// Visits raw rows in the order given, through ``RawRowIndex``: no grouping by shard is
    /// needed to read rows in place. When batches read from storage, a first pass asks the
    /// kernel for every row's pages, so the reads queue up instead of faulting one at a time.
    private func forEachRawRow(_ indices: UnsafeBufferPointer<Int>, _ index: RawRowIndex,
                               _ visit: (Int, UnsafeRawPointer) -> Void) throws {
        let perShard = layout.rowsPerShard
        var context: ReaderContext?
        defer { if let context { contexts.release(context) } }
        func shardRows(_ shard: Int) throws -> UnsafeRawPointer {
            if let known = index.rows(ofShard: shard) { return known }
            if context == nil { context = try contexts.acquire() }
            return try index.learn(shard: shard, through: context!.transaction, shards: env.shards)
        }
        let readsBefore = storageReads()
        defer { readingFromDisk.store(storageReads() > readsBefore, ordering: .relaxed) }
        if indices.count > 1 && readingFromDisk.load(ordering: .relaxed) {
            for r in indices {
                let shard = r / perShard
                let p = Int(bitPattern: try shardRows(shard)) + (r - shard * perShard) * index.stride
                adviseWillNeed(p, p + index.stride)
            }
        }
        for (position, r) in indices.enumerated() {
            let shard = r / perShard
            visit(position, try index.row(r, shard: shard, shardRows: try shardRows(shard)))
        }
    }

    /// Asks the kernel to start reading what the batch needs of every shard that is neither
    /// cached nor resident, so a cold batch waits for many reads at once instead of faulting each
    /// page in turn (the map is opened with `MDB_NORDAHEAD`): the pages of each row for raw
    /// shards of version 3 (whose rows are checked one by one), whole blobs otherwise, read into
    /// the page cache without mapping them when ``blobs`` reads compressed shards. Touches only
    /// the B-tree pages that locate the blobs.
    private func prefetchUncachedShards(_ order: [UInt64], packed: Bool, indices: UnsafeBufferPointer<Int>,
                                        context: ReaderContext) throws {
        let rowStride = manifest.formatVersion >= 3 ? layout.rowBytes + ShardCodec.rowChecksumSize : nil
        func row(_ k: Int) -> Int { packed ? Int(order[k] >> 24) : indices[Int(order[k])] }
        var i = 0
        while i < order.count {
            let shard = row(i) / layout.rowsPerShard
            let group = i
            while i < order.count && row(i) / layout.rowsPerShard == shard { i += 1 }
            if layout.codec == .zstd && cache.contains(shard) { continue }
            try withShardKey(shard) { k in
                try context.transaction.withValue(env.shards, key: k) { blob in
                    guard let blob, let start = blob.baseAddress.map({ Int(bitPattern: $0) }) else { return }
                    if layout.codec == .zstd, let blobs {
                        blobs.willNeed(blob)
                    } else if layout.codec == .raw, let rowStride {
                        for k in group..<i {
                            let at = start + ShardCodec.headerSize + (row(k) - shard * layout.rowsPerShard) * rowStride
                            adviseWillNeed(at, at + rowStride)
                        }
                    } else {
                        adviseWillNeed(start, start + blob.count)
                    }
                }
            }
        }
    }

    /// Reads shard `index` through `context`'s transaction and calls `body` with its rows: raw
    /// rows in place (each checked as it is read; raw shards of versions 1 and 2 are checked whole
    /// once per open), compressed shards decoded (into the cache when it has a budget). With
    /// `contiguous`, raw rows that carry checksums are checked and copied out back to back first.
    private func withShard<T>(_ index: Int, context: ReaderContext, contiguous: Bool = false,
                              _ body: (ShardRows) throws -> T) throws -> T {
        let table = layout
        let rowRange = table.rowRange(ofShard: index)
        return try withShardKey(index) { key in
            try context.transaction.withValue(env.shards, key: key) { mapped in
                guard let mapped else { throw StoreError.missingShard(shard: index, rows: rowRange) }
                // Rows of a version-3 raw table are read without their shard's header (a second
                // random read when cold): each row's checksum proves its position. A blob of
                // any other length goes through the header checks below, which name the problem.
                if table.codec == .raw && !contiguous && manifest.formatVersion >= 3,
                   mapped.count == ShardCodec.checkedRawBlobSize(rows: rowRange.count, layout: table) {
                    return try body(ShardRows(checkedBlob: mapped, shard: index, layout: table))
                }
                // Decoding reads the whole blob: one pread (with the kernel's readahead on
                // sequential scans) instead of faulting the map in a page at a time.
                if table.codec == .zstd || contiguous, let blobs {
                    return try blobs.read(mapped, into: context.scratchBlob(byteCount: mapped.count), what: "shard \(index)") {
                        try withBlob($0, shard: index, context: context, contiguous: contiguous, body)
                    }
                }
                return try withBlob(mapped, shard: index, context: context, contiguous: contiguous, body)
            }
        }
    }

    /// Checks and decodes the blob of shard `index` (from the map or a copy) for ``withShard``.
    private func withBlob<T>(_ blob: UnsafeRawBufferPointer, shard index: Int, context: ReaderContext, contiguous: Bool,
                             _ body: (ShardRows) throws -> T) throws -> T {
        let table = layout
        let rowRange = table.rowRange(ofShard: index)
        let size = rowRange.count * table.rowBytes
        let header = try ShardCodec.header(of: blob, shard: index, layout: table)
        if header.blobCodec == .rawRows && !checkedRawShards.contains(index) {
            guard XXH64.hash(UnsafeRawBufferPointer(rebasing: blob[ShardCodec.headerSize...])) == header.checksum else {
                throw StoreError.corruptShard(shard: index, rows: rowRange, reason: "checksum mismatch")
            }
            checkedRawShards.insert(index)
        }
        if header.codec == .raw && !(contiguous && header.blobCodec == .checkedRows) {
            return try body(ShardRows(blob: blob, header: header, layout: table))
        }
        let cached = header.codec == .zstd && cache.budget > 0
        let target = cached ? ShardBuffer(byteCount: size) : context.scratchShard(byteCount: size)
        return try target.withBytes { bytes in
            try ShardCodec.decode(blob, header: header, layout: table,
                                  into: UnsafeMutableRawBufferPointer(rebasing: bytes[0..<size]),
                                  scratch: &context.planes, decompressor: context.decompressor, dictionary: dictionary)
            if header.codec == .zstd { decoded.wrappingAdd(size, ordering: .relaxed) }
            // The cache may decline the shard (larger than a stripe's budget); `withBytes`
            // keeps it alive for `body` either way.
            if cached { cache.insert(index, target) }
            return try body(ShardRows(decoded: bytes.baseAddress!, rowBytes: table.rowBytes))
        }
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

/// Asks the kernel to start reading the mapped pages holding addresses `start..<end` (`MADV_WILLNEED`).
private func adviseWillNeed(_ start: Int, _ end: Int) {
    let first = start & ~(pageSize - 1)
    _ = madvise(UnsafeMutableRawPointer(bitPattern: first), end - first, MADV_WILLNEED)
}

private let pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))

/// Reads from storage by the calling thread so far: major page faults (through the map) plus
/// blocks read (by `pread`, or readahead it started).
private func storageReads() -> Int {
    var usage = rusage()
    getrusage(1, &usage)  // RUSAGE_THREAD, which Glibc does not export to Swift
    return usage.ru_majflt + usage.ru_inblock
}

/// Calls `body` with the UTF-8 bytes of `name` as an LMDB key.
func withName<T>(_ name: String, _ body: (UnsafeRawBufferPointer) throws -> T) rethrows -> T {
    var name = name
    return try name.withUTF8 { try body(UnsafeRawBufferPointer($0)) }
}
