import Foundation
import Testing
import TestSupport
@testable import MemoryStore

/// Stores written by an earlier memtool still read. `Tests/Fixtures/v2-*.store` were written by
/// memtool at format version 2 (commit d633aab: a Tucker memory, E = 2, 512 rows x 8 bf16, raw
/// and zstd shards); `v2-*.rows.npy` and `v2-*.digest` are what that version's Python reader
/// read from them (rows, and SHA-256 over rows, tensors and retrieval record); a re-encoding
/// compaction upgrades them to the current version, their layer named `default`.
@Suite struct FormatVersionTests {
    static let fixtures = Tools.root.appendingPathComponent("Tests/Fixtures")

    /// Copies a fixture into scratch space (LMDB writes a lock file beside it).
    func fixture(_ name: String, in scratch: ScratchDirectory) throws -> String {
        let path = scratch.file(name)
        try FileManager.default.copyItem(atPath: Self.fixtures.appendingPathComponent(name).path, toPath: path)
        return path
    }

    func digest(_ path: String) throws -> String {
        let result = try Tools.python([Tools.root.appendingPathComponent("Tools/pkmstore_reader.py").path, path, "--digest"])
        try #require(result.status == 0, "python reader failed: \(result.stderr)")
        return String(result.stdout.split(separator: " ").first ?? "")
    }

    @Test(arguments: ["raw", "zstd"])
    func versionTwoStoresReadAndUpgrade(codec: String) throws {
        let scratch = ScratchDirectory()
        let path = try fixture("v2-\(codec).store", in: scratch)
        let recorded = try recordedDigest("v2-\(codec)")
        #expect(try digest(path) == recorded, "the current Python reader reads the version-2 store as version 2's did")

        let expected = try loadNPY(Self.fixtures.appendingPathComponent("v2-\(codec).rows.npy").path).floats()
        let names = ["col_keys", "cores", "projectors", "row_keys"]
        var tensors: [[UInt8]] = [], record: [String: AnyHashable] = [:]
        do {
            let store = try Store.open(at: path)
            #expect(store.manifest.formatVersion == 2)
            #expect(try store.verify().isSound)
            #expect(try rows(of: store) == expected)
            #expect(try store.tensorNames() == names)
            #expect(try store.layerNames() == [LayerKeys.defaultName])
            tensors = try names.map { try store.tensor(named: $0).bytes }
            record = try json(store.metaRecord(named: "retrieval"))
        }

        // A re-encoding compaction rewrites it in the current version with the same content:
        // the same rows, its one layer as `default` with the same tensors and record (without
        // the pool fields, which then say the layer reads the whole table).
        let compacted = try Tools.memtool("compact", path, "--codec", codec)
        try #require(compacted.status == 0, "\(compacted.stderr)")
        let store = try Store.open(at: path)
        #expect(store.manifest.formatVersion == Manifest.currentVersion)
        #expect(try store.verify().isSound)
        #expect(try rows(of: store) == expected)
        let keys = try store.layerKeys()
        #expect(keys.name == LayerKeys.defaultName)
        #expect(try store.tensorNames() == names.map(keys.tensor))
        #expect(try names.map { try store.tensor(named: keys.tensor($0)).bytes } == tensors)
        #expect(try json(store.metaRecord(named: keys.record)) == record)
        let reader = try Tools.python([Tools.root.appendingPathComponent("Tools/pkmstore_reader.py").path, path, "--layers"])
        #expect(reader.status == 0 && reader.stdout.hasPrefix("default {"), "\(reader.stdout)\(reader.stderr)")
    }

    func rows(of store: Store) throws -> [Float] {
        var rows = [Float](repeating: 0, count: 512 * 8)
        try rows.withUnsafeMutableBufferPointer { try store.rows(Array(0..<512), into: $0) }
        return rows
    }

    /// The digest recorded beside fixture `name`.
    func recordedDigest(_ name: String) throws -> String? {
        try String(contentsOf: Self.fixtures.appendingPathComponent("\(name).digest"), encoding: .utf8).split(separator: " ").first.map(String.init)
    }

