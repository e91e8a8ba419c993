/// One worker's compression context and scratch space.
final class ShardEncoder {
    private var compressors: [Int: ZstdCompressor] = [:]
    private var scratch: [UInt8] = []

    func encode(_ rows: UnsafeRawBufferPointer, shard: Int, layout: TableLayout, dictionary: ZstdDictionary?,
                codes: NibbleCode?) -> [UInt8] {
        var compressor: ZstdCompressor?
        if layout.codec == .zstd {
            compressor = compressors[layout.level] ?? ZstdCompressor(level: layout.level, dictionary: dictionary)
            compressors[layout.level] = compressor
        }
        return ShardCodec.encode(rows, shard: shard, layout: layout, compressor: compressor, codes: codes, scratch: &scratch)
    }
}

func describe(_ t: TableLayout) -> String {
    "\(t.rows) rows x \(t.dim) \(t.elementType.rawValue), \(t.rowsPerShard) rows per shard, codec \(t.codec.rawValue) level \(t.level)\(t.dictionary ? " with dictionary" : "")"
}
