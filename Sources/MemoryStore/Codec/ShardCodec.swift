import _MemorySupport

/// Encodes and decodes one shard blob (Spec/FORMAT.md, "Shards").
///
/// A blob is a 32-byte header, then for the `zstd` codec one 8-byte entry per byte plane,
/// then the payload; for the `raw` codec (from format version 3) the rows with the XXH64 of
/// each row seeded with its index in the table, where ``RawShardLayout`` puts them, so a
/// single row can be checked where it lies, without its shard's header; for the `nibble`
/// codec each row's coded slot there instead (``NibbleShard``), with a 32-bit checksum of its values. The header's checksum
/// is XXH64 of the decoded rows, checked on every whole-shard decode.
package enum ShardCodec {
    static let magic: UInt32 = 0x3153_4B50  // "PKS1" read as a little-endian u32
    static let headerSize = 32
    static let planeEntrySize = 8

    enum PlaneMode: UInt8 { case stored = 0, zstd = 1 }

    /// The header's codec byte: how this blob is encoded (the table's ``CodecKind`` and the format version).
    enum CodecByte: UInt8 {
        /// Rows back to back, checked only as a whole (format versions 1 and 2).
        case rawRows = 0
        case zstdPlanes = 1
        /// Each row followed by its own XXH64 (format versions 3 and 4).
        case checkedRows = 2
        /// Rows in groups on 64-byte lines, each group's checksums on the line before its rows (format version 5).
        case groupedRows = 3
        /// Nibble-coded row slots grouped as codec 3 with 4-byte checksums, escaped rows after them (format version 6).
        case nibbleRows = 4
        /// Nibble-coded row slots with 4-byte checksums in units of a 4 KiB page, escaped rows after them (format version 7).
        case nibblePages = 5

        /// The format versions whose stores hold blobs of this codec.
        var versions: ClosedRange<Int> {
            switch self {
            case .rawRows: 1...2
            case .zstdPlanes: 1...Int.max
            case .checkedRows: 3...4
            case .groupedRows: 5...Int.max
            case .nibbleRows: 6...6
            case .nibblePages: 7...Int.max
            }
        }

        var codec: CodecKind {
            switch self {
            case .zstdPlanes: .zstd
            case .nibbleRows, .nibblePages: .nibble
            case .rawRows, .checkedRows, .groupedRows: .raw
            }
        }
    }

    package struct Header {
        var codecByte: CodecByte
        var codec: CodecKind { codecByte.codec }
        var elementType: ElementType
        var planeCount: Int
        var usesDictionary: Bool
        var rowCount: Int
        var dim: Int
        var shardIndex: Int
        package var checksum: UInt64
    }

    /// Encodes `rows` (little-endian elements of `layout.elementType`) as shard `index`.
    /// `codes` is the store's nibble code (for the nibble codec only).
    package static func encode(_ rows: UnsafeRawBufferPointer, shard index: Int, layout: TableLayout,
                       compressor: ZstdCompressor?, codes: NibbleCode? = nil, scratch: inout [UInt8]) -> [UInt8] {
        let rowCount = rows.count / layout.rowBytes
        let checksum = XXH64.hash(rows)
        var out: [UInt8]
        switch layout.codec {
        case .raw:
            let rowBytes = layout.rowBytes, raw = RawShardLayout(version: Manifest.currentVersion, rowBytes: rowBytes)
            out = [UInt8](repeating: 0, count: raw.blobBytes(rows: rowCount))  // padding stays zero
            out.withUnsafeMutableBytes { o in
                writeHeader(o, codec: CodecByte(rawValue: raw.codecByte)!, layout: layout, planes: 0, rowCount: rowCount, shard: index,
                            checksum: checksum, dictionary: false)
                for r in 0..<rowCount {
                    let row = UnsafeRawBufferPointer(rebasing: rows[(r * rowBytes)..<((r + 1) * rowBytes)])
                    (o.baseAddress! + raw.start + raw.rowOffset(r)).copyMemory(from: row.baseAddress!, byteCount: rowBytes)
                    let seed = UInt64(index * layout.rowsPerShard + r)
                    o.storeBytes(of: XXH64.hash(row, seed: seed).littleEndian, toByteOffset: raw.start + raw.checksumOffset(r), as: UInt64.self)
                }
            }
        case .nibble:
            out = encodeNibble(rows, rowCount: rowCount, shard: index, layout: layout, codes: codes!, checksum: checksum)
        case .zstd:
            let s = layout.elementType.size
            let count = rows.count / s
            if scratch.count < rows.count { scratch = [UInt8](repeating: 0, count: rows.count) }
            let bound = ZstdDecompressor.bound(count)
            var frame = [UInt8](repeating: 0, count: bound)
            let tableSize = headerSize + s * planeEntrySize
            out = [UInt8]()
            out.reserveCapacity(tableSize + rows.count)
            out.append(contentsOf: repeatElement(0, count: tableSize))
            scratch.withUnsafeMutableBytes { planes in
                BytePlanes.split(rows.baseAddress!, count: count, elementSize: s, into: planes.baseAddress!)
                for p in 0..<s {
                    let plane = UnsafeRawBufferPointer(rebasing: planes[(p * count)..<((p + 1) * count)])
                    // Keep a plane compressed only when it saves at least 1/64 of its size.
                    let n = frame.withUnsafeMutableBytes { compressor!.compress(plane, into: $0) }
                    let entry = headerSize + p * planeEntrySize
                    if let n, n < count - count / 64 {
                        out[entry] = PlaneMode.zstd.rawValue
                        store(UInt32(n), at: entry + 4, in: &out)
                        out.append(contentsOf: frame[0..<n])
                    } else {
                        out[entry] = PlaneMode.stored.rawValue
                        store(UInt32(count), at: entry + 4, in: &out)
                        out.append(contentsOf: plane)
                    }
                }
            }
            out.withUnsafeMutableBytes { o in
                writeHeader(o, codec: .zstdPlanes, layout: layout, planes: s, rowCount: rowCount, shard: index, checksum: checksum,
                            dictionary: compressor!.usesDictionary)
            }
        }
        return out
    }

    /// Each row coded in its slot (codec 5), or escaped: its slot the marker and its index among
    /// the shard's escaped rows, its bytes after the last unit. Each row's checksum is the low 32
    /// bits of the XXH64 of its values, seeded with its index in the table.
    private static func encodeNibble(_ rows: UnsafeRawBufferPointer, rowCount: Int, shard index: Int, layout: TableLayout,
                                     codes: NibbleCode, checksum: UInt64) -> [UInt8] {
        let rowBytes = layout.rowBytes, size = layout.elementType.size
        let nibble = RawShardLayout.nibblePages(slotBytes: NibbleCode.slotBytes(dim: layout.dim, elementType: layout.elementType))
        var out = [UInt8](repeating: 0, count: nibble.blobBytes(rows: rowCount))  // padding stays zero
        var escaped: [Int] = []
        out.withUnsafeMutableBytes { o in
            writeHeader(o, codec: .nibblePages, layout: layout, planes: 0, rowCount: rowCount, shard: index, checksum: checksum, dictionary: false)
            for r in 0..<rowCount {
                let row = UnsafeRawBufferPointer(rebasing: rows[(r * rowBytes)..<((r + 1) * rowBytes)])
                let slot = o.baseAddress! + nibble.start + nibble.rowOffset(r)
                if !codes.encode(row.baseAddress!, dim: layout.dim, elementSize: size, into: slot) {
                    slot.initializeMemory(as: UInt8.self, repeating: 0, count: nibble.rowBytes)
                    slot.storeBytes(of: NibbleCode.escapeMarker, as: UInt8.self)
                    slot.storeBytes(of: UInt32(escaped.count).littleEndian, toByteOffset: 4, as: UInt32.self)
                    escaped.append(r)
                }
                let sum = UInt32(truncatingIfNeeded: XXH64.hash(row, seed: UInt64(index * layout.rowsPerShard + r)))
                o.storeBytes(of: sum.littleEndian, toByteOffset: nibble.start + nibble.checksumOffset(r), as: UInt32.self)
            }
        }
        for r in escaped { out.append(contentsOf: rows[(r * rowBytes)..<((r + 1) * rowBytes)]) }
        return out
    }

    private static func store(_ v: UInt32, at offset: Int, in out: inout [UInt8]) {
        withUnsafeBytes(of: v.littleEndian) { for i in 0..<4 { out[offset + i] = $0[i] } }
    }

    private static func writeHeader(_ o: UnsafeMutableRawBufferPointer, codec: CodecByte, layout: TableLayout,
                                    planes: Int, rowCount: Int, shard: Int, checksum: UInt64, dictionary: Bool) {
        o.storeBytes(of: magic.littleEndian, toByteOffset: 0, as: UInt32.self)
        o[4] = codec.rawValue
        o[5] = layout.elementType.code
        o[6] = UInt8(planes)
        o[7] = dictionary ? 1 : 0
        o.storeBytes(of: UInt32(rowCount).littleEndian, toByteOffset: 8, as: UInt32.self)
        o.storeBytes(of: UInt32(layout.dim).littleEndian, toByteOffset: 12, as: UInt32.self)
        o.storeBytes(of: UInt64(shard).littleEndian, toByteOffset: 16, as: UInt64.self)
        o.storeBytes(of: checksum.littleEndian, toByteOffset: 24, as: UInt64.self)
    }

    /// Parses and checks a header against what the manifest (of format version `version`) says shard `index` must be.
    package static func header(of blob: UnsafeRawBufferPointer, shard index: Int, layout: TableLayout, version: Int) throws -> Header {
        let rows = layout.rowRange(ofShard: index)
        func corrupt(_ why: String) -> StoreError { .corruptShard(shard: index, rows: rows, reason: why) }
        guard blob.count >= headerSize else { throw corrupt("blob is \(blob.count) bytes, shorter than the \(headerSize)-byte header") }
        guard blob.loadUnaligned(fromByteOffset: 0, as: UInt32.self).littleEndian == magic else { throw corrupt("bad magic") }
        guard let codec = CodecByte(rawValue: blob[4]) else { throw corrupt("unknown codec \(blob[4])") }
        guard codec.versions.contains(version) else { throw corrupt("codec \(blob[4]) in a store of format version \(version)") }
        guard let type = ElementType(code: blob[5]), type == layout.elementType else {
            throw corrupt("element type code \(blob[5]) disagrees with the manifest (\(layout.elementType.rawValue))")
        }
        let header = Header(
            codecByte: codec, elementType: type, planeCount: Int(blob[6]), usesDictionary: blob[7] & 1 != 0,
            rowCount: Int(blob.loadUnaligned(fromByteOffset: 8, as: UInt32.self).littleEndian),
            dim: Int(blob.loadUnaligned(fromByteOffset: 12, as: UInt32.self).littleEndian),
            shardIndex: Int(truncatingIfNeeded: blob.loadUnaligned(fromByteOffset: 16, as: UInt64.self).littleEndian),
            checksum: blob.loadUnaligned(fromByteOffset: 24, as: UInt64.self).littleEndian)
        guard blob[7] & (codec == .zstdPlanes ? 0xFE : 0xFF) == 0 else { throw corrupt("unknown flags \(blob[7])") }
        guard header.shardIndex == index else { throw corrupt("header says shard \(header.shardIndex)") }
        guard header.rowCount == rows.count else { throw corrupt("header says \(header.rowCount) rows, the manifest \(rows.count)") }
        guard header.dim == layout.dim else { throw corrupt("header says dim \(header.dim), the manifest \(layout.dim)") }
        guard (codec.codec == .nibble) == (layout.codec == .nibble) else { throw corrupt("codec \(blob[4]) in a \(layout.codec.rawValue) table") }
        switch codec {
        case .rawRows, .checkedRows, .groupedRows:
            guard header.planeCount == 0 else { throw corrupt("raw shard with \(header.planeCount) planes") }
            let expected = header.rawLayout(layout).map { $0.blobBytes(rows: rows.count) } ?? headerSize + rows.count * layout.rowBytes
            guard blob.count == expected else { throw corrupt("raw blob is \(blob.count) bytes, expected \(expected)") }
            if let raw = header.rawLayout(layout), raw.start > headerSize {
                guard blob[headerSize..<raw.start].allSatisfy({ $0 == 0 }) else { throw corrupt("the header's padding is not zero") }
            }
        case .nibbleRows, .nibblePages:
            guard header.planeCount == 0 else { throw corrupt("nibble shard with \(header.planeCount) planes") }
            let nibble = header.rawLayout(layout)!
            guard nibble.escapedRows(inBlob: blob.count, rows: rows.count, rowBytes: layout.rowBytes) != nil else {
                throw corrupt("nibble blob is \(blob.count) bytes, not \(nibble.blobBytes(rows: rows.count)) and whole escaped rows of \(layout.rowBytes)")
            }
            guard blob[headerSize..<nibble.start].allSatisfy({ $0 == 0 }) else { throw corrupt("the header's padding is not zero") }
        case .zstdPlanes:
            guard header.planeCount == type.size else { throw corrupt("\(header.planeCount) planes for \(type.size)-byte elements") }
            guard blob.count >= headerSize + header.planeCount * planeEntrySize else { throw corrupt("plane table is truncated") }
        }
        return header
    }

    /// Decodes a checked blob into `destination` (exactly rowCount x rowBytes bytes) and verifies the checksum.
    package static func decode(_ blob: UnsafeRawBufferPointer, header: Header, layout: TableLayout,
                       into destination: UnsafeMutableRawBufferPointer, scratch: inout [UInt8],
                       decompressor: ZstdDecompressor, dictionary: ZstdDictionary?, codes: NibbleCode? = nil) throws {
        let rows = layout.rowRange(ofShard: header.shardIndex)
        func corrupt(_ why: String) -> StoreError { .corruptShard(shard: header.shardIndex, rows: rows, reason: why) }
        let size = header.rowCount * layout.rowBytes
        precondition(destination.count == size)
        switch header.codecByte {
        case .rawRows:
            destination.copyMemory(from: UnsafeRawBufferPointer(rebasing: blob[headerSize...]))
        case .checkedRows, .groupedRows:
            let stored = ShardRows(blob: blob, header: header, layout: layout)
            for r in 0..<header.rowCount {
                let row = try stored.row(r, shard: header.shardIndex, layout: layout)
                (destination.baseAddress! + r * layout.rowBytes).copyMemory(from: row, byteCount: layout.rowBytes)
            }
            try checkChecksumLinePadding(blob, header: header, layout: layout)
        case .nibbleRows, .nibblePages:
            guard let codes else { throw corrupt("a nibble shard, and the store holds no nibble code") }
            let shard = NibbleShard(blob: blob, slots: header.rawLayout(layout)!, shard: header.shardIndex, layout: layout)
            let table = codes.decodeTable
            var escapes = 0
            for r in 0..<header.rowCount {
                let row = UnsafeMutableRawBufferPointer(rebasing: destination[(r * layout.rowBytes)..<((r + 1) * layout.rowBytes)])
                if try shard.decode(r, table: table, into: row.baseAddress!, expectedEscape: escapes) { escapes += 1 }
                try shard.check(r, decoded: UnsafeRawBufferPointer(row))
            }
            guard escapes == shard.escapeCount else { throw corrupt("\(shard.escapeCount - escapes) escaped rows no slot points to") }
            try checkChecksumLinePadding(blob, header: header, layout: layout)
        case .zstdPlanes:
            let s = header.planeCount
            let count = size / s
            if scratch.count < size { scratch = [UInt8](repeating: 0, count: size) }
            var offset = headerSize + s * planeEntrySize
            if header.usesDictionary && dictionary == nil { throw corrupt("compressed with a dictionary the store does not hold") }
            try scratch.withUnsafeMutableBytes { planes in
                for p in 0..<s {
                    let entry = headerSize + p * planeEntrySize
                    let length = Int(blob.loadUnaligned(fromByteOffset: entry + 4, as: UInt32.self).littleEndian)
                    guard length <= blob.count - offset else { throw corrupt("plane \(p) runs past the end of the blob") }
                    let payload = UnsafeRawBufferPointer(rebasing: blob[offset..<(offset + length)])
                    let plane = UnsafeMutableRawBufferPointer(rebasing: planes[(p * count)..<((p + 1) * count)])
                    switch PlaneMode(rawValue: blob[entry]) {
                    case .stored:
                        guard length == count else { throw corrupt("stored plane \(p) is \(length) bytes, expected \(count)") }
                        plane.copyMemory(from: payload)
                    case .zstd:
                        do {
                            try decompressor.decompress(payload, into: plane, dictionary: header.usesDictionary ? dictionary : nil)
                        } catch { throw corrupt("plane \(p): \(error)") }
                    case nil:
                        throw corrupt("plane \(p) has unknown mode \(blob[entry])")
                    }
                    offset += length
                }
                guard offset == blob.count else { throw corrupt("\(blob.count - offset) trailing bytes") }
                BytePlanes.join(planes.baseAddress!, count: count, elementSize: s, into: destination.baseAddress!)
            }
        }
        guard XXH64.hash(UnsafeRawBufferPointer(destination)) == header.checksum else {
            throw corrupt("checksum mismatch")
        }
    }
}

