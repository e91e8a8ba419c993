import CGatherKernel
import Testing
import _MemorySupport
@testable import MemoryStore

/// The gather-reduce kernel against a Double reference computed from the definition.
@Suite struct GatherKernelTests {
    /// Every element type, on every code path this processor has (AVX-512 for chunks of
    /// multiples of 16, AVX2 for multiples of 8, with and without a tail below 64 columns, and
    /// the portable one), MCS chunks, rows visited in order (runs of 1 to 9 equal targets, a
    /// target coming back after others, for the vector scan of run ends) and through shuffled
    /// positions (runs broken by them), and rows at any byte offset. The
    /// bound is float summation's: |result − exact| ≤ (n + 1) · 2^-24 · Σ|w · x| per output
    /// element, n rows summed (in any order and grouping).
    @Test(arguments: ElementType.valueTypes, [(8, 1), (64, 1), (64, 2), (72, 1), (128, 4), (200, 1), (60, 1), (6, 3), (1, 1),
                                               (48, 1), (96, 1), (160, 2), (128, 8)])
    func kernelMatchesTheDefinition(type: ElementType, shape: (dim: Int, chunks: Int)) {
        for level in Int32(PKM_KERNEL_PORTABLE)...pkm_gather_reduce_level() {
            for inOrder in [false, true] { check(type: type, shape: shape, level: level, inOrder: inOrder) }
        }
    }

