import Foundation
import Synchronization
import MemoryBenchmarks
import Testing
import _MemorySupport
import TestSupport
import MemoryStore

/// Readers in this process and in other processes while another process writes the store:
/// every row read equals the row written, and nothing reads a row that was not committed.
@Suite struct ConcurrentProcessTests {
    static let dim = 64
    let generator = SyntheticRows(seed: 6, dim: ConcurrentProcessTests.dim)

    private func expected(_ row: Int) -> [Float] {
        floatsFromBF16(generator.bytes(row..<(row + 1), as: .bf16))
    }

    /// Reads rows from the store at `path` in a loop until `stop`; returns (rows checked, wrong
    /// rows, incomplete snapshots seen, unexpected errors).
    private func readLoop(_ path: String, seed: UInt64, stop: StopFlag) -> (Int, Int, Int, [String]) {
        var rng = SeededGenerator(seed: seed)
        var checked = 0, wrong = 0, partial = 0
        var errors: [String] = []
        while !stop.raised.load(ordering: .relaxed) {
            do {
                let store = try Store.open(at: path, cacheBytes: 1 << 20)
                let readable = store.readableRows
                if !store.isComplete { partial += 1 }
                guard readable > 0 else { continue }
                for row in [0, readable - 1] + (0..<6).map({ _ in Int(rng.next() % UInt64(readable)) }) {
                    checked += 1
                    if try store.row(row) != expected(row) { wrong += 1 }
                }
            } catch let error as StoreError {
                // Before the writer's first commit there is no store yet.
                switch error {
                case .notFound, .notAStore: usleep(1000)
                default: errors.append("\(error)")
                }
            } catch {
                errors.append("\(error)")
            }
        }
        return (checked, wrong, partial, errors)
    }

    /// Runs `memtool verify` in a loop until `stop`; returns (runs, runs that reported damage).
    private func verifyLoop(_ path: String, stop: StopFlag) throws -> (Int, [String]) {
        var runs = 0
        var bad: [String] = []
        while !stop.raised.load(ordering: .relaxed) {
            let r = try Tools.run(Tools.memtool, ["verify", path])
            runs += 1
            if r.status != 0 && !(r.stderr.contains("no store") || r.stderr.contains("interrupted")) {
                bad.append(r.stderr + r.stdout)
            }
        }
        return (runs, bad)
    }

    /// Starts reader threads and verifying processes, runs `writer`, stops them and checks their findings.
    private func withReaders(_ path: String, partialExpected: Bool, _ writer: () throws -> Void) throws {
        let stop = StopFlag()
        let results = Locked<[(Int, Int, Int, [String])]>([])
        let verifies = Locked<[(Int, [String])]>([])
        // Threads, not the shared dispatch pool, so all three loops run from the start.
        let group = DispatchGroup()
        func start(_ body: @escaping @Sendable () -> Void) {
            group.enter()
            Thread { body(); group.leave() }.start()
        }
        for t in 0..<2 {
            start {
                let r = readLoop(path, seed: UInt64(t), stop: stop)
                results.withLock { $0.append(r) }
            }
        }
        start {
            let r = (try? verifyLoop(path, stop: stop)) ?? (0, ["memtool could not be started"])
            verifies.withLock { $0.append(r) }
        }
        try writer()
        stop.raised.store(true, ordering: .relaxed)
        group.wait()
        let reads = results.withLock { $0 }, checks = verifies.withLock { $0 }
        #expect(reads.map(\.0).reduce(0, +) > 0, "the readers read nothing")
        #expect(reads.map(\.1).reduce(0, +) == 0, "rows read differ from the rows written")
        #expect(reads.flatMap(\.3).isEmpty, "\(reads.flatMap(\.3).prefix(3))")
        #expect(checks.flatMap(\.1).isEmpty, "\(checks.flatMap(\.1).prefix(3))")
        #expect(checks.map(\.0).reduce(0, +) > 0, "memtool verify never ran")
        if partialExpected {
            #expect(reads.map(\.2).reduce(0, +) > 0, "no reader saw the store while it was incomplete")
        }
    }

    @Test func readersWhileAnotherProcessCreatesTheStore() throws {
        let scratch = ScratchDirectory()
        let path = scratch.file("m.pkm")
        try withReaders(path, partialExpected: true) {
            let r = try Tools.memtool("create", path, "--synthetic", "--seed", "6", "--rows", "200000", "--dim", "64",
                                      "--heads", "1", "--key-dim", "16", "--commit-bytes", "262144")
            #expect(r.status == 0, "\(r.stderr)")
        }
    }

