import Foundation
import Testing
import _MemorySupport
import TestSupport
@testable import MemoryStore

@Suite struct IntegrityTests {
    func makeStore(_ dir: ScratchDirectory, codec: CodecKind) throws -> (String, TableLayout) {
        let layout = TableLayout(elementType: .bf16, rows: 1000, dim: 16, rowsPerShard: 100, codec: codec)
        try writeTable(dir.file("t.pkm"), layout)
        return (dir.file("t.pkm"), layout)
    }

    /// Reading any row of a damaged shard throws an error naming that shard and its rows.
    func expectCorrupt(_ path: String, shard: Int, rows: Range<Int>) throws {
        let store = try Store.open(at: path, cacheBytes: 0)
        do {
            _ = try store.row(rows.lowerBound + 1)
            Issue.record("reading a damaged shard succeeded")
        } catch let StoreError.corruptShard(s, r, _) {
            #expect(s == shard && r == rows)
        }
        let report = try store.verify()
        #expect(report.problems.count == 1)
        #expect(report.problems.first.map { "\($0)" }?.contains("shard \(shard) (rows \(rows.lowerBound)..<\(rows.upperBound))") == true)
        // The other shards still read.
        _ = try store.row(rows.lowerBound == 0 ? 999 : 0)
    }

    /// The start of LMDB's map is found from the header of shard 0's first overflow page (its
    /// page number), which LMDB itself never reads: a wrong number there must not move where
    /// compressed shards are read from the file (`BlobReader`), which would fail every shard as
    /// damaged; the store reads them through the map instead, and every row comes back.
    @Test func aWrongPageNumberInAnOverflowPageHeaderMovesNoRead() throws {
        let dir = ScratchDirectory(), path = dir.file("t.pkm")
        let layout = TableLayout(elementType: .bf16, rows: 20_000, dim: 64, rowsPerShard: 4_000, codec: .zstd)
        let bytes = try writeTable(path, layout)
        let offset: Int = try {
            let store = try Store.open(at: path, cacheBytes: 0)
            let value = try store.env.read { txn in
                try withShardKey(0) { try txn.withValue(store.env.shards, key: $0) { try #require($0?.baseAddress) } }
            }
            let start = try #require(store.env.mapStart(holding: value), "shard 0 is not on overflow pages")
            return value - 16 - start
        }()
        let fd = open(path, O_RDWR)
        defer { close(fd) }
        // Two pages too few: the start found would be the file's third page, inside the map.
        try #require(offset / 4096 > 2)
        var wrong = UInt64(offset / 4096 - 2)
        try #require(pwrite(fd, &wrong, 8, off_t(offset)) == 8)
        let store = try Store.open(at: path, cacheBytes: 0)
        var out = [Float](repeating: 0, count: layout.rows * layout.dim)
        try out.withUnsafeMutableBufferPointer { try store.rows(Array(0..<layout.rows), into: $0) }
        let expected = stride(from: 0, to: bytes.count, by: 2).map { Float(bitPattern: UInt32(bytes[$0]) << 16 | UInt32(bytes[$0 + 1]) << 24) }
        #expect(out == expected)
    }

    @Test func bitFlipsAnywhereInACompressedShardAreCaught() throws {
        var rng = SeededGenerator(seed: 2)
        for _ in 0..<25 {
            let dir = ScratchDirectory()
            let (path, _) = try makeStore(dir, codec: .zstd)
            try tamperShard(path, 3) { blob in
                blob[Int.random(in: 0..<blob.count, using: &rng)] ^= UInt8(1) << UInt8.random(in: 0..<8, using: &rng)
            }
            try expectCorrupt(path, shard: 3, rows: 300..<400)
        }
    }

    /// Raw rows carry their own checksums and are read without their shard's header: a flip
    /// fails the row it hit (its bytes or its checksum), the shard's other rows (all of them when
    /// the header or padding was hit) read back exactly, and `verify`, which checks headers and
    /// padding too, names the shard.
    @Test func bitFlipsAnywhereInARawShardAreCaught() throws {
        var rng = SeededGenerator(seed: 1)
        let layout = TableLayout(elementType: .bf16, rows: 1000, dim: 16, rowsPerShard: 100, codec: .raw)
        let raw = RawShardLayout(version: Manifest.currentVersion, rowBytes: layout.rowBytes)
        /// The row whose bytes or checksum lie at `offset` of the blob (nil: the header or padding).
        func row(at offset: Int) -> Int? {
            (0..<100).first { r in
                (raw.start + raw.rowOffset(r)..<raw.start + raw.rowOffset(r) + layout.rowBytes).contains(offset)
                    || (raw.start + raw.checksumOffset(r)..<raw.start + raw.checksumOffset(r) + 8).contains(offset)
            }.map { 300 + $0 }
        }
        var sawHeader = false, sawRow = false
        for trial in 0..<40 {
            let dir = ScratchDirectory()
            let bytes = try writeTable(dir.file("t.pkm"), layout)
            // Cover the header on purpose twice (its checksum field, then any other byte); otherwise anywhere.
            var flipped = 0
            try tamperShard(dir.file("t.pkm"), 3) { blob in
                switch trial {
                case 0: flipped = 24 + Int.random(in: 0..<8, using: &rng)
                case 1: flipped = Int.random(in: 0..<24, using: &rng)
                default: flipped = Int.random(in: 0..<blob.count, using: &rng)
                }
                blob[flipped] ^= UInt8(1) << UInt8.random(in: 0..<8, using: &rng)
            }
            let store = try Store.open(at: dir.file("t.pkm"), cacheBytes: 0)
            let damagedRow = row(at: flipped)
            sawHeader = sawHeader || damagedRow == nil
            sawRow = sawRow || damagedRow != nil
            for row in 300..<400 {
                do {
                    let got = try store.row(row)
                    #expect(got == referenceRow(bytes, row, dim: 16, type: .bf16), "row \(row) read back different values")
                    #expect(row != damagedRow, "damaged row \(row) was read (flip at \(flipped))")
                } catch let StoreError.corruptShard(shard, rows, _) {
                    #expect(shard == 3 && rows == 300..<400)
                    #expect(row == damagedRow, "undamaged row \(row) refused (flip at \(flipped))")
                }
            }
            // The batched path (rows in place through RawRowIndex) refuses the damaged row too.
            var out = [Float](repeating: 0, count: 100 * 16)
            let batch = Result { try out.withUnsafeMutableBufferPointer { try store.rows(Array(300..<400), into: $0) } }
            #expect((try? batch.get()) == nil ? damagedRow != nil : damagedRow == nil, "flip at \(flipped)")
            let report = try store.verify()
            #expect(report.problems.count == 1, "flip at \(flipped): \(report.problems)")
            #expect(report.problems.first.map { "\($0)" }?.contains("shard 3 (rows 300..<400)") == true)
        }
        #expect(sawHeader && sawRow)
    }

    /// The reduce whose kernel locates raw rows itself sums rows of groups not yet checked with
    /// the others and checks them before returning: a damaged row fails the first reduce that
    /// reads it, and every one after, naming its shard; its neighbours sum to their values; and
    /// once most groups are checked, reduces check the rest a few at a time (the damaged group
    /// stays unchecked), so that reads stop consulting the bitmap.
    @Test func theLocatingReduceChecksBeforeItReturns() throws {
        let dir = ScratchDirectory()
        let layout = TableLayout(elementType: .bf16, rows: 1000, dim: 16, rowsPerShard: 100, codec: .raw)
        let raw = RawShardLayout(version: Manifest.currentVersion, rowBytes: layout.rowBytes)
        let bytes = try writeTable(dir.file("t.pkm"), layout)
        try tamperShard(dir.file("t.pkm"), 3) { blob in blob[raw.start + raw.rowOffset(45) + 5] ^= 0x10 }  // row 345
        let store = try Store.open(at: dir.file("t.pkm"), cacheBytes: 0, checksInBackground: false)
        let index = try #require(store.rawRows)
        /// The reduce of `rows` (weights 1/(k+1)) against the sum of their reference values.
        func reduce(_ rows: [Int]) throws {
            let weights = rows.indices.map { 1 / Float($0 + 1) }
            var out = [Float](repeating: 0, count: 16)
            try store.gatherReduce(indices: rows, weights: weights, into: &out)
            for j in 0..<16 {
                let exact = rows.indices.reduce(0.0) { $0 + Double(weights[$1]) * Double(referenceRow(bytes, rows[$1], dim: 16, type: .bf16)[j]) }
                #expect(abs(Double(out[j]) - exact) <= 1e-5 * max(1, abs(exact)), "column \(j)")
            }
        }
        for _ in 0..<2 {
            do {
                try reduce([0, 345, 999])
                Issue.record("a reduce read the damaged row")
            } catch let StoreError.corruptShard(shard, rows, _) {
                #expect(shard == 3 && rows == 300..<400)
            }
        }
        // The shards' addresses are known now: every later read is located by the kernel.
        #expect(index.everyShardKnown)
        let undamaged = (0..<1000).filter { $0 != 345 }
        for start in stride(from: 0, to: undamaged.count, by: 97) { try reduce(Array(undamaged[start..<min(start + 97, undamaged.count)])) }
        for _ in 0..<20 { try reduce([1, 2]) }  // the sweep's calls
        #expect(undamaged.allSatisfy { index.isChecked($0) || (340..<348).contains($0) })  // 345's group of 8 stays unchecked
        #expect(!index.isChecked(345))
        #expect(throws: StoreError.self) { try reduce([345]) }
    }

    /// Reduces that keep reading rows already checked meet no group left to check: they have
    /// stalled, and when the groups left are no more than a reduce's rows, they check those a
    /// sixteenth of their rows' worth at a time, so that reads stop consulting the bitmap
    /// although no query selects the rest (before, the rest was checked only once all but a
    /// sixteenth of the groups had been read). Groups whose pages are not in memory are left
    /// alone until they are.
    @Test func stalledReducesCheckTheGroupsInMemoryThatNoReadSelects() throws {
        let dir = ScratchDirectory()
        let (bytes, store, index) = try openTenShards(dir)
        /// Reduces `rows` (weights 1) and compares with the sum of their reference values.
        func reduce(_ rows: [Int], times: Int) throws {
            let exact = (0..<16).map { j in rows.reduce(0.0) { $0 + Double(referenceRow(bytes, $1, dim: 16, type: .bf16)[j]) } }
            for _ in 0..<times {
                var out = [Float](repeating: 0, count: 16)
                try store.gatherReduce(indices: rows, weights: [Float](repeating: 1, count: rows.count), into: &out)
                #expect(zip(out, exact).allSatisfy { abs(Double($0) - $1) <= 1e-5 * max(1, abs($1)) })
            }
        }
        // Every row but the first shard's (row 0 locates it), twice: their groups checked, 1,249
        // groups left (over a tenth), on pages read-ahead does not reach.
        try reduce([0] + Array(10_000..<100_000), times: 2)
        try #require(index.everyShardKnown)
        // Pages of the table not yet read leave the page cache, where the file system allows.
        let fd = open(dir.file("t.pkm"), O_RDONLY)
        defer { close(fd) }
        _ = posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED)
        var residency = PageResidency()
        let evicted = !residency.contains(index.bytesToCheck(ofRow: 5_555, wholeGroup: true).0)
        // 2,001 reads of checked rows: no fewer than the groups left, so the sweep's share is 125 a reduce.
        let hot = [10_007] + (0..<1000).flatMap { _ in [10_001, 10_002] }
        try reduce(hot, times: 30)
        if evicted {
            // The sweep passed over the groups on storage; reading the file brings them in.
            #expect(!index.isChecked(5_555))
            var buffer = [UInt8](repeating: 0, count: 1 << 20)
            while buffer.withUnsafeMutableBytes({ read(fd, $0.baseAddress!, $0.count) }) > 0 {}
            try reduce(hot, times: 30)
        }
        #expect((0..<100_000).allSatisfy { index.isChecked($0) })
        #expect(index.rowMap(checking: true).checked == nil, "reads still consult the bitmap")
        // Far from done, a stalled reduce leaves the rest to reads: a sweep of a large remainder
        // would add its hashing to every reduce for a long while.
        let far = try Store.open(at: dir.file("t.pkm"), cacheBytes: 0, checksInBackground: false)
        let farIndex = try #require(far.rawRows)
        var out = [Float](repeating: 0, count: 16)
        for _ in 0..<30 { try far.gatherReduce(indices: hot, weights: [Float](repeating: 1, count: hot.count), into: &out) }
        #expect(!farIndex.isChecked(5_555))
    }

    /// Reads that hand rows out (`Store.rows`, the road of queries, exports and reads from
    /// storage) stall and sweep as reduces do: a table whose first shard no read selects ends
    /// checked whole, so that its reads stop consulting the bitmap.
    @Test func stalledRowReadsCheckTheGroupsNoReadSelects() throws {
        let dir = ScratchDirectory()
        let (bytes, store, index) = try openTenShards(dir)
        func read(_ rows: [Int], times: Int) throws {
            var out = [Float](repeating: 0, count: rows.count * 16)
            for _ in 0..<times {
                try out.withUnsafeMutableBufferPointer { try store.rows(rows, into: $0) }
                for (k, r) in rows.enumerated() where k % 97 == 0 {
                    #expect(Array(out[(k * 16)..<(k * 16 + 16)]) == referenceRow(bytes, r, dim: 16, type: .bf16))
                }
            }
        }
        try read([0] + Array(10_000..<100_000), times: 2)
        try #require(index.everyShardKnown)
        #expect(!index.isChecked(5_555))
        try read([10_007] + (0..<1000).flatMap { _ in [10_001, 10_002] }, times: 30)
        #expect((0..<100_000).allSatisfy { index.isChecked($0) })
        #expect(index.rowMap(checking: true).checked == nil, "reads still consult the bitmap")
        // Reads of fewer than 256 rows do not sweep, even with all but 62 groups checked: 16
        // groups for one row would multiply its cost.
        let again = try Store.open(at: dir.file("t.pkm"), cacheBytes: 0, checksInBackground: false)
        let againIndex = try #require(again.rawRows)
        let most = [0] + Array(500..<100_000)  // neighbours: a group's second row checks it whole
        var out = [Float](repeating: 0, count: 200 * 16)
        for start in stride(from: 0, to: most.count, by: 200) {
            try out.withUnsafeMutableBufferPointer { try again.rows(Array(most[start..<min(start + 200, most.count)]), into: $0) }
        }
        for _ in 0..<100 { _ = try again.row(10_001) }
        #expect(againIndex.isChecked(600) && !againIndex.isChecked(300))
    }

    /// A table of 100,000 rows of 16 bf16 values in shards of 10,000 (1,250 groups a shard),
    /// written in `dir` and opened without a cache or background check: its reference bytes, the
    /// store and its index.
    private func openTenShards(_ dir: ScratchDirectory) throws -> (bytes: [UInt8], store: Store, index: RawRowIndex) {
        let layout = TableLayout(elementType: .bf16, rows: 100_000, dim: 16, rowsPerShard: 10_000, codec: .raw)
        let bytes = try writeTable(dir.file("t.pkm"), layout)
        let store = try Store.open(at: dir.file("t.pkm"), cacheBytes: 0, checksInBackground: false)
        return (bytes, store, try #require(store.rawRows))
    }

    /// A row's first read checks it alone (the C loop, `pkm_check_rows`), the next read of its
    /// group the whole group, down to the partial groups at each shard's end and the table's last
    /// shard of 3 rows, raw rows and nibble slots (units of 40 rows, 20 at a shard's end): after
    /// reads of every row, every group is checked (a group whose whole check failed would stay
    /// unchecked), and the sums are right throughout.
    @Test(arguments: [CodecKind.raw, .nibble])
    func readsCheckRowsAloneThenWholeGroups(codec: CodecKind) throws {
        let dir = ScratchDirectory()
        let layout = TableLayout(elementType: .bf16, rows: 1003, dim: 64, rowsPerShard: 100, codec: codec)
        let bytes = try writeTable(dir.file("t.pkm"), layout)
        let store = try Store.open(at: dir.file("t.pkm"), cacheBytes: 0, checksInBackground: false)
        let index = try #require(store.rawRows)
        func reduce(_ batch: [Int]) throws {
            var out = [Float](repeating: 0, count: 64)
            try store.gatherReduce(indices: batch, weights: [Float](repeating: 1, count: batch.count), into: &out)
            for j in [0, 33, 63] {
                let exact = batch.reduce(0.0) { $0 + Double(referenceRow(bytes, $1, dim: 64, type: .bf16)[j]) }
                #expect(abs(Double(out[j]) - exact) <= 1e-4 * max(1, abs(exact)), "column \(j)")
            }
        }
        try reduce([5, 1002])
        #expect(!index.isChecked(5) && !index.isChecked(1002))
        try reduce([1001, 5])
        #expect(index.isChecked(5) && index.isChecked(1002) && index.isChecked(1000) && !index.isChecked(8))
        // The C loop itself (a failure there would be made good by the Swift check after it):
        // a shard-end group's row alone, then the group whole.
        let picked = [96, 57]
        #expect(index.checkRows(2, indices: picked, positions: nil) == 2)
        #expect(!index.isChecked(96) && !index.isChecked(57))
        #expect(index.checkRows(2, indices: picked, positions: [1, 0]) == 2)
        #expect(index.isChecked(96) && index.isChecked(99) && index.isChecked(57))
        var rng = SeededGenerator(seed: 3)
        let rows = Array(0..<1003).shuffled(using: &rng)
        for start in stride(from: 0, to: rows.count, by: 128) { try reduce(Array(rows[start..<min(start + 128, rows.count)])) }
        for start in stride(from: 0, to: rows.count, by: 128) { try reduce(Array(rows[start..<min(start + 128, rows.count)])) }
        #expect((0..<1003).allSatisfy { index.isChecked($0) })
    }

    /// An index outside the table or a target outside the output throws the same error on every
    /// road: checked first (a store whose shards are not yet located, zstd), or by the kernel that
    /// locates rows as it reads them (raw and nibble tables once located, resident tables); and
    /// the store reduces correctly after.
    @Test(arguments: [(CodecKind.raw, false), (.raw, true), (.nibble, false), (.zstd, false)])
    func outOfRangeIndicesAndTargetsThrowOnEveryRoad(codec: CodecKind, resident: Bool) throws {
        let dir = ScratchDirectory()
        let layout = TableLayout(elementType: .bf16, rows: 3000, dim: 64, rowsPerShard: 100, codec: codec)
        let bytes = try writeTable(dir.file("t.pkm"), layout)
        let store = try Store.open(at: dir.file("t.pkm"), resident: resident)
        func reduce(_ rows: [Int], _ targets: [Int]) throws -> [Float] {
            try batchedReduce(store, indices: rows, weights: rows.indices.map { 1 / Float($0 + 1) }, chunks: 1, targets: targets, outputs: 4)
        }
        let all = Array(0..<3000), spread = all.map { $0 % 4 }
        for pass in 0..<2 {  // before the shards are located, and after (every row read once)
            if pass == 1, codec != .zstd, !resident {
                // The second pass takes the kernel that locates the rows.
                #expect(try #require(store.rawRows).everyShardKnown && !store.readingFromDisk.load(ordering: .relaxed))
            }
            for bad in [3000, -1, Int.max] {
                var rows = all
                rows[1500 + pass] = bad
                #expect(throws: StoreError.rowOutOfRange(row: bad, rows: 3000), "pass \(pass), index \(bad)") { try reduce(rows, spread) }
            }
            for bad in [4, -1] {
                var targets = spread
                targets[2900] = bad
                #expect(throws: StoreError.invalidArgument("targets must index the 4 output rows of 64"), "pass \(pass), target \(bad)") {
                    try reduce(all, targets)
                }
            }
            let out = try reduce(all, spread)
            for (t, j) in [(0, 0), (3, 63), (1, 17)] {
                let exact = all.indices.filter { spread[$0] == t }.reduce(0.0) {
                    $0 + Double(1 / Float($1 + 1)) * Double(referenceRow(bytes, all[$1], dim: 64, type: .bf16)[j])
                }
                #expect(abs(Double(out[t * 64 + j]) - exact) <= 1e-4 * max(1, abs(exact)), "pass \(pass), output \(t), column \(j)")
            }
        }
    }

    @Test(arguments: [CodecKind.raw, .zstd])
    func truncatedShardsAreCaught(codec: CodecKind) throws {
        for keep in [0, 5, 31, 32, 40, 200] {
            let dir = ScratchDirectory()
            let (path, _) = try makeStore(dir, codec: codec)
            try tamperShard(path, 7) { blob in blob = Array(blob.prefix(keep)) }
            try expectCorrupt(path, shard: 7, rows: 700..<800)
        }
    }

    /// A valid blob under another shard's key: caught by the header's shard number, and for
    /// raw rows (read without the header) by each row's checksum, seeded with its index.
    @Test(arguments: [CodecKind.raw, .zstd])
    func aShardFromAnotherPositionIsCaught(codec: CodecKind) throws {
        let dir = ScratchDirectory()
        let (path, _) = try makeStore(dir, codec: codec)
        // Copy shard 2's blob over shard 5: a valid blob in the wrong place.
        let env = try Environment(path: path, readOnly: false)
        try env.write { txn in
            let blob = try withShardKey(2) { try txn.get(env.shards, key: $0) }!
            try withShardKey(5) { key in try blob.withUnsafeBytes { try txn.put(env.shards, key: key, value: $0) } }
        }
        try expectCorrupt(path, shard: 5, rows: 500..<600)
        let store = try Store.open(at: path, cacheBytes: 0)
        for row in 500..<600 {
            #expect(throws: StoreError.self, "row \(row) read from the misplaced blob") { try store.row(row) }
            var out = [Float](repeating: 0, count: 2 * 16)
            do {
                try out.withUnsafeMutableBufferPointer { try store.rows([0, row], into: $0) }
                Issue.record("row \(row) read from the misplaced blob")
            } catch let StoreError.corruptShard(shard, _, _) {
                #expect(shard == 5)
            }
        }
    }

    @Test func newerFormatVersionIsRefused() throws {
        let dir = ScratchDirectory()
        let (path, _) = try makeStore(dir, codec: .zstd)
        let store = try Store.open(at: path)
        let json = String(decoding: try store.manifest.encoded(), as: UTF8.self)
            .replacingOccurrences(of: "\"formatVersion\":\(Manifest.currentVersion)", with: "\"formatVersion\":\(Manifest.currentVersion + 1)")
        try rewriteMeta(path, "manifest", json)
        #expect(throws: StoreError.unsupportedVersion(found: Manifest.currentVersion + 1, supported: Manifest.currentVersion)) {
            try Store.open(at: path)
        }
    }

