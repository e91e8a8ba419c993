import _MemorySupport

extension Store {
    /// Reads shard `index` through `context`'s transaction and calls `body` with its rows: raw
    /// rows in place (each checked as it is read; raw shards of versions 1 and 2 are checked whole
    /// once per open), compressed (zstd, nibble) shards decoded (into the cache when it has a budget). With
    /// `contiguous`, raw rows that carry checksums are checked and copied out back to back first.
    /// Without `caching`, a decoded shard does not go into the cache (a resident table's load).
    func withShard<T>(_ index: Int, context: ReaderContext, contiguous: Bool = false, caching: Bool = true,
                      _ body: (ShardRows) throws -> T) throws -> T {
        let table = layout
        let rowRange = table.rowRange(ofShard: index)
        return try withShardKey(index) { key in
            try context.transaction.withValue(env.shards, key: key) { mapped in
                guard let mapped else { throw StoreError.missingShard(shard: index, rows: rowRange) }
                // Rows of a raw table of version 3 or later are read without their shard's header
                // (a second random read when cold): each row's checksum proves its position. A blob
                // of any other length goes through the header checks below, which name the problem.
                if table.codec == .raw && !contiguous, let raw = rawShards, mapped.count == raw.blobBytes(rows: rowRange.count) {
                    return try body(ShardRows(checkedBlob: mapped, raw: raw, shard: index, layout: table))
                }
                // Decoding reads the whole blob: one pread (with the kernel's readahead on
                // sequential scans) instead of faulting the map in a page at a time.
                if table.codec != .raw || contiguous, let blobs {
                    return try blobs.read(mapped, into: context.scratchBlob(byteCount: mapped.count), what: "shard \(index)") {
                        try withBlob($0, shard: index, context: context, contiguous: contiguous, caching: caching, body)
                    }
                }
                return try withBlob(mapped, shard: index, context: context, contiguous: contiguous, caching: caching, body)
            }
        }
    }

    /// Checks and decodes the blob of shard `index` (from the map or a copy) for ``withShard``.
    private func withBlob<T>(_ blob: UnsafeRawBufferPointer, shard index: Int, context: ReaderContext, contiguous: Bool,
                             caching: Bool, _ body: (ShardRows) throws -> T) throws -> T {
        let table = layout
        let rowRange = table.rowRange(ofShard: index)
        let size = rowRange.count * table.rowBytes
        let header = try ShardCodec.header(of: blob, shard: index, layout: table, version: manifest.formatVersion)
        if header.codecByte == .rawRows && !checkedRawShards.contains(index) {
            guard XXH64.hash(UnsafeRawBufferPointer(rebasing: blob[ShardCodec.headerSize...])) == header.checksum else {
                throw StoreError.corruptShard(shard: index, rows: rowRange, reason: "checksum mismatch")
            }
            checkedRawShards.insert(index)
        }
        if header.codec == .raw && !(contiguous && header.rawLayout(table) != nil) {
            return try body(ShardRows(blob: blob, header: header, layout: table))
        }
        let cached = caching && header.codec != .raw && cache.budget > 0
        let target = cached ? ShardBuffer(byteCount: size) : context.scratchShard(byteCount: size)
        return try target.withBytes { bytes in
            try ShardCodec.decode(blob, header: header, layout: table,
                                  into: UnsafeMutableRawBufferPointer(rebasing: bytes[0..<size]),
                                  scratch: &context.planes, decompressor: context.decompressor, dictionary: dictionary, codes: nibbleCode)
            if header.codec != .raw { decoded.wrappingAdd(size, ordering: .relaxed) }
            // The cache may decline the shard (larger than a stripe's budget); `withBytes`
            // keeps it alive for `body` either way.
            if cached { cache.insert(index, target) }
            return try body(ShardRows(decoded: bytes.baseAddress!, rowBytes: table.rowBytes))
        }
    }
}
