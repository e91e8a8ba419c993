import CGatherKernel
import _MemorySupport

extension Store {
    /// Calls `visit` with the stored bytes of the rows at `indices`, a group at a time: the
    /// group's row pointers, valid only during the call, and the positions in `indices` they
    /// stand for. Throws, naming the row, for an index outside the readable rows, and, naming
    /// shard and row, for damaged data. With `coded`, a complete nibble table read in place hands
    /// out its rows' slots, checked, undecoded (``RowGroup/coded``), for a kernel that decodes them.
    func forEachRowGroup(_ indices: UnsafeBufferPointer<Int>, coded: Bool = false,
                         _ visit: (RowGroup) throws -> Void) throws {
        try checkReadable(indices)
        guard !indices.isEmpty else { return }
        let inPlace = rawRows != nil || residentRows != nil
        let scratch = rowScratch.take(count: inPlace ? min(indices.count, Self.rawGroupRows) : indices.count)
        defer { rowScratch.give(scratch) }
        if let residentRows { return try forEachResidentRow(indices, residentRows, scratch, visit) }
        if let rawRows { return try forEachRawRow(indices, rawRows, scratch, coded: coded, visit) }
        try forEachShardGroup(indices, scratch, visit)
    }

    /// Throws, naming the row, for an index outside the readable rows.
    func checkReadable(_ indices: UnsafeBufferPointer<Int>) throws {
        let readable = readableRows
        // One pass for the largest index as unsigned (negatives are huge); the offending row is
        // looked for only on failure.
        guard Self.largest(indices) >= UInt(readable) else { return }
        for r in indices where r < 0 || r >= readable {
            if r >= readable && r < layout.rows { throw StoreError.incomplete(rowsCommitted: state.rowsCommitted, rows: layout.rows) }
            throw StoreError.rowOutOfRange(row: r, rows: layout.rows)
        }
    }

    /// Checks the rows `indices[positions?[k] ?? k]` for k in 0 ..< count (their shards known)
    /// whose groups are not yet checked, in one C loop (``RawRowIndex/checkRows(_:indices:positions:)``);
    /// a row that did not match there, and every row of a table too large to remember its checks,
    /// by ``RawRowIndex/verify(row:wholeGroup:)``, which names it, hashed with the groups ahead of
    /// it already on their way (then found in the cache), not one cache miss at a time.
    func verify(_ count: Int, of index: RawRowIndex, indices: UnsafePointer<Int>, positions: UnsafePointer<Int>?) throws {
        let row = { (k: Int) in indices[positions?[k] ?? k] }
        var k = 0
        while k < count {
            k += positions.map { index.checkRows(count - k, indices: indices, positions: $0 + k) }
                ?? index.checkRows(count - k, indices: indices + k, positions: nil)
            guard k < count else { break }
            if !index.isChecked(row(k)) {
                if k + RawRowIndex.checkAhead < count {
                    let (ahead, more) = index.bytesToCheck(ofRow: row(k + RawRowIndex.checkAhead))
                    pkm_prefetch(ahead.baseAddress, ahead.count)
                    if let more { pkm_prefetch(more.baseAddress, more.count) }
                }
                try index.verify(row: row(k))
            }
            k += 1
        }
    }

    /// Rows through ``RawRowIndex``, in the order given, in groups of ``rawGroupRows``: no
    /// grouping by shard is needed to read rows in place, and a group's pointers, positions and
    /// indices stay in the core's caches. When batches read from storage, the kernel is first
    /// asked for every row's pages, so the reads queue up instead of faulting one at a time.
    private func forEachRawRow(_ indices: UnsafeBufferPointer<Int>, _ index: RawRowIndex, _ scratch: RowScratch, coded: Bool,
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
        // Not for a table read whole: see prefetchUncachedShards.
        if indices.count > 1 && readingFromDisk.load(ordering: .relaxed) && !readsWholeTable {
            for k in 0..<indices.count {
                // The row's pages, and those of its checksum or its group when it is to be checked:
                // one call over both spans, which lie within the row's group.
                let p = try locate(k)
                let (needed, more) = checksRows ? index.bytesToCheck(ofRow: indices[k])
                    : (UnsafeRawBufferPointer(start: p, count: index.raw.rowBytes), nil)
                var start = Int(bitPattern: needed.baseAddress), end = start + needed.count
                if let more {
                    start = min(start, Int(bitPattern: more.baseAddress))
                    end = max(end, Int(bitPattern: more.baseAddress) + more.count)
                }
                adviseWillNeed(start, end)
            }
        }
        // A nibble table's rows are decoded into scratch a group at a time, small enough to stay in L1.
        let decoding = index.nibbleTable != nil && !coded
        let groupRows = decoding ? max(16, min(Self.rawGroupRows, (32 << 10) / layout.rowBytes)) : Self.rawGroupRows
        let decoded = decoding ? scratch.decodedRows(bytes: groupRows * layout.rowBytes) : nil
        var start = 0, met = 0
        while start < indices.count {
            let n = min(indices.count - start, groupRows)
            // Rows of known shards in one C loop; a row of a shard not yet located learns it.
            var located = 0, unchecked = 0
            while located < n {
                located += index.locateKnown(indices.baseAddress! + start + located, count: n - located, into: pointers.baseAddress! + located,
                                             counting: checksRows, unchecked: &unchecked)
                guard located < n else { break }
                pointers[located] = try locate(start + located)
                if checksRows && !index.isChecked(indices[start + located]) { unchecked += 1 }
                located += 1
            }
            // Checked before the visit, which then finds the rows in the cache.
            if unchecked > 0 { try verify(n, of: index, indices: indices.baseAddress! + start, positions: nil) }
            met += unchecked
            if let decoded {
                try index.decode(pointers.baseAddress!, rows: indices.baseAddress! + start, count: n, into: decoded, checking: checksRows)
                for k in 0..<n { pointers[k] = UnsafeRawPointer(decoded + k * layout.rowBytes) }
            }
            try visit(RowGroup(rows: UnsafeBufferPointer(rebasing: pointers[0..<n]), positions: nil, first: start,
                               coded: index.nibbleTable != nil && coded))
            start += n
        }
        startBackgroundCheck()
        // As after a reduce (Store+Rows.swift): reads that met no group left to check have stalled.
        // Not after reads of fewer than 256 rows (a single row's, say), for which the sweep's
        // least share, 16 groups, would cost more than one group for every 16 rows read.
        if checksRows && indices.count >= 256 && index.everyShardKnown {
            index.sweep(afterReading: indices.count, stalled: met == 0)
        }
        if let readsBefore { noteStorageReads(since: readsBefore, rows: indices.count) }
    }

