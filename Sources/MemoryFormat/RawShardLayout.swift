/// Where a shard blob with row checksums keeps each stored row and each row's checksum
/// (Spec/FORMAT.md, "Raw" and "Nibble"). Rows come in units of `unitRows`; within a unit, row
/// `k` lies at `rowsOffset + k × rowBytes` and its checksum (`checksumBytes` bytes) at
/// `checksumsOffset + k × checksumBytes`, and units follow one another every `unitBytes` bytes
/// from `start`. Rows are checked in groups of `groupRows` (a power of two dividing `unitRows`):
/// the unit itself, except in codec 5, whose units fill a 4 KiB page each.
///
/// - Codec 2 (format versions 3 and 4): a 32-byte header, then each row followed by its checksum
///   (groups of one row).
/// - Codec 3 (format version 5): a 48-byte header, so that rows start 64 bytes into a 4 KiB page
///   of LMDB's overflow pages (whose data starts 16 bytes in); then groups of up to ``alignedGroupRows(rowBytes:)``
///   rows, each one 64-byte line of its rows' checksums (zero-padded) followed by the rows back to
///   back. Rows of a multiple of 64 bytes start on cache lines and span only their own lines.
/// - Codec 4 (format version 6, ``nibble(slotBytes:)``): as codec 3 with each row's slot of
///   coded bytes in place of the row, and 4-byte checksums, up to 16 to a group's line.
/// - Codec 5 (format version 7, ``nibblePages(slotBytes:)``): slots and 4-byte checksums as in
///   codec 4, in units that each fill one 4 KiB page of the file from its 64th byte (so that a
///   row and its checksum always share a page): the unit's checksums, zero-padded to whole
///   64-byte lines, its slots, and zeros to the next page's 64th byte.
public struct RawShardLayout: Sendable, Equatable {
    public let rowBytes: Int
    /// Bytes before the first unit: the header (and its padding).
    public let start: Int
    public let groupRows: Int
    /// log2 of `groupRows`.
    public let groupShift: Int
    /// Rows and bytes of a unit: a group's, except in codec 5.
    public let unitRows: Int
    public let unitBytes: Int
    public let rowsOffset: Int
    public let checksumsOffset: Int
    /// The shard blob's codec byte.
    public let codecByte: UInt8
    /// Bytes of each row's checksum: 8 (raw codecs) or 4 (nibble).
    public let checksumBytes: Int

    /// The layout of format version `version` (3 or later) for rows of `rowBytes` bytes.
    public init(version: Int, rowBytes: Int) {
        if version >= 5 {
            self.init(rowBytes: rowBytes, start: 48, groupRows: Self.alignedGroupRows(rowBytes: rowBytes), checksumBytes: 8, codecByte: 3)
        } else {
            self.init(rowBytes: rowBytes, start: 32, groupRows: 1, checksumBytes: 8, codecByte: 2)
        }
    }

    /// The layout of codec 4 (format version 6) for coded row slots of `slotBytes` bytes:
    /// groups of as many as keep them within a 4 KiB page, a power of two from 1 to 16, on one
    /// 64-byte line of 4-byte checksums.
    public static func nibble(slotBytes: Int) -> RawShardLayout {
        var g = 16
        while g > 1 && g * slotBytes > 4096 { g /= 2 }
        return RawShardLayout(rowBytes: slotBytes, start: 48, groupRows: g, checksumBytes: 4, codecByte: 4)
    }

    /// The layout of codec 5 (format version 7) for coded row slots of `slotBytes` bytes: units
    /// of one 4 KiB page (several for a slot too large for one), each holding as many rows as fit
    /// with their checksum lines in the page's last 4,032 bytes (LMDB's overflow pages hold a
    /// blob from a page's 16th byte, its header and padding take 48: every unit starts at its
    /// page's 64th byte), a multiple of 8 when 8 or more fit, checked in groups of 8 (of 1 when
    /// fewer fit).
    public static func nibblePages(slotBytes: Int) -> RawShardLayout {
        let page = 4096, usable = page - 64
        var fit = 0
        while checksumLine(rows: fit + 1, checksumBytes: 4) + (fit + 1) * slotBytes <= usable { fit += 1 }
        let (rows, groupRows, bytes) = fit >= 8 ? (fit - fit % 8, 8, page)
            : fit >= 1 ? (fit, 1, page)
            : (1, 1, (64 + slotBytes + 64 + page - 1) / page * page)
        return RawShardLayout(rowBytes: slotBytes, start: 48, unitRows: rows, unitBytes: bytes, groupRows: groupRows,
                              rowsOffset: checksumLine(rows: rows, checksumBytes: 4), checksumsOffset: 0, checksumBytes: 4, codecByte: 5)
    }

