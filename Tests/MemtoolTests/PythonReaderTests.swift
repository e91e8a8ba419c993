import Foundation
import MemoryBenchmarks
import Testing
import TestSupport
@testable import MemoryStore

@Suite struct PythonReaderTests {
    /// The independent reader in Tools/, written from Spec/FORMAT.md, reads every row the Swift writer stored.
    @Test(arguments: ["f32", "f16", "bf16"], ["raw", "zstd", "zstd+dict"])
    func pythonReaderReadsEveryRow(dtype: String, codec: String) throws {
        let scratch = ScratchDirectory()
        let type = ElementType(rawValue: dtype)!
        let layout = TableLayout(elementType: type, rows: 1234, dim: 20, rowsPerShard: 100,
                                 codec: codec == "raw" ? .raw : .zstd, dictionary: codec == "zstd+dict")
        let bytes = SyntheticRows(seed: 9, dim: 20).bytes(0..<1234, as: type)
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
