import _MemorySupport
import CGatherKernel
import CLMDB
import Foundation

/// Reading value rows: single rows, batches converted to Float, and the fused lookup-reduce.
///
/// Every read goes through ``forEachRowGroup(_:_:)``, which hands out the stored bytes of the
/// rows as pointers, a group at a time, for one kernel call per group: for a complete raw table
/// of version 3, groups of consecutive rows in the order asked (read in place, each row checked
/// against its checksum the first time it is read after opening); otherwise one group per
/// shard, in storage order, each shard decoded (or read) once per call.
extension Store {
    /// The gather-reduce code this processor runs: `avx2` (AVX2, FMA and F16C) or `portable`.
    public static var reduceKernel: String { pkm_gather_reduce_uses_avx2() != 0 ? "avx2" : "portable" }

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
        // A cached shard's row, or a raw row whose shard is located, needs no grouping, scratch or transaction.
        if index >= 0, index < readableRows {
            let shard = index / layout.rowsPerShard
            if let rawRows, let shardRows = rawRows.rows(ofShard: shard) {
                let p = rawRows.location(ofRow: index, shard: shard, shardRows: shardRows)
                if checksRows { try rawRows.verify(p, row: index) }
                layout.elementType.convert(p, count: dim, into: output.baseAddress!)
                return
            }
            if layout.codec == .zstd, let cached = cache.lookup(shard) {
                cache.record(hits: 1, misses: 0)
                let offset = (index - shard * layout.rowsPerShard) * layout.rowBytes
                cached.withBytes { layout.elementType.convert($0.baseAddress! + offset, count: dim, into: output.baseAddress!) }
                return
            }
        }
        try withUnsafePointer(to: index) { i in
            try forEachRowGroup(UnsafeBufferPointer(start: i, count: 1)) { group in
                layout.elementType.convert(group.rows[0]!, count: dim, into: output.baseAddress!)
            }
        }
    }

    /// Decodes the rows at `indices` to Float, row `i` of the output holding `indices[i]`.
    /// - Complexity: O(n log n) to group rows by shard (none for complete raw tables); each
    ///   shard is decoded once per call.
    public func rows(_ indices: [Int], into output: UnsafeMutableBufferPointer<Float>) throws {
        let dim = layout.dim
        guard output.count >= indices.count * dim else {
            throw StoreError.invalidArgument("output holds \(output.count) floats, \(indices.count) rows of \(dim) need \(indices.count * dim)")
        }
        let type = layout.elementType
        try indices.withUnsafeBufferPointer { idx in
            try forEachRowGroup(idx) { group in
                for k in 0..<group.rows.count {
                    type.convert(group.rows[k]!, count: dim, into: output.baseAddress! + group.position(k) * dim)
                }
            }
        }
    }

    /// Adds the weighted sum of rows to `output`: `output[chunk t] += weights[i*chunks + t] * row(indices[i])[chunk t]`.
    ///
    /// The fused lookup-reduce of Spec/RETRIEVAL.md: rows are gathered and summed in one pass
    /// (``RowKernels/gatherReduce``), nothing of size k x dim is materialised, and accumulation
    /// is in Float whatever the stored type.
    /// - Parameters:
    ///   - chunks: the row splits into this many equal parts, each with its own weight (MCS); 1 for a plain weighted sum.
    public func gatherReduce(indices: UnsafeBufferPointer<Int>, weights: UnsafeBufferPointer<Float>, chunks: Int = 1,
                             into output: UnsafeMutableBufferPointer<Float>) throws {
        let dim = layout.dim
        guard output.count == dim else { throw StoreError.invalidArgument("output holds \(output.count) floats, rows have \(dim)") }
        try checkReduce(indices: indices, weights: weights, chunks: chunks)
        try reduce(indices: indices, weights: weights, chunks: chunks, targets: nil, into: output)
    }

    /// The batched form: row `i` adds into output row `targets[i]` of `output` (`targets.max + 1` rows of `dim`).
    /// One call for a whole batch of queries reads each shard once for all of them; runs of
    /// consecutive rows with the same target are summed in registers.
    public func gatherReduce(indices: UnsafeBufferPointer<Int>, weights: UnsafeBufferPointer<Float>, chunks: Int,
                             targets: UnsafeBufferPointer<Int>, into output: UnsafeMutableBufferPointer<Float>) throws {
        let dim = layout.dim
        try checkReduce(indices: indices, weights: weights, chunks: chunks)
        guard targets.count == indices.count else {
            throw StoreError.invalidArgument("\(targets.count) targets for \(indices.count) rows")
        }
        let outputs = output.count / dim
        guard output.count % dim == 0, targets.allSatisfy({ $0 >= 0 && $0 < outputs }) else {
            throw StoreError.invalidArgument("targets must index the \(outputs) output rows of \(dim)")
        }
        try reduce(indices: indices, weights: weights, chunks: chunks, targets: targets, into: output)
    }

    /// Convenience over arrays.
    public func gatherReduce(indices: [Int], weights: [Float], chunks: Int = 1, into output: inout [Float]) throws {
        try indices.withUnsafeBufferPointer { i in
            try weights.withUnsafeBufferPointer { w in
                try output.withUnsafeMutableBufferPointer { try gatherReduce(indices: i, weights: w, chunks: chunks, into: $0) }
            }
        }
    }

    private func checkReduce(indices: UnsafeBufferPointer<Int>, weights: UnsafeBufferPointer<Float>, chunks: Int) throws {
        let dim = layout.dim
        guard chunks >= 1, dim % chunks == 0 else {
            throw StoreError.invalidArgument("row dimension \(dim) does not split into \(chunks) equal chunks")
        }
        guard weights.count == indices.count * chunks else {
            throw StoreError.invalidArgument("\(weights.count) weights for \(indices.count) rows x \(chunks) chunks")
        }
    }

    private func reduce(indices: UnsafeBufferPointer<Int>, weights: UnsafeBufferPointer<Float>, chunks: Int,
                        targets: UnsafeBufferPointer<Int>?, into output: UnsafeMutableBufferPointer<Float>) throws {
        guard let w = weights.baseAddress, let out = output.baseAddress, !indices.isEmpty else { return }  // no rows: nothing to add
        let type = layout.elementType, dim = layout.dim
        try forEachRowGroup(indices) { group in
            // A group of consecutive positions passes its weights and targets from its first.
            let first = group.positions == nil ? group.first : 0
            RowKernels.gatherReduce(group.rows, positions: group.positions, type: type, dim: dim, chunks: chunks,
                                    weights: w + first * chunks, targets: targets.map { $0.baseAddress! + first }, into: out)
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

    // MARK: Grouped access

    /// Calls `visit` with the stored bytes of the rows at `indices`, a group at a time: the
    /// group's row pointers, valid only during the call, and the positions in `indices` they
    /// stand for. Throws, naming the row, for an index outside the readable rows, and, naming
    /// shard and row, for damaged data.
    func forEachRowGroup(_ indices: UnsafeBufferPointer<Int>,
                         _ visit: (RowGroup) throws -> Void) throws {
        let readable = readableRows
        for r in indices where r < 0 || r >= readable {
            if r >= readable && r < layout.rows { throw StoreError.incomplete(rowsCommitted: state.rowsCommitted, rows: layout.rows) }
            throw StoreError.rowOutOfRange(row: r, rows: layout.rows)
        }
        guard !indices.isEmpty else { return }
        let scratch = rowScratch.take(count: rawRows == nil ? indices.count : min(indices.count, Self.rawGroupRows))
        defer { rowScratch.give(scratch) }
        if let rawRows { return try forEachRawRow(indices, rawRows, scratch, visit) }
        try forEachShardGroup(indices, scratch, visit)
    }

    /// Rows through ``RawRowIndex``, in the order given, in groups of ``rawGroupRows``: no
    /// grouping by shard is needed to read rows in place, and a group's pointers, positions and
    /// indices stay in the core's caches. When batches read from storage, the kernel is first
    /// asked for every row's pages, so the reads queue up instead of faulting one at a time.
    private func forEachRawRow(_ indices: UnsafeBufferPointer<Int>, _ index: RawRowIndex, _ scratch: RowScratch,
                               _ visit: (RowGroup) throws -> Void) throws {
        var context: ReaderContext?
        defer { if let context { contexts.release(context) } }
        let pointers = scratch.pointers
        func locate(_ k: Int) throws -> UnsafeRawPointer {
            let r = indices[k], shard = index.shard(ofRow: r)
            if let known = index.rows(ofShard: shard) { return index.location(ofRow: r, shard: shard, shardRows: known) }
            if context == nil { context = try contexts.acquire() }
            let learned = try index.learn(shard: shard, through: context!.transaction, shards: env.shards)
            return index.location(ofRow: r, shard: shard, shardRows: learned)
        }
        let readsBefore = sampleStorageReads(rows: indices.count)
        if indices.count > 1 && readingFromDisk.load(ordering: .relaxed) {
            for k in 0..<indices.count {
                let p = Int(bitPattern: try locate(k))
                adviseWillNeed(p, p + index.stride)
            }
        }
        var start = 0
        while start < indices.count {
            let n = min(indices.count - start, Self.rawGroupRows)
            var unchecked = false
            for k in 0..<n {
                pointers[k] = try locate(start + k)
                unchecked = unchecked || (checksRows && !index.isChecked(indices[start + k]))
            }
            // Rows not yet checked are hashed with the rows ahead of them already on their way
            // (the kernel then finds them in the cache), not one cache miss at a time.
            if unchecked {
                for k in 0..<n where !index.isChecked(indices[start + k]) {
                    if k + Self.checkAhead < n { pkm_prefetch(pointers[k + Self.checkAhead], index.stride) }
                    try index.verify(pointers[k]!, row: indices[start + k])
                }
            }
            try visit(RowGroup(rows: UnsafeBufferPointer(rebasing: pointers[0..<n]), positions: nil, first: start))
            start += n
        }
        if let readsBefore { readingFromDisk.store(storageReads() > readsBefore, ordering: .relaxed) }
    }

    /// Rows per kernel call on the raw path: their pointers, positions and indices (24 bytes a
    /// row) fit in a core's L1 and L2 caches beside the rows in flight.
    package static let rawGroupRows = 2048

    /// How far ahead of the row being checked rows are prefetched.
    static let checkAhead = 8

    /// One group per shard, in storage order; each shard decoded (or read) once.
    private func forEachShardGroup(_ indices: UnsafeBufferPointer<Int>, _ scratch: RowScratch,
                                   _ visit: (RowGroup) throws -> Void) throws {
        let perShard = layout.rowsPerShard
        // Sort (row, position) packed in one word: rows < 2^40 (Spec/FORMAT.md limits), positions < 2^24.
        let packed = indices.count < 1 << 24
        let order: [UInt64] = packed
            ? indices.enumerated().map { UInt64($0.element) << 24 | UInt64($0.offset) }.sorted()
            : indices.indices.sorted { indices[$0] < indices[$1] }.map { UInt64($0) }
        // A read transaction is taken only when a shard is not in the cache.
        var context: ReaderContext?
        defer { if let context { contexts.release(context) } }
        let readsBefore = sampleStorageReads(rows: indices.count)
        if order.count > 1 && readingFromDisk.load(ordering: .relaxed) {
            context = try contexts.acquire()
            try prefetchUncachedShards(order, packed: packed, indices: indices, context: context!)
        }
        defer { if let readsBefore { readingFromDisk.store(storageReads() > readsBefore, ordering: .relaxed) } }
        let pointers = scratch.pointers, positions = scratch.positions
        var i = 0
        var hits = 0, misses = 0
        while i < order.count {
            let first = packed ? Int(order[i] >> 24) : indices[Int(order[i])]
            let shard = first / perShard
            let shardStart = shard * perShard
            func visitGroup(_ rows: ShardRows) throws {
                var n = 0
                while i < order.count {
                    let position = packed ? Int(order[i] & 0xFF_FFFF) : Int(order[i])
                    let row = indices[position]
                    if row / perShard != shard { break }
                    pointers[n] = try rows.row(row - shardStart, shard: shard, layout: layout)
                    positions[n] = position
                    n += 1
                    i += 1
                }
                try visit(RowGroup(rows: UnsafeBufferPointer(rebasing: pointers[0..<n]),
                                   positions: UnsafeBufferPointer(rebasing: positions[0..<n]), first: 0))
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

    /// This thread's storage reads so far when this call should find out whether batches read
    /// from storage (which decides whether they prefetch), else nil: every batch of 1,024 rows
    /// or more, every batch while they do, and every 16th smaller one otherwise. Asking costs
    /// two system calls, as much as reducing a hundred rows from memory.
    private func sampleStorageReads(rows: Int) -> Int? {
        let sample = rows >= 1024 || readingFromDisk.load(ordering: .relaxed)
            || smallBatches.wrappingAdd(1, ordering: .relaxed).oldValue % 16 == 0
        return sample ? storageReads() : nil
    }

    // MARK: Shards

    /// Reads shard `index` through `context`'s transaction and calls `body` with its rows: raw
    /// rows in place (each checked as it is read; raw shards of versions 1 and 2 are checked whole
    /// once per open), compressed shards decoded (into the cache when it has a budget). With
    /// `contiguous`, raw rows that carry checksums are checked and copied out back to back first.
    func withShard<T>(_ index: Int, context: ReaderContext, contiguous: Bool = false,
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
        if header.codecByte == .rawRows && !checkedRawShards.contains(index) {
            guard XXH64.hash(UnsafeRawBufferPointer(rebasing: blob[ShardCodec.headerSize...])) == header.checksum else {
                throw StoreError.corruptShard(shard: index, rows: rowRange, reason: "checksum mismatch")
            }
            checkedRawShards.insert(index)
        }
        if header.codec == .raw && !(contiguous && header.codecByte == .checkedRows) {
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

/// Rows handed out by `Store.forEachRowGroup`: pointers to their stored bytes (valid only
/// during the visit) and the position in the caller's indices each stands for.
struct RowGroup {
    let rows: UnsafeBufferPointer<UnsafeRawPointer?>
    /// Each row's position, or nil when the rows stand for positions `first ..< first + rows.count`.
    let positions: UnsafeBufferPointer<Int>?
    let first: Int

    @inline(__always)
    func position(_ k: Int) -> Int { positions?[k] ?? first + k }
}