    /// Groups of one row (codec 2) are the row then its checksum; larger groups, a line of
    /// checksums then the rows. A group is a unit.
    private init(rowBytes: Int, start: Int, groupRows: Int, checksumBytes: Int, codecByte: UInt8) {
        let line = codecByte == 2 ? 0 : Self.checksumLine(rows: groupRows, checksumBytes: checksumBytes)
        self.init(rowBytes: rowBytes, start: start, unitRows: groupRows, unitBytes: line + groupRows * rowBytes + (codecByte == 2 ? checksumBytes : 0),
                  groupRows: groupRows, rowsOffset: line, checksumsOffset: codecByte == 2 ? rowBytes : 0, checksumBytes: checksumBytes,
                  codecByte: codecByte)
    }

    /// Units of `unitRows` rows every `unitBytes` bytes, checked in groups of `groupRows`; within
    /// a unit, row `k` at `rowsOffset + k × rowBytes`, its checksum at `checksumsOffset + k × checksumBytes`.
    private init(rowBytes: Int, start: Int, unitRows: Int, unitBytes: Int, groupRows: Int, rowsOffset: Int, checksumsOffset: Int,
                 checksumBytes: Int, codecByte: UInt8) {
        self.rowBytes = rowBytes
        self.start = start
        self.unitRows = unitRows
        self.unitBytes = unitBytes
        self.groupRows = groupRows
        groupShift = groupRows.trailingZeroBitCount
        self.rowsOffset = rowsOffset
        self.checksumsOffset = checksumsOffset
        self.checksumBytes = checksumBytes
        self.codecByte = codecByte
    }

    /// Rows per group in codec 3: as many as keep a group within a 4 KiB page, a power of two
    /// from 1 to 8 (8 checksums fill one 64-byte line).
    public static func alignedGroupRows(rowBytes: Int) -> Int {
        var g = 8
        while g > 1 && g * rowBytes > 4096 { g /= 2 }
        return g
    }

    /// The bytes holding a group's checksums, padded to whole 64-byte lines.
    static func checksumLine(rows: Int, checksumBytes: Int) -> Int { (rows * checksumBytes + 63) / 64 * 64 }

    /// The exact length of a blob of `rows` rows (for codecs 4 and 5, before its escaped rows):
    /// its whole units, then the last one's checksum lines and rows.
    public func blobBytes(rows: Int) -> Int {
        let full = rows / unitRows, rest = rows % unitRows
        return start + full * unitBytes + (rest == 0 ? 0 : rowsOffset + rest * rowBytes)
    }

    /// How many escaped rows of `rowBytes` a nibble blob of `count` bytes holding `rows` rows
    /// carries after its groups, or nil when that length is not a whole number of them.
    public func escapedRows(inBlob count: Int, rows: Int, rowBytes: Int) -> Int? {
        let extra = count - blobBytes(rows: rows)
        guard extra >= 0, extra % rowBytes == 0, extra / rowBytes <= rows else { return nil }
        return extra / rowBytes
    }

    /// Offset of row `r` (within the shard) from the blob's first group.
    @inline(__always)
    public func rowOffset(_ r: Int) -> Int {
        let (unit, k) = r.quotientAndRemainder(dividingBy: unitRows)
        return unit * unitBytes + rowsOffset + k * rowBytes
    }

    /// Offset of row `r`'s checksum from the blob's first group.
    @inline(__always)
    public func checksumOffset(_ r: Int) -> Int {
        let (unit, k) = r.quotientAndRemainder(dividingBy: unitRows)
        return unit * unitBytes + checksumsOffset + k * checksumBytes
    }
}
