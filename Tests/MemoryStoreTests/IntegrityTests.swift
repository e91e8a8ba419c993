import Foundation
import Synchronization
import Testing
@testable import MemoryStore

@Suite struct IntegrityTests {
    func makeStore(_ dir: TemporaryDirectory, codec: CodecKind) throws -> (String, TableLayout) {
        let layout = TableLayout(elementType: .bf16, rows: 1000, dim: 16, rowsPerShard: 100, codec: codec)
        try writeTable(dir.file("t.pkm"), layout)
        return (dir.file("t.pkm"), layout)
    }

    /// Reading any row of a damaged shard throws an error naming that shard and its rows.
    func expectCorrupt(_ path: String, shard: Int, rows: Range<Int>) throws {
        let store = try Store.open(at: path, cacheBytes: 0)
        do {
            _ = try store.row(rows.lowerBound + 1)
            Issue.record("reading a damaged shard succeeded")
        } catch let StoreError.corruptShard(s, r, _) {
            #expect(s == shard && r == rows)
        }
        let report = try store.verify()
        #expect(report.problems.count == 1)
        #expect(report.problems.first.map { "\($0)" }?.contains("shard \(shard) (rows \(rows.lowerBound)..<\(rows.upperBound))") == true)
        // The other shards still read.
        _ = try store.row(rows.lowerBound == 0 ? 999 : 0)
    }

    @Test(arguments: [CodecKind.raw, .zstd])
    func bitFlipsAnywhereInAShardAreCaught(codec: CodecKind) throws {
        var rng = SeededGenerator(seed: codec == .raw ? 1 : 2)
        for _ in 0..<25 {
            let dir = TemporaryDirectory()
            let (path, _) = try makeStore(dir, codec: codec)
            var flipped = 0
            try tamperShard(path, 3) { blob in
                flipped = Int.random(in: 0..<blob.count, using: &rng)
                blob[flipped] ^= UInt8(1) << UInt8.random(in: 0..<8, using: &rng)
            }
            try expectCorrupt(path, shard: 3, rows: 300..<400)
        }
    }

    @Test(arguments: [CodecKind.raw, .zstd])
    func truncatedShardsAreCaught(codec: CodecKind) throws {
        for keep in [0, 5, 31, 32, 40, 200] {
            let dir = TemporaryDirectory()
            let (path, _) = try makeStore(dir, codec: codec)
            try tamperShard(path, 7) { blob in blob = Array(blob.prefix(keep)) }
            try expectCorrupt(path, shard: 7, rows: 700..<800)
        }
    }

    @Test func aShardFromAnotherPositionIsCaught() throws {
        let dir = TemporaryDirectory()
        let (path, _) = try makeStore(dir, codec: .zstd)
        // Copy shard 2's blob over shard 5: a valid blob in the wrong place.
        let env = try Environment(path: path, readOnly: false)
        try env.write { txn in
            let blob = try withShardKey(2) { try txn.get(env.shards, key: $0) }!
            try withShardKey(5) { key in try blob.withUnsafeBytes { try txn.put(env.shards, key: key, value: $0) } }
        }
        try expectCorrupt(path, shard: 5, rows: 500..<600)
    }

    @Test func newerFormatVersionIsRefused() throws {
        let dir = TemporaryDirectory()
        let (path, _) = try makeStore(dir, codec: .zstd)
        let store = try Store.open(at: path)
        let json = String(decoding: try store.manifest.encoded(), as: UTF8.self)
            .replacingOccurrences(of: "\"formatVersion\":2", with: "\"formatVersion\":3")
        try rewriteMeta(path, "manifest", json)
        #expect(throws: StoreError.unsupportedVersion(found: 3, supported: 2)) { try Store.open(at: path) }
    }