    @Test func readersWhileAnotherProcessCompactsTheStore() throws {
        let scratch = ScratchDirectory()
        let path = scratch.file("m.pkm")
        let made = try Tools.memtool("create", path, "--synthetic", "--seed", "6", "--rows", "60000", "--dim", "64", "--heads", "1", "--key-dim", "16")
        try #require(made.status == 0, "\(made.stderr)")
        try withReaders(path, partialExpected: false) {
            for args in [["--codec", "raw"], ["--codec", "zstd", "--rows-per-shard", "300"], [], ["--codec", "raw"]] {
                let r = try Tools.run(Tools.memtool, ["compact", path] + args)
                #expect(r.status == 0, "\(r.stderr)")
            }
        }
    }

    /// A layer removed by another process while `compact` rewrites the store in place: the
    /// removal waits for the compaction and is made on its copy, instead of on the file the copy
    /// replaces (where it was lost, the command having reported success, until 2026-12-07).
    @Test func aLayerRemovedDuringAnInPlaceCompactionIsKept() throws {
        let scratch = ScratchDirectory()
        let path = scratch.file("m.pkm")
        let made = try Tools.memtool("create", path, "--synthetic", "--rows", "200000", "--dim", "64", "--heads", "1", "--key-dim", "16")
        try #require(made.status == 0, "\(made.stderr)")
        let compaction = Process()
        compaction.executableURL = Tools.memtool
        compaction.arguments = ["compact", path, "--codec", "zstd", "--level", "19"]  // slow enough to overlap
        compaction.standardOutput = FileHandle.nullDevice
        compaction.standardError = FileHandle.nullDevice
        try compaction.run()
        while compaction.isRunning && !FileManager.default.fileExists(atPath: path + ".compacting") { usleep(500) }
        try #require(compaction.isRunning, "the compaction ended before the removal could start")
        let second = try Tools.memtool("compact", path)
        #expect(second.status == 1 && second.stderr.contains("is being written"), "\(second.stderr)")
        let removed = try Tools.memtool("remove-layer", path, "default")
        compaction.waitUntilExit()
        #expect(removed.status == 0, "\(removed.stderr)")
        #expect(removed.stderr.contains("is being written by another process") && removed.stderr.contains("waiting for that to finish"), "\(removed.stderr)")
        #expect(compaction.terminationStatus == 0)
        let store = try Store.open(at: path)
        #expect(try store.layerNames().isEmpty)
        #expect(store.layout.level == 19, "the removal was made on the compacted copy")
    }

