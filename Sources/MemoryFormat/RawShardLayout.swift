/// Where a raw shard blob with row checksums keeps each row and each row's checksum
/// (Spec/FORMAT.md, "Raw"). Rows come in groups of `groupRows`; within a group, row `k` lies at
/// `rowsOffset + k × rowBytes` and its u64 checksum at `checksumsOffset + 8k`, and groups follow
/// one another every `groupBytes` bytes from `start`.
///
/// - Codec 2 (format versions 3 and 4): a 32-byte header, then each row followed by its checksum
///   (groups of one row).
/// - Codec 3 (format version 5): a 48-byte header, so that rows start 64 bytes into a 4 KiB page
///   of LMDB's overflow pages (whose data starts 16 bytes in); then groups of up to ``alignedGroupRows(rowBytes:)``
///   rows, each one 64-byte line of its rows' checksums (zero-padded) followed by the rows back to
///   back. Rows of a multiple of 64 bytes start on cache lines and span only their own lines.
public struct RawShardLayout: Sendable, Equatable {
    public let rowBytes: Int
    /// Bytes before the first group: the header (and its padding).
    public let start: Int
    public let groupRows: Int
    /// log2 of `groupRows`.
    public let groupShift: Int
    public let groupBytes: Int
    public let rowsOffset: Int
    public let checksumsOffset: Int
    /// The shard blob's codec byte.
    public let codecByte: UInt8

    public static let checksumBytes = 8

    /// The layout of format version `version` (3 or later) for rows of `rowBytes` bytes.
    public init(version: Int, rowBytes: Int) {
        self.rowBytes = rowBytes
        if version >= 5 {
            let rows = Self.alignedGroupRows(rowBytes: rowBytes)
            start = 48
            groupRows = rows
            groupShift = rows.trailingZeroBitCount
            rowsOffset = Self.checksumLine(rows: rows)
            checksumsOffset = 0
            groupBytes = rowsOffset + rows * rowBytes
            codecByte = 3
        } else {
            start = 32
            groupRows = 1
            groupShift = 0
            rowsOffset = 0
            checksumsOffset = rowBytes
            groupBytes = rowBytes + Self.checksumBytes
            codecByte = 2
        }
    }

    /// Rows per group in codec 3: as many as keep a group within a 4 KiB page, a power of two
    /// from 1 to 8 (8 checksums fill one 64-byte line).
    public static func alignedGroupRows(rowBytes: Int) -> Int {
        var g = 8
        while g > 1 && g * rowBytes > 4096 { g /= 2 }
        return g
    }

    /// The bytes holding a group's checksums, padded to whole 64-byte lines.
    static func checksumLine(rows: Int) -> Int { (rows * checksumBytes + 63) / 64 * 64 }

    /// The exact length of a blob of `rows` rows.
    public func blobBytes(rows: Int) -> Int {
        let full = rows / groupRows, rest = rows % groupRows
        return start + full * groupBytes + (rest == 0 ? 0 : groupBytes - (groupRows - rest) * rowBytes)
    }

    /// Offset of row `r` (within the shard) from the blob's first group.
    @inline(__always)
    public func rowOffset(_ r: Int) -> Int {
        (r >> groupShift) * groupBytes + rowsOffset + (r & (groupRows - 1)) * rowBytes
    }

    /// Offset of row `r`'s checksum from the blob's first group.
    @inline(__always)
    public func checksumOffset(_ r: Int) -> Int {
        (r >> groupShift) * groupBytes + checksumsOffset + (r & (groupRows - 1)) * Self.checksumBytes
    }
}
