import Foundation
import Testing
import _MemorySupport
import TestSupport
@testable import MemoryStore
import TensorFiles


@Suite struct ImportExportTests {
    /// Writes a checkpoint, queries and expected results with Tools/make_checkpoint.py (numpy reference).
    func checkpoint(_ scratch: ScratchDirectory, _ arguments: [String] = []) throws -> String {
        let dir = scratch.file("checkpoint")
        let made = try Tools.python([Tools.root.appendingPathComponent("Tools/make_checkpoint.py").path, dir] + arguments)
        try #require(made.status == 0, "make_checkpoint.py failed: \(made.stderr)")
        return dir
    }

    @Test(arguments: [["--format", "safetensors", "--values-dtype", "bf16"], ["--format", "npy", "--values-dtype", "f16"],
                      ["--format", "safetensors", "--values-dtype", "f32"]])
    func importedCheckpointAnswersLikeTheReference(_ format: [String]) throws {
        let scratch = ScratchDirectory()
        let dir = try checkpoint(scratch, format)
        let source = format[1] == "npy" ? dir + "/memory" : dir + "/memory.safetensors"
        let store = scratch.file("m.pkm")
        var importArgs = ["import", store, "--from", source, "--rename", "values=model.mem.values"]
        if format[1] == "npy" { importArgs += ["--scoring", "tucker", "--topk", "6", "--top-m", "8"] }  // .npy has no metadata
        let imported = try Tools.run(Tools.memtool, importArgs)
        try #require(imported.status == 0, "\(imported.stderr)")
        let queried = try Tools.memtool("query", store, "--queries", dir + "/queries.npy", "--output", scratch.file("out.npy"),
                                        "--indices", scratch.file("idx.npy"), "--weights", scratch.file("w.npy"), "--batch", "7")
        try #require(queried.status == 0, "\(queried.stderr)")
        let out = try loadNPY(scratch.file("out.npy")), expectedOut = try loadNPY(dir + "/expected_output.npy")
        #expect(out.shape == expectedOut.shape && out.dtype == .f32)
        #expect(zip(try out.floats(), try expectedOut.floats()).allSatisfy { abs($0 - $1) <= 1e-4 * max(abs($1), 1e-2) })
        let idx = try loadNPY(scratch.file("idx.npy"))
        #expect(idx.dtype == .i64 && idx.shape == [20, 2, 6])
        #expect(try idx.integers() == loadNPY(dir + "/expected_indices.npy").integers())
        let w = try loadNPY(scratch.file("w.npy"))
        #expect(w.shape == [20, 2, 6, 2])
        #expect(zip(try w.floats(), try loadNPY(dir + "/expected_weights.npy").floats()).allSatisfy { abs($0 - $1) <= 1e-4 * max(abs($1), 1e-2) })
    }

    @Test func importConvertsValuesWhenAsked() throws {
        let scratch = ScratchDirectory()
        let dir = try checkpoint(scratch, ["--values-dtype", "f32"])
        let store = scratch.file("m.pkm")
        let imported = try Tools.memtool("import", store, "--from", dir + "/memory.safetensors", "--rename", "values=model.mem.values",
                                         "--dtype", "bf16", "--codec", "raw")
        try #require(imported.status == 0, "\(imported.stderr)")
        let s = try Store.open(at: store)
        #expect(s.layout.elementType == .bf16 && s.layout.codec == .raw)
        // The checkpoint's values are multiples of 1/64, which bf16 holds exactly.
        let source = try #require(try SafetensorsFile(path: dir + "/memory.safetensors").entry("model.mem.values")).load().floats()
        var stored: [Float] = []
        for r in 0..<s.layout.rows { stored += try s.row(r) }
        #expect(stored == source)
    }

