import Foundation
import MemoryBenchmarks
import MemoryRetrieval
import Testing
import TestSupport
@testable import MemoryStore

@Suite struct CommandTests {
    @Test func helpReads() throws {
        let top = try Tools.memtool("--help")
        #expect(top.status == 0)
        for sub in ["create", "inspect", "verify", "storage-bench"] { #expect(top.stdout.contains(sub)) }
        let create = try Tools.memtool("create", "--help")
        #expect(create.stdout.contains("--rows-per-shard"))
        #expect(create.stdout.contains("--codec"))
    }

    @Test func usageErrorsExitTwoAndStoreErrorsExitOne() throws {
        let scratch = ScratchDirectory()
        let usage = try Tools.memtool("create", scratch.file("a.pkm"), "--rows", "10")
        #expect(usage.status == 2)
        #expect(usage.stderr.contains("--synthetic"))
        let missing = try Tools.memtool("inspect", scratch.file("nothing.pkm"))
        #expect(missing.status == 1)
        #expect(missing.stderr.contains("no store at"))
    }

    @Test func createInspectVerify() throws {
        let scratch = ScratchDirectory()
        let path = scratch.file("m.pkm")
        let created = try Tools.memtool("create", path, "--synthetic", "--rows", "3000", "--dim", "16", "--dtype", "f16", "--rows-per-shard", "256")
        #expect(created.status == 0, "\(created.stderr)")
        let inspect = try Tools.memtool("inspect", path, "--json")
        #expect(inspect.status == 0)
        let json = try JSONSerialization.jsonObject(with: Data(inspect.stdout.utf8)) as! [String: Any]
        #expect(json["complete"] as? Bool == true)
        #expect(json["shardCount"] as? Int == 12)
        #expect((json["table"] as? [String: Any])?["elementType"] as? String == "f16")
        // Tensors are described with the safetensors names of their types, values with the manifest's.
        let tensors = json["tensors"] as? [[String: Any]] ?? []
        #expect(!tensors.isEmpty && tensors.allSatisfy { $0["dtype"] as? String == "F32" }, "\(tensors)")
        let text = try Tools.memtool("inspect", path).stdout
        #expect(text.contains("row_keys F32[") && text.contains("rows x 16 f16"), "\(text)")
        // The fields Spec/CLI.md documents.
        let documented: Set = ["path", "formatVersion", "complete", "rowsCommitted", "table", "shardCount", "rawBytes", "shardBytes",
                               "fileBytes", "compressionRatio", "fileRatio", "tensors", "tensorBytes", "lmdb", "openMilliseconds",
                               "createdBy", "createdAt", "metadata"]
        #expect(documented.isSubset(of: Set(json.keys)), "missing: \(documented.subtracting(json.keys))")
        let verifyJSON = try JSONSerialization.jsonObject(with: Data(try Tools.memtool("verify", path, "--json").stdout.utf8)) as! [String: Any]
        #expect(Set(["path", "sound", "complete", "shardsChecked", "tensorsChecked", "bytesDecoded", "problems"]).isSubset(of: Set(verifyJSON.keys)))
        let verify = try Tools.memtool("verify", path)
        #expect(verify.status == 0)
        #expect(verify.stdout.contains("sound: 12 shards"))
    }

    @Test func benchmarksRunAndReport() throws {
        let scratch = ScratchDirectory()
        let path = scratch.file("m.pkm")
        try #require(try Tools.memtool("create", path, "--synthetic", "--rows", "16384", "--dim", "16", "--scoring", "tucker", "--heads", "2",
                                       "--key-dim", "16", "--topk", "8", "--top-m", "16").status == 0)
        let bench = try Tools.memtool("bench", path, "--queries", "256", "--batch", "32", "--warmup", "32", "--distribution", "uniform",
                                      "--json", scratch.file("b.json"))
        #expect(bench.status == 0, "\(bench.stderr)")
        #expect(bench.stdout.contains("lookup"))
        let report = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: scratch.file("b.json")))) as! [String: Any]
        #expect(report["queries"] as? Int == 256)
        #expect((report["lookupQueriesPerSecond"] as? Double ?? 0) > 0)
        // The search runs OpenBLAS's widest kernels for the CPU, also where OpenBLAS fell back to
        // its SSE3 ones (a model it does not know, as this process's copy may have).
        #expect(report["blasKernels"] as? String == BLASKernels.restartWith ?? BLASKernels.loaded)
        // A flat copy newer than the store but not of its rows (here noise of the right size) is
        // rewritten, not taken for the memory limit: the two reduces' outputs then agree.
        let flat = scratch.file("other.flat")
        #expect(FileManager.default.createFile(atPath: flat, contents: Data((0..<(16384 * 16 * 2)).map { UInt8(truncatingIfNeeded: $0 &* 2654435761 >> 13) })))
        let kept = try Tools.memtool("bench", path, "--queries", "64", "--batch", "32", "--flat-path", flat, "--json", scratch.file("f.json"))
        #expect(kept.status == 0, "\(kept.stderr)")
        let limit = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: scratch.file("f.json")))) as! [String: Any]
        #expect((limit["memoryLimitMaxRelativeDifference"] as? Double ?? 1) < 1e-4, "\(limit)")
        // --json /dev/stdout with standard output a file: the report follows the printed lines
        // (it used to replace the file, losing them).
        let printed = scratch.file("printed.txt")
        let shell = try Tools.run(URL(fileURLWithPath: "/bin/sh"), ["-c", "\"$0\" bench \"$1\" --queries 64 --batch 32 --json /dev/stdout > \"$2\"",
                                                                    Tools.memtool.path, path, printed])
        #expect(shell.status == 0, "\(shell.stderr)")
        let text = try String(contentsOfFile: printed, encoding: .utf8)
        #expect(text.hasPrefix("layer ") && text.contains("\nlookup ") && text.contains("\"queries\" : 64"), "\(text)")
        let storage = try Tools.memtool("storage-bench", "--rows", "4096", "--reads", "4096", "--dtypes", "bf16", "--directory", scratch.path)
        #expect(storage.status == 0, "\(storage.stderr)")
        #expect(storage.stdout.contains("bf16 zstd"))
    }

    @Test func verifyNamesEveryDamagedShard() throws {
        let scratch = ScratchDirectory()
        let path = scratch.file("m.pkm")
        try #require(try Tools.memtool("create", path, "--synthetic", "--rows", "1000", "--dim", "8", "--rows-per-shard", "100").status == 0)
        let env = try Environment(path: path, readOnly: false)
        try env.write { txn in
            for shard in [2, 6] {
                try withShardKey(shard) { key in
                    var blob = try txn.get(env.shards, key: key)!
                    blob[blob.count / 2] ^= 0x10
                    try blob.withUnsafeBytes { try txn.put(env.shards, key: key, value: $0) }
                }
            }
        }
        let verify = try Tools.memtool("verify", path)
        #expect(verify.status == 1)
        #expect(verify.stdout.contains("shard 2 (rows 200..<300)"))
        #expect(verify.stdout.contains("shard 6 (rows 600..<700)"))
        #expect(verify.stdout.contains("2 problems"))
    }
}
