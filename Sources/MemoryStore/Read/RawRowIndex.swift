import CGatherKernel
import CLMDB
import Foundation
import _MemorySupport
import Synchronization

/// Direct access to the rows of a complete raw table of format version 3 or later, or of a
/// nibble table: where each shard's rows (or coded slots) lie in the map (learned in one pass
/// over the shard keys on first use), and which row groups have been checked since open.
/// A row read is then an address computation (``rowMap(checking:)``, which the gather-reduce
/// kernel does itself), without grouping a batch by shard or looking each shard up in LMDB's
/// B-tree, and a row's checksum is computed the first time a row of its group is read.
///
/// The addresses stay valid for the life of the index: it holds a read transaction open, and
/// LMDB never reuses a page that a live reader can see (a complete store has no writer anyway;
/// compaction writes a new file).
final class RawRowIndex: @unchecked Sendable {
    // Invariant: `blobs` and `checked` are allocated in init, touched only through atomics,
    // freed in deinit; `rowOffsets` is written in init only, freed in deinit; `snapshot` is never
    // used after init, it only pins the pages (and, holding its environment, keeps the map the
    // addresses point into).
    private let blobs: UnsafeMutablePointer<Atomic<Int>>
    /// Shards whose address is known; all of them once ``everyShardKnown``.
    private let knownShards = Atomic<Int>(0)
    /// Each row's offset within its shard from the shard's first group (`raw.rowOffset`).
    private let rowOffsets: UnsafeMutablePointer<UInt32>
    /// A nibble table's escaped rows in each shard, and where the first of them lies, stored
    /// before the shard's address (so a reader that sees the address sees both); nil for raw tables.
    private let escapeCounts: UnsafeMutablePointer<Atomic<Int>>?
    private let escapeRows: UnsafeMutablePointer<Atomic<Int>>?
    private let shardCount: Int
    /// Row groups (``RawShardLayout``) whose rows have all been checked since open, one bit per
    /// group, group `g` of shard `s` at bit `s << checkedShift + g` (a power-of-two stride, so that
    /// finding a row's bit takes a shift, not a multiplication); nil for tables too large to keep
    /// one (then every read is checked).
    private let checked: AtomicBitmap?
    private let checkedShift: Int
    /// A nibble table's groups whose escaped rows have all been checked since open, a bit a group
    /// as in `checked`; nil for raw tables and where `checked` is nil (then every escaped read is
    /// checked). Kept apart from `checked` so that checking a group's coded rows reads no escaped row.
    private let escapesChecked: AtomicBitmap?
    /// Groups one of whose rows has been checked alone since open (a group's first read), a bit a
    /// group as in `checked`; the next read of any of its rows checks the whole group. Nil where
    /// `checked` is.
    private let touched: AtomicBitmap?
    /// Groups checked since open, and the table's groups: when they are equal, reads skip the bitmap.
    private let checkedGroups = Atomic<Int>(0)
    private let groupCount: Int
    /// The next bit ``sweep(afterReading:stalled:)`` looks at.
    private let sweepCursor = Atomic<Int>(0)
    private let snapshot: ReadTransaction
    /// The file the rows lie in, open as `descriptor`, and where the map of it begins; nil when
    /// that could not be found (shard 0 not on overflow pages).
    private let file: (descriptor: Int32, map: UnsafeRawPointer)?
    /// Whether the pass over all shard keys has run.
    private let learnedAll = Locked(false)
    let layout: TableLayout
    /// Where rows (a nibble table's slots) and their checksums lie in a blob.
    let raw: RawShardLayout
    /// A nibble table's code, as its 16-byte decode table; nil for raw tables.
    let nibbleTable: [UInt8]?
    private let version: Int
    private let rowsPerShard: Divisor

    /// Tables with more shards or row groups than these check on every read instead.
    static let maxShards = 1 << 24
    static let maxCheckedGroups = 1 << 28