extension ShardCodec {
    /// Checks row `row` of the table, stored at `p`, against the checksum stored at `checksum`;
    /// throws, naming shard and row, when they do not match.
    @inline(__always)
    static func checkRow(at p: UnsafeRawPointer, checksum: UnsafeRawPointer, row: Int, shard: Int, layout: TableLayout) throws {
        let stored = UInt64(littleEndian: checksum.loadUnaligned(as: UInt64.self))
        guard XXH64.hash(UnsafeRawBufferPointer(start: p, count: layout.rowBytes), seed: UInt64(row)) == stored else {
            throw StoreError.corruptShard(shard: shard, rows: layout.rowRange(ofShard: shard),
                                          reason: "row \(row) does not match its checksum")
        }
    }
}

extension ShardCodec {
    /// Throws unless each unit's checksum lines are zero past its rows' checksums, and each whole
    /// unit zero past its rows (codec 5's padding to the next page).
    private static func checkChecksumLinePadding(_ blob: UnsafeRawBufferPointer, header: Header, layout: TableLayout) throws {
        guard let raw = header.rawLayout(layout), raw.rowsOffset > 0 else { return }
        for r in stride(from: 0, to: header.rowCount, by: raw.unitRows) {
            let rowsInUnit = min(raw.unitRows, header.rowCount - r)
            let unit = raw.start + raw.checksumOffset(r)
            let unitEnd = rowsInUnit == raw.unitRows ? unit + raw.unitBytes : unit + raw.rowsOffset + rowsInUnit * raw.rowBytes
            guard blob[(unit + raw.checksumBytes * rowsInUnit)..<(unit + raw.rowsOffset)].allSatisfy({ $0 == 0 }),
                  blob[(unit + raw.rowsOffset + rowsInUnit * raw.rowBytes)..<unitEnd].allSatisfy({ $0 == 0 }) else {
                let first = header.shardIndex * layout.rowsPerShard + r
                throw StoreError.corruptShard(shard: header.shardIndex, rows: layout.rowRange(ofShard: header.shardIndex),
                                              reason: "the padding of rows \(first)... is not zero")
            }
        }
    }
}

extension ShardCodec.Header {
    /// Where a blob with row checksums (raw from version 3, nibble) keeps its rows and checksums; nil for other codecs.
    func rawLayout(_ layout: TableLayout) -> RawShardLayout? {
        switch codecByte {
        case .checkedRows: RawShardLayout(version: 4, rowBytes: layout.rowBytes)
        case .groupedRows: RawShardLayout(version: 5, rowBytes: layout.rowBytes)
        case .nibbleRows: .nibble(slotBytes: NibbleCode.slotBytes(dim: layout.dim, elementType: layout.elementType))
        case .nibblePages: .nibblePages(slotBytes: NibbleCode.slotBytes(dim: layout.dim, elementType: layout.elementType))
        case .rawRows, .zstdPlanes: nil
        }
    }
}
