import CGatherKernel
import _MemorySupport

/// The rows of one nibble shard blob where they lie (Spec/FORMAT.md, "Nibble"): coded slots in
/// units behind their checksum lines, escaped rows whole after the last unit.
struct NibbleShard {
    /// The blob's first group.
    let groups: UnsafeRawPointer
    let slots: RawShardLayout
    /// The first escaped row, and how many there are.
    let escapes: UnsafeRawPointer
    let escapeCount: Int
    let shard: Int
    let table: TableLayout

    /// The shard of a blob whose header has been checked, its slots laid out as `slots` (codec 4 or 5).
    init(blob: UnsafeRawBufferPointer, slots: RawShardLayout, shard: Int, layout: TableLayout) {
        let rows = layout.rowRange(ofShard: shard).count
        self.init(groups: blob.baseAddress! + slots.start, slots: slots, escapes: blob.baseAddress! + slots.blobBytes(rows: rows),
                  escapeCount: slots.escapedRows(inBlob: blob.count, rows: rows, rowBytes: layout.rowBytes)!, shard: shard, layout: layout)
    }

    /// The shard whose first group is at `groups`, with `escapeCount` escaped rows from `escapes` on.
    init(groups: UnsafeRawPointer, slots: RawShardLayout, escapes: UnsafeRawPointer, escapeCount: Int, shard: Int, layout: TableLayout) {
        self.groups = groups
        self.slots = slots
        self.escapes = escapes
        self.escapeCount = escapeCount
        self.shard = shard
        table = layout
    }

    private func corrupt(_ r: Int, _ why: String) -> StoreError {
        .corruptShard(shard: shard, rows: table.rowRange(ofShard: shard), reason: "row \(shard * table.rowsPerShard + r) \(why)")
    }

    /// The bytes of escaped row `r` (within the shard), whose slot is at `slot`: throws unless the
    /// slot is the marker, three zero bytes, an index below the escape count (equal to
    /// `expected` when given: escaped rows are stored in row order) and zeros.
    func escapedRow(_ r: Int, slot: UnsafeRawPointer, expected: Int? = nil) throws -> UnsafeRawPointer {
        // Word loads: the marker and three zeros, the index, then the rest of the slot ORed together.
        let head = UInt64(littleEndian: slot.loadUnaligned(as: UInt64.self))
        var rest: UInt64 = 0, offset = 8
        while offset + 8 <= slots.rowBytes { rest |= slot.loadUnaligned(fromByteOffset: offset, as: UInt64.self); offset += 8 }
        while offset < slots.rowBytes { rest |= UInt64(slot.load(fromByteOffset: offset, as: UInt8.self)); offset += 1 }
        guard head & 0xFFFF_FFFF == UInt64(NibbleCode.escapeMarker), rest == 0 else { throw corrupt(r, "has a malformed escape slot") }
        let index = Int(head >> 32)
        guard index < escapeCount, expected.map({ $0 == index }) ?? true else {
            throw corrupt(r, "points to escaped row \(index) of \(escapeCount)\(expected.map { ", expected \($0)" } ?? "")")
        }
        return escapes + index * table.rowBytes
    }

    /// Row `r`'s slot (within the shard).
    func slot(_ r: Int) -> UnsafeRawPointer { groups + slots.rowOffset(r) }

    /// Whether row `r` (within the shard) is escaped: its slot starts with the marker.
    func isEscaped(_ r: Int) -> Bool { slot(r).load(as: UInt8.self) == NibbleCode.escapeMarker }

    /// Decodes row `r` (within the shard) into `row` (`rowBytes` bytes) with the 16-byte decode
    /// `table`; returns whether it was escaped (its escape index checked against `expectedEscape`).
    func decode(_ r: Int, table: [UInt8], into row: UnsafeMutableRawPointer, expectedEscape: Int? = nil) throws -> Bool {
        var slot: UnsafeRawPointer? = self.slot(r)
        let decoded = table.withUnsafeBufferPointer { t in
            pkm_nibble_decode(&slot, 1, self.table.dim, self.table.elementType.size, t.baseAddress, row, 0)
        }
        guard decoded == 0 else { return false }
        row.copyMemory(from: try escapedRow(r, slot: slot!, expected: expectedEscape), byteCount: self.table.rowBytes)
        return true
    }

    /// Asks for the cache line holding row `r`'s checksum.
    func prefetchChecksum(_ r: Int) { pkm_prefetch(groups + slots.checksumOffset(r), 4) }

    /// Throws, naming the row, unless `decoded` (row `r`'s values) matches its stored checksum.
    func check(_ r: Int, decoded: UnsafeRawBufferPointer) throws {
        let stored = UInt32(littleEndian: (groups + slots.checksumOffset(r)).loadUnaligned(as: UInt32.self))
        let row = shard * table.rowsPerShard + r
        guard UInt32(truncatingIfNeeded: XXH64.hash(decoded, seed: UInt64(row))) == stored else {
            throw corrupt(r, "does not match its checksum")
        }
    }
}
