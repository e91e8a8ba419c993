import Foundation
import MemoryBenchmarks
import Testing
import _MemorySupport
import TestSupport
@testable import MemoryStore

/// The nibble codec (Spec/FORMAT.md, "Nibble"): every bit pattern round-trips, the byte layout
/// is the spec's, and a damaged row fails alone.
@Suite struct NibbleCodecTests {
    /// Synthetic rows with every `every`-th row holding special bit patterns (NaNs with payloads,
    /// infinities, subnormals, zeros of both signs, the largest finite values), so that the
    /// table's code misses their top bytes and they are escaped.
    static func rows(_ rows: Int, dim: Int, type: ElementType, every: Int = 7) -> [UInt8] {
        var bytes = SyntheticRows(seed: 5, dim: dim).bytes(0..<rows, as: type)
        let specials: [UInt32] = type == .bf16
            ? [0x7FC0, 0xFFC1, 0x7F80, 0xFF80, 0x0001, 0x807F, 0x8000, 0x0000, 0x7F7F, 0xFF7F]
            : [0x7FC0_0000, 0xFFC0_0001, 0x7F80_0000, 0xFF80_0000, 0x0000_0001, 0x807F_FFFF, 0x8000_0000, 0, 0x7F7F_FFFF, 0xFF7F_FFFF]
        let size = type.size
        for r in stride(from: 3, to: rows, by: every) {
            for j in 0..<dim where (j + r) % 3 == 0 {
                let v = specials[(j + r) % specials.count]
                for b in 0..<size { bytes[(r * dim + j) * size + b] = UInt8(truncatingIfNeeded: v >> (8 * b)) }
            }
        }
        return bytes
    }

    static func write(_ path: String, _ layout: TableLayout, _ bytes: [UInt8], complete: Bool = true) throws {
        var options = StoreWriter.Options()
        options.batchBytes = layout.rowsPerShard * layout.rowBytes * 2  // several commits
        let writer = try StoreWriter.create(at: path, layout: layout, options: options)
        try writer.append(complete ? bytes : Array(bytes.prefix(bytes.count / 2)))
        if complete { try writer.finish() }
    }

    static func bits(_ values: [Float]) -> [UInt32] { values.map(\.bitPattern) }

