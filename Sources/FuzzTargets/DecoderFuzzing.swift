import MemoryBenchmarks
import MemoryStore
import _MemorySupport

/// Entry points for fuzzing the decoders that read bytes from disk (`Tools/fuzz.sh`, and the
/// corpus replay in the tests). Each decodes `bytes` and returns normally whether or not they
/// were valid; it traps only when a decoder accepted input and broke a promise about it.
package enum DecoderFuzzing {
    /// The layout fuzzed shards are decoded against: small, so mutations reach every field.
    static let layout = TableLayout(elementType: .bf16, rows: 300, dim: 12, rowsPerShard: 100, codec: .zstd)

    /// The rows the seeds hold.
    static let seedRows = SyntheticRows(seed: 4, dim: layout.dim).bytes(100..<200, as: .bf16)
    /// The nibble code of a nibble-coded `layout`: trained on the seed rows.
    static let codes = seedRows.withUnsafeBytes { NibbleCode.train($0, elementType: .bf16) }

    /// A shard blob of rows 100..<200 of `layout` (any codec; a nibble blob, codec 4 or 5, of a
    /// nibble table with ``codes``), as stores of version 4, 6 and the current version read it.
    package static func shard(_ bytes: UnsafeRawBufferPointer) {
        var scratch: [UInt8] = []
        var table = layout
        if bytes.count > 4 && (bytes[4] == 4 || bytes[4] == 5) { table.codec = .nibble }
        for version in [4, 6, Manifest.currentVersion] {
            guard let header = try? ShardCodec.header(of: bytes, shard: 1, layout: table, version: version) else { continue }
            var out = [UInt8](repeating: 0, count: 100 * table.rowBytes)
            let decoded = out.withUnsafeMutableBytes { o in
                (try? ShardCodec.decode(bytes, header: header, layout: table, into: o, scratch: &scratch,
                                        decompressor: ZstdDecompressor(), dictionary: nil, codes: codes)) != nil
            }
            // An accepted shard matches its checksum, so it can only be the rows that were written.
            if decoded { precondition(out.withUnsafeBytes { XXH64.hash($0) } == header.checksum, "a shard decoded to rows that fail its checksum") }
        }
    }

    /// A `meta/manifest` record.
    package static func manifest(_ bytes: UnsafeRawBufferPointer) {
        guard let manifest = try? Manifest.decodeRecord(bytes) else { return }
        precondition((try? manifest.table.validate()) != nil, "an accepted manifest has an invalid table")
    }

    /// A tensor record.
    package static func tensorRecord(_ bytes: UnsafeRawBufferPointer) {
        guard let tensor = try? Tensor.decode(record: bytes, name: "fuzz", version: Manifest.currentVersion) else { return }
        precondition(tensor.bytes.count == tensor.elementCount * tensor.dtype.size, "an accepted tensor's data disagrees with its shape")
    }

    /// The seed inputs: one valid example of each kind, from which mutations start.
    package static func seeds() throws -> [String: [UInt8]] {
        // Some rows with top bytes outside the code, so the nibble seed holds escaped rows.
        var rows = seedRows
        for r in stride(from: 5, to: 100, by: 17) { rows[r * layout.rowBytes + 1] = 0x7F }
        var scratch: [UInt8] = []
        var seeds: [String: [UInt8]] = [:]
        for codec in CodecKind.allCases {
            var l = layout
            l.codec = codec
            seeds["shard-\(codec.rawValue)"] = rows.withUnsafeBytes {
                ShardCodec.encode($0, shard: 1, layout: l, compressor: codec == .zstd ? ZstdCompressor(level: 3, dictionary: nil) : nil,
                                  codes: codes, scratch: &scratch)
            }
        }
        seeds["manifest"] = MetaRecord.seal(Array(try Manifest(table: layout, createdBy: "memtool 0.1.0").encoded()), key: "manifest")
        seeds["tensor"] = try Tensor(shape: [3, 4], floats: (0..<12).map(Float.init)).record(name: "fuzz")
        return seeds
    }
}