    /// - Parameter codes: the nibble table's code (nil for raw tables).
    init?(env: Environment, layout: TableLayout, raw: RawShardLayout, codes: NibbleCode?, version: Int) throws {
        guard layout.codec != .zstd, layout.shardCount <= Self.maxShards,
              raw.rowOffset(layout.rowsPerShard - 1) + raw.rowBytes <= Int(UInt32.max) else { return nil }
        let snapshot = try ReadTransaction(env: env)
        self.snapshot = snapshot
        let value = try withShardKey(0) { key in try snapshot.withValue(env.shards, key: key) { $0?.baseAddress } }
        if let descriptor = env.descriptor, let map = value.flatMap(env.mapStart(holding:)) { file = (descriptor, map) } else { file = nil }
        self.layout = layout
        self.raw = raw
        self.version = version
        nibbleTable = codes?.decodeTable
        rowsPerShard = Divisor(layout.rowsPerShard, dividendsBelow: layout.rows)
        shardCount = layout.shardCount
        blobs = .allocate(capacity: shardCount)
        for i in 0..<shardCount { (blobs + i).initialize(to: Atomic(0)) }
        escapeCounts = codes == nil ? nil : .allocate(capacity: shardCount)
        escapeRows = codes == nil ? nil : .allocate(capacity: shardCount)
        for i in 0..<(codes == nil ? 0 : shardCount) {
            (escapeCounts! + i).initialize(to: Atomic(0))
            (escapeRows! + i).initialize(to: Atomic(0))
        }
        rowOffsets = .allocate(capacity: layout.rowsPerShard)
        for i in 0..<layout.rowsPerShard { rowOffsets[i] = UInt32(raw.rowOffset(i)) }
        let groupsPerShard = (layout.rowsPerShard + raw.groupRows - 1) / raw.groupRows
        checkedShift = Int.bitWidth - (groupsPerShard - 1).leadingZeroBitCount
        checked = shardCount << checkedShift <= Self.maxCheckedGroups ? AtomicBitmap(count: shardCount << checkedShift) : nil
        escapesChecked = codes != nil && checked != nil ? AtomicBitmap(count: shardCount << checkedShift) : nil
        touched = checked != nil ? AtomicBitmap(count: shardCount << checkedShift) : nil
        // Every shard but the last is full.
        groupCount = shardCount == 0 ? 0
            : (shardCount - 1) * groupsPerShard + (layout.rowRange(ofShard: shardCount - 1).count + raw.groupRows - 1) / raw.groupRows
    }

    deinit {
        blobs.deinitialize(count: shardCount)
        blobs.deallocate()
        rowOffsets.deallocate()
        escapeCounts?.deinitialize(count: shardCount)
        escapeCounts?.deallocate()
        escapeRows?.deinitialize(count: shardCount)
        escapeRows?.deallocate()
    }

    /// The start of shard `index`'s first row group in the map, or nil when not yet known.
    @inline(__always)
    func rows(ofShard index: Int) -> UnsafeRawPointer? {
        UnsafeRawPointer(bitPattern: blobs[index].load(ordering: .relaxed))
    }

    /// Shard `index`'s rows: the first call learns every shard's blob address in one cursor pass
    /// (overflow values are located without reading them); a shard it could not learn (missing,
    /// or of the wrong length) is looked up alone, which throws, naming it.
    func learn(shard index: Int, through txn: ReadTransaction, shards: MDB_dbi) throws -> UnsafeRawPointer {
        try learnedAll.withLock { done in
            guard !done else { return }
            done = true
            try learnEveryShard(through: txn, shards: shards)
        }
        if let known = rows(ofShard: index) { return known }
        return try learnOne(shard: index, through: txn, shards: shards)
    }

    private func learnEveryShard(through txn: ReadTransaction, shards: MDB_dbi) throws {
        try txn.forEachEntry(shards) { key, value in
            guard key.count == 8 else { return }
            let index = Int(truncatingIfNeeded: UInt64(bigEndian: key.loadUnaligned(as: UInt64.self)))
            guard index >= 0, index < shardCount, let escaped = escapedRows(inBlob: value.count, shard: index) else { return }
            store(value, escaped: escaped, shard: index)
        }
    }

