import Foundation
import MemoryBenchmarks
import Testing
import TestSupport
@testable import MemoryStore

@Suite struct PythonReaderTests {
    /// The independent reader in Tools/, written from Spec/FORMAT.md, reads every row the Swift writer stored.
    @Test(arguments: [("f32", "raw"), ("f16", "raw"), ("bf16", "raw"), ("f32", "zstd"), ("f16", "zstd"), ("bf16", "zstd"),
                      ("f32", "zstd+dict"), ("f16", "zstd+dict"), ("bf16", "zstd+dict"), ("f32", "nibble"), ("bf16", "nibble")])
    func pythonReaderReadsEveryRow(dtype: String, codec: String) throws {
        let scratch = ScratchDirectory()
        let type = ElementType(rawValue: dtype)!
        let layout = TableLayout(elementType: type, rows: 1234, dim: 20, rowsPerShard: 100,
                                 codec: codec == "zstd+dict" ? .zstd : CodecKind(rawValue: codec)!, dictionary: codec == "zstd+dict")
        var bytes = SyntheticRows(seed: 9, dim: 20).bytes(0..<1234, as: type)
        // Top bytes outside any code table (NaN, infinity, the largest values) on some rows: escaped by nibble.
        for r in stride(from: 1, to: 1234, by: 9) { bytes[(r * 20 + r % 20 + 1) * type.size - 1] = [0x7F, 0xFF, 0x7F, 0xFE][r % 4] }
        let writer = try StoreWriter.create(at: scratch.file("m.pkm"), layout: layout)
        try writer.putTensor("row_keys", try Tensor(shape: [2, 5], floats: (0..<10).map { Float($0) }))
        try writer.append(bytes)
        try writer.finish()
        let result = try Tools.python([Tools.root.appendingPathComponent("Tools/pkmstore_reader.py").path,
                                       scratch.file("m.pkm"), "--dump", scratch.file("rows.bin")])
        try #require(result.status == 0, "python reader failed (run Tools/bootstrap.sh for its packages): \(result.stderr)")
        let dumped = try [UInt8](Data(contentsOf: URL(fileURLWithPath: scratch.file("rows.bin"))))
        #expect(dumped.count == bytes.count)
        #expect(dumped == bytes)
    }

    @Test func pythonReaderRejectsACorruptShard() throws {
        let scratch = ScratchDirectory()
        let path = scratch.file("m.pkm")
        try #require(try Tools.memtool("create", path, "--synthetic", "--rows", "500", "--dim", "8", "--rows-per-shard", "100").status == 0)
        let env = try Environment(path: path, readOnly: false)
        try env.write { txn in
            try withShardKey(1) { key in
                var blob = try txn.get(env.shards, key: key)!
                blob[blob.count - 3] ^= 1
                try blob.withUnsafeBytes { try txn.put(env.shards, key: key, value: $0) }
            }
        }
        let result = try Tools.python([Tools.root.appendingPathComponent("Tools/pkmstore_reader.py").path, path, "--summary"])
        #expect(result.status == 1)
        #expect(result.stderr.contains("shard 1"))
    }
}