    /// Queries `path` (`layer`, or its only one) with `v3.queries.npy` and expects what was recorded
    /// as `NAME.indices.npy` and `NAME.output.npy`: the same slots, and the same sums up to float
    /// summation order (rows of a compressed table are summed in the order the reader visits them).
    func expectAnswers(_ path: String, layer: String?, as name: String, in scratch: ScratchDirectory, _ when: String) throws {
        let out = scratch.file("out.npy"), idx = scratch.file("idx.npy")
        let queried = try Tools.run(Tools.memtool, ["query", path] + (layer.map { ["--layer", $0] } ?? []) +
                                        ["--queries", Self.fixtures.appendingPathComponent("v3.queries.npy").path, "--output", out, "--indices", idx])
        try #require(queried.status == 0, "\(when): \(queried.stderr)")
        #expect(try loadNPY(idx).integers() == loadNPY(Self.fixtures.appendingPathComponent("\(name).indices.npy").path).integers(), "\(when)")
        let got = try loadNPY(out).floats(), expected = try loadNPY(Self.fixtures.appendingPathComponent("\(name).output.npy").path).floats()
        let scale = expected.map(abs).max() ?? 1
        #expect(got.count == expected.count && zip(got, expected).allSatisfy { abs($0 - $1) <= 1e-5 * scale }, "\(when)")
    }