    /// The escaped rows of shard `index`'s blob of `count` bytes (0 for raw tables), or nil when
    /// a blob of that length cannot be that shard's.
    private func escapedRows(inBlob count: Int, shard index: Int) -> Int? {
        let rows = layout.rowRange(ofShard: index).count
        guard escapeCounts != nil else { return count == raw.blobBytes(rows: rows) ? 0 : nil }
        return raw.escapedRows(inBlob: count, rows: rows, rowBytes: layout.rowBytes)
    }

    @discardableResult
    private func store(_ blob: UnsafeRawBufferPointer, escaped: Int, shard index: Int) -> UnsafeRawPointer {
        let start = blob.baseAddress! + raw.start
        escapeCounts?[index].store(escaped, ordering: .relaxed)
        escapeRows?[index].store(Int(bitPattern: blob.baseAddress! + raw.blobBytes(rows: layout.rowRange(ofShard: index).count)),
                                 ordering: .relaxed)
        if blobs[index].exchange(Int(bitPattern: start), ordering: .releasing) == 0 {
            knownShards.add(1, ordering: .releasing)
        }
        return start
    }

    private func learnOne(shard index: Int, through txn: ReadTransaction, shards: MDB_dbi) throws -> UnsafeRawPointer {
        try withShardKey(index) { key in
            try txn.withValue(shards, key: key) { blob in
                let rows = layout.rowRange(ofShard: index)
                guard let blob else { throw StoreError.missingShard(shard: index, rows: rows) }
                guard let escaped = escapedRows(inBlob: blob.count, shard: index) else {
                    _ = try ShardCodec.header(of: blob, shard: index, layout: layout, version: version)  // names what is wrong
                    throw StoreError.corruptShard(shard: index, rows: rows, reason: "a blob of \(blob.count) bytes, expected \(raw.blobBytes(rows: rows.count))")
                }
                return store(blob, escaped: escaped, shard: index)
            }
        }
    }

    /// The shard holding row `row`.
    @inline(__always)
    func shard(ofRow row: Int) -> Int { rowsPerShard.divide(row) }

    /// Where row `row` lies, in the shard whose rows start at `shardRows`.
    @inline(__always)
    func location(ofRow row: Int, shard: Int, shardRows: UnsafeRawPointer) -> UnsafeRawPointer {
        shardRows + raw.rowOffset(row - shard * layout.rowsPerShard)
    }

    /// Whether every shard's address is known (the table's shards were all found by the first
    /// read), as ``rowMap(checking:)`` needs.
    var everyShardKnown: Bool { knownShards.load(ordering: .acquiring) == shardCount }

    /// Where the rows lie, for the C kernels (`pkm_locate_rows`, `pkm_gather_reduce_rows`); with
    /// `checking`, the bitmap of checked groups, unless every group has been checked since open.
    /// Valid for the life of the index.
    func rowMap(checking: Bool) -> pkm_row_map {
        let bases = UnsafeRawPointer(blobs).assumingMemoryBound(to: Int.self)  // Atomic<Int> is laid out as Int
        let bitmap = checking && checkedGroups.load(ordering: .relaxed) < groupCount ? checked?.words64 : nil
        return pkm_row_map(base: nil, row_bytes: raw.rowBytes, shard_rows: bases, rows_per_shard: layout.rowsPerShard,
                           shard_multiplier: rowsPerShard.multiplier, row_offsets: rowOffsets, checked: bitmap,
                           checked_shift: UInt32(checkedShift), group_shift: UInt32(raw.groupShift), rows: layout.rows,
                           escape_rows: escapeRows.map { UnsafeRawPointer($0).assumingMemoryBound(to: Int.self) },
                           escapes_checked: escapesChecked?.words64)
    }

    /// The map of a nibble table's slots copied into memory at `base` (``SlotsInMemory``), flat,
    /// with this index's escaped rows (``rowMap(checking:)``).
    func slotsMap(base: UnsafeRawPointer, slotBytes: Int, rows: Int) -> pkm_row_map {
        var map = rowMap(checking: false)
        map.base = base.assumingMemoryBound(to: CChar.self)
        map.row_bytes = slotBytes
        map.shard_rows = nil
        map.row_offsets = nil
        map.rows = rows
        return map
    }