    /// Rows of a resident table, in the order given, in groups of ``rawGroupRows``: a row is its
    /// table position times the row size from the buffer's start, checked when it was loaded.
    private func forEachResidentRow(_ indices: UnsafeBufferPointer<Int>, _ buffer: HugePageBuffer, _ scratch: RowScratch,
                                    _ visit: (RowGroup) throws -> Void) throws {
        let pointers = scratch.pointers, rowBytes = layout.rowBytes, base = UnsafeRawPointer(buffer.base)
        var start = 0
        while start < indices.count {
            let n = min(indices.count - start, Self.rawGroupRows)
            for k in 0..<n { pointers[k] = base + indices[start + k] * rowBytes }
            try visit(RowGroup(rows: UnsafeBufferPointer(rebasing: pointers[0..<n]), positions: nil, first: start))
            start += n
        }
    }

    /// Rows per kernel call on the raw path: their pointers, positions and indices (24 bytes a
    /// row) fit in a core's L1 and L2 caches beside the rows in flight.
    package static let rawGroupRows = 2048

    /// One group per shard, in storage order; each shard decoded (or read) once.
    private func forEachShardGroup(_ indices: UnsafeBufferPointer<Int>, _ scratch: RowScratch,
                                   _ visit: (RowGroup) throws -> Void) throws {
        let perShard = layout.rowsPerShard
        // (row, position) packed in one word: rows < 2^40 (Spec/FORMAT.md limits), positions < 2^24.
        let packed = indices.count < 1 << 24
        let order: [UInt64] = packed
            ? Self.groupedByShard(indices, perShard: perShard, shards: layout.shardCount)
            : indices.indices.sorted { indices[$0] < indices[$1] }.map { UInt64($0) }
        // A read transaction is taken only when a shard is not in the cache.
        var context: ReaderContext?
        defer { if let context { contexts.release(context) } }
        let readsBefore = sampleStorageReads(rows: indices.count)
        if order.count > 1 && readingFromDisk.load(ordering: .relaxed) {
            context = try contexts.acquire()
            try prefetchUncachedShards(order, packed: packed, indices: indices, context: context!)
        }
        defer { if let readsBefore { noteStorageReads(since: readsBefore, rows: indices.count) } }
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
            if layout.codec != .raw, let cached = cache.lookup(shard) {
                hits += 1
                try cached.withBytes { try visitGroup(ShardRows(decoded: $0.baseAddress!, rowBytes: layout.rowBytes)) }
                continue
            }
            misses += 1
            if context == nil { context = try contexts.acquire() }
            try withShard(shard, context: context!) { rows in try visitGroup(rows) }
        }
        if layout.codec != .raw { cache.record(hits: hits, misses: misses) }
    }
}

extension Store {
    /// `row << 24 | position` for every index, grouped by shard in shard order and by position
    /// within a shard (so the order, and the float sums, of each output's rows do not depend on
    /// the cache or on the other rows asked): a counting sort by shard when the table has at
    /// most four shards per index, else a sort by (shard, position).
    static func groupedByShard(_ indices: UnsafeBufferPointer<Int>, perShard: Int, shards: Int) -> [UInt64] {
        guard shards <= 4 * indices.count else {
            return indices.enumerated().map { UInt64($0.element / perShard) << 24 | UInt64($0.offset) }.sorted()
                .map { UInt64(indices[Int($0 & 0xFF_FFFF)]) << 24 | $0 & 0xFF_FFFF }
        }
        var start = [Int](repeating: 0, count: shards + 1)
        for r in indices { start[r / perShard + 1] += 1 }
        for s in 0..<shards { start[s + 1] += start[s] }
        var order = [UInt64](repeating: 0, count: indices.count)
        for (position, r) in indices.enumerated() {
            let s = r / perShard
            order[start[s]] = UInt64(r) << 24 | UInt64(position)
            start[s] += 1
        }
        return order
    }
}

/// Rows handed out by `Store.forEachRowGroup`: pointers to their stored bytes (valid only
/// during the visit) and the position in the caller's indices each stands for.
struct RowGroup {
    let rows: UnsafeBufferPointer<UnsafeRawPointer?>
    /// Each row's position, or nil when the rows stand for positions `first ..< first + rows.count`.
    let positions: UnsafeBufferPointer<Int>?
    let first: Int
    /// Whether `rows` point at nibble slots (checked, not decoded) rather than at rows' values.
    var coded = false

    @inline(__always)
    func position(_ k: Int) -> Int { positions?[k] ?? first + k }
}