    func json(_ bytes: [UInt8]?) throws -> [String: AnyHashable] {
        let object = try JSONSerialization.jsonObject(with: Data(try #require(bytes)))
        return try #require(object as? [String: AnyHashable])
    }

    /// `Tests/Fixtures/v3-*.store` were written by memtool at format version 3 (commit 6a44ea0:
    /// `create --synthetic --scoring tucker --rows 512 --dim 8 --heads 2 --key-dim 8 --expansion 2
    /// --topk 4 --top-m 8 --seed 3`, raw and zstd); `v3-*.digest` is that version's Python reader's
    /// digest, `v3-*.indices.npy` and `v3-*.output.npy` what that memtool answered to `v3.queries.npy`
    /// (slots compared exactly, outputs up to float summation order).
    @Test(arguments: ["raw", "zstd"])
    func versionThreeStoresServeTheirLayerAndUpgrade(codec: String) throws {
        let scratch = ScratchDirectory()
        let path = try fixture("v3-\(codec).store", in: scratch)
        let recorded = try recordedDigest("v3-\(codec)")
        #expect(try digest(path) == recorded, "the current Python reader reads the version-3 store as version 3's did")
        func expectSameAnswers(_ when: String) throws {
            try expectAnswers(path, layer: nil, as: "v3-\(codec)", in: scratch, when)
        }
        try expectSameAnswers("as version 3")
        #expect(try Store.open(at: path).layerNames() == [LayerKeys.defaultName])
        // Its layer exported and added back under another name: refused until the store is upgraded.
        let exported = scratch.file("layer.safetensors")
        #expect(try Tools.memtool("export", path, "--to", exported).status == 0)
        let refused = try Tools.memtool("import", path, "--from", exported, "--layer", "more")
        #expect(refused.status == 1 && refused.stderr.contains("format version 3") && refused.stderr.contains("memtool compact"), "\(refused.stderr)")

        let compacted = try Tools.memtool("compact", path, "--codec", codec)
        try #require(compacted.status == 0, "\(compacted.stderr)")
        let store = try Store.open(at: path)
        #expect(store.manifest.formatVersion == Manifest.currentVersion)
        #expect(try store.verify().isSound)
        #expect(try store.layerNames() == [LayerKeys.defaultName])
        try expectSameAnswers("after the upgrade to version \(Manifest.currentVersion)")
    }

    /// `Tests/Fixtures/v4-*.store` were written by memtool at format version 4 (commit 7d025e2:
    /// `create --synthetic --scoring tucker --rows 2048 --dim 16 --heads 2 --key-dim 8 --expansion 2
    /// --topk 4 --top-m 8 --seed 5`, raw and zstd, its layer exported and imported again as
    /// `second`, then compacted): two shards, the second partial; `v4-*.digest` is that version's
    /// Python reader's digest, `v4-*.indices.npy` and `v4-*.output.npy` what that memtool answered
    /// to `v3.queries.npy` for layer `default`.
    @Test(arguments: ["raw", "zstd"])
    func versionFourStoresServeTheirLayersAndUpgrade(codec: String) throws {
        let scratch = ScratchDirectory()
        let path = try fixture("v4-\(codec).store", in: scratch)
        let recorded = try recordedDigest("v4-\(codec)")
        #expect(try digest(path) == recorded, "the current Python reader reads the version-4 store as version 4's did")
        func expectSameAnswers(_ when: String) throws {
            for layer in ["default", "second"] { try expectAnswers(path, layer: layer, as: "v4-\(codec)", in: scratch, "\(when), \(layer)") }
        }
        do {
            let store = try Store.open(at: path)
            #expect(store.manifest.formatVersion == 4)
            #expect(try store.verify().isSound)
            #expect(try store.layerNames() == ["default", "second"])
        }
        try expectSameAnswers("as version 4")
        let compacted = try Tools.memtool("compact", path, "--codec", codec)
        try #require(compacted.status == 0, "\(compacted.stderr)")
        let store = try Store.open(at: path)
        #expect(store.manifest.formatVersion == Manifest.currentVersion)
        #expect(try store.verify().isSound)
        #expect(try store.layerNames() == ["default", "second"])
        #expect(try digest(path) == recorded, "the same content in version \(Manifest.currentVersion)")
        try expectSameAnswers("after the upgrade to version \(Manifest.currentVersion)")
    }

    /// `Tests/Fixtures/v6-nibble.store` was written by memtool at format version 6 (commit 6cdf6e7:
    /// `create --synthetic --scoring tucker --rows 2048 --dim 16 --heads 2 --key-dim 8 --expansion 2
    /// --topk 4 --top-m 8 --seed 8 --codec nibble --dtype bf16 --rows-per-shard 1500`): two nibble
    /// shards of codec 4, the second partial, 10 escaped rows; `v6-nibble.digest` is that
    /// version's Python reader's digest, `v6-nibble.indices.npy` and `.output.npy` what that
    /// memtool answered to `v3.queries.npy`.
    @Test func versionSixNibbleStoresServeAndUpgrade() throws {
        let scratch = ScratchDirectory()
        let path = try fixture("v6-nibble.store", in: scratch)
        let recorded = try recordedDigest("v6-nibble")
        #expect(try digest(path) == recorded, "the current Python reader reads the version-6 store as version 6's did")
        do {
            let store = try Store.open(at: path)
            #expect(store.manifest.formatVersion == 6)
            #expect(try store.verify().isSound)
        }
        try expectAnswers(path, layer: nil, as: "v6-nibble", in: scratch, "as version 6")
        let compacted = try Tools.memtool("compact", path, "--codec", "nibble")
        try #require(compacted.status == 0, "\(compacted.stderr)")
        let store = try Store.open(at: path)
        #expect(store.manifest.formatVersion == Manifest.currentVersion)
        #expect(try store.verify().isSound)
        #expect(try digest(path) == recorded, "the same content in version \(Manifest.currentVersion)")
        try expectAnswers(path, layer: nil, as: "v6-nibble", in: scratch, "after the upgrade to version \(Manifest.currentVersion)")
    }

    @Test func layersAreAddedOnlyToCurrentStores() throws {
        let scratch = ScratchDirectory()
        let path = try fixture("v3-raw.store", in: scratch)
        #expect(throws: StoreError.self) { try StoreWriter.editing(at: path) }
        do { _ = try StoreWriter.editing(at: path) } catch {
            #expect("\(error)".contains("format version 3") && "\(error)".contains("memtool compact"), "\(error)")
        }
    }
}