    /// After a reduce of `rows` rows, checks groups not yet checked, from where the last sweep
    /// stopped, so that reads skip the bitmap sooner, where groups no query selects would keep
    /// them consulting it for the life of the process:
    /// - once all but a sixteenth of the table's groups have been read (and checked), a group
    ///   for every 256 rows read (at least 16): a few percent of the reduce's time;
    /// - once reads have `stalled` (met no group left to check) and the groups left are no more
    ///   than `rows`, a group for every 16 rows (at least 16): the rest within 16 such reduces.
    ///
    /// Only groups whose pages are in memory are checked (`mincore`), so that a sweep never
    /// waits on storage for rows no one asked for. A damaged group is left unchecked, for the
    /// read of one of its rows to fail, naming it. Looks at no more than 64 bits a group it may
    /// check, so that a table whose only unchecked groups are damaged or on storage does not
    /// have every reduce scan its whole bitmap.
    func sweep(afterReading rows: Int, stalled: Bool) {
        guard let checked else { return }
        let done = checkedGroups.load(ordering: .relaxed)
        let groups: Int
        if stalled && groupCount - done <= rows {
            groups = max(16, rows / 16)
        } else if done >= groupCount - groupCount / 16 {
            groups = max(16, rows / 256)
        } else {
            return
        }
        let bits = shardCount << checkedShift, perShard = 1 << checkedShift
        var left = groups, looked = 0
        var inMemory = PageResidency()
        while left > 0 && looked < min(bits, 64 * groups) && checkedGroups.load(ordering: .relaxed) < groupCount {
            let bit = sweepCursor.wrappingAdd(1, ordering: .relaxed).oldValue % bits
            looked += 1
            let shard = bit >> checkedShift, first = (bit & (perShard - 1)) << raw.groupShift
            guard first < layout.rowRange(ofShard: shard).count, !checked.contains(bit) else { continue }
            // A group on storage counts against `groups` too: a table mostly on storage costs a
            // sweep at most `groups` residency tests (one a page), not a scan of its bitmap.
            left -= 1
            let row = shard * layout.rowsPerShard + first
            guard inMemory.contains(bytesToCheck(ofRow: row, wholeGroup: true).0) else { continue }
            try? verify(row: row, wholeGroup: true)
        }
    }

    /// Checks, shard by shard, every group not yet checked whose pages are in memory (one
    /// `mincore` call a shard), as the sweep does, until every group is checked or `stop`
    /// returns true (asked once a shard); a shard whose address is not known is passed over.
    /// A damaged group is left unchecked, for the read of one of its rows to fail, naming it.
    /// With `fromStorage`, checks the groups whose pages are not in memory too, reading each
    /// shard's pages in ``storageShardsAhead`` shards before it checks them, in 2 MiB folios
    /// (``readIn(_:through:)``; the map is advised for random reads, which read a page at a time
    /// and leave the table mapped in 4 KiB pages). Returns the groups it checked. For ``BackgroundCheck``.
    func checkGroups(fromStorage: Bool, until stop: () -> Bool) -> Int {
        guard let checked else { return 0 }
        let perShard = 1 << checkedShift
        var inMemory = PageResidency(), checkedHere = 0, asked = 0
        var folios = file.map { LargeFolioReader(descriptor: $0.descriptor) }
        for shard in 0..<shardCount where !stop() && checkedGroups.load(ordering: .relaxed) < groupCount {
            guard let span = shardSpan(shard) else { continue }
            let rows = layout.rowRange(ofShard: shard)
            let groups = (rows.count + raw.groupRows - 1) / raw.groupRows
            if fromStorage {
                while asked < min(shardCount, shard + Self.storageShardsAhead) {
                    if let ahead = shardSpan(asked) { readIn(ahead, through: &folios) }
                    asked += 1
                }
            } else {
                inMemory.learn(span)
            }
            for g in 0..<groups where !checked.contains(shard * perShard + g) {
                let row = rows.lowerBound + g << raw.groupShift
                guard fromStorage || inMemory.contains(bytesToCheck(ofRow: row, wholeGroup: true).0) else { continue }
                if (try? verify(row: row, wholeGroup: true)) != nil && isChecked(row) { checkedHere += 1 }
            }
        }
        return checkedHere
    }

