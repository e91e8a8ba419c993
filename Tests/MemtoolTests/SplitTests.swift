import Foundation
import Testing
import TestSupport
import MemoryFormat
import MemoryLayer
@testable import MemoryStore

/// `memtool split` and `verify DIR` (Spec/DISTRIBUTED.md): the parts of a layered store answer,
/// summed part by part, as the numpy reference does; broken splits are named; a killed split
/// leaves nothing behind.
@Suite struct SplitTests {
    let layerTests = LayerTests()

    /// The layer's output for `queries` computed over the split's parts as Spec/DISTRIBUTED.md
    /// says: search and address with part 0, each part's partial sums, added in part order, projected.
    func lookupOverParts(_ dir: String, _ manifest: TablePart.Axis, parts: Int, layer: String, queries: [Float], batch: Int) throws -> [Float] {
        let stores = try (0..<parts).map { try Store.open(at: "\(dir)/part-\($0).pkm") }
        let part0 = try MemoryLayer(store: stores[0], name: layer, threads: 1)
        let c = part0.config
        let found = try part0.search(queries: queries, batch: batch)
        var rows = [Int](repeating: 0, count: found.indices.count), projectors = rows
        try found.indices.withUnsafeBufferPointer { s in
            try rows.withUnsafeMutableBufferPointer { r in
                try projectors.withUnsafeMutableBufferPointer { try part0.index.addresses(of: s, rows: r, projectors: $0) }
            }
        }
        let perQuery = c.heads * c.topK, outputs = batch * c.expansion
        let targets = projectors.indices.map { ($0 / perQuery) * c.expansion + projectors[$0] }
        var sums = [Float](repeating: 0, count: outputs * c.valueDim)
        for (k, store) in stores.enumerated() {
            let part = try #require(try store.tablePart())
            #expect(part.index == k && part.parts == parts && part.axis == manifest)
            if manifest == .rows {
                let mine = rows.indices.filter { part.range.contains(rows[$0]) }
                let partial = try partialSums(store, rows: mine.map { rows[$0] - part.first },
                                              weights: mine.flatMap { i in (0..<c.cores).map { found.weights[i * c.cores + $0] } },
                                              chunks: c.cores, targets: mine.map { targets[$0] }, outputs: outputs)
                for j in sums.indices { sums[j] += partial[j] }
            } else {
                // One weight per chunk of the part's columns (c divides P or P divides c).
                let chunks = max(1, c.cores / parts)
                let firstChunk = c.cores >= parts ? k * chunks : k / (parts / c.cores)
                let partial = try partialSums(store, rows: rows,
                                              weights: rows.indices.flatMap { i in (0..<chunks).map { found.weights[i * c.cores + firstChunk + $0] } },
                                              chunks: chunks, targets: targets, outputs: outputs)
                for t in 0..<outputs {
                    for j in 0..<part.count { sums[t * c.valueDim + part.first + j] = partial[t * part.count + j] }
                }
            }
        }
        var out = [Float](repeating: 0, count: batch * c.outputDim)
        try sums.withUnsafeBufferPointer { s in
            try out.withUnsafeMutableBufferPointer { try part0.index.project(sums: s, queries: batch, into: $0) }
        }
        return out
    }

    /// What a part returns: `[outputs, its dim]`, the weighted sums of its rows per target.
    func partialSums(_ store: Store, rows: [Int], weights: [Float], chunks: Int, targets: [Int], outputs: Int) throws -> [Float] {
        var out = [Float](repeating: 0, count: outputs * store.layout.dim)
        try store.gatherReduce(indices: rows, weights: weights, chunks: chunks, targets: targets, into: &out)
        return out
    }

    @Test(arguments: [(TablePart.Axis.rows, 3), (.dims, 2), (.dims, 4)])
    func partsAnswerAsTheReference(axis: TablePart.Axis, parts: Int) throws {
        let scratch = ScratchDirectory()
        let c = try layerTests.checkpoints(scratch, layers: 2)
        let store = scratch.file("m.pkm"), dir = scratch.file("split")
        try layerTests.build(c, store)
        let split = try Tools.memtool("split", store, "--parts", "\(parts)", "--by", axis.rawValue, "--out", dir)
        try #require(split.status == 0, "\(split.stderr)")
        let verified = try Tools.memtool("verify", dir)
        #expect(verified.status == 0 && verified.stdout.contains("\(parts) parts tiling"), "\(verified.stdout)")
        for l in 0..<2 {
            let name = try c.name(l)
            let q = try loadNPY("\(c.dir)/queries\(l).npy")
            let out = try lookupOverParts(dir, axis, parts: parts, layer: name, queries: try q.floats(), batch: q.shape[0])
            let expected = try loadNPY("\(c.dir)/expected_output\(l).npy").floats()
            let scale = expected.map(abs).max() ?? 1
            #expect(out.count == expected.count && zip(out, expected).allSatisfy { abs($0 - $1) <= 1e-5 * scale }, "layer \(l)")
            // A part alone searches as the reference does, and refuses to look up.
            let part = "\(dir)/part-\(parts - 1).pkm", idx = scratch.file("idx.npy")
            let queried = try Tools.memtool("query", part, "--layer", name, "--queries", "\(c.dir)/queries\(l).npy", "--output", scratch.file("o.npy"), "--indices", idx)
            #expect(queried.status == 1 && queried.stderr.contains("part \(parts - 1) of \(parts)"), "\(queried.stderr)")
        }
        let inspected = try Tools.memtool("inspect", "\(dir)/part-1.pkm")
        #expect(inspected.stdout.contains("part         1 of \(parts)"), "\(inspected.stdout)")
    }

