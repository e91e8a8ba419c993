import Foundation
import Testing
import TestSupport
import TensorFiles
@testable import MemoryStore

/// What a user of the release build runs first: re-running writers, import choices made
/// visible, and no option value that ends in a signal. Tools/test.sh runs these against the
/// plain `swift build -c release` memtool as well as the debug one.
@Suite struct ReleaseTrustTests {
    let synthetic = ["--synthetic", "--rows", "65536", "--dim", "16", "--heads", "1", "--key-dim", "8", "--topk", "4"]

    /// Re-running `create` and `import` over a complete store is a no-op, and over one killed
    /// after its first commits finishes it: the rows equal a clean run's. (The release build
    /// crashed here once: a read transaction outlived its environment.)
    /// `import-dictionary` resumes an import that trains a zstd dictionary: the resumed writer
    /// reads the dictionary through its own environment.
    @Test(arguments: ["create", "import", "import-dictionary"])
    func rerunningAWriterOverACompleteOrInterruptedStore(_ command: String) throws {
        let scratch = ScratchDirectory()
        let source = scratch.file("src.pkm"), checkpoint = scratch.file("ck.safetensors")
        // 128 shards, so that the dictionary's first commit (64 shards) is not the last.
        let rows = command == "import-dictionary" ? synthetic + ["--dim", "64"] : synthetic
        try #require(try Tools.run(Tools.memtool, ["create", source] + rows).status == 0)
        try #require(try Tools.memtool("export", source, "--to", checkpoint).status == 0)
        func args(_ store: String) -> [String] {
            switch command {
            case "create": ["create", store] + synthetic + ["--commit-bytes", "4096"]
            case "import": ["import", store, "--from", checkpoint, "--commit-bytes", "4096"]
            default: ["import", store, "--from", checkpoint, "--commit-bytes", "4096", "--train-dictionary"]
            }
        }
        let clean = scratch.file("clean.pkm")
        for _ in 0..<3 {
            let r = try Tools.run(Tools.memtool, args(clean))
            #expect(r.status == 0, "\(r.stderr)")
        }
        let killed = scratch.file("killed.pkm")
        // Kill once the first rows are committed (each commit of 4 KiB is synced, so there are many).
        _ = try Tools.memtoolKilled(args(killed)) { ((try? Store.open(at: killed, cacheBytes: 0))?.state.rowsCommitted ?? 0) > 0 }
        // The kill must land between the first commit and the last.
        let interrupted = try Store.open(at: killed)
        #expect(!interrupted.isComplete && interrupted.state.rowsCommitted > 0, "killed at \(interrupted.state.rowsCommitted) rows")
        let rerun = try Tools.run(Tools.memtool, args(killed))
        #expect(rerun.status == 0, "\(rerun.stderr)")
        let a = try Store.open(at: clean), b = try Store.open(at: killed)
        #expect(a.isComplete && b.isComplete)
        for r in stride(from: 0, to: 65536, by: 997) { #expect(try a.row(r) == b.row(r)) }
    }

    /// A table too small to train a dictionary on is stored without one, and reads back.
    @Test func aDictionaryTooSmallToTrainIsLeftOut() throws {
        let scratch = ScratchDirectory()
        let store = scratch.file("tiny.pkm")
        let made = try Tools.memtool("create", store, "--synthetic", "--rows", "300", "--dim", "8", "--heads", "1", "--key-dim", "8",
                                     "--topk", "4", "--train-dictionary")
        #expect(made.status == 0, "\(made.stderr)")
        let verify = try Tools.memtool("verify", store)
        #expect(verify.status == 0 && verify.stdout.hasPrefix("sound"), "\(verify.stdout)")
    }

    /// An E > 1 checkpoint without a virtual_map is imported with identity addressing (the
    /// spec's plain reading) unless told otherwise, and then answers like the numpy reference;
    /// keyed addressing comes from its metadata key; the choice is printed and shown by inspect.
    @Test(arguments: ["identity", "keyed", "table"])
    func importedAddressingMatchesTheReference(_ addressing: String) throws {
        let scratch = ScratchDirectory()
        let dir = scratch.file("ck")
        let made = try Tools.python([Tools.root.appendingPathComponent("Tools/make_checkpoint.py").path, dir, "--addressing", addressing])
        try #require(made.status == 0, "\(made.stderr)")
        let store = scratch.file("m.pkm")
        let imported = try Tools.memtool("import", store, "--from", dir + "/memory.safetensors", "--rename", "values=model.mem.values")
        try #require(imported.status == 0, "\(imported.stderr)")
        #expect(imported.stdout.contains("addressing \(addressing)"), "\(imported.stdout)")
        #expect(imported.stdout.contains("k=6 m=8") && imported.stdout.contains("(E=4)"), "\(imported.stdout)")
        let queried = try Tools.memtool("query", store, "--queries", dir + "/queries.npy", "--output", scratch.file("out.npy"),
                                        "--indices", scratch.file("idx.npy"))
        try #require(queried.status == 0, "\(queried.stderr)")
        let out = try loadNPY(scratch.file("out.npy")).floats(), expected = try loadNPY(dir + "/expected_output.npy").floats()
        #expect(zip(out, expected).allSatisfy { abs($0 - $1) <= 1e-4 * max(abs($1), 1e-2) })
        #expect(try loadNPY(scratch.file("idx.npy")).integers() == loadNPY(dir + "/expected_indices.npy").integers())
        // inspect shows what the store answers with, in text and JSON.
        let text = try Tools.memtool("inspect", store)
        #expect(text.stdout.contains("layer        default: tucker, H=2 d=8 k=6 m=8 r=2 c=2") && text.stdout.contains("addressing \(addressing)"), "\(text.stdout)")
        let json = try Tools.memtool("inspect", store, "--json")
        let doc = try #require(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any])
        let retrieval = try #require(doc["retrieval"] as? [String: Any])
        #expect(retrieval["addressing"] as? String == addressing && retrieval["topK"] as? Int == 6 && retrieval["expansion"] as? Int == 4)
        // Export carries the addressing, so a re-import answers the same.
        let exported = scratch.file("again.safetensors"), again = scratch.file("again.pkm")
        try #require(try Tools.memtool("export", store, "--to", exported).status == 0)
        let reimported = try Tools.memtool("import", again, "--from", exported)
        #expect(reimported.status == 0 && reimported.stdout.contains("addressing \(addressing)"), "\(reimported.stdout)\(reimported.stderr)")
    }

    /// Contradictory addressing requests are refused with the reason.
    @Test func addressingThatCannotHoldIsRefused() throws {
        let scratch = ScratchDirectory()
        let table = scratch.file("t"), plain = scratch.file("i")
        try #require(try Tools.python([Tools.root.appendingPathComponent("Tools/make_checkpoint.py").path, table]).status == 0)
        try #require(try Tools.python([Tools.root.appendingPathComponent("Tools/make_checkpoint.py").path, plain, "--addressing", "identity"]).status == 0)
        let cases: [([String], String)] = [
            (["--from", plain + "/memory.safetensors", "--addressing", "table"], "needs a virtual_map"),
            (["--from", table + "/memory.safetensors", "--addressing", "keyed"], "would ignore"),
            (["--from", plain + "/memory.safetensors", "--addressing", "identity", "--address-key", "3"], "applies only to keyed"),
        ]
        for (i, (args, message)) in cases.enumerated() {
            let r = try Tools.run(Tools.memtool, ["import", scratch.file("x\(i).pkm"), "--rename", "values=model.mem.values"] + args)
            #expect(r.status == 1 && r.stderr.contains(message), "\(args): \(r.stderr)")
            #expect(!FileManager.default.fileExists(atPath: scratch.file("x\(i).pkm")))
        }
    }

    /// Keys saved as [H, n, 2, d] (as the product-key-memory package keeps them) are refused
    /// with the tensor, its shape and how to convert it, not with an internal parameter name.
    @Test func productKeyLayoutMistakesNameTheTensor() throws {
        let scratch = ScratchDirectory()
        let path = scratch.file("pkm.safetensors")
        let h = 2, n = 8, d = 4, v = 4
        let keys = [Float](repeating: 0.5, count: h * n * 2 * d), values = [Float](repeating: 0.25, count: n * n * v)
        let writer = try SafetensorsWriter(path: path, tensors: [
            .init(name: "row_keys", dtype: .f32, shape: [h, n, 2, d]), .init(name: "col_keys", dtype: .f32, shape: [h, n, 2, d]),
            .init(name: "values", dtype: .f32, shape: [n * n, v])], metadata: ["scoring": "pkm"])
        for t in [keys, keys, values] { try t.withUnsafeBytes { try writer.write($0) } }
        try writer.finish()
        let r = try Tools.memtool("import", scratch.file("m.pkm"), "--from", path)
        #expect(r.status == 1)
        #expect(r.stderr.contains("row_keys [2, 8, 2, 4]") && r.stderr.contains("keys[:, :, 0, :][:, None]"), "\(r.stderr)")
        #expect(!r.stderr.contains("invalid retrieval parameter"), "\(r.stderr)")
    }

    /// Queries in float16 and bfloat16 are converted; float64 is refused with what to do.
    @Test func queriesInHalfPrecisionAreConverted() throws {
        let scratch = ScratchDirectory()
        let store = scratch.file("m.pkm")
        try #require(try Tools.run(Tools.memtool, ["create", store] + synthetic).status == 0)
        let q32 = scratch.file("q32.npy"), q16 = scratch.file("q16.npy"), q64 = scratch.file("q64.npy")
        // Queries exact in float16: multiples of 1/8.
        let script = """
            import numpy as np, sys
            q = (np.random.default_rng(3).integers(-16, 16, (5, 1, 2, 8)) / 8).astype(np.float32)
            np.save(sys.argv[1], q); np.save(sys.argv[2], q.astype(np.float16)); np.save(sys.argv[3], q.astype(np.float64))
            """
        try #require(try Tools.python(["-c", script, q32, q16, q64]).status == 0)
        for q in [q32, q16] {
            let r = try Tools.memtool("query", store, "--queries", q, "--output", q + ".out.npy")
            #expect(r.status == 0, "\(r.stderr)")
        }
        #expect(try loadNPY(q32 + ".out.npy").bytes == loadNPY(q16 + ".out.npy").bytes)
        let r = try Tools.memtool("query", store, "--queries", q64, "--output", scratch.file("o.npy"))
        #expect(r.status == 1 && r.stderr.contains("astype(numpy.float32)"), "\(r.stderr)")
    }

    /// Tools/option_sweep.py: every numeric option of every command at 0, -1, 2^31, 2^63-1, nan,
    /// and so on, plus hostile grids and replayed queries: no run may end in a signal or hang.
    @Test func noOptionValueEndsInASignal() throws {
        let scratch = ScratchDirectory()
        let report = scratch.file("sweep.json")
        let result = try Tools.python([Tools.root.appendingPathComponent("Tools/option_sweep.py").path,
                                       "--memtool", Tools.memtool.path, "--timeout", "15", "--json", report])
        #expect(result.status == 0, "\(result.stdout)")
        let runs = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: report))) as? [[String: Any]])
        #expect(runs.count > 400)
        // The sweep must reach refusals, not only the parser's.
        #expect(runs.contains { ($0["outcome"] as? String) == "refused (1)" })
    }
}
