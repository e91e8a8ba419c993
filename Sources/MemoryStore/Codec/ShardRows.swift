/// The rows of one shard where a reader finds them: a decoded buffer, or a raw blob in place.
struct ShardRows {
    let base: UnsafeRawPointer
    let stride: Int
    /// Whether each row is followed by its XXH64, to be checked on every read.
    let checked: Bool
    /// The table index of the first row (the seed of the first row's checksum).
    let firstRow: Int

    /// Rows decoded into a contiguous buffer (already checked as a whole).
    init(decoded base: UnsafeRawPointer, rowBytes: Int) {
        self.base = base
        stride = rowBytes
        checked = false
        firstRow = 0
    }

    /// The rows of a raw blob whose header has been checked.
    init(blob: UnsafeRawBufferPointer, header: ShardCodec.Header, layout: TableLayout) {
        base = blob.baseAddress! + ShardCodec.headerSize
        stride = header.rowStride(layout)
        checked = header.codecByte == .checkedRows
        firstRow = header.shardIndex * layout.rowsPerShard
    }

    /// The rows of the raw blob of shard `index` with row checksums, its header unread: the
    /// manifest gives the layout, and each row's checksum, seeded with the row's index, proves
    /// it is the row at that position. The caller has checked the blob's length.
    init(checkedBlob blob: UnsafeRawBufferPointer, shard index: Int, layout: TableLayout) {
        base = blob.baseAddress! + ShardCodec.headerSize
        stride = layout.rowBytes + ShardCodec.rowChecksumSize
        checked = true
        firstRow = index * layout.rowsPerShard
    }

    /// Row `r` (within the shard); a checked row whose checksum does not match throws, naming it.
    @inline(__always)
    func row(_ r: Int, shard: Int, layout: TableLayout) throws -> UnsafeRawPointer {
        let p = base + r * stride
        if checked { try ShardCodec.checkRow(at: p, row: firstRow + r, shard: shard, layout: layout) }
        return p
    }
}