    /// Shards whose pages the storage pass of ``checkGroups(fromStorage:until:)`` asks for
    /// before it checks them: a few MiB of reads in flight.
    static let storageShardsAhead = 64

    /// Advises the map's pages of the file `MADV_HUGEPAGE`, so that a read of a page not in
    /// memory reads the aligned 2 MiB around it in one folio instead of a 4 KiB page (the map is
    /// advised for random reads): for a table the storage pass will read whole anyway (as it
    /// does, ``readIn(_:through:)``), so that all of it ends up mapped with 2 MiB pages.
    func adviseLargeFolios() {
        guard let file else { return }
        LargeFolioReader.adviseFolios(file.map, bytes: fileSize(descriptor: file.descriptor))
    }

    /// Reads `span` of the map into memory for the storage pass: in 2 MiB folios, so that every
    /// map of the file, this one included, maps it with 2 MiB pages (``LargeFolioReader``), or,
    /// where that fails, by asking for its pages (`MADV_WILLNEED`, which reads 4 KiB pages).
    private func readIn(_ span: UnsafeRawBufferPointer, through folios: inout LargeFolioReader?) {
        let start = Int(bitPattern: span.baseAddress)
        if let file, folios?.read(start - Int(bitPattern: file.map), count: span.count) == true { return }
        folios = nil
        adviseWillNeed(start, start + span.count)
    }

    /// The bytes of shard `index` that its rows and checksums occupy; nil while its address is
    /// not known.
    private func shardSpan(_ index: Int) -> UnsafeRawBufferPointer? {
        guard let base = rows(ofShard: index) else { return nil }
        let count = layout.rowRange(ofShard: index).count
        let end = max(raw.rowOffset(count - 1) + raw.rowBytes, raw.checksumOffset(count - 1) + raw.checksumBytes)
        return UnsafeRawBufferPointer(start: base, count: end)
    }

    /// Whether every group of the table has been checked since open (reads no longer consult
    /// the bitmap).
    var everyGroupChecked: Bool { checkedGroups.load(ordering: .relaxed) == groupCount }

    /// Whether the index remembers which groups it has checked (not above ``maxCheckedGroups``,
    /// where every read is checked).
    var remembersChecks: Bool { checked != nil }

    /// Locates rows `indices[0 ..< count]` in place, in order, while their shards are known (one
    /// C loop, `pkm_locate_rows`), adding to `unchecked` the number not yet checked since open
    /// (their groups not yet checked) when `counting`; returns how many it located.
    @inline(__always)
    func locateKnown(_ indices: UnsafePointer<Int>, count: Int, into rows: UnsafeMutablePointer<UnsafeRawPointer?>,
                     counting: Bool, unchecked: inout Int) -> Int {
        var clear = 0
        var map = rowMap(checking: counting)
        let located = pkm_locate_rows(&map, indices, count, &clear, rows)
        // Without a bitmap (tables above maxCheckedGroups) every located row is unchecked.
        unchecked += counting && checked == nil ? located : clear
        return located
    }

    /// The bit of row `row`'s group.
    @inline(__always)
    private func bit(ofRow row: Int) -> Int {
        let shard = shard(ofRow: row)
        return shard << checkedShift + (row - shard * layout.rowsPerShard) >> raw.groupShift
    }

    /// Whether row `row`'s group has been checked since open (always false above ``maxCheckedGroups``).
    @inline(__always)
    func isChecked(_ row: Int) -> Bool {
        guard let checked else { return false }
        return checkedGroups.load(ordering: .relaxed) == groupCount || checked.contains(bit(ofRow: row))
    }

    /// A row group: its shard, where the shard's first group lies, the shard's first row in the
    /// table, and the group's rows within the shard.
    private typealias Group = (shard: Int, base: UnsafeRawPointer, shardStart: Int, rows: Range<Int>)

