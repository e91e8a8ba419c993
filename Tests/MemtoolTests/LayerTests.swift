import Foundation
import Testing
import TestSupport
import MemoryLayer
@testable import MemoryStore

/// Stores of several memory layers reading one value table (Spec/FORMAT.md, "Layers"), built
/// by `memtool import --layer` from checkpoints that Tools/make_layers.py writes with the
/// numpy reference's results for each layer.
@Suite struct LayerTests {
    struct Checkpoints {
        let dir: String
        let layers: Int

        func json(_ l: Int) throws -> [String: Any] {
            try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: "\(dir)/layer\(l).json"))) as? [String: Any])
        }
        func name(_ l: Int) throws -> String { try #require(try json(l)["name"] as? String) }

        /// `memtool import` arguments adding layer `l` to `store`: the first creates the store
        /// from its values, the others read windows of them.
        func importArguments(_ l: Int, into store: String) throws -> [String] {
            var arguments = ["import", store, "--from", "\(dir)/layer\(l).safetensors", "--layer", try name(l), "--codec", "raw"]
            if l > 0 {
                let j = try json(l)
                arguments += ["--values-from-store", "--window", "\(try #require(j["window"] as? Int))",
                              "--pool-offset", "\(try #require(j["offset"] as? Int))"]
            }
            return arguments
        }
    }

    func checkpoints(_ scratch: ScratchDirectory, layers: Int) throws -> Checkpoints {
        let dir = scratch.file("layers")
        let made = try Tools.python([Tools.root.appendingPathComponent("Tools/make_layers.py").path, dir, "--layers", "\(layers)"])
        try #require(made.status == 0, "make_layers.py failed: \(made.stderr)")
        return Checkpoints(dir: dir, layers: layers)
    }

    func build(_ c: Checkpoints, _ store: String, layers: Range<Int>? = nil) throws {
        for l in layers ?? 0..<c.layers {
            let imported = try Tools.run(Tools.memtool, try c.importArguments(l, into: store))
            try #require(imported.status == 0, "layer \(l): \(imported.stderr)")
        }
    }

    /// Layer `l` of `store` answers its queries as the numpy reference does.
    func expectReference(_ c: Checkpoints, _ store: String, layer l: Int, _ scratch: ScratchDirectory) throws {
        let out = scratch.file("out\(l).npy"), idx = scratch.file("idx\(l).npy"), w = scratch.file("w\(l).npy")
        let queried = try Tools.memtool("query", store, "--layer", try c.name(l), "--queries", "\(c.dir)/queries\(l).npy",
                                        "--output", out, "--indices", idx, "--weights", w, "--batch", "5")
        try #require(queried.status == 0, "\(queried.stderr)")
        #expect(try loadNPY(idx).integers() == loadNPY("\(c.dir)/expected_indices\(l).npy").integers(), "layer \(l)")
        // Float32 sums against the reference's float64: to 1e-5 of each result's largest magnitude.
        func close(_ got: [Float], _ expected: [Float]) -> Bool {
            let scale = expected.map(abs).max() ?? 1
            return got.count == expected.count && zip(got, expected).allSatisfy { abs($0 - $1) <= 1e-5 * scale }
        }
        #expect(close(try loadNPY(out).floats(), try loadNPY("\(c.dir)/expected_output\(l).npy").floats()), "layer \(l)")
        #expect(close(try loadNPY(w).floats(), try loadNPY("\(c.dir)/expected_weights\(l).npy").floats()), "layer \(l)")
    }

    @Test(arguments: [2, 4])
    func everyLayerAnswersAsTheReference(layers: Int) throws {
        let scratch = ScratchDirectory()
        let c = try checkpoints(scratch, layers: layers)
        let store = scratch.file("m.pkm")
        try build(c, store)
        let s = try Store.open(at: store)
        #expect(try s.layerNames() == (0..<layers).map { "block\($0).memory" })
        for l in 0..<layers { try expectReference(c, store, layer: l, scratch) }
        let verified = try Tools.memtool("verify", store)
        #expect(verified.status == 0 && verified.stdout.contains("\(layers) layers"), "\(verified.stdout)")
        // Each layer exported alone is a single-layer checkpoint that answers the same.
        for l in 0..<layers {
            let file = scratch.file("export\(l).safetensors"), single = scratch.file("single\(l).pkm")
            #expect(try Tools.memtool("export", store, "--layer", try c.name(l), "--to", file).status == 0)
            let imported = try Tools.memtool("import", single, "--from", file, "--layer", try c.name(l))
            try #require(imported.status == 0, "\(imported.stderr)")
            try expectReference(c, single, layer: l, scratch)
        }
    }

    @Test func aSharedTableIsStoredOnce() throws {
        let scratch = ScratchDirectory()
        let c = try checkpoints(scratch, layers: 4)
        let one = scratch.file("one.pkm"), four = scratch.file("four.pkm")
        try build(c, one, layers: 0..<1)
        try build(c, four)
        let a = try Store.open(at: one).storageStatistics(), b = try Store.open(at: four).storageStatistics()
        #expect(a.shards == b.shards && a.shardBytes == b.shardBytes)
        // Three more layers add their keys (about 50 KiB of f32 here), not another 256 KiB table.
        #expect(b.fileBytes - a.fileBytes < 256 << 10, "\(a.fileBytes) -> \(b.fileBytes)")
        // Byte-identical values join the table; other values are refused, naming the difference.
        let copy = try Tools.memtool("import", four, "--from", "\(c.dir)/layer0.safetensors", "--layer", "copy")
        #expect(copy.status == 0, "\(copy.stderr)")
        let other = try Tools.memtool("import", four, "--from", "\(c.dir)/layer0.safetensors", "--layer", "shifted", "--pool-offset", "1")
        #expect(other.status == 1 && other.stderr.contains("differ from the store's rows"), "\(other.stderr)")
        #expect(try Store.open(at: four).layerNames().contains("shifted") == false)
    }

    @Test func layersAreRemovedWhole() throws {
        let scratch = ScratchDirectory()
        let c = try checkpoints(scratch, layers: 2)
        let store = scratch.file("m.pkm")
        try build(c, store)
        let removed = try Tools.memtool("remove-layer", store, try c.name(1))
        #expect(removed.status == 0, "\(removed.stderr)")
        let s = try Store.open(at: store)
        #expect(try s.layerNames() == [try c.name(0)])
        #expect(try s.tensorNames().allSatisfy { $0.hasPrefix("layers/\(try c.name(0))/") })
        #expect(try Tools.memtool("remove-layer", store, "nope").stderr.contains("no layer 'nope'"))
        // Re-running the import that made a layer is a no-op; another layer under its name is refused.
        let again = try Tools.memtool("import", store, "--from", "\(c.dir)/layer0.safetensors", "--layer", try c.name(0))
        #expect(again.status == 0, "\(again.stderr)")
        let other = try Tools.memtool("import", store, "--from", "\(c.dir)/layer0.safetensors", "--layer", try c.name(0), "--topk", "3")
        #expect(other.status == 1 && other.stderr.contains("already holds another layer"), "\(other.stderr)")
        try expectReference(c, store, layer: 0, scratch)
    }

    @Test func aLayerIsAddedWhileAnotherProcessReads() throws {
        let scratch = ScratchDirectory()
        let c = try checkpoints(scratch, layers: 3)
        let store = scratch.file("m.pkm"), report = scratch.file("bench.json")
        try build(c, store, layers: 0..<2)
        // A reader of layer 0 runs on while layers are added and removed; its searches keep
        // agreeing with the brute force and its reduces with the flat copy.
        let reader = Process()
        reader.executableURL = Tools.memtool
        reader.arguments = ["bench", store, "--layer", try c.name(0), "--queries", "20000", "--batch", "8", "--json", report]
        reader.standardOutput = FileHandle.nullDevice
        reader.standardError = FileHandle.nullDevice
        try reader.run()
        try build(c, store, layers: 2..<3)
        #expect(try Tools.memtool("remove-layer", store, try c.name(1)).status == 0)
        try build(c, store, layers: 1..<2)
        reader.waitUntilExit()
        #expect(reader.terminationStatus == 0)
        let bench = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: report))) as? [String: Any])
        #expect(bench["bruteForceAgreement"] as? Double == 1)
        #expect((bench["memoryLimitMaxRelativeDifference"] as? Double ?? 1) < 1e-5)
        for l in 0..<3 { try expectReference(c, store, layer: l, scratch) }
    }

    @Test func aNewStoreServesAWindowOfItsValues() throws {
        let scratch = ScratchDirectory()
        let c = try checkpoints(scratch, layers: 3)
        // Layer 2's keys with the whole pool as its values (.npy files: no metadata, so k is given).
        let dir = scratch.file("windowed")
        let script = """
            import os, sys, numpy as np
            sys.path.insert(0, sys.argv[3])
            from pkmtools.tensorio import read_safetensors
            src, out = sys.argv[1], sys.argv[2]
            os.makedirs(out)
            keys = read_safetensors(os.path.join(src, "layer2.safetensors"))
            for name in ["row_keys", "col_keys"]: np.save(os.path.join(out, name + ".npy"), keys[name])
            np.save(os.path.join(out, "values.npy"), read_safetensors(os.path.join(src, "pool.safetensors"))["values"])
            """
        let made = try Tools.python(["-c", script, c.dir, dir, Tools.root.appendingPathComponent("Tools").path])
        try #require(made.status == 0, "\(made.stderr)")
        let store = scratch.file("m.pkm")
        let imported = try Tools.memtool("import", store, "--from", dir, "--layer", try c.name(2), "--topk", "5",
                                         "--window", "2048", "--pool-offset", "2730")
        try #require(imported.status == 0, "\(imported.stderr)")
        #expect(try Store.open(at: store).layout.rows == 4096)
        try expectReference(c, store, layer: 2, scratch)
        let outside = try Tools.memtool("import", scratch.file("n.pkm"), "--from", dir, "--window", "5000")
        #expect(outside.status == 1 && outside.stderr.contains("does not fit the checkpoint's 4096 rows"), "\(outside.stderr)")
    }

    @Test func hostileLayerNamesAreRefused() throws {
        let invalid = String(decoding: [0xFF, 0x41] as [UInt8], as: UTF8.self)
        for name in ["", "/", "..", ".hidden", "-flag", "a/b", "a b", "layers/x", String(repeating: "x", count: 129), invalid, "é"] {
            #expect(throws: StoreError.self, "\(name.debugDescription)") { try LayerKeys.validate(name) }
        }
        for name in ["default", "block3.memory", "_x", "L-2", String(repeating: "x", count: 128)] { #expect(throws: Never.self) { try LayerKeys.validate(name) } }

        let scratch = ScratchDirectory()
        let c = try checkpoints(scratch, layers: 1)
        let store = scratch.file("m.pkm")
        for name in ["", "../x", "a/b", String(repeating: "y", count: 200)] {
            let r = try Tools.memtool("import", store, "--from", "\(c.dir)/layer0.safetensors", "--layer", name)
            #expect(r.status == 1 && r.stderr.contains("layer name"), "\(name): \(r.stderr)")
            #expect(!FileManager.default.fileExists(atPath: store), "a refused name created no store")
        }
        try build(c, store)
        let bad = try Tools.memtool("query", store, "--layer", "../../etc", "--queries", "\(c.dir)/queries0.npy", "--output", scratch.file("o.npy"))
        #expect(bad.status == 1 && bad.stderr.contains("no layer '../../etc'"), "\(bad.stderr)")
    }
}
