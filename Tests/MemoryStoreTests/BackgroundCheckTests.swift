import Foundation
import Testing
import TestSupport
import _MemorySupport
@testable import MemoryStore

/// The thread that checks a table's groups in memory after its first read (`BackgroundCheck`).
@Suite struct BackgroundCheckTests {
    /// Sums `rows` of `store` (weights 1) and compares them with their reference values.
    func expectSums(_ store: Store, _ rows: [Int], _ bytes: [UInt8], dim: Int) throws {
        var out = [Float](repeating: 0, count: dim)
        try store.gatherReduce(indices: rows, weights: [Float](repeating: 1, count: rows.count), into: &out)
        for j in 0..<dim {
            let exact = rows.reduce(0.0) { $0 + Double(referenceRow(bytes, $1, dim: dim, type: .bf16)[j]) }
            #expect(abs(Double(out[j]) - exact) <= 1e-4 * max(1, abs(exact)), "column \(j)")
        }
    }

    /// One read of one row, and the thread checks every other group of the table (all in the
    /// page cache, just written), raw rows and nibble slots: reads then skip the bitmap. Opened
    /// without it, the same read leaves the rest unchecked.
    @Test(arguments: [CodecKind.raw, .nibble])
    func oneReadAndTheWholeTableInMemoryIsChecked(codec: CodecKind) throws {
        let dir = ScratchDirectory()
        let layout = TableLayout(elementType: .bf16, rows: 3003, dim: 64, rowsPerShard: 100, codec: codec)
        let bytes = try writeTable(dir.file("t.pkm"), layout)
        let store = try Store.open(at: dir.file("t.pkm"), cacheBytes: 0)
        try expectSums(store, [7], bytes, dim: 64)
        let checked = try #require(store.waitForBackgroundCheck(timeout: .seconds(60)), "no background check finished")
        #expect(checked > 0)
        #expect(store.everyRowChecked)
        let index = try #require(store.rawRows)
        #expect(index.rowMap(checking: true).checked == nil, "reads still consult the bitmap")
        try expectSums(store, [0, 1500, 3002, 2999, 7], bytes, dim: 64)

        let lazy = try Store.open(at: dir.file("t.pkm"), cacheBytes: 0, checksInBackground: false)
        try expectSums(lazy, [7], bytes, dim: 64)
        #expect(lazy.waitForBackgroundCheck(timeout: .seconds(1)) == nil)
        #expect(!lazy.everyRowChecked)
        #expect(try !#require(lazy.rawRows).isChecked(1500))
        #expect(!lazy.waitUntilEveryRowChecked(timeout: .milliseconds(100)))
        #expect(try Store.open(at: dir.file("t.pkm"), cacheBytes: 0, resident: true).waitUntilEveryRowChecked(timeout: .zero),
                "a resident table is checked at open")
        #expect(try !Store.open(at: dir.file("t.pkm"), cacheBytes: 0, checksRows: false).everyRowChecked,
                "a table read without row checks has none checked")
    }

    /// A zstd table's shards are checked at every decode: never "every row checked".
    @Test func zstdTablesAreNeverCheckedOnceForAll() throws {
        let dir = ScratchDirectory()
        let layout = TableLayout(elementType: .bf16, rows: 1000, dim: 16, rowsPerShard: 100, codec: .zstd)
        let bytes = try writeTable(dir.file("t.pkm"), layout)
        let store = try Store.open(at: dir.file("t.pkm"))
        try expectSums(store, Array(0..<1000), bytes, dim: 16)
        #expect(!store.waitUntilEveryRowChecked(timeout: .milliseconds(100)))
    }

    /// A damaged row's group is left unchecked by the thread: the row fails every read, naming its
    /// shard, its neighbours read, and the rest of the table is checked.
    @Test func aDamagedGroupIsLeftToItsReads() throws {
        let dir = ScratchDirectory()
        let layout = TableLayout(elementType: .bf16, rows: 1000, dim: 16, rowsPerShard: 100, codec: .raw)
        let raw = RawShardLayout(version: Manifest.currentVersion, rowBytes: layout.rowBytes)
        let bytes = try writeTable(dir.file("t.pkm"), layout)
        try tamperShard(dir.file("t.pkm"), 3) { blob in blob[raw.start + raw.rowOffset(45) + 5] ^= 0x10 }  // row 345
        let store = try Store.open(at: dir.file("t.pkm"), cacheBytes: 0)
        try expectSums(store, [0], bytes, dim: 16)
        #expect(store.waitForBackgroundCheck(timeout: .seconds(60)) != nil)
        let index = try #require(store.rawRows)
        #expect((0..<1000).allSatisfy { index.isChecked($0) != (340..<348).contains($0) })  // 345's group of 8
        #expect(!store.everyRowChecked)
        for _ in 0..<2 {
            #expect {
                try expectSums(store, [1, 345], bytes, dim: 16)
            } throws: { error in
                guard case let StoreError.corruptShard(shard, rows, _) = error else { return false }
                return shard == 3 && rows == 300..<400
            }
        }
        try expectSums(store, [344, 346, 999], bytes, dim: 16)
    }

    /// Groups whose pages are on storage: a pass over the groups in memory leaves them, one that
    /// reads storage (a table in half the memory available) reads them in and checks them.
    @Test func groupsOnStorageAreCheckedByTheStoragePass() throws {
        let dir = ScratchDirectory()
        let layout = TableLayout(elementType: .bf16, rows: 100_000, dim: 16, rowsPerShard: 10_000, codec: .raw)
        let bytes = try writeTable(dir.file("t.pkm"), layout)
        let store = try Store.open(at: dir.file("t.pkm"), cacheBytes: 0, checksInBackground: false)
        try expectSums(store, [7], bytes, dim: 16)  // learns every shard's address
        let index = try #require(store.rawRows)
        try #require(index.everyShardKnown)
        // The table's pages not mapped yet leave the page cache, written back first.
        let fd = open(dir.file("t.pkm"), O_RDONLY)
        defer { close(fd) }
        fsync(fd)
        _ = posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED)
        var residency = PageResidency()
        let inMemory = residency.contains(index.bytesToCheck(ofRow: 55_555, wholeGroup: true).0)
        try #require(!inMemory, "this file system kept the pages in memory")
        func pass(readingStorage: Bool) throws {
            let check = try #require(BackgroundCheck(index, readsStorage: readingStorage, copying: nil) as BackgroundCheck?)
            let deadline = ContinuousClock().now + .seconds(60)
            while !check.isFinished && ContinuousClock().now < deadline { usleep(1000) }
            #expect(check.isFinished)
        }
        try pass(readingStorage: false)
        #expect(!index.isChecked(55_555) && !index.everyGroupChecked)
        try pass(readingStorage: true)
        #expect(index.everyGroupChecked)
        try expectSums(store, [55_555, 0, 99_999], bytes, dim: 16)
    }

    /// Releasing a store stops its thread and waits for it, which releases the index (and the
    /// map) with the store, rather than when the thread would have finished; the file opens again.
    @Test func releasingTheStoreStopsTheThread() throws {
        let dir = ScratchDirectory()
        let layout = TableLayout(elementType: .bf16, rows: 200_000, dim: 64, rowsPerShard: 1000, codec: .raw)
        let bytes = try writeTable(dir.file("t.pkm"), layout)
        weak var index: RawRowIndex?
        do {
            let store = try Store.open(at: dir.file("t.pkm"), cacheBytes: 0)
            try expectSums(store, [3], bytes, dim: 64)  // starts the thread: 25,000 groups to check
            index = store.rawRows
            #expect(index != nil)
        }
        #expect(index == nil, "the index outlived its store")
        let again = try Store.open(at: dir.file("t.pkm"), cacheBytes: 0)
        try expectSums(again, [3, 199_999], bytes, dim: 64)
    }
}