    @Test func manifestDisagreeingWithShardsIsRefused() throws {
        let dir = ScratchDirectory()
        let (path, _) = try makeStore(dir, codec: .zstd)
        let store = try Store.open(at: path)
        var manifest = store.manifest
        manifest.table.rows = 2000
        try rewriteMeta(path, "state", #"{"rowsCommitted":2000,"complete":true}"#)
        try rewriteMeta(path, "manifest", String(decoding: try manifest.encoded(), as: UTF8.self))
        do {
            _ = try Store.open(at: path)
            Issue.record("opened a store whose manifest promises 20 shards but holds 10")
        } catch let StoreError.inconsistent(why) {
            #expect(why.contains("10 shards stored"))
        }
    }

    @Test func damagedManifestsAreRefusedWithTheirReason() throws {
        let cases: [(String, String)] = [
            ("not json", "not a JSON object"),
            (#"{"format":"other","formatVersion":1}"#, "format is 'other'"),
            (#"{"format":"pkm-store"}"#, "formatVersion is missing"),
            (#"{"format":"pkm-store","formatVersion":1}"#, "field 'table' is missing"),
        ]
        for (json, reason) in cases {
            let dir = ScratchDirectory()
            let (path, _) = try makeStore(dir, codec: .raw)
            try rewriteMeta(path, "manifest", json)
            do {
                _ = try Store.open(at: path)
                Issue.record("opened with manifest \(json)")
            } catch let error as StoreError {
                #expect("\(error)".contains(reason), "\(error)")
            }
        }
    }

    @Test func flippedMetaRecordsAreNamed() throws {
        for name in ["manifest", "state", "retrieval"] {
            let dir = ScratchDirectory()
            let (path, _) = try makeStore(dir, codec: .zstd)
            if name == "retrieval" {
                let writer = try StoreWriter.create(at: dir.file("r.pkm"), layout: TableLayout(elementType: .f32, rows: 1, dim: 1))
                try writer.putMetaRecord("retrieval", Array(#"{"topK":32}"#.utf8))
                try writer.append([Float(1)])
                try writer.finish()
                #expect(try Store.open(at: dir.file("r.pkm")).metaRecord(named: "retrieval") == Array(#"{"topK":32}"#.utf8))
            }
            let target = name == "retrieval" ? dir.file("r.pkm") : path
            // "topK":32 -> "topK":22 and similar one-bit changes inside the JSON.
            let env = try Environment(path: target, readOnly: false)
            try env.write { txn in
                try withName(name) { key in
                    var value = try #require(try txn.get(env.meta, key: key))
                    value[value.count - 12] ^= 0x10
                    try value.withUnsafeBytes { try txn.put(env.meta, key: key, value: $0) }
                }
            }
            let error: any Error
            do {
                let store = try Store.open(at: target)
                let report = try store.verify()
                #expect(report.problems.contains(.corruptRecord(name: name, reason: "its checksum does not match")))
                error = try #require(throws: StoreError.self) { try store.metaRecord(named: name) }
            } catch let thrown { error = thrown }
            #expect("\(error)".contains("meta record '\(name)' is corrupt"), "\(error)")
        }
    }

    /// LMDB has no page checksums; its meta pages are checked against each other and the file.
    @Test func damagedMetaPagesAreNamed() throws {
        let dir = ScratchDirectory()
        let (path, _) = try makeStore(dir, codec: .zstd)
        let original = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
        let pageSize = 4096
        let newest = original.withUnsafeBytes { b in
            b.loadUnaligned(fromByteOffset: 144, as: UInt64.self) > b.loadUnaligned(fromByteOffset: pageSize + 144, as: UInt64.self) ? 0 : pageSize
        }
        let cases: [(String, ([UInt8]) -> [UInt8])] = [
            ("transaction ids", { var b = $0; b[newest + 144] ^= 0x04; return b }),   // would open an older commit
            ("last in use", { Array($0.prefix($0.count / 2)) }),                        // truncated file
            ("last in use", { var b = $0; b[newest + 141] ^= 0x01; return b }),       // last page far past the end
            ("B-tree root", { var b = $0; b[newest + 128] ^= 0x01; b[newest + 133] ^= 0x01; return b }),
        ]
        for (reason, damage) in cases {
            try Data(damage(original)).write(to: URL(fileURLWithPath: path))
            #expect(throws: StoreError.self) { try Store.open(at: path) }
            do { _ = try Store.open(at: path) } catch { #expect("\(error)".contains(reason), "\(error)") }
        }
        try Data(original).write(to: URL(fileURLWithPath: path))
        #expect(try Store.open(at: path).verify().isSound)
    }

    /// LMDB trusts its branch and leaf pages: a flipped node offset sent a reader's cursor
    /// outside its page and crashed it inside LMDB (found by the corruption harness), and a node
    /// flagged as duplicate data would too. Opening walks those pages first and names the damage.
    @Test func damagedBTreePagesAreNamed() throws {
        let dir = ScratchDirectory()
        let (path, _) = try makeStore(dir, codec: .raw)
        let original = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
        let pageSize = 4096
        func u16(_ b: [UInt8], _ at: Int) -> Int { Int(b[at]) | Int(b[at + 1]) << 8 }
        // Leaf pages whose first node has an 8-byte key: the shard keys (stale copies in free pages match too).
        let leaves = stride(from: 2 * pageSize, to: original.count, by: pageSize).filter { p in
            let node = u16(original, p + 16)
            return u16(original, p + 10) == 0x02 && node + 8 <= pageSize && u16(original, p + node + 6) == 8
        }
        try #require(!leaves.isEmpty)
        let damages: [(String, (inout [UInt8], Int) -> Void)] = [
            ("node 0 outside the page", { b, p in b[p + 17] ^= 0x80 }),          // the harness's crash: a node offset
            ("with flags", { b, p in b[p + u16(b, p + 16) + 4] |= 0x04 }),       // a node flagged as duplicate data
            ("neither a branch nor a leaf", { b, p in b[p + 10] = 0x04 }),       // a leaf marked as an overflow page
        ]
        for (reason, damage) in damages {
            var bytes = original
            for p in leaves { damage(&bytes, p) }
            try Data(bytes).write(to: URL(fileURLWithPath: path))
            do {
                _ = try Store.open(at: path)
                Issue.record("opened a store with damaged B-tree pages (\(reason))")
            } catch {
                #expect("\(error)".contains("B-tree") && "\(error)".contains(reason), "\(error)")
            }
        }
        try Data(original).write(to: URL(fileURLWithPath: path))
        #expect(try Store.open(at: path).verify().isSound)
    }

    /// `memtool compact` in another process renames its new file over the path of a store this
    /// process has open; the open environment's checks read the file it maps, never the file
    /// the path names by then (a CI run's `memtool verify` walked the old file's pages from the
    /// new file's meta page, which held the same transaction id, and reported damage).
    @Test func checksReadTheMappedFileNotTheRenamedPath() throws {
        let dir = ScratchDirectory()
        let fixtures = Tools.root.appendingPathComponent("Tests/Fixtures")
        let path = dir.file("m.pkm"), replacement = dir.file("m.pkm.compacting")
        try FileManager.default.copyItem(atPath: fixtures.appendingPathComponent("v3-raw.store").path, toPath: path)
        try FileManager.default.copyItem(atPath: fixtures.appendingPathComponent("v3-zstd.store").path, toPath: replacement)
        let env = try Environment(path: path, readOnly: true)
        // Both files' newest commit is transaction 8; the replacement's free-list root is an overflow page of the original.
        try #require(rename(replacement, path) == 0)
        try BTreePages.check(env)
        #expect(try env.snapshotMatchesMetaPages())
    }

    @Test func notAStoreIsNamed() throws {
        let dir = ScratchDirectory()
        #expect(throws: StoreError.notFound(path: dir.file("missing.pkm"))) { try Store.open(at: dir.file("missing.pkm")) }
        let junk = dir.file("junk.pkm")
        #expect(FileManager.default.createFile(atPath: junk, contents: Data(repeating: 0xAB, count: 64 << 10)))
        do {
            _ = try Store.open(at: junk)
            Issue.record("opened a file of junk")
        } catch let error as StoreError {
            #expect("\(error)".contains("not a readable store"))
        }
    }

    @Test func corruptTensorsAreNamed() throws {
        let dir = ScratchDirectory()
        let writer = try StoreWriter.create(at: dir.file("t.pkm"), layout: TableLayout(elementType: .f32, rows: 1, dim: 1))
        try writer.putTensor("cores", try Tensor(shape: [4], floats: [1, 2, 3, 4]))
        try writer.append([Float(1)])
        try writer.finish()
        let env = try Environment(path: dir.file("t.pkm"), readOnly: false)
        try env.write { txn in
            try withName("cores") { key in
                var r = try txn.get(env.tensors, key: key)!
                r[r.count - 1] ^= 0x40
                try r.withUnsafeBytes { try txn.put(env.tensors, key: key, value: $0) }
            }
        }
        let store = try Store.open(at: dir.file("t.pkm"))
        let mismatch = StoreError.corruptTensor(name: "cores", reason: "checksum of its name, header and data does not match")
        #expect(throws: mismatch) { try store.tensor(named: "cores") }
        #expect(try store.verify().problems == [mismatch])
    }

    /// Version 3 seals every record together with the key it is stored under: a flipped tensor
    /// name, dtype or extent, or a flipped meta key, fails its checksum instead of reading as a
    /// renamed or reinterpreted tensor (found by the corruption harness in version 2).
    @Test func recordsAreSealedWithTheirKeys() throws {
        let dir = ScratchDirectory()
        let writer = try StoreWriter.create(at: dir.file("t.pkm"), layout: TableLayout(elementType: .f32, rows: 1, dim: 1))
        try writer.putTensor("row_keys", Tensor(dtype: .f16, shape: [2, 3], bytes: (0..<12).map { UInt8($0) }))
        try writer.putMetaRecord("retrieval", Array(#"{"topK":32}"#.utf8))
        try writer.append([Float(1)])
        try writer.finish()
        let env = try Environment(path: dir.file("t.pkm"), readOnly: false)
        let record = try #require(try env.write { txn in try withName("row_keys") { try txn.get(env.tensors, key: $0) } })
        // The record read under the name it was written under decodes; under a one-bit-different name it does not.
        #expect(try record.withUnsafeBytes { try Tensor.decode(record: $0, name: "row_keys", version: 3) }.dtype == .f16)
        for (name, edit) in [("row_kdys", { (r: inout [UInt8]) in }), ("row_keys", { $0[4] ^= 0x01 }),  // F16 -> BF16, same size
                             ("row_keys", { $0[16] ^= 0x01; $0[24] ^= 0x07 })] as [(String, (inout [UInt8]) -> Void)] {
            var damaged = record
            edit(&damaged)
            #expect(throws: StoreError.self, "\(name)") { try damaged.withUnsafeBytes { try Tensor.decode(record: $0, name: name, version: 3) } }
        }
        // In the store: move the tensor and the retrieval record to keys one bit away.
        try env.write { txn in
            for (dbi, from, to) in [(env.tensors, "row_keys", "row_kdys"), (env.meta, "retrieval", "retrievam")] {
                let value = try #require(try withName(from) { try txn.get(dbi, key: $0) })
                try withName(from) { try txn.delete(dbi, key: $0) }
                try withName(to) { k in try value.withUnsafeBytes { try txn.put(dbi, key: k, value: $0) } }
            }
        }
        // Each move shows twice: the catalog's entry is missing, and the moved record is not in the catalog.
        let report = try Store.open(at: dir.file("t.pkm")).verify()
        #expect(report.problems.count == 4, "\(report.problems)")
        for name in ["row_kdys", "row_keys", "retrievam", "retrieval"] {
            #expect(report.problems.contains { "\($0)".contains("'\(name)'") }, "\(name)")
        }
    }

    /// A flipped bit in the LMDB record that locates the `tensors` database can make it read as
    /// empty, or as an older page (found by the corruption harness): the catalog names what is
    /// missing or stale, and no list of tensors comes from the damaged database.
    @Test func theCatalogNamesMissingAndStaleTensors() throws {
        let dir = ScratchDirectory()
        let path = dir.file("t.pkm")
        let writer = try StoreWriter.create(at: path, layout: TableLayout(elementType: .f32, rows: 1, dim: 1))
        try writer.putTensor("cores", try Tensor(shape: [2], floats: [1, 2]))
        try writer.putTensor("row_keys", try Tensor(shape: [2], floats: [3, 4]))
        try writer.putMetaRecord("retrieval", Array(#"{"topK":4}"#.utf8))
        try writer.append([Float(1)])
        try writer.finish()
        let env = try Environment(path: path, readOnly: false)
        let stale = try Tensor(shape: [2], floats: [5, 6]).record(name: "cores")  // valid, but not what the catalog lists
        try env.write { txn in
            try withName("row_keys") { try txn.delete(env.tensors, key: $0) }
            try withName("retrieval") { try txn.delete(env.meta, key: $0) }
            try withName("cores") { k in try stale.withUnsafeBytes { try txn.put(env.tensors, key: k, value: $0) } }
        }
        let store = try Store.open(at: path)
        #expect(try store.tensorNames() == ["cores", "row_keys"])
        #expect(throws: StoreError.corruptTensor(name: "row_keys", reason: "the catalog lists it, but it is missing")) { try store.tensor(named: "row_keys") }
        #expect(throws: StoreError.corruptTensor(name: "cores", reason: "it is not the version the catalog lists")) { try store.tensor(named: "cores") }
        #expect(throws: StoreError.corruptRecord(name: "retrieval", reason: "the catalog lists it, but it is missing")) { try store.metaRecord(named: "retrieval") }
        #expect(try store.verify().problems.count == 3)
    }

    @Test func hostileTensorHeadersAreRefusedBeforeAllocating() throws {
        // Rank 8 with extents whose product overflows, and a huge extent: both refused by the header checks.
        var record: [UInt8] = Array("PKT1".utf8) + [1, 2, 0, 0] + [UInt8](repeating: 0, count: 8)
        for _ in 0..<2 { withUnsafeBytes(of: UInt64(1 << 40).littleEndian) { record += $0 } }
        #expect(throws: StoreError.self) { try record.withUnsafeBytes { try Tensor.decode(record: $0, name: "x", version: Manifest.currentVersion) } }
        let tooDeep: [UInt8] = Array("PKT1".utf8) + [1, 200, 0, 0] + [UInt8](repeating: 0, count: 8)
        #expect(throws: StoreError.self) { try tooDeep.withUnsafeBytes { try Tensor.decode(record: $0, name: "x", version: Manifest.currentVersion) } }
    }
}