    /// Row `row`'s group: its shard, where the shard's first group lies, the shard's first row
    /// in the table, and the group's rows within the shard; its shard is located.
    private func group(holding row: Int) -> Group {
        let shard = shard(ofRow: row), shardStart = shard * layout.rowsPerShard
        let first = ((row - shardStart) >> raw.groupShift) << raw.groupShift
        let end = min(first + raw.groupRows, layout.rowsPerShard, layout.rows - shardStart)
        return (shard, rows(ofShard: shard)!, shardStart, first..<end)
    }

    /// The bytes that reading row `row` and checking it read (its shard located), as one or two
    /// spans: the row alone when its group is checked; the row and then its checksum on its
    /// group's first read (``verify(row:wholeGroup:)``); the group's checksums and rows after.
    /// With `wholeGroup`, the group's checksums and rows, as ``verify(row:wholeGroup:)`` reads them.
    func bytesToCheck(ofRow row: Int, wholeGroup: Bool = false) -> (UnsafeRawBufferPointer, UnsafeRawBufferPointer?) {
        let g = group(holding: row), r = row - g.shardStart
        let rowBytes = UnsafeRawBufferPointer(start: g.base + raw.rowOffset(r), count: raw.rowBytes)
        guard !isChecked(row) else { return (rowBytes, nil) }
        if !wholeGroup, let touched, !touched.contains(bit(ofRow: row)) {
            return (rowBytes, UnsafeRawBufferPointer(start: g.base + raw.checksumOffset(r), count: raw.checksumBytes))
        }
        let first = g.rows.lowerBound, last = g.rows.upperBound - 1
        let start = min(raw.rowOffset(first), raw.checksumOffset(first))
        let end = max(raw.rowOffset(last) + raw.rowBytes, raw.checksumOffset(last) + raw.checksumBytes)
        return (UnsafeRawBufferPointer(start: g.base + start, count: end - start), nil)
    }

    /// Checks rows `indices[positions?[k] ?? k]` for k in 0 ..< count (their shards known) as
    /// ``verify(row:wholeGroup:)`` does, in one C loop (`pkm_check_rows`), where the index
    /// remembers its checks; returns the k where it stopped: count, or a row that did not match,
    /// for ``verify(row:wholeGroup:)`` to check again and report. Returns 0 where no bitmap is
    /// kept: every row is left to `verify`.
    func checkRows(_ count: Int, indices: UnsafePointer<Int>, positions: UnsafePointer<Int>?) -> Int {
        guard let touched else { return 0 }
        var map = rowMap(checking: true)
        guard map.checked != nil else { return count }  // every group checked
        var newlyChecked = 0
        let done = withUnsafeTemporaryAllocation(byteCount: nibbleTable == nil ? 0 : layout.rowBytes, alignment: 64) { scratch in
            (nibbleTable ?? []).withUnsafeBufferPointer { table in
                var checks = pkm_check_layout(unit_rows: raw.unitRows, unit_bytes: raw.unitBytes, checksums_offset: raw.checksumsOffset,
                                              checksum_bytes: raw.checksumBytes, nibble_table: nibbleTable == nil ? nil : table.baseAddress,
                                              dim: layout.dim, element_size: layout.elementType.size, scratch: scratch.baseAddress)
                return pkm_check_rows(&map, &checks, indices, positions, count, touched.mutableWords64, Self.checkAhead, &newlyChecked)
            }
        }
        checkedGroups.add(newlyChecked, ordering: .relaxed)
        return done
    }

    /// How far ahead of the row being checked its checksum (the C loop) or the bytes it checks
    /// (``bytesToCheck(ofRow:)``) are prefetched.
    static let checkAhead = 16