    @Test func manifestDisagreeingWithShardsIsRefused() throws {
        let dir = TemporaryDirectory()
        let (path, _) = try makeStore(dir, codec: .zstd)
        let store = try Store.open(at: path)
        var manifest = store.manifest
        manifest.table.rows = 2000
        try rewriteMeta(path, "state", #"{"rowsCommitted":2000,"complete":true}"#)
        try rewriteMeta(path, "manifest", String(decoding: try manifest.encoded(), as: UTF8.self))
        do {
            _ = try Store.open(at: path)
            Issue.record("opened a store whose manifest promises 20 shards but holds 10")
        } catch let StoreError.inconsistent(why) {
            #expect(why.contains("10 shards stored"))
        }
    }

    @Test func damagedManifestsAreRefusedWithTheirReason() throws {
        let cases: [(String, String)] = [
            ("not json", "not a JSON object"),
            (#"{"format":"other","formatVersion":1}"#, "format is 'other'"),
            (#"{"format":"pkm-store"}"#, "formatVersion is missing"),
            (#"{"format":"pkm-store","formatVersion":1}"#, "field 'table' is missing"),
        ]
        for (json, reason) in cases {
            let dir = TemporaryDirectory()
            let (path, _) = try makeStore(dir, codec: .raw)
            try rewriteMeta(path, "manifest", json)
            do {
                _ = try Store.open(at: path)
                Issue.record("opened with manifest \(json)")
            } catch let error as StoreError {
                #expect("\(error)".contains(reason), "\(error)")
            }
        }
    }

    @Test func flippedMetaRecordsAreNamed() throws {
        for name in ["manifest", "state", "retrieval"] {
            let dir = TemporaryDirectory()
            let (path, _) = try makeStore(dir, codec: .zstd)
            if name == "retrieval" {
                let writer = try StoreWriter.create(at: dir.file("r.pkm"), layout: TableLayout(elementType: .f32, rows: 1, dim: 1))
                try writer.putRecord("retrieval", Array(#"{"topK":32}"#.utf8))
                try writer.append([Float(1)])
                try writer.finish()
                #expect(try Store.open(at: dir.file("r.pkm")).record(named: "retrieval") == Array(#"{"topK":32}"#.utf8))
            }
            let target = name == "retrieval" ? dir.file("r.pkm") : path
            // "topK":32 -> "topK":22 and similar one-bit changes inside the JSON.
            let env = try Environment(path: target, readOnly: false)
            try env.write { txn in
                try withName(name) { key in
                    var value = try #require(try txn.get(env.meta, key: key))
                    value[value.count - 12] ^= 0x10
                    try value.withUnsafeBytes { try txn.put(env.meta, key: key, value: $0) }
                }
            }
            let error: any Error
            do {
                let store = try Store.open(at: target)
                let report = try store.verify()
                #expect(report.problems.contains(.corruptRecord(name: name, reason: "its checksum does not match")))
                error = try #require(throws: StoreError.self) { try store.record(named: name) }
            } catch let thrown { error = thrown }
            #expect("\(error)".contains("meta record '\(name)' is corrupt"), "\(error)")
        }
    }

    /// LMDB has no page checksums; its meta pages are checked against each other and the file.
    @Test func damagedMetaPagesAreNamed() throws {
        let dir = TemporaryDirectory()
        let (path, _) = try makeStore(dir, codec: .zstd)
        let original = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
        let pageSize = 4096
        let newest = original.withUnsafeBytes { b in
            b.loadUnaligned(fromByteOffset: 144, as: UInt64.self) > b.loadUnaligned(fromByteOffset: pageSize + 144, as: UInt64.self) ? 0 : pageSize
        }
        let cases: [(String, ([UInt8]) -> [UInt8])] = [
            ("transaction ids", { var b = $0; b[newest + 144] ^= 0x04; return b }),   // would open an older commit
            ("last in use", { Array($0.prefix($0.count / 2)) }),                        // truncated file
            ("last in use", { var b = $0; b[newest + 141] ^= 0x01; return b }),       // last page far past the end
            ("B-tree root", { var b = $0; b[newest + 128] ^= 0x01; b[newest + 133] ^= 0x01; return b }),
        ]
        for (reason, damage) in cases {
            try Data(damage(original)).write(to: URL(fileURLWithPath: path))
            #expect(throws: StoreError.self) { try Store.open(at: path) }
            do { _ = try Store.open(at: path) } catch { #expect("\(error)".contains(reason), "\(error)") }
        }
        try Data(original).write(to: URL(fileURLWithPath: path))
        #expect(try Store.open(at: path).verify().isSound)
    }

    @Test func notAStoreIsNamed() throws {
        let dir = TemporaryDirectory()
        #expect(throws: StoreError.notFound(path: dir.file("missing.pkm"))) { try Store.open(at: dir.file("missing.pkm")) }
        let junk = dir.file("junk.pkm")
        #expect(FileManager.default.createFile(atPath: junk, contents: Data(repeating: 0xAB, count: 64 << 10)))
        do {
            _ = try Store.open(at: junk)
            Issue.record("opened a file of junk")
        } catch let error as StoreError {
            #expect("\(error)".contains("not a readable store"))
        }
    }

    @Test func corruptTensorsAreNamed() throws {
        let dir = TemporaryDirectory()
        let writer = try StoreWriter.create(at: dir.file("t.pkm"), layout: TableLayout(elementType: .f32, rows: 1, dim: 1))
        try writer.putTensor("cores", try Tensor(shape: [4], floats: [1, 2, 3, 4]))
        try writer.append([Float(1)])
        try writer.finish()
        let env = try Environment(path: dir.file("t.pkm"), readOnly: false)
        try env.write { txn in
            try withName("cores") { key in
                var r = try txn.get(env.tensors, key: key)!
                r[r.count - 1] ^= 0x40
                try r.withUnsafeBytes { try txn.put(env.tensors, key: key, value: $0) }
            }
        }
        let store = try Store.open(at: dir.file("t.pkm"))
        #expect(throws: StoreError.corruptTensor(name: "cores", reason: "checksum mismatch")) { try store.tensor(named: "cores") }
        #expect(try store.verify().problems == [.corruptTensor(name: "cores", reason: "checksum mismatch")])
    }

    @Test func hostileTensorHeadersAreRefusedBeforeAllocating() throws {
        // Rank 8 with extents whose product overflows, and a huge extent: both refused by the header checks.
        var record: [UInt8] = Array("PKT1".utf8) + [1, 2, 0, 0] + [UInt8](repeating: 0, count: 8)
        for _ in 0..<2 { withUnsafeBytes(of: UInt64(1 << 40).littleEndian) { record += $0 } }
        #expect(throws: StoreError.self) { try record.withUnsafeBytes { try Tensor.decode(record: $0, name: "x") } }
        let tooDeep: [UInt8] = Array("PKT1".utf8) + [1, 200, 0, 0] + [UInt8](repeating: 0, count: 8)
        #expect(throws: StoreError.self) { try tooDeep.withUnsafeBytes { try Tensor.decode(record: $0, name: "x") } }
    }
}

@Suite struct ConcurrencyTests {
    @Test(arguments: [CodecKind.raw, .zstd])
    func manyThreadsReadAtOnce(codec: CodecKind) async throws {
        let dir = TemporaryDirectory()
        let layout = TableLayout(elementType: .bf16, rows: 20000, dim: 32, rowsPerShard: 128, codec: codec)
        let bytes = try writeTable(dir.file("t.pkm"), layout)
        // A cache smaller than the table, so threads race on inserts and evictions too.
        let store = try Store.open(at: dir.file("t.pkm"), cacheBytes: 256 << 10)
        try await withThrowingTaskGroup(of: Int.self) { group in
            for t in 0..<8 {
                group.addTask {
                    var rng = SeededGenerator(seed: UInt64(t))
                    var checked = 0
                    for _ in 0..<300 {
                        let indices = (0..<16).map { _ in Int.random(in: 0..<20000, using: &rng) }
                        var out = [Float](repeating: 0, count: 16 * 32)
                        try out.withUnsafeMutableBufferPointer { try store.rows(indices, into: $0) }
                        for (p, r) in indices.enumerated() where Array(out[(p * 32)..<((p + 1) * 32)]) == referenceRow(bytes, r, dim: 32, type: .bf16) {
                            checked += 1
                        }
                    }
                    return checked
                }
            }
            var total = 0
            for try await c in group { total += c }
            #expect(total == 8 * 300 * 16)
        }
        // Reader slots stay bounded by the number of concurrent readers, not the number of reads.
        #expect(try store.storageStatistics().readersUsed <= 16)
    }

    /// More threads than the environment has reader slots (126): the pool admits a bounded
    /// number at once and the rest wait, so no read fails with MDB_READERS_FULL.
    @Test func moreThreadsThanReaderSlots() throws {
        let dir = TemporaryDirectory()
        let layout = TableLayout(elementType: .bf16, rows: 20000, dim: 32, rowsPerShard: 128, codec: .raw)
        let bytes = try writeTable(dir.file("t.pkm"), layout)
        let store = try Store.open(at: dir.file("t.pkm"), cacheBytes: 0)
        let threads = 160
        final class Tally: Sendable { let correct = Atomic<Int>(0), failed = Atomic<Int>(0) }
        let tally = Tally()
        let done = DispatchGroup()
        for t in 0..<threads {
            done.enter()
            Thread {
                var rng = SeededGenerator(seed: UInt64(100 + t))
                for _ in 0..<20 {
                    let indices = (0..<8).map { _ in Int.random(in: 0..<20000, using: &rng) }
                    var out = [Float](repeating: 0, count: 8 * 32)
                    do {
                        try out.withUnsafeMutableBufferPointer { try store.rows(indices, into: $0) }
                        let good = indices.enumerated().allSatisfy { p, r in Array(out[(p * 32)..<((p + 1) * 32)]) == referenceRow(bytes, r, dim: 32, type: .bf16) }
                        if good { tally.correct.add(1, ordering: .relaxed) } else { tally.failed.add(1, ordering: .relaxed) }
                    } catch {
                        tally.failed.add(1, ordering: .relaxed)
                    }
                }
                done.leave()
            }.start()
        }
        done.wait()
        #expect(tally.failed.load(ordering: .relaxed) == 0)
        #expect(tally.correct.load(ordering: .relaxed) == threads * 20)
        let used = try store.storageStatistics().readersUsed
        #expect(used <= store.readerSlotLimit + 2, "\(used) reader slots for a limit of \(store.readerSlotLimit)")
    }
}
