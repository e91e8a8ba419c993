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

    /// A table the background check reads whole, opened with none of its pages in memory, ends up
    /// mapped in 2 MiB pages: reads and the check read it in 2 MiB folios (where the file system
    /// has them), not a page at a time (`MADV_RANDOM`) or as asked (`MADV_WILLNEED`), which would
    /// keep it in 4 KiB pages.
    @Test(.enabled(if: BackgroundCheckTests.largeFoliosAreMappedWhole()))
    func aTableReadWholeIsMappedIn2MiBPages() throws {
        let dir = ScratchDirectory()
        let layout = TableLayout(elementType: .bf16, rows: 200_000, dim: 64, rowsPerShard: 7_000, codec: .raw)
        let bytes = try writeTable(dir.file("t.pkm"), layout)
        let size = try Self.dropPages(dir.file("t.pkm"))
        let store = try Store.open(at: dir.file("t.pkm"), cacheBytes: 0)
        #expect(store.readsWholeTable)
        try expectSums(store, [7, 123_456, 199_999, 50_000], bytes, dim: 64)  // starts the check
        #expect(store.waitUntilEveryRowChecked(timeout: .seconds(60)))
        try expectSums(store, Array(stride(from: 3, to: 200_000, by: 997)), bytes, dim: 64)
        let mapped = Self.pmdMappedBytes(of: dir.file("t.pkm"))
        #expect(mapped >= size / 2, "\(mapped) of the file's \(size) bytes mapped in 2 MiB pages")
    }

    /// Writes the file at `path` back and drops its pages from the page cache; returns its size.
    private static func dropPages(_ path: String) throws -> Int {
        let fd = open(path, O_RDONLY)
        defer { close(fd) }
        fsync(fd)
        _ = posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED)
        var st = stat()
        fstat(fd, &st)
        return Int(st.st_size)
    }

    /// The bytes of this process's maps of the file at `path` mapped in 2 MiB pages (`/proc/self/smaps`).
    private static func pmdMappedBytes(of path: String) -> Int {
        guard let text = kernelFileText("/proc/self/smaps") else { return 0 }
        let resolved = URL(fileURLWithPath: path).resolvingSymlinksInPath().path
        var inFile = false, total = 0
        for line in text.split(separator: "\n") {
            if let first = line.first, first.isHexDigit, line.contains("-") && !line.hasSuffix(":") && !line.contains(" kB") {
                inFile = line.hasSuffix(resolved) || line.hasSuffix(path)
            } else if inFile, line.hasPrefix("FilePmdMapped:") {
                total += (Int(line.split(separator: " ", omittingEmptySubsequences: true)[1]) ?? 0) << 10
            }
        }
        return total
    }

    /// Whether this kernel and file system read a file through a map advised `MADV_HUGEPAGE` in
    /// 2 MiB folios that a map then maps whole (Linux 6.x with large folios on ext4 or XFS).
    static func largeFoliosAreMappedWhole() -> Bool {
        let dir = ScratchDirectory(), path = dir.file("probe")
        guard FileManager.default.createFile(atPath: path, contents: Data(repeating: 1, count: 8 << 20)),
              let size = try? dropPages(path) else { return false }
        let fd = open(path, O_RDONLY)
        defer { close(fd) }
        var reader = LargeFolioReader(descriptor: fd)
        guard reader.read(0, count: size), let map = mmap(nil, size, PROT_READ, MAP_SHARED, fd, 0), map != MAP_FAILED else { return false }
        defer { munmap(map, size) }
        _ = madvise(map, size, 22)  // MADV_POPULATE_READ
        return pmdMappedBytes(of: path) > 0
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
