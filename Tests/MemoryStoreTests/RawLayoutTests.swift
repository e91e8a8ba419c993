import Foundation
import Testing
import TestSupport
@testable import MemoryStore

/// The raw layout of format version 5 (Spec/FORMAT.md, "Raw"): where rows and checksums lie.
@Suite struct RawLayoutTests {
    /// Rows of a multiple of 64 bytes start on cache lines in the map, every row of every full
    /// shard, and a default shard still fits its 256 pages.
    @Test(arguments: [(ElementType.bf16, 64), (.f32, 32), (.f16, 256), (.bf16, 1024), (.f32, 2048)])
    func rowsStartOnCacheLines(type: ElementType, dim: Int) throws {
        let dir = ScratchDirectory()
        let perShard = TableLayout.defaultRowsPerShard(dim: dim, elementType: type, codec: .raw)
        let layout = TableLayout(elementType: type, rows: 3 * perShard, dim: dim, codec: .raw)
        let raw = RawShardLayout(version: Manifest.currentVersion, rowBytes: layout.rowBytes)
        #expect(raw.blobBytes(rows: perShard) <= TableLayout.defaultInPlaceShardBytes - 16)
        let bytes = try writeTable(dir.file("t.pkm"), layout)
        let store = try Store.open(at: dir.file("t.pkm"))
        let index = try #require(store.rawRows)
        for row in stride(from: 0, to: layout.rows, by: 7) {
            _ = try store.row(row)  // locates the row's shard
            let shard = index.shard(ofRow: row)
            let p = index.location(ofRow: row, shard: shard, shardRows: try #require(index.rows(ofShard: shard)))
            #expect(Int(bitPattern: p) % 64 == 0, "row \(row) at \(Int(bitPattern: p) % 4096) in its page")
            #expect(Array(UnsafeRawBufferPointer(start: p, count: layout.rowBytes)) == Array(bytes[(row * layout.rowBytes)..<((row + 1) * layout.rowBytes)]))
        }
    }

    /// The byte layout written out by hand for one small shard: 3 groups of 8 rows of 32 bytes
    /// and one of 2, each after its checksum line, after a 48-byte header.
    @Test func theLayoutIsTheSpecified() {
        let raw = RawShardLayout(version: 5, rowBytes: 32)
        #expect(raw.start == 48 && raw.groupRows == 8 && raw.unitBytes == 64 + 8 * 32)
        #expect(raw.blobBytes(rows: 26) == 48 + 3 * 320 + 64 + 2 * 32)
        #expect(raw.rowOffset(0) == 64 && raw.rowOffset(7) == 64 + 7 * 32 && raw.rowOffset(8) == 320 + 64 && raw.rowOffset(25) == 3 * 320 + 64 + 32)
        #expect(raw.checksumOffset(0) == 0 && raw.checksumOffset(9) == 320 + 8 && raw.checksumOffset(25) == 960 + 8)
        let large = RawShardLayout(version: 5, rowBytes: 3000)
        #expect(large.groupRows == 1 && large.rowOffset(1) == 64 + 3000 + 64 && large.blobBytes(rows: 2) == 48 + 2 * 3064)
        let old = RawShardLayout(version: 4, rowBytes: 32)
        #expect(old.start == 32 && old.rowOffset(3) == 3 * 40 && old.checksumOffset(3) == 3 * 40 + 32 && old.blobBytes(rows: 5) == 32 + 200)
    }

    /// Codec 5's units written out by hand (Spec/FORMAT.md, "Nibble"): each fills the last 4,032
    /// bytes of a 4 KiB page (the blob's first unit starts 48 bytes in, 64 into the file's page).
    @Test func nibbleUnitsFillAPageEach() {
        // 96-byte slots (64 bf16 values): 40 rows, 3 checksum lines (192 bytes) then 3,840 bytes of slots.
        let pages = RawShardLayout.nibblePages(slotBytes: 96)
        #expect(pages.unitRows == 40 && pages.unitBytes == 4096 && pages.rowsOffset == 192 && pages.groupRows == 8)
        #expect(pages.rowOffset(0) == 192 && pages.rowOffset(39) == 192 + 39 * 96 && pages.rowOffset(41) == 4096 + 192 + 96)
        #expect(pages.checksumOffset(39) == 4 * 39 && pages.checksumOffset(41) == 4096 + 4)
        #expect(pages.blobBytes(rows: 85) == 48 + 2 * 4096 + 192 + 5 * 96)
        for r in [0, 39, 40, 10_040] {  // every slot and checksum within its unit's page, 64 bytes on
            let page = (16 + pages.start + pages.rowOffset(r)) / 4096
            #expect((16 + pages.start + pages.rowOffset(r) + 95) / 4096 == page && (16 + pages.start + pages.checksumOffset(r)) / 4096 == page)
            #expect((16 + pages.start + pages.checksumOffset(r)) % 4096 >= 64)
        }
        // Default shards of 1 MiB less LMDB's 16-byte header: nibble slots with 2 bytes a row to spare for escaped rows.
        #expect(TableLayout.defaultRowsPerShard(dim: 64, elementType: .bf16, codec: .nibble) == 10_041)
        #expect(TableLayout.defaultRowsPerShard(dim: 64, elementType: .bf16, codec: .raw) == 7_709)
        // 600-byte slots: 6 fit (64 + 3,600 bytes), checked a row at a time.
        let few = RawShardLayout.nibblePages(slotBytes: 600)
        #expect(few.unitRows == 6 && few.groupRows == 1 && few.unitBytes == 4096 && few.rowsOffset == 64)
        // A slot larger than a page's 3,968 bytes after one line: one row a unit of whole pages.
        let huge = RawShardLayout.nibblePages(slotBytes: 5000)
        #expect(huge.unitRows == 1 && huge.unitBytes == 8192 && huge.rowOffset(1) == 8192 + 64)
    }
}