    /// Two creates of one new store started together, from different seeds: one makes the store,
    /// the other waits for it and then refuses (a store from another source is there); the
    /// store is that of a clean run of the first. They used to interleave: the one that reported
    /// success left the other's keys over its own values, and verify called it sound.
    @Test func twoWritersOfOneNewStoreDoNotInterleave() throws {
        let scratch = ScratchDirectory()
        let path = scratch.file("m.pkm")
        let arguments = ["create", path, "--synthetic", "--rows", "262144", "--dim", "64", "--heads", "2", "--key-dim", "32"]
        let runs = (1...2).map { seed in
            let p = Process()
            p.executableURL = Tools.memtool
            p.arguments = arguments + ["--seed", "\(seed)"]
            let err = Pipe()
            p.standardOutput = FileHandle.nullDevice
            p.standardError = err
            return (p, err)
        }
        for (p, _) in runs { try p.run() }
        var stderrs: [String] = []
        for (p, err) in runs {
            stderrs.append(String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self))
            p.waitUntilExit()
        }
        let statuses = runs.map { $0.0.terminationStatus }
        try #require(statuses.sorted() == [0, 1], "exit statuses \(statuses): \(stderrs)")
        let loser = statuses.firstIndex(of: 1)!, winner = 1 - loser
        #expect(stderrs[loser].contains("store from another source"), "\(stderrs[loser])")  // complete, or still being written
        let clean = scratch.file("clean.pkm")
        try #require(try Tools.run(Tools.memtool, ["create", clean, "--synthetic", "--rows", "262144", "--dim", "64", "--heads", "2",
                                                   "--key-dim", "32", "--seed", "\(winner + 1)"]).status == 0)
        let (store, reference) = (try Store.open(at: path), try Store.open(at: clean))
        for name in try reference.tensorNames() { #expect(try store.tensor(named: name) == reference.tensor(named: name), "tensor \(name)") }
        for r in stride(from: 0, to: 262144, by: 4099) { #expect(try store.row(r) == reference.row(r), "row \(r)") }
    }

    /// An in-place compaction while a writer has the store open refuses at once, naming the
    /// reason, and leaves the file as it was; once the writer is gone it runs.
    @Test func anInPlaceCompactionRefusesWhileAWriterHasTheStoreOpen() throws {
        let scratch = ScratchDirectory()
        let path = scratch.file("m.pkm")
        let made = try Tools.memtool("create", path, "--synthetic", "--rows", "20000", "--dim", "64", "--heads", "1", "--key-dim", "16")
        try #require(made.status == 0, "\(made.stderr)")
        let original = try Data(contentsOf: URL(fileURLWithPath: path))
        withExtendedLifetime(try StoreWriter.editing(at: path)) { _ in
            do {
                try Compaction.run(path)
                Issue.record("the compaction ran while a writer had the store open")
            } catch {
                #expect("\(error)".contains("is being written"), "\(error)")
            }
        }
        #expect(try Data(contentsOf: URL(fileURLWithPath: path)) == original)
        #expect(!FileManager.default.fileExists(atPath: path + ".compacting"))
        try Compaction.run(path)
        #expect(try Store.open(at: path).verify().isSound)
    }

    /// A reader of another user, who cannot open the store's lock file, reads without LMDB's
    /// reader table, so writers cannot see it there: it refuses to begin while a writer holds the
    /// store, and while it reads, a writer waits (saying why) and an in-place compaction refuses.
    /// Until 2026-12-07 it read beside a writer unseen, and the writer could reuse its pages.
    /// Needs root, to run memtool as `nobody` (setpriv).
    @Test(.enabled(if: getuid() == 0 && FileManager.default.isExecutableFile(atPath: "/usr/bin/setpriv")))
    func aReaderThatCannotOpenTheLockFileHoldsWritersOff() throws {
        let scratch = ScratchDirectory()  // 0755: nobody reads the store but cannot write the lock file
        let path = scratch.file("m.pkm")
        let made = try Tools.memtool("create", path, "--synthetic", "--rows", "20000", "--dim", "64", "--heads", "1", "--key-dim", "16")
        try #require(made.status == 0, "\(made.stderr)")
        let asNobody = ["--reuid=65534", "--regid=65534", "--clear-groups", Tools.memtool.path]
        let setpriv = URL(fileURLWithPath: "/usr/bin/setpriv")
        let readable = try Tools.run(setpriv, asNobody + ["inspect", path])
        try #require(readable.status == 0, "nobody cannot read the store: \(readable.stderr)")
        try withExtendedLifetime(StoreWriter.editing(at: path)) { _ in
            let refused = try Tools.run(setpriv, asNobody + ["inspect", path])
            #expect(refused.status == 1 && refused.stderr.contains("while it is being written"), "\(refused.status) \(refused.stderr)")
        }
        let reader = Process()
        reader.executableURL = setpriv
        reader.arguments = asNobody + ["bench", path, "--queries", "100000000", "--no-memory-limit", "--threads", "1"]
        reader.standardOutput = FileHandle.nullDevice
        reader.standardError = FileHandle.nullDevice
        try reader.run()
        defer { if reader.isRunning { kill(reader.processIdentifier, SIGKILL) } }
        while reader.isRunning && StoreWriter.wouldWait(at: path) == nil { usleep(1000) }
        try #require(reader.isRunning && StoreWriter.wouldWait(at: path) == .locklessReader)
        #expect(throws: StoreError.self) { try Compaction.run(path) }
        do { try Compaction.run(path) } catch { #expect("\(error)".contains("cannot open its lock file"), "\(error)") }
        let writer = Process()
        writer.executableURL = Tools.memtool
        writer.arguments = ["remove-layer", path, "default"]
        let writerErr = Pipe()
        writer.standardOutput = FileHandle.nullDevice
        writer.standardError = writerErr
        try writer.run()
        usleep(500_000)
        #expect(writer.isRunning, "the writer did not wait for the reader")
        kill(reader.processIdentifier, SIGKILL)
        reader.waitUntilExit()
        let said = String(decoding: writerErr.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        writer.waitUntilExit()
        #expect(writer.terminationStatus == 0, "\(said)")
        #expect(said.contains("cannot open its lock file") && said.contains("waiting for it to close the store"), "\(said)")
        #expect(try Store.open(at: path).layerNames().isEmpty)
    }

    /// Readers killed while holding LMDB reader slots: each open clears the slots of dead
    /// processes (`mdb_reader_check`), so 150 kills (more than the 126 slots) leave few in use.
    @Test func readerSlotsOfKilledProcessesAreReclaimed() throws {
        let scratch = ScratchDirectory()
        let path = scratch.file("m.pkm")
        let made = try Tools.memtool("create", path, "--synthetic", "--rows", "60000", "--dim", "64", "--heads", "1", "--key-dim", "16")
        try #require(made.status == 0, "\(made.stderr)")
        for i in 0..<150 {
            _ = try Tools.memtoolKilled(["verify", path], after: useconds_t(30_000 + (i % 5) * 10_000))
        }
        let store = try Store.open(at: path)
        #expect(try store.verify().isSound)
        #expect(try store.storageStatistics().readersUsed <= 8)
    }
}

final class StopFlag: Sendable { let raised = Atomic<Bool>(false) }