    func check(type: ElementType, shape: (dim: Int, chunks: Int), level: Int32, inOrder: Bool) {
        let (dim, chunks) = shape
        var rng = SeededGenerator(seed: UInt64(dim * 31 + chunks) ^ UInt64(type.code))
        let tableRows = 300, count = 500, outputs = 7
        let values = (0..<(tableRows * dim)).map { _ in rng.normal() }
        // Rows stored at an odd stride and offset, as raw rows with their checksums are.
        let stride = dim * type.size + 8, offset = 8
        var table = [UInt8](repeating: 0, count: offset + tableRows * stride)
        let encoded = type.encode(values)
        for r in 0..<tableRows {
            for b in 0..<(dim * type.size) { table[offset + r * stride + b] = encoded[r * dim * type.size + b] }
        }
        let stored = type.decode(encoded)  // the values as stored (rounded to the type)
        let picks = (0..<count).map { _ in Int(rng.next() % UInt64(tableRows)) }
        let positions = inOrder ? Array(0..<count) : (0..<count).map { $0 }.shuffled(using: &rng)
        // Targets in runs, as a batch of bags is (a target may come back after another's run).
        var targets: [Int] = []
        while targets.count < count {
            let run = Int(rng.next() % 9) + 1, t = Int(rng.next() % UInt64(outputs))
            targets += Array(repeating: t, count: min(run, count - targets.count))
        }
        let weights = (0..<(count * chunks)).map { _ in rng.normal() }
        var out = [Float](repeating: 0, count: outputs * dim)
        table.withUnsafeBytes { t in
            let rows = positions.map { UnsafeRawPointer?(t.baseAddress! + offset + picks[$0] * stride) }
            rows.withUnsafeBufferPointer { r in
                positions.withUnsafeBufferPointer { p in
                    RowKernels.gatherReduce(r, positions: inOrder ? nil : p, type: type, dim: dim, chunks: chunks, weights: weights,
                                            targets: targets, into: &out, level: level)
                }
            }
        }
        let width = dim / chunks
        var exact = [Double](repeating: 0, count: outputs * dim), magnitude = exact, terms = [Int](repeating: 0, count: outputs)
        for i in 0..<count {
            terms[targets[i]] += 1
            for j in 0..<dim {
                let term = Double(weights[i * chunks + j / width]) * Double(stored[picks[i] * dim + j])
                exact[targets[i] * dim + j] += term
                magnitude[targets[i] * dim + j] += abs(term)
            }
        }
        for e in 0..<(outputs * dim) {
            let bound = Double(terms[e / dim] + 1) * 0x1p-24 * magnitude[e] + 1e-30
            #expect(abs(Double(out[e]) - exact[e]) <= bound,
                    "level \(level), in order \(inOrder), element \(e): \(out[e]) vs \(exact[e]) (bound \(bound))")
        }
    }

    /// The kernel that locates its rows refuses an index not below the map's rows and a target
    /// not below the outputs, on every path and kind of table: it returns SIZE_MAX, and reads and
    /// writes nothing outside the table and the output.
    @Test func locatingKernelRefusesOutOfRangeIndicesAndTargets() {
        let rows = 64, dim = 32, outputs = 3, rowBytes = dim * 2
        let table = [UInt16](repeating: 0x3F80, count: rows * dim)  // every element 1.0
        let offsets = (0..<rows).map { UInt32($0 * rowBytes) }
        table.withUnsafeBytes { t in
            offsets.withUnsafeBufferPointer { o in
                let bases = [Int(bitPattern: t.baseAddress!)]
                bases.withUnsafeBufferPointer { b in
                    let maps = [RowKernels.flatMap(base: t.baseAddress!, rowBytes: rowBytes, rows: rows),
                                pkm_row_map(base: nil, row_bytes: rowBytes, shard_rows: b.baseAddress, rows_per_shard: rows,
                                            shard_multiplier: Divisor(rows, dividendsBelow: rows).multiplier, row_offsets: o.baseAddress,
                                            checked: nil, checked_shift: 0, group_shift: 0, rows: rows, escape_rows: nil, escapes_checked: nil)]
                    for (name, indices, targets) in [("index = rows", [1, rows, 2], [0, 1, 2]), ("index -1", [1, -1, 2], [0, 1, 2]),
                                                      ("target = outputs", [1, 2, 3], [0, outputs, 2]), ("target -1", [1, 2, 3], [0, 1, -1])] {
                        for (kind, map) in maps.enumerated() {
                            for level in Int32(PKM_KERNEL_PORTABLE)...pkm_gather_reduce_level() {
                                for distance in [0, 1, 32] {
                                    // Guard floats around the output: nothing outside it is written.
                                    var out = [Float](repeating: 0, count: (outputs + 2) * dim)
                                    var located = [UnsafeRawPointer?](repeating: nil, count: 3), listed = [Int](repeating: -1, count: 3)
                                    var m = map
                                    let n = out.withUnsafeMutableBufferPointer { o in
                                        pkm_gather_reduce_rows_at(level, Int32(ElementType.bf16.code), &m, indices, 3, dim, 1, [1, 1, 1], targets,
                                                                  o.baseAddress! + dim, outputs, distance, HalfPrecision.f16Table, &located, &listed)
                                    }
                                    let context = "\(name), kind \(kind), level \(level), distance \(distance)"
                                    #expect(n == Int(bitPattern: UInt(bitPattern: -1)), "\(context): refused")
                                    #expect(out[0..<dim].allSatisfy { $0 == 0 } && out[((outputs + 1) * dim)...].allSatisfy { $0 == 0 },
                                            "\(context): nothing written outside the output")
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// The nibble kernel that locates its slots, on every path, over a map that names where escaped
    /// rows lie, refuses an index not below the map's rows (read as row 0, whose slot here is escaped) without
    /// asking for an escaped row through it: with index -1 the shard it would name lies far past
    /// `escape_rows`, whose one entry is all there is to read.
    @Test func nibbleKernelAsksForNoEscapedRowThroughARefusedIndex() {
        let rows = 64, dim = 64, slotBytes = dim / 2 + dim
        guard pkm_nibble_gather_reduce_fits(dim, 1) != 0 else { return }
        var slots = [UInt8](repeating: 0, count: rows * slotBytes)
        slots[0] = 0xFF  // row 0 escaped, escape index 0
        let table = [UInt8](0..<16), escapedRow = [UInt8](repeating: 0, count: dim * 2)
        let offsets = (0..<rows).map { UInt32($0 * slotBytes) }
        let bitmap: [UInt64] = [0, 0]
        slots.withUnsafeBytes { s in
            escapedRow.withUnsafeBytes { e in
                offsets.withUnsafeBufferPointer { o in
                    bitmap.withUnsafeBufferPointer { bits in
                        let bases = [Int(bitPattern: s.baseAddress!)], escapes = [Int(bitPattern: e.baseAddress!)]
                        bases.withUnsafeBufferPointer { b in
                            escapes.withUnsafeBufferPointer { er in
                                var flat = RowKernels.flatMap(base: s.baseAddress!, rowBytes: slotBytes, rows: rows)
                                flat.rows_per_shard = rows
                                flat.escape_rows = er.baseAddress
                                let sharded = pkm_row_map(base: nil, row_bytes: slotBytes, shard_rows: b.baseAddress, rows_per_shard: rows,
                                                          shard_multiplier: Divisor(rows, dividendsBelow: rows).multiplier, row_offsets: o.baseAddress,
                                                          checked: nil, checked_shift: 0, group_shift: 0, rows: rows,
                                                          escape_rows: er.baseAddress, escapes_checked: bits.baseAddress)
                                for (kind, map) in [flat, sharded].enumerated() {
                                    for indices in [[1, -1, 2], [1, rows, 2], [-1, -1, -1]] {
                                        for (distance, level) in [0, 1, 32].flatMap({ d in (Int32(PKM_KERNEL_AVX2)...pkm_gather_reduce_level()).map { (d, $0) } }) {
                                            var m = map, out = [Float](repeating: 0, count: dim), n = 0
                                            var located = [UnsafeRawPointer?](repeating: nil, count: 3)
                                            var listed = [Int](repeating: -1, count: 3), unchecked = [Int](repeating: -1, count: 3)
                                            let e = pkm_nibble_gather_reduce_rows_at(level, &m, indices, 3, dim, 1, [1, 1, 1], nil, &out, 1, distance,
                                                                                     table, &located, &listed, &unchecked, &n)
                                            #expect(e == Int(bitPattern: UInt(bitPattern: -1)),
                                                    "kind \(kind), \(indices), distance \(distance), level \(level): refused")
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// The kernel that locates its rows (`pkm_gather_reduce_rows`) against the one given their
    /// addresses, on every path, for a flat table and for a sharded one (shards of an odd number
    /// of rows at scattered addresses, rows in groups after a line of checksums, as Spec/FORMAT.md's
    /// raw layout), with and without a bitmap of checked groups, prefetch distances of 0, 1 and
    /// 32, and calls shorter than the distance: the same addresses, the same sums to the bit (the
    /// same order), and exactly the rows of unchecked groups listed, in order.
    @Test(arguments: ElementType.valueTypes, [(64, 1), (64, 2), (72, 1), (8, 1), (6, 3)])
    func locatingKernelMatchesTheGivenRows(type: ElementType, shape: (dim: Int, chunks: Int)) {
        let (dim, chunks) = shape
        var rng = SeededGenerator(seed: UInt64(dim * 7 + chunks) ^ UInt64(type.code) << 8)
        let rowBytes = dim * type.size, perShard = 37, shards = 9, groupRows = 4, groupBytes = 64 + groupRows * rowBytes
        let shardBytes = 64 + (perShard + groupRows - 1) / groupRows * groupBytes
        let tableRows = perShard * shards
        var memory = [UInt8](repeating: 0, count: shards * (shardBytes + 192))
        for b in memory.indices { memory[b] = UInt8(truncatingIfNeeded: rng.next()) & 0x3F }  // finite values of every type
        let offsets = (0..<perShard).map { UInt32(($0 / groupRows) * groupBytes + 64 + ($0 % groupRows) * rowBytes) }
        let checkedShift: UInt32 = 4  // 10 groups a shard, at a stride of 16 bits
        var bitmap = [UInt64](repeating: 0, count: (shards << checkedShift + 63) / 64)
        for g in 0..<(shards << checkedShift) where rng.next() % 3 != 0 { bitmap[g >> 6] |= 1 << UInt64(g & 63) }
        for count in [1, 5, 31, 33, 200] {
            let picks = (0..<count).map { _ in Int(rng.next() % UInt64(tableRows)) }
            var targets: [Int] = []
            while targets.count < count { targets += Array(repeating: Int(rng.next() % 5), count: min(Int(rng.next() % 7) + 1, count - targets.count)) }
            let weights = (0..<(count * chunks)).map { _ in rng.normal() }
            memory.withUnsafeBytes { m in
                // Shard s at a scattered offset within `memory`.
                let bases = (0..<shards).map { Int(bitPattern: m.baseAddress! + $0 * (shardBytes + 192) + ($0 * 40) % 128) }
                for sharded in [false, true] {
                    // A table whose shards are found by a division (multiplier 0, rows beyond 2^32)
                    // has its rows located before the loops.
                    for (checking, divided) in sharded ? [(false, false), (true, false), (true, true)] : [(false, false)] {
                        let expected: [UnsafeRawPointer?] = picks.map { r in
                            sharded ? UnsafeRawPointer(bitPattern: bases[r / perShard])! + Int(offsets[r % perShard])
                                    : m.baseAddress! + r * rowBytes
                        }
                        let unchecked = checking ? picks.indices.filter { k in
                            let g = (picks[k] / perShard) << Int(checkedShift) + (picks[k] % perShard) / groupRows
                            return bitmap[g >> 6] >> UInt64(g & 63) & 1 == 0
                        } : []
                        bases.withUnsafeBufferPointer { b in
                            offsets.withUnsafeBufferPointer { o in
                                bitmap.withUnsafeBufferPointer { bits in
                                    let map = sharded
                                        ? pkm_row_map(base: nil, row_bytes: rowBytes, shard_rows: b.baseAddress, rows_per_shard: perShard,
                                                      shard_multiplier: divided ? 0 : Divisor(perShard, dividendsBelow: tableRows).multiplier,
                                                      row_offsets: o.baseAddress, checked: checking ? bits.baseAddress : nil,
                                                      checked_shift: checkedShift, group_shift: 2, rows: tableRows,
                                                      escape_rows: nil, escapes_checked: nil)
                                        : RowKernels.flatMap(base: m.baseAddress!, rowBytes: rowBytes, rows: tableRows)
                                    for level in Int32(PKM_KERNEL_PORTABLE)...pkm_gather_reduce_level() {
                                        for distance in [0, 1, 32] {
                                            var given = [Float](repeating: 0, count: 5 * dim), located = given
                                            pkm_gather_reduce_at(level, Int32(type.code), expected, nil, count, dim, chunks, weights, targets,
                                                                 &given, distance, HalfPrecision.f16Table)
                                            var rows = [UnsafeRawPointer?](repeating: nil, count: count), listed = [Int](repeating: -1, count: count)
                                            var m = map
                                            let n = pkm_gather_reduce_rows_at(level, Int32(type.code), &m, picks, count, dim, chunks, weights,
                                                                              targets, &located, 5, distance, HalfPrecision.f16Table, &rows, &listed)
                                            let context = "level \(level), sharded \(sharded), checking \(checking), divided \(divided), distance \(distance), count \(count)"
                                            #expect(rows == expected, "\(context): addresses")
                                            #expect(located == given, "\(context): sums")
                                            #expect(Array(listed[0..<n]) == unchecked, "\(context): unchecked rows")
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// The bounds check's largest index as unsigned: negatives count as huge, at any position
    /// (the vector steps and the tail), and none gives 0.
    @Test func largestUnsignedCountsNegativesAsHuge() {
        var rng = SeededGenerator(seed: 5)
        for count in [0, 1, 3, 4, 5, 8, 9, 100] {
            for negative in [false, true] {
                var values = (0..<count).map { _ in Int(rng.next() % 1_000_000) }
                if negative && count > 0 { values[Int(rng.next() % UInt64(count))] = -Int(rng.next() % 5) - 1 }
                let expected = values.map { UInt(bitPattern: $0) }.max() ?? 0
                #expect(UInt(pkm_largest_unsigned(values, count)) == expected, "count \(count), negative \(negative)")
            }
        }
    }

    /// The gate dots (Spec/RETRIEVAL.md, "Gates") of every element type on both code paths,
    /// widths below, at and past the vector lengths, rows at any offset visited through shuffled
    /// positions: |result − exact| ≤ (g + 1) · 2^-24 · Σ|u · x|.
    @Test(arguments: ElementType.valueTypes, [(1, 0), (3, 5), (8, 0), (16, 4), (19, 1), (64, 8), (100, 3)])
    func gateDotsMatchTheDefinition(type: ElementType, shape: (width: Int, column: Int)) {
        let (width, column) = shape, dim = column + width + 2
        for level in [Int32(PKM_KERNEL_PORTABLE), pkm_gather_reduce_level()] {
            var rng = SeededGenerator(seed: UInt64(width * 131 + column) ^ UInt64(type.code))
            let tableRows = 50, count = 120, queries = 5
            let stored = type.decode(type.encode((0..<(tableRows * dim)).map { _ in rng.normal() }))
            let encoded = type.encode(stored), stride = dim * type.size + 8, offset = 8
            var table = [UInt8](repeating: 0, count: offset + tableRows * stride)
            for r in 0..<tableRows {
                for b in 0..<(dim * type.size) { table[offset + r * stride + b] = encoded[r * dim * type.size + b] }
            }
            let inputs = (0..<(queries * width)).map { _ in rng.normal() }
            let picks = (0..<count).map { _ in Int(rng.next() % UInt64(tableRows)) }
            let slotQueries = (0..<count).map { $0 * queries / count }
            let positions = (0..<count).map { $0 }.shuffled(using: &rng)
            var out = [Float](repeating: .nan, count: count)
            table.withUnsafeBytes { t in
                let rows = positions.map { UnsafeRawPointer?(t.baseAddress! + offset + picks[$0] * stride) }
                rows.withUnsafeBufferPointer { r in
                    positions.withUnsafeBufferPointer { p in
                        RowKernels.gatherDots(r, positions: p, type: type, column: column, width: width, rowBytes: dim * type.size,
                                              inputs: inputs, queries: slotQueries, into: &out, level: level)
                    }
                }
            }
            for i in 0..<count {
                var exact = 0.0, magnitude = 0.0
                for j in 0..<width {
                    let term = Double(inputs[slotQueries[i] * width + j]) * Double(stored[picks[i] * dim + column + j])
                    exact += term
                    magnitude += abs(term)
                }
                let bound = Double(width + 1) * 0x1p-24 * magnitude + 1e-30
                #expect(abs(Double(out[i]) - exact) <= bound, "level \(level), slot \(i): \(out[i]) vs \(exact)")
            }
        }
    }
}

/// The nibble kernels (decode, and the reduce that decodes in registers) against the plain
/// kernel over the same rows decoded by the portable decoder, on every path this processor has.
@Suite struct NibbleKernelTests {
    @Test(arguments: [(64, 1), (64, 2), (128, 4), (128, 8), (96, 1), (32, 1), (192, 3)])
    func nibbleKernelsMatchThePlainOnes(shape: (dim: Int, chunks: Int)) {
        let (dim, chunks) = shape
        var rng = SeededGenerator(seed: UInt64(dim * 7 + chunks))
        let tableRows = 400, count = 600, outputs = 9
        let values = (0..<(tableRows * dim)).map { _ in rng.normal() * 0.02 }
        var encoded = ElementType.bf16.encode(values)
        let codes = encoded.withUnsafeBytes { NibbleCode.train($0, elementType: .bf16) }
        // Rows with a top byte the code does not hold (a value near 1), as rows after the first commit may have.
        let outside = UInt8((0x3C...0x3F).first { !codes.topBytes.contains(UInt8($0)) }!)
        for r in stride(from: 5, to: tableRows, by: 37) { encoded[(r * dim + 3) * 2 + 1] = outside }
        let slotBytes = NibbleCode.slotBytes(dim: dim, elementType: .bf16)
        var slots = [UInt8](repeating: 0, count: tableRows * slotBytes)
        var escaped = Set<Int>()
        slots.withUnsafeMutableBytes { s in
            encoded.withUnsafeBytes { e in
                for r in 0..<tableRows where !codes.encode(e.baseAddress! + r * dim * 2, dim: dim, elementSize: 2, into: s.baseAddress! + r * slotBytes) {
                    (s.baseAddress! + r * slotBytes).initializeMemory(as: UInt8.self, repeating: 0, count: slotBytes)
                    s[r * slotBytes] = NibbleCode.escapeMarker
                    escaped.insert(r)
                }
            }
        }
        #expect(escaped.count >= 5)
        let picks = (0..<count).map { _ in Int(rng.next() % UInt64(tableRows)) }
        let targets = (0..<count).map { $0 * outputs / count }
        let weights = (0..<(count * chunks)).map { _ in rng.normal() }
        let table = codes.decodeTable
        slots.withUnsafeBytes { s in
            let rows = picks.map { UnsafeRawPointer?(s.baseAddress! + $0 * slotBytes) }
            // The decoders stop at each escaped slot and decode the rest as the portable one does.
            var reference = [UInt8](repeating: 0, count: count * dim * 2)
            let firstEscape = picks.firstIndex { escaped.contains($0) } ?? count
            for level in [Int32(PKM_KERNEL_PORTABLE), pkm_gather_reduce_level()] {
                var out = [UInt8](repeating: 0, count: count * dim * 2)
                let stopped = pkm_nibble_decode_at(level, rows, count, dim, 2, table, &out, 8)
                #expect(stopped == firstEscape)
                if level == Int32(PKM_KERNEL_PORTABLE) { reference = out } else { #expect(out == reference) }
            }
            #expect(Array(reference[0..<(firstEscape * dim * 2)]) == Array(encoded.withUnsafeBytes { e in
                picks[0..<firstEscape].flatMap { Array(UnsafeRawBufferPointer(rebasing: e[($0 * dim * 2)..<(($0 + 1) * dim * 2)])) }
            }))
            // The reduce: the escaped slots listed, in order, and their rows added by the plain
            // kernel through those positions, as Store does.
            var expected = [Float](repeating: 0, count: outputs * dim)
            encoded.withUnsafeBytes { e in
                let plain = picks.map { UnsafeRawPointer?(e.baseAddress! + $0 * dim * 2) }
                pkm_gather_reduce_at(Int32(PKM_KERNEL_PORTABLE), Int32(ElementType.bf16.code), plain, nil, count, dim, chunks, weights,
                                     targets, &expected, 0, nil)
            }
            guard pkm_nibble_gather_reduce_fits(dim, chunks) != 0 else { return }
            let escapedPicks = picks.indices.filter { escaped.contains(picks[$0]) }
            for level in Int32(PKM_KERNEL_AVX2)...pkm_gather_reduce_level() {
                var out = [Float](repeating: 0, count: outputs * dim)
                var listed = [Int](repeating: -1, count: count)
                let n = pkm_nibble_gather_reduce_at(level, rows, nil, count, dim, chunks, weights, targets, &out, 8, table, &listed)
                #expect(Array(listed[0..<n]) == escapedPicks, "level \(level)")
                encoded.withUnsafeBytes { e in
                    let rowsOfListed = listed[0..<n].map { UnsafeRawPointer?(e.baseAddress! + picks[$0] * dim * 2) }
                    pkm_gather_reduce_at(Int32(PKM_KERNEL_PORTABLE), Int32(ElementType.bf16.code), rowsOfListed, Array(listed[0..<n]), n, dim,
                                         chunks, weights, targets, &out, 0, nil)
                }
                for i in 0..<(outputs * dim) {
                    #expect(abs(out[i] - expected[i]) <= 1e-5 * max(1, abs(expected[i])), "level \(level), output \(i)")
                }
            }
            // The kernel that locates its slots, over the slots as a flat table and as one shard
            // with a bitmap of checked groups (of 4 slots), on every path: the same slots, sums to
            // the bit of the same path over the slots given, escaped slots, and exactly the
            // unchecked ones listed.
            let offsets = (0..<tableRows).map { UInt32($0 * slotBytes) }
            let bitmap = (0..<2).map { _ in rng.next() }  // 100 groups, at a stride of 128 bits
            let bases = [Int(bitPattern: s.baseAddress!)]
            // The sharded map also names where escaped rows lie and their bitmap, which the kernel
            // only asks for: the same sums and lists.
            let escapeRows = [Int(bitPattern: s.baseAddress!)]
            for level in Int32(PKM_KERNEL_AVX2)...pkm_gather_reduce_level() {
                var given = [Float](repeating: 0, count: outputs * dim), givenListed = [Int](repeating: -1, count: count)
                let escapes = pkm_nibble_gather_reduce_at(level, rows, nil, count, dim, chunks, weights, targets, &given, 8, table, &givenListed)
                for sharded in [false, true] {
                    bases.withUnsafeBufferPointer { b in
                        offsets.withUnsafeBufferPointer { o in
                            bitmap.withUnsafeBufferPointer { bits in
                                escapeRows.withUnsafeBufferPointer { er in
                                    var map = sharded
                                        ? pkm_row_map(base: nil, row_bytes: slotBytes, shard_rows: b.baseAddress, rows_per_shard: tableRows,
                                                      shard_multiplier: 0, row_offsets: o.baseAddress, checked: bits.baseAddress, checked_shift: 7,
                                                      group_shift: 2, rows: tableRows, escape_rows: er.baseAddress, escapes_checked: bits.baseAddress)
                                        : RowKernels.flatMap(base: s.baseAddress!, rowBytes: slotBytes, rows: tableRows)
                                    var out = [Float](repeating: 0, count: outputs * dim), listed = [Int](repeating: -1, count: count)
                                    var located = [UnsafeRawPointer?](repeating: nil, count: count), unchecked = [Int](repeating: -1, count: count)
                                    var n = 0
                                    let e = pkm_nibble_gather_reduce_rows_at(level, &map, picks, count, dim, chunks, weights, targets, &out, outputs, 8,
                                                                             table, &located, &listed, &unchecked, &n)
                                    #expect(located == rows && out == given, "sharded \(sharded), level \(level)")
                                    #expect(e == escapes && Array(listed[0..<e]) == Array(givenListed[0..<escapes]), "sharded \(sharded), level \(level)")
                                    let expectedUnchecked = sharded ? picks.indices.filter { bitmap[picks[$0] / 4 / 64] >> UInt64(picks[$0] / 4 % 64) & 1 == 0 } : []
                                    #expect(Array(unchecked[0..<n]) == expectedUnchecked, "sharded \(sharded), level \(level)")
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