    @Test func brokenSplitsAreNamed() throws {
        let scratch = ScratchDirectory()
        let store = scratch.file("m.pkm")
        try #require(try Tools.memtool("create", store, "--synthetic", "--rows", "6000", "--dim", "16", "--heads", "2",
                                       "--key-dim", "8", "--topk", "4", "--layers", "2", "--codec", "raw").status == 0)
        let (a, b) = (scratch.file("a"), scratch.file("b"))
        for dir in [a, b] { try #require(try Tools.memtool("split", store, "--parts", "3", "--out", dir).status == 0) }
        #expect(try Tools.memtool("split", store, "--parts", "3", "--out", a).stderr.contains("already exists"))
        #expect(try Tools.memtool("split", "\(a)/part-0.pkm", "--parts", "2", "--out", scratch.file("c")).stderr.contains("itself a part"))
        #expect(try Tools.memtool("split", store, "--parts", "3", "--by", "dims", "--out", scratch.file("c")).stderr.contains("divide"))
        #expect(!FileManager.default.fileExists(atPath: scratch.file("c")))
        let fm = FileManager.default
        func copy(_ name: String, _ change: (String) throws -> Void) throws -> String {
            let dir = scratch.file(name)
            try fm.copyItem(atPath: a, toPath: dir)
            try change(dir)
            return dir
        }
        func expectDamaged(_ dir: String, _ message: String) throws {
            let verified = try Tools.memtool("verify", dir)
            #expect(verified.status == 1 && (verified.stdout + verified.stderr).contains(message), "\(verified.stdout)\(verified.stderr)")
        }
        // A part of another split.
        try expectDamaged(try copy("foreign") { dir in
            try fm.removeItem(atPath: "\(dir)/part-1.pkm")
            try fm.copyItem(atPath: "\(b)/part-1.pkm", toPath: "\(dir)/part-1.pkm")
        }, "the manifest expects part 1 of 3")
        // Manifests whose parts overlap, leave a gap, or name a file outside the directory.
        for (name, edit, message) in [("overlap", "\"first\" : 2000", "overlaps"), ("gap", "\"first\" : 2001", "are in no part"),
                                      ("outside", "\"file\" : \"..\\/m.pkm\"", "inside the split's directory")] {
            try expectDamaged(try copy(name) { dir in
                let path = "\(dir)/split.json"
                var text = try String(contentsOfFile: path, encoding: .utf8)
                let target = name == "outside" ? "\"file\" : \"part-0.pkm\"" : "\"first\" : 2000"
                if name == "overlap" { text = text.replacingOccurrences(of: "\"first\" : 4000", with: "\"first\" : 3999") }
                else { text = text.replacingOccurrences(of: target, with: edit) }
                try text.write(toFile: path, atomically: true, encoding: .utf8)
            }, message)
        }
        // A damaged row in a part names the part and the shard.
        try expectDamaged(try copy("damaged") { dir in
            let env = try Environment(path: "\(dir)/part-2.pkm", readOnly: false)
            try env.write { txn in
                try withShardKey(0) { key in
                    guard var blob = try txn.get(env.shards, key: key) else { return }
                    blob[blob.count / 2] ^= 0x40
                    try blob.withUnsafeBytes { try txn.put(env.shards, key: key, value: $0) }
                }
            }
        }, "part-2.pkm': shard 0")
        // Layers of a part are the split's: changing them is refused.
        let removed = try Tools.memtool("remove-layer", "\(a)/part-0.pkm", "layer0")
        #expect(removed.status == 1 && removed.stderr.contains("part of a split table"), "\(removed.stderr)")
    }

    /// `memtool split` killed at any moment leaves no directory (or a complete, sound one) and the
    /// source untouched; running it again succeeds.
    @Test func killedSplitLeavesNothingHalfWritten() throws {
        let scratch = ScratchDirectory()
        let store = scratch.file("m.pkm")
        try #require(try Tools.memtool("create", store, "--synthetic", "--rows", "300000", "--dim", "64", "--heads", "1",
                                       "--key-dim", "8", "--topk", "4").status == 0)
        var killedMidway = 0
        for (trial, delay) in ([3_000, 20_000, 60_000, 150_000, 300_000, 600_000] as [useconds_t]).enumerated() {
            let dir = scratch.file("s\(trial)")
            let args = ["split", store, "--parts", "4", "--out", dir]
            _ = try Tools.memtoolKilled(args, after: delay)
            if FileManager.default.fileExists(atPath: dir) {
                #expect(try Tools.memtool("verify", dir).status == 0, "trial \(trial)")
                continue
            }
            killedMidway += 1
            let rerun = try Tools.run(Tools.memtool, args)
            #expect(rerun.status == 0, "\(rerun.stderr)")
            #expect(try Tools.memtool("verify", dir).status == 0)
            #expect(!FileManager.default.fileExists(atPath: dir + ".splitting"))
        }
        #expect(killedMidway >= 1, "no trial killed the split midway")
        #expect(try Tools.memtool("verify", store).status == 0)
    }
}
