/// The rows of one shard where a reader finds them: a decoded buffer, or a raw blob in place.
struct ShardRows {
    let base: UnsafeRawPointer
    let rowBytes: Int
    /// Where rows and their checksums lie when each row is checked on every read (a raw blob
    /// with row checksums, from `base`); nil for rows back to back, already checked as a whole.
    let checked: RawShardLayout?
    /// The table index of the first row (the seed of the first row's checksum).
    let firstRow: Int

    /// Rows decoded into a contiguous buffer (already checked as a whole).
    init(decoded base: UnsafeRawPointer, rowBytes: Int) {
        self.base = base
        self.rowBytes = rowBytes
        checked = nil
        firstRow = 0
    }

    /// The rows of a raw blob whose header has been checked.
    init(blob: UnsafeRawBufferPointer, header: ShardCodec.Header, layout: TableLayout) {
        checked = header.rawLayout(layout)
        base = blob.baseAddress! + (checked?.start ?? ShardCodec.headerSize)
        rowBytes = layout.rowBytes
        firstRow = header.shardIndex * layout.rowsPerShard
    }

    /// The rows of the raw blob of shard `index` with row checksums laid out as `raw`, its
    /// header unread: the manifest gives the layout, and each row's checksum, seeded with the
    /// row's index, proves it is the row at that position. The caller has checked the blob's length.
    init(checkedBlob blob: UnsafeRawBufferPointer, raw: RawShardLayout, shard index: Int, layout: TableLayout) {
        base = blob.baseAddress! + raw.start
        rowBytes = layout.rowBytes
        checked = raw
        firstRow = index * layout.rowsPerShard
    }

    /// Row `r` (within the shard); a checked row whose checksum does not match throws, naming it.
    @inline(__always)
    func row(_ r: Int, shard: Int, layout: TableLayout) throws -> UnsafeRawPointer {
        guard let checked else { return base + r * rowBytes }
        let p = base + checked.rowOffset(r)
        try ShardCodec.checkRow(at: p, checksum: base + checked.checksumOffset(r), row: firstRow + r, shard: shard, layout: layout)
        return p
    }
}