    @Test func exportAfterImportGivesTheSameBytes() throws {
        let scratch = ScratchDirectory()
        let dir = try checkpoint(scratch)
        let store = scratch.file("m.pkm")
        try #require(try Tools.memtool("import", store, "--from", dir + "/memory.safetensors", "--rename", "values=model.mem.values").status == 0)
        let exported = try Tools.memtool("export", store, "--to", scratch.file("out.safetensors"))
        try #require(exported.status == 0, "\(exported.stderr)")
        let original = try SafetensorsFile(path: dir + "/memory.safetensors"), copy = try SafetensorsFile(path: scratch.file("out.safetensors"))
        for name in ["values", "row_keys", "col_keys", "cores", "projectors", "virtual_map"] {
            let a = try #require(original.entry(name == "values" ? "model.mem.values" : name)), b = try #require(copy.entry(name))
            #expect(a.dtype == b.dtype && a.shape == b.shape, "\(name)")
            #expect(try a.load().bytes == b.load().bytes, "\(name) differs after import and export")
        }
        #expect(copy.metadata["scoring"] == "tucker" && copy.metadata["topk"] == "6" && copy.metadata["top_m"] == "8")
    }

    @Test func compactShrinksAStoreAndKeepsEveryRow() throws {
        let scratch = ScratchDirectory()
        let path = scratch.file("m.pkm")
        try #require(try Tools.memtool("create", path, "--synthetic", "--rows", "20000", "--dim", "32", "--heads", "1", "--key-dim", "8", "--topk", "4").status == 0)
        // Pad the import state with 4 MiB of JSON whitespace, then restore it: the padding's pages
        // become free space the file keeps.
        do {
            let env = try Environment(path: path, readOnly: false)
            let state = try #require(try env.write { txn in try withName("state") { try txn.get(env.meta, key: $0) } })
            let json = state.dropLast(MetaRecord.sealSize)
            for value in [MetaRecord.seal(Array(json) + [UInt8](repeating: 0x20, count: 4 << 20), key: "state"), state] {
                try env.write { txn in try withName("state") { k in try value.withUnsafeBytes { try txn.put(env.meta, key: k, value: $0) } } }
            }
        }
        let before = try Store.open(at: path, cacheBytes: 0)
        let beforeBytes = try before.storageStatistics().fileBytes
        #expect(try before.storageStatistics().freePages >= 1000, "the padded record's pages are on the free list")
        var rows: [UInt8] = []
        for s in 0..<before.layout.shardCount { try before.withShardRows(s) { rows += $0 } }
        let compacted = try Tools.memtool("compact", path)
        try #require(compacted.status == 0, "\(compacted.stderr)")
        #expect(compacted.stdout.contains("->"))
        let after = try Store.open(at: path, cacheBytes: 0)
        #expect(try after.storageStatistics().fileBytes < beforeBytes - (3 << 20))
        var again: [UInt8] = []
        for s in 0..<after.layout.shardCount { try after.withShardRows(s) { again += $0 } }
        #expect(again == rows)
        #expect(try after.tensorNames() == before.tensorNames())
        #expect(try after.verify().isSound)

        // Re-encoding to raw with other shards keeps the rows too.
        try #require(try Tools.memtool("compact", path, "--output", scratch.file("raw.pkm"), "--codec", "raw", "--rows-per-shard", "333").status == 0)
        let raw = try Store.open(at: scratch.file("raw.pkm"))
        #expect(raw.layout.codec == .raw && raw.layout.rowsPerShard == 333)
        var rawRows: [UInt8] = []
        for s in 0..<raw.layout.shardCount { try raw.withShardRows(s) { rawRows += $0 } }
        #expect(rawRows == rows)
    }