    @Test(arguments: [ElementType.bf16, .f32], [true, false])
    func everyBitPatternRoundTrips(type: ElementType, complete: Bool) throws {
        let dir = ScratchDirectory()
        let layout = TableLayout(elementType: type, rows: 1000, dim: 37, rowsPerShard: 64, codec: .nibble)
        let bytes = Self.rows(1000, dim: 37, type: type)
        try Self.write(dir.file("t.pkm"), layout, bytes, complete: complete)
        // A scope, so that the store is closed before the import resumes.
        let codes: NibbleCode? = try {
            let store = try Store.open(at: dir.file("t.pkm"))
            let readable = store.readableRows
            #expect(readable == (complete ? 1000 : 384))  // commits of 128 rows
            // Single rows, and a batch in random order (in place when complete, by shard when not).
            for i in [0, 3, 10, 63, 64, 383, readable - 1] {
                #expect(Self.bits(try store.row(i)) == Self.bits(referenceRow(bytes, i, dim: 37, type: type)), "row \(i)")
            }
            var rng = SeededGenerator(seed: 3)
            let indices = (0..<300).map { _ in Int.random(in: 0..<readable, using: &rng) }
            var out = [Float](repeating: 0, count: 300 * 37)
            try out.withUnsafeMutableBufferPointer { try store.rows(indices, into: $0) }
            for (p, r) in indices.enumerated() {
                #expect(Self.bits(Array(out[(p * 37)..<((p + 1) * 37)])) == Self.bits(referenceRow(bytes, r, dim: 37, type: type)))
            }
            var read: [UInt8] = []
            for s in 0..<((readable + 63) / 64) { try store.withShardRows(s) { read.append(contentsOf: $0) } }
            #expect(read == Array(bytes.prefix(readable * layout.rowBytes)))
            #expect(try store.verify().isSound)
            return store.nibbleCode
        }()
        guard !complete else { return }
        // A resumed import codes its rows with the table the first commit stored.
        let writer = try StoreWriter.createOrResume(at: dir.file("t.pkm"), layout: layout)
        try writer.append(Array(bytes[(writer.rowsCommitted * layout.rowBytes)...]))
        try writer.finish()
        let resumed = try Store.open(at: dir.file("t.pkm"))
        #expect(resumed.nibbleCode == codes)
        for i in [0, 384, 999] { #expect(Self.bits(try resumed.row(i)) == Self.bits(referenceRow(bytes, i, dim: 37, type: type))) }
        #expect(try resumed.verify().isSound)
    }

    /// The reduce over nibble rows equals an independent sum in double of the same rows (only
    /// finite rows: the special rows' infinities would make every sum inf or NaN).
    @Test func gatherReduceMatchesAnIndependentSum() throws {
        let dir = ScratchDirectory()
        let layout = TableLayout(elementType: .bf16, rows: 20000, dim: 64, codec: .nibble)
        let bytes = SyntheticRows(seed: 8, dim: 64).bytes(0..<20000, as: .bf16)
        try Self.write(dir.file("t.pkm"), layout, bytes)
        for resident in [false, true] {
            let store = try Store.open(at: dir.file("t.pkm"), resident: resident)
            var rng = SeededGenerator(seed: 4)
            let indices = (0..<3000).map { _ in Int.random(in: 0..<20000, using: &rng) }
            let weights = (0..<6000).map { _ in Float.random(in: -1...1, using: &rng) }
            var sum = [Float](repeating: 0, count: 64)
            try store.gatherReduce(indices: indices, weights: weights, chunks: 2, into: &sum)
            var expected = [Double](repeating: 0, count: 64)
            for (p, r) in indices.enumerated() {
                let row = referenceRow(bytes, r, dim: 64, type: .bf16)
                for j in 0..<64 { expected[j] += Double(weights[p * 2 + j / 32]) * Double(row[j]) }
            }
            for j in 0..<64 { #expect(abs(Double(sum[j]) - expected[j]) <= 1e-4 * max(1, abs(expected[j])), "column \(j)") }
            // Batched: runs of 128 rows into 24 outputs, and a few out of order.
            let targets = indices.indices.map { $0 < 2900 ? $0 / 128 : $0 % 23 }
            let outputs = try batchedReduce(store, indices: indices, weights: weights, chunks: 2, targets: targets, outputs: 24)
            var perTarget = [Double](repeating: 0, count: 24 * 64)
            for (p, r) in indices.enumerated() {
                let row = referenceRow(bytes, r, dim: 64, type: .bf16)
                for j in 0..<64 { perTarget[targets[p] * 64 + j] += Double(weights[p * 2 + j / 32]) * Double(row[j]) }
            }
            for j in 0..<(24 * 64) { #expect(abs(Double(outputs[j]) - perTarget[j]) <= 1e-4 * max(1, abs(perTarget[j])), "output \(j / 64)") }
        }
    }

    /// A nibble store sums each output's rows in the same order, coded and escaped, whichever
    /// road reads them and whatever has been checked: the same batch reduced on first reads
    /// (before the shards are known), on second reads, once every group is checked and once the
    /// slots are copied into memory (``SlotsInMemory``) gives the same bits, as do two threads
    /// reducing it at once on a fresh store (racing to check the same groups, and then reading
    /// the copy), and a store whose cache budget cannot hold the slots.
    @Test(arguments: [ElementType.bf16, .f32])  // f32: no kernel sums its slots, nor reads them copied
    func sumsDoNotDependOnWhatHasBeenChecked(type: ElementType) throws {
        let dir = ScratchDirectory()
        let layout = TableLayout(elementType: type, rows: 20000, dim: 64, codec: .nibble)
        let bytes = SyntheticRows(seed: 3, dim: 64).bytes(0..<20000, as: type)
        try Self.write(dir.file("t.pkm"), layout, bytes)
        var rng = SeededGenerator(seed: 9)
        let indices = (0..<4096).map { _ in Int.random(in: 0..<20000, using: &rng) }
        let weights = (0..<4096).map { _ in Float.random(in: -1...1, using: &rng) }
        let targets = indices.indices.map { $0 / 128 }
        let store = try Store.open(at: dir.file("t.pkm"))
        // The batch holds escaped rows (about 1.2% of these rows), several sharing an output.
        let code = try #require(store.nibbleCode)
        var slot = [UInt8](repeating: 0, count: NibbleCode.slotBytes(dim: 64, elementType: type))
        let escaped = bytes.withUnsafeBytes { b in
            indices.filter { !code.encode(b.baseAddress! + $0 * 64 * type.size, dim: 64, elementSize: type.size, into: &slot) }.count
        }
        #expect(escaped >= 20)
        @Sendable func reduce(_ store: Store) throws -> [Float] {
            try batchedReduce(store, indices: indices, weights: weights, chunks: 1, targets: targets, outputs: 32)
        }
        let first = try reduce(store)
        #expect(try reduce(store) == first)
        #expect(try reduce(store) == first)
        #expect(store.waitForBackgroundCheck(timeout: .seconds(60)) != nil)
        #expect(store.readsSlotsInMemory == (type == .bf16), "the bf16 slots were not copied into memory, or the f32 ones were")
        #expect(try reduce(store) == first)
        for r in [0, 3, 19999] { #expect(try store.row(r) == referenceRow(bytes, r, dim: 64, type: type)) }
        let fresh = try Store.open(at: dir.file("t.pkm"))
        let results = Locked([[Float]]())
        DispatchQueue.concurrentPerform(iterations: 2) { _ in
            var sums: [[Float]] = []
            for _ in 0..<20 { sums.append((try? reduce(fresh)) ?? []) }
            results.withLock { $0 += sums }
        }
        #expect(results.withLock { $0 } == [[Float]](repeating: first, count: 40))
        #expect(fresh.waitForBackgroundCheck(timeout: .seconds(60)) != nil && fresh.readsSlotsInMemory == (type == .bf16))
        let small = try Store.open(at: dir.file("t.pkm"), cacheBytes: 20000 * NibbleCode.slotBytes(dim: 64, elementType: type) - 1)
        #expect(try reduce(small) == first)
        #expect(small.waitForBackgroundCheck(timeout: .seconds(60)) != nil && !small.readsSlotsInMemory, "copied beyond the cache budget")
        #expect(try reduce(small) == first)
    }

    /// The blob's bytes worked out by hand from the spec for a small table: header padding,
    /// checksum lines, slots (codes in nibbles, low bytes), an escaped row's slot and bytes.
    @Test func theBlobIsTheSpecsBytes() throws {
        let dir = ScratchDirectory()
        let dim = 16, rows = 3
        // Rows 0 and 1 use top bytes 0x30...0x3E (0x30 twice); row 2 has 0x7F once, then 0x30:
        // the table is 0x30...0x3E (0x30 the most frequent, the others tied, smaller first), and
        // row 2 is escaped.
        var values: [UInt16] = []
        for r in 0..<2 { for j in 0..<dim { values.append(UInt16(0x30 + j % 15) << 8 | UInt16(j + 16 * r)) } }
        values += [0x7F01] + Array(repeating: 0x3055, count: dim - 1)
        let bytes = values.withUnsafeBytes { Array($0) }
        let layout = TableLayout(elementType: .bf16, rows: rows, dim: dim, rowsPerShard: 3, codec: .nibble)
        try Self.write(dir.file("t.pkm"), layout, bytes)
        let store = try Store.open(at: dir.file("t.pkm"))
        let codes = try #require(store.nibbleCode).topBytes
        #expect(codes == Array(0x30...0x3E))
        var stored: [UInt8] = []
        try tamperShard(dir.file("t.pkm"), 0) { stored = $0 }
        let blob = stored
        // 24-byte slots: 144 rows to a page's unit (9 checksum lines, 576 bytes, then 144 slots:
        // 4,032 bytes), so these 3 rows are a partial first unit, its 9 lines in full.
        let slot = dim / 2 + dim, lines = 576
        let expectedCount = 48 + lines + rows * slot + 2 * dim
        #expect(blob.count == expectedCount)
        #expect(blob[4] == 5 && blob[32..<48].allSatisfy { $0 == 0 })
        for r in 0..<3 {
            let row = Array(bytes[(r * 2 * dim)..<((r + 1) * 2 * dim)])
            let sum = row.withUnsafeBytes { UInt32(truncatingIfNeeded: XXH64.hash($0, seed: UInt64(r))) }
            #expect(Array(blob[(48 + 4 * r)..<(48 + 4 * r + 4)]) == withUnsafeBytes(of: sum.littleEndian, Array.init))
        }
        #expect(blob[(48 + 12)..<(48 + lines)].allSatisfy { $0 == 0 })
        for r in 0..<2 {
            let at = 48 + lines + r * slot
            for j in 0..<dim {
                // Element j's code: byte j / 2, low nibble for even j.
                let shift = UInt8(4 * (j % 2))
                let code: UInt8 = (blob[at + j / 2] >> shift) & 15
                #expect(code == UInt8(j % 15))
                let low = UInt8(values[r * dim + j] & 0xFF)
                #expect(blob[at + dim / 2 + j] == low)
            }
        }
        let escape = 48 + lines + 2 * slot
        let escapeSlot: [UInt8] = [0xFF] + [UInt8](repeating: 0, count: slot - 1)
        #expect(Array(blob[escape..<(escape + slot)]) == escapeSlot)
        let escapedBytes = Array(bytes[(4 * dim)...])
        #expect(Array(blob[(blob.count - 2 * dim)...]) == escapedBytes)
    }

    /// A flip anywhere in a nibble shard fails the row it hit (its slot, its checksum, or its
    /// escaped bytes) and only that row, on every read of it; a flip in the header or padding
    /// fails no row read in place, and `verify` names the shard either way.
    @Test func aDamagedRowFailsAlone() throws {
        let layout = TableLayout(elementType: .bf16, rows: 700, dim: 16, rowsPerShard: 100, codec: .nibble)
        let bytes = Self.rows(700, dim: 16, type: .bf16, every: 5)
        let slots = RawShardLayout.nibblePages(slotBytes: NibbleCode.slotBytes(dim: 16, elementType: .bf16))
        var rng = SeededGenerator(seed: 6)
        var hitSlot = false, hitEscaped = false, hitChecksum = false, hitElse = false
        for trial in 0..<60 {
            let dir = ScratchDirectory()
            try Self.write(dir.file("t.pkm"), layout, bytes)
            var flipped = 0, damaged: Int?
            try tamperShard(dir.file("t.pkm"), 3) { blob in
                let groupsEnd = slots.blobBytes(rows: 100)
                // Every fourth trial hits an escaped row's bytes; the rest anywhere.
                flipped = trial % 4 == 0 ? Int.random(in: groupsEnd..<blob.count, using: &rng) : Int.random(in: 0..<blob.count, using: &rng)
                blob[flipped] ^= UInt8(1) << UInt8.random(in: 0..<8, using: &rng)
                if flipped >= groupsEnd {
                    // The escaped row it hit: escape indices follow row order.
                    let e = (flipped - groupsEnd) / layout.rowBytes
                    damaged = (0..<100).filter { blob[slots.start + slots.rowOffset($0)] == 0xFF }[e]
                    hitEscaped = true
                } else if let r = (0..<100).first(where: { (slots.start + slots.rowOffset($0)..<slots.start + slots.rowOffset($0) + slots.rowBytes).contains(flipped) }) {
                    damaged = r
                    hitSlot = true
                } else if let r = (0..<100).first(where: { (slots.start + slots.checksumOffset($0)..<slots.start + slots.checksumOffset($0) + 4).contains(flipped) }) {
                    damaged = r
                    hitChecksum = true
                } else {
                    hitElse = true
                }
            }
            let damagedRow = damaged.map { 300 + $0 }
            let store = try Store.open(at: dir.file("t.pkm"), cacheBytes: 0)
            // Twice: the second pass reads rows whose groups (coded and escaped rows apart) were
            // remembered as checked by the first, and must still refuse the damaged one.
            for _ in 0..<2 {
                for row in 300..<400 {
                    do {
                        #expect(Self.bits(try store.row(row)) == Self.bits(referenceRow(bytes, row, dim: 16, type: .bf16)))
                        #expect(row != damagedRow, "damaged row \(row) was read (flip at \(flipped))")
                    } catch let StoreError.corruptShard(shard, rows, _) {
                        #expect(shard == 3 && rows == 300..<400)
                        #expect(row == damagedRow, "undamaged row \(row) refused (flip at \(flipped))")
                    }
                }
            }
            let report = try store.verify()
            #expect(report.problems.count == 1, "flip at \(flipped): \(report.problems)")
            #expect(report.problems.first.map { "\($0)" }?.contains("shard 3 (rows 300..<400)") == true)
        }
        #expect(hitSlot && hitEscaped && hitChecksum && hitElse)
    }

    @Test func aShardUnderAnotherKeyIsCaught() throws {
        let dir = ScratchDirectory()
        let layout = TableLayout(elementType: .bf16, rows: 700, dim: 16, rowsPerShard: 100, codec: .nibble)
        try Self.write(dir.file("t.pkm"), layout, Self.rows(700, dim: 16, type: .bf16))
        let env = try Environment(path: dir.file("t.pkm"), readOnly: false)
        try env.write { txn in
            let blob = try withShardKey(2) { try txn.get(env.shards, key: $0) }!
            try withShardKey(5) { key in try blob.withUnsafeBytes { try txn.put(env.shards, key: key, value: $0) } }
        }
        let store = try Store.open(at: dir.file("t.pkm"))
        for row in 500..<600 { #expect(throws: StoreError.self, "row \(row)") { try store.row(row) } }
        #expect(try store.verify().problems.count == 1)
    }

    @Test func truncatedShardsAreCaught() throws {
        for keep in [0, 31, 47, 48, 200, 1000] {
            let dir = ScratchDirectory()
            let layout = TableLayout(elementType: .bf16, rows: 700, dim: 16, rowsPerShard: 100, codec: .nibble)
            try Self.write(dir.file("t.pkm"), layout, Self.rows(700, dim: 16, type: .bf16))
            try tamperShard(dir.file("t.pkm"), 4) { blob in blob = Array(blob.prefix(keep)) }
            let store = try Store.open(at: dir.file("t.pkm"))
            #expect(throws: StoreError.self) { try store.row(450) }
            #expect(try store.row(50).count == 16)
            #expect(try store.verify().problems.count == 1)
        }
    }

    /// The code table is part of the data: missing, or not 15 distinct bytes, it is refused by name.
    @Test func aMissingOrBadCodeTableIsRefused() throws {
        for edit in ["delete", "duplicate"] {
            let dir = ScratchDirectory()
            let layout = TableLayout(elementType: .bf16, rows: 300, dim: 16, rowsPerShard: 100, codec: .nibble)
            try Self.write(dir.file("t.pkm"), layout, Self.rows(300, dim: 16, type: .bf16))
            let env = try Environment(path: dir.file("t.pkm"), readOnly: false)
            try env.write { txn in
                try withName(NibbleCode.tensorName) { key in
                    if edit == "delete" { try txn.delete(env.tensors, key: key); return }
                    let codes = [UInt8](0x30..<0x3E) + [0x30]
                    let record = try Tensor(dtype: .u8, shape: [15], bytes: codes).record(name: NibbleCode.tensorName)
                    try record.withUnsafeBytes { try txn.put(env.tensors, key: key, value: $0) }
                }
            }
            #expect {
                _ = try Store.open(at: dir.file("t.pkm"))
            } throws: { error in
                "\(error)".contains(NibbleCode.tensorName)
            }
        }
    }

    @Test func f16TablesAndTinyRowsAreRefusedByName() throws {
        #expect { try TableLayout(elementType: .f16, rows: 10, dim: 64, codec: .nibble).validate() } throws: { "\($0)".contains("f16") }
        #expect { try TableLayout(elementType: .bf16, rows: 10, dim: 4, codec: .nibble).validate() } throws: { "\($0)".contains("at least 5") }
        #expect { try TableLayout(elementType: .f32, rows: 10, dim: 2, codec: .nibble).validate() } throws: { "\($0)".contains("at least 3") }
        try TableLayout(elementType: .bf16, rows: 10, dim: 5, codec: .nibble).validate()
        try TableLayout(elementType: .f32, rows: 10, dim: 3, codec: .nibble).validate()
    }
}