    /// Checks row `row` (its shard located) against its checksum unless its group was checked
    /// since open; throws, naming shard and row, when it does not match. The first read of a
    /// group since open checks its row alone (a row's bytes and its checksum, not the group's
    /// 17 lines) and marks the group touched; the next read of any of its rows, or `wholeGroup`,
    /// checks all of the group's rows, so that one bit remembers them: the bitmap is a bit a
    /// group (an eighth of a bit a row for rows of up to 512 bytes), small enough to stay in the
    /// caches the rows compete for. A group holding a damaged row is not remembered, and only
    /// the damaged row fails: its neighbours are checked alone each time they are read.
    func verify(row: Int, wholeGroup: Bool = false) throws {
        if isChecked(row) { return }
        let g = group(holding: row), bit = bit(ofRow: row)
        // Scratch for a nibble row's decoded values (its checksum is of its values), on the stack.
        try withUnsafeTemporaryAllocation(byteCount: nibbleTable == nil ? 0 : layout.rowBytes, alignment: 16) { decoded in
            if !wholeGroup, let touched, !touched.contains(bit) {
                try check(row - g.shardStart, of: g, decoded: decoded)
                _ = touched.insert(bit)
                return
            }
            do {
                for r in g.rows { try check(r, of: g, decoded: decoded) }
            } catch {
                try check(row - g.shardStart, of: g, decoded: decoded)
                return
            }
            if checked?.insert(bit) == true { checkedGroups.add(1, ordering: .relaxed) }
        }
    }

    /// Checks row `r` of group `g`'s shard against its checksum: a nibble row decoded into
    /// `decoded` first; a nibble table's escaped rows are left to ``checkEscaped(_:)``, so that
    /// checking a group never reads its shard's escaped rows.
    private func check(_ r: Int, of g: Group, decoded: UnsafeMutableRawBufferPointer) throws {
        guard let nibbleTable else {
            return try ShardCodec.checkRow(at: g.base + raw.rowOffset(r), checksum: g.base + raw.checksumOffset(r),
                                           row: g.shardStart + r, shard: g.shard, layout: layout)
        }
        let shard = nibbleShard(g.shard, groups: g.base)
        guard !shard.isEscaped(r) else { return }
        _ = try shard.decode(r, table: nibbleTable, into: decoded.baseAddress!)
        try shard.check(r, decoded: UnsafeRawBufferPointer(decoded))
    }

    /// Shard `index` of a nibble table, its first group at `groups` (known). Where its escaped
    /// rows begin is kept as the shard is learned; a reader that found `groups` by a relaxed load
    /// may not see that yet, and then computes it.
    private func nibbleShard(_ index: Int, groups: UnsafeRawPointer) -> NibbleShard {
        let escapes = UnsafeRawPointer(bitPattern: escapeRows![index].load(ordering: .relaxed))
            ?? groups - raw.start + raw.blobBytes(rows: layout.rowRange(ofShard: index).count)
        return NibbleShard(groups: groups, slots: raw, escapes: escapes, escapeCount: escapeCounts![index].load(ordering: .relaxed),
                           shard: index, layout: layout)
    }

    /// The values of escaped row `row` (its shard located), whose slot is at `slot`, once the
    /// slot is checked (Spec/FORMAT.md, "Nibble"), and, when `checking`, the values against the
    /// row's checksum unless its group's escaped rows were checked since open (``checkEscaped(_:)``).
    func escapedRow(_ row: Int, slot: UnsafeRawPointer, checking: Bool) throws -> UnsafeRawPointer {
        let (shard, r) = nibbleShard(holding: row)
        let values = try shard.escapedRow(r, slot: slot)
        if checking { try checkEscaped(row, values: values) }
        return values
    }

    /// Checks escaped row `row` (its shard located), whose slot was checked and points to
    /// `values`, against its checksum, with the other escaped rows of its group, unless they were
    /// checked since open: a group whose escaped rows all match is remembered (``escapesChecked``),
    /// the slots that point to them being as immutable as the coded rows the group bit remembers.
    /// Only `row` fails, naming shard and row; a group with a damaged escaped row is not
    /// remembered, so it fails every read.
    private func checkEscaped(_ row: Int, values: UnsafeRawPointer) throws {
        let bit = bit(ofRow: row)
        if escapesChecked?.contains(bit) == true { return }
        let (shard, r) = nibbleShard(holding: row)
        let rowBytes = layout.rowBytes
        try shard.check(r, decoded: UnsafeRawBufferPointer(start: values, count: rowBytes))
        guard let escapesChecked else { return }
        let first = (r >> raw.groupShift) << raw.groupShift
        for other in first..<min(first + raw.groupRows, layout.rowRange(ofShard: shard.shard).count) where other != r && shard.isEscaped(other) {
            guard let values = try? shard.escapedRow(other, slot: shard.slot(other)),
                  (try? shard.check(other, decoded: UnsafeRawBufferPointer(start: values, count: rowBytes))) != nil else { return }
        }
        _ = escapesChecked.insert(bit)
    }