    @Test func killedCompactionLeavesTheOriginalIntact() throws {
        let scratch = ScratchDirectory()
        let path = scratch.file("m.pkm")
        try #require(try Tools.memtool("create", path, "--synthetic", "--rows", "300000", "--dim", "64", "--heads", "1", "--key-dim", "8").status == 0)
        let original = try Data(contentsOf: URL(fileURLWithPath: path))
        func storedRows(_ store: Store) throws -> [UInt8] {
            var rows: [UInt8] = []
            for s in 0..<store.layout.shardCount { try store.withShardRows(s) { rows += $0 } }
            return rows
        }
        let originalRows = try storedRows(Store.open(at: path, checksInBackground: false))
        var interrupted = 0
        for delay in [20_000, 80_000, 200_000] as [useconds_t] {
            let process = try Tools.memtoolKilled(["compact", path, "--codec", "raw"], after: delay)
            if process.terminationReason == .exit { continue }  // finished before the kill
            let store = try Store.open(at: path, checksInBackground: false)
            #expect(try store.verify().isSound, "killed after \(delay) µs")
            if try Data(contentsOf: URL(fileURLWithPath: path)) == original {
                interrupted += 1
            } else {
                // Killed after the rename: the file is the whole compacted copy, never a part.
                #expect(store.layout.codec == .raw, "killed after \(delay) µs: neither the original nor the copy")
                #expect(try storedRows(store) == originalRows, "killed after \(delay) µs")
                break
            }
        }
        #expect(interrupted >= 1, "every compaction got past its rename before its kill")
        // A later compaction clears what the killed ones left and succeeds.
        #expect(try Tools.memtool("compact", path).status == 0)
        #expect(!FileManager.default.fileExists(atPath: path + ".compacting"))
    }
}

/// Gated layers (Spec/RETRIEVAL.md, "Gates") through memtool: a checkpoint's `gates` tensor
/// becomes the table rows' last columns, queries take gate inputs, export gives both back.
extension ImportExportTests {
    @Test(arguments: ["gelu", "none"])
    func aGatedCheckpointAnswersLikeTheReference(_ gate: String) throws {
        let scratch = ScratchDirectory()
        let dir = try checkpoint(scratch, ["--gate", gate])
        let store = scratch.file("m.pkm")
        let imported = try Tools.memtool("import", store, "--from", dir + "/memory.safetensors", "--rename", "values=model.mem.values")
        try #require(imported.status == 0, "\(imported.stderr)")
        #expect(try Store.open(at: store).layout.dim == 8 + 3)
        func query(_ store: String, _ out: String) throws -> Tools.Result {
            try Tools.memtool("query", store, "--queries", dir + "/queries.npy", "--gate-inputs", dir + "/gate_inputs.npy",
                              "--output", out, "--indices", scratch.file("idx.npy"), "--batch", "7")
        }
        let queried = try query(store, scratch.file("out.npy"))
        try #require(queried.status == 0, "\(queried.stderr)")
        let expected = try loadNPY(dir + "/expected_output.npy").floats()
        #expect(zip(try loadNPY(scratch.file("out.npy")).floats(), expected).allSatisfy { abs($0 - $1) <= 1e-4 * max(abs($1), 1e-2) })
        #expect(try loadNPY(scratch.file("idx.npy")).integers() == loadNPY(dir + "/expected_indices.npy").integers())

        // Without gate inputs the lookup is refused, naming what it needs.
        let ungated = try Tools.memtool("query", store, "--queries", dir + "/queries.npy", "--output", scratch.file("x.npy"))
        #expect(ungated.status == 1 && ungated.stderr.contains("gate inputs [batch, 3]"), "\(ungated.stderr)")
        // Export gives values and gates apart, byte for byte; importing the export answers the same.
        try #require(try Tools.memtool("export", store, "--to", scratch.file("e.safetensors")).status == 0)
        let original = try SafetensorsFile(path: dir + "/memory.safetensors"), copy = try SafetensorsFile(path: scratch.file("e.safetensors"))
        for (a, b) in [("model.mem.values", "values"), ("gates", "gates")] {
            #expect(try #require(original.entry(a)).load().bytes == #require(copy.entry(b)).load().bytes, "\(b)")
        }
        #expect(copy.metadata["gate_activation"] == gate)
        let again = scratch.file("again.pkm")
        try #require(try Tools.memtool("import", again, "--from", scratch.file("e.safetensors")).status == 0)
        try #require(try query(again, scratch.file("out2.npy")).status == 0)
        #expect(try loadNPY(scratch.file("out2.npy")).floats() == loadNPY(scratch.file("out.npy")).floats())
        // A dimension-wise split cannot compute a gate's dot product: refused, naming the layer.
        let split = try Tools.memtool("split", store, "--parts", "2", "--by", "dims", "--out", scratch.file("parts"))
        #expect(split.status == 1 && split.stderr.contains("is gated"), "\(split.stderr)")
    }
}
