import Foundation
import MemoryBenchmarks
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

@Suite struct KilledImportTests {
    /// `memtool create` killed with SIGKILL mid-import leaves a store that opens, reports itself
    /// incomplete with a whole-shard prefix that reads back exactly, and that the same command finishes.
    @Test func killedCreateResumes() throws {
        let scratch = ScratchDirectory()
        let rows = 400_000, dim = 64
        var killedIncomplete = 0
        let delays: [useconds_t] = [2_000, 10_000, 30_000, 80_000, 150_000, 300_000, 500_000, 900_000]
        for (trial, delay) in delays.enumerated() {
            let path = scratch.file("k\(trial).pkm")
            let args = ["create", path, "--synthetic", "--seed", "5", "--rows", String(rows), "--dim", String(dim), "--dtype", "bf16"]
            let process = Process()
            process.executableURL = Tools.memtool
            process.arguments = args
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            try process.run()
            // Kill at a different moment each trial: while the file is being created, mid-import, later.
            usleep(delay)
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            guard FileManager.default.fileExists(atPath: path) else { continue }

            let generator = SyntheticRows(seed: 5, dim: dim)
            if let store = try? Store.open(at: path) {
                if !store.isComplete {
                    killedIncomplete += 1
                    #expect(store.state.rowsCommitted % store.layout.rowsPerShard == 0)
                    #expect(try store.verify().isSound)
                    if store.state.rowsCommitted > 0 {
                        let last = store.state.rowsCommitted - 1
                        let expected = generator.bytes(last..<(last + 1), as: .bf16)
                        #expect(try store.row(last) == floatsFromBF16(expected))
                    }
                }
            }
            // Running the same command again finishes (or restarts) the import cleanly.
            let rerun = try Tools.run(Tools.memtool, args)
            #expect(rerun.status == 0, "\(rerun.stderr)")
            let done = try Store.open(at: path)
            #expect(done.isComplete)
            #expect(try done.verify().isSound)
            for r in [0, rows / 3, rows - 1] {
                #expect(try done.row(r) == floatsFromBF16(generator.bytes(r..<(r + 1), as: .bf16)))
            }
        }
        #expect(killedIncomplete >= 1, "no trial killed the import while it was incomplete")
    }
}

@Suite struct KillHarnessTests {
    /// Tools/kill_harness.py: SIGKILL at random moments of create, import and compact, each
    /// followed by verify, an independent read of the content and a re-run (200+ trials on demand).
    @Test func writersKilledAtRandomMomentsLoseNothing() throws {
        let scratch = ScratchDirectory()
        let report = scratch.file("kill.json")
        let result = try Tools.python([Tools.root.appendingPathComponent("Tools/kill_harness.py").path,
                                       "--memtool", Tools.memtool.path, "--trials", "32", "--seed", "1", "--json", report])
        #expect(result.status == 0, "\(result.stdout)\(result.stderr)")
        let summary = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: report))) as? [String: Any])
        let outcomes = try #require(summary["outcomes"] as? [String: [String: Int]])
        #expect((summary["failures"] as? [Any])?.isEmpty == true)
        // The kills must land mid-write, not only before or after it.
        #expect((outcomes["create"]?["incomplete prefix"] ?? 0) + (outcomes["import"]?["incomplete prefix"] ?? 0) >= 2, "\(outcomes)")
        #expect((outcomes["compact"]?["original intact"] ?? 0) + (outcomes["compact-copy"]?["original intact"] ?? 0) >= 2, "\(outcomes)")
    }
}

@Suite struct CorruptionHarnessTests {
    /// Tools/corrupt_harness.py: bit flips anywhere in the file and in LMDB's own pages, and
    /// truncations; on each copy, queries (rows read in place) and export either give exactly the
    /// undamaged store's results or fail with a message (3,100 copies on demand).
    @Test(arguments: ["zstd", "raw"])
    func damagedFilesReadCorrectlyOrFailByName(codec: String) throws {
        let scratch = ScratchDirectory()
        let report = scratch.file("corrupt.json")
        let result = try Tools.python([Tools.root.appendingPathComponent("Tools/corrupt_harness.py").path,
                                       "--memtool", Tools.memtool.path, "--codec", codec, "--flips", "100", "--structural", "200",
                                       "--truncations", "20", "--seed", "1", "--json", report])
        #expect(result.status == 0, "\(result.stdout)\(result.stderr)")
        let summary = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: report))) as? [String: Any])
        let outcomes = try #require(summary["outcomes"] as? [String: Int])
        #expect((summary["failures"] as? [Any])?.isEmpty == true)
        #expect(outcomes.keys.allSatisfy { $0.hasSuffix("error named") || $0.hasSuffix("read correctly") }, "\(outcomes)")
        // Flips inside LMDB's pages must reach LMDB's structures sometimes, not only unused space.
        #expect((outcomes["flip in LMDB pages: error named"] ?? 0) > 0, "\(outcomes)")
    }
}