    /// The nibble shard holding row `row` (its shard located), and the row within it.
    private func nibbleShard(holding row: Int) -> (shard: NibbleShard, row: Int) {
        let index = shard(ofRow: row)
        // Acquiring: the shard's escape count was stored before its address.
        let groups = UnsafeRawPointer(bitPattern: blobs[index].load(ordering: .acquiring))!
        return (nibbleShard(index, groups: groups), row - index * layout.rowsPerShard)
    }

    /// `escapedRow(row(k), slot: slot(k), checking:)` for k in 0 ..< count, into `values[k]`: every
    /// row's values (and, when `checking`, its checksum line) asked for first, so that their cache
    /// misses overlap instead of coming one after another; with `fromStorage`, their pages too
    /// (`MADV_WILLNEED`), so that a batch's cold escaped rows are read together, not a fault at a time.
    func escapedRows(count: Int, row: (Int) -> Int, slot: (Int) -> UnsafeRawPointer, into values: UnsafeMutablePointer<UnsafeRawPointer?>,
                     checking: Bool, fromStorage: Bool) throws {
        for k in 0..<count {
            let (shard, r) = nibbleShard(holding: row(k))
            values[k] = try shard.escapedRow(r, slot: slot(k))
            if fromStorage {
                let start = Int(bitPattern: values[k])
                adviseWillNeed(start, start + layout.rowBytes)
            }
            pkm_prefetch(values[k], layout.rowBytes)
            if checking && escapesChecked?.contains(bit(ofRow: row(k))) != true { shard.prefetchChecksum(r) }
        }
        guard checking else { return }
        for k in 0..<count { try checkEscaped(row(k), values: values[k]!) }
    }

    /// Copies every slot of the nibble table into `out`, row r's at `out + r × slotBytes`;
    /// returns false, leaving the rest, when `stop` answers true (asked once a shard). Every
    /// shard must be known.
    func copySlots(into out: UnsafeMutableRawPointer, until stop: () -> Bool) -> Bool {
        let slotBytes = raw.rowBytes
        for s in 0..<shardCount {
            guard !stop(), let shardRows = rows(ofShard: s) else { return false }
            for r in layout.rowRange(ofShard: s) {
                (out + r * slotBytes).copyMemory(from: location(ofRow: r, shard: s, shardRows: shardRows), byteCount: slotBytes)
            }
        }
        return true
    }

    /// Decodes the nibble slots at `slots[0 ..< count]`, of rows `indices[0 ..< count]` (their shards
    /// located), into `out`, row k at `out + k × rowBytes`: coded slots by the C decoder, each
    /// escaped row copied from its shard's escape area after its slot (and, when `checking`, its
    /// values) is checked.
    func decode(_ slots: UnsafeMutablePointer<UnsafeRawPointer?>, rows indices: UnsafePointer<Int>, count: Int,
                into out: UnsafeMutableRawPointer, checking: Bool) throws {
        let table = nibbleTable!, size = layout.elementType.size, rowBytes = layout.rowBytes
        var k = 0
        try table.withUnsafeBufferPointer { t in
            while k < count {
                k += pkm_nibble_decode(slots + k, count - k, layout.dim, size, t.baseAddress, out + k * rowBytes, RowKernels.prefetchDistance)
                guard k < count else { break }
                (out + k * rowBytes).copyMemory(from: try escapedRow(indices[k], slot: slots[k]!, checking: checking), byteCount: rowBytes)
                k += 1
            }
        }
    }
}
