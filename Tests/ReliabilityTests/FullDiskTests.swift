import Foundation
import MemoryBenchmarks
import Testing
import TestSupport
import MemoryStore

/// A small tmpfs the test mounts (root only) so writes run out of space for real.
final class SmallFilesystem {
    /// Holds the mount point; released (and removed) only after deinit has unmounted.
    private let home = ScratchDirectory()
    let path: String

    /// Whether this process may mount a tmpfs: tried once with a throwaway mount.
    static let available: Bool = (try? SmallFilesystem(bytes: 1 << 20)) != nil

    init(bytes: Int) throws {
        path = home.file("disk")
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        guard getuid() == 0 else { throw StoreError.invalidArgument("mounting needs root") }
        let mounted = try Tools.run(URL(fileURLWithPath: "/bin/mount"), ["-t", "tmpfs", "-o", "size=\(bytes)", "tmpfs", path])
        guard mounted.status == 0 else { throw StoreError.invalidArgument("cannot mount a tmpfs: \(mounted.stderr)") }
    }

    func resize(_ bytes: Int) throws { try remount(["size=\(bytes)"]) }

    /// Remounts with the given options (`ro`, `rw`, `size=N`).
    func remount(_ options: [String]) throws {
        let r = try Tools.run(URL(fileURLWithPath: "/bin/mount"), ["-o", (["remount"] + options).joined(separator: ","), path])
        guard r.status == 0 else { throw StoreError.invalidArgument("cannot remount the tmpfs: \(r.stderr)") }
    }

    func file(_ name: String) -> String { (path as NSString).appendingPathComponent(name) }

    deinit { _ = try? Tools.run(URL(fileURLWithPath: "/bin/umount"), [path]) }
}

/// Writes into a 3 MiB filesystem: each ends in an error that says the disk is full, exit 1,
/// and the store as it was at its last commit; with space freed the same command finishes.
@Suite(.enabled(if: SmallFilesystem.available, "needs root to mount a tmpfs"))
struct FullDiskTests {
    let synthetic = ["--synthetic", "--seed", "4", "--rows", "60000", "--dim", "64", "--heads", "1", "--key-dim", "16"]

    private func sha256(_ path: String) throws -> String {
        try Tools.run(URL(fileURLWithPath: "/usr/bin/sha256sum"), [path]).stdout.split(separator: " ")[0].description
    }

    @Test func createOnAFullDiskKeepsItsLastCommitAndResumes() throws {
        let disk = try SmallFilesystem(bytes: 3 << 20)
        let store = disk.file("m.pkm")
        let args = ["create", store] + synthetic + ["--commit-bytes", "262144"]
        let failed = try Tools.run(Tools.memtool, args)
        #expect(failed.status == 1)
        #expect(failed.stderr.contains("is full") && failed.stderr.contains("run the same command to resume"), "\(failed.stderr)")
        #expect(!failed.stderr.contains("Fatal error"))

        let partial = try Store.open(at: store)
        #expect(!partial.isComplete && partial.state.rowsCommitted > 0)
        #expect(try partial.verify().isSound)
        let generator = SyntheticRows(seed: 4, dim: 64)
        let last = partial.state.rowsCommitted - 1
        #expect(try partial.row(last) == floatsFromBF16(generator.bytes(last..<(last + 1), as: .bf16)))

        try disk.resize(16 << 20)
        let resumed = try Tools.run(Tools.memtool, args)
        #expect(resumed.status == 0, "\(resumed.stderr)")
        let done = try Store.open(at: store)
        #expect(done.isComplete)
        #expect(try done.verify().isSound)
        #expect(try done.row(59_999) == floatsFromBF16(generator.bytes(59_999..<60_000, as: .bf16)))
    }

    @Test func importOnAFullDiskKeepsItsLastCommit() throws {
        let scratch = ScratchDirectory()
        let source = scratch.file("m.pkm"), checkpoint = scratch.file("m.safetensors")
        #expect(try Tools.run(Tools.memtool, ["create", source] + synthetic).status == 0)
        #expect(try Tools.run(Tools.memtool, ["export", source, "--to", checkpoint]).status == 0)
        let disk = try SmallFilesystem(bytes: 3 << 20)
        let store = disk.file("i.pkm")
        let failed = try Tools.run(Tools.memtool, ["import", store, "--from", checkpoint, "--commit-bytes", "262144"])
        #expect(failed.status == 1)
        #expect(failed.stderr.contains("is full"), "\(failed.stderr)")
        let verify = try Tools.run(Tools.memtool, ["verify", store])
        #expect(verify.status == 0 && verify.stdout.contains("incomplete"), "\(verify.stdout)\(verify.stderr)")
    }

    @Test func compactionThatDoesNotFitLeavesTheStoreUnchanged() throws {
        let disk = try SmallFilesystem(bytes: 3 << 20)
        let store = disk.file("m.pkm")
        let small = ["create", store, "--synthetic", "--rows", "16000", "--dim", "64", "--heads", "1", "--key-dim", "16"]
        #expect(try Tools.run(Tools.memtool, small).status == 0)
        let before = try sha256(store)
        let failed = try Tools.run(Tools.memtool, ["compact", store, "--codec", "raw"])
        #expect(failed.status == 1)
        #expect(failed.stderr.contains("is full") && failed.stderr.contains("unchanged"), "\(failed.stderr)")
        #expect(try sha256(store) == before)
        #expect(!FileManager.default.fileExists(atPath: store + ".compacting"))
        #expect(try Tools.run(Tools.memtool, ["verify", store]).status == 0)
    }

    @Test func splitThatDoesNotFitLeavesNothing() throws {
        let disk = try SmallFilesystem(bytes: 16 << 20)
        let store = disk.file("m.pkm"), dir = disk.file("parts")
        let small = ["create", store, "--synthetic", "--rows", "16000", "--dim", "64", "--heads", "1", "--key-dim", "16"]
        #expect(try Tools.run(Tools.memtool, small).status == 0)
        // Room for the store and a fraction of its parts.
        let used = try FileManager.default.attributesOfItem(atPath: store)[.size] as? Int ?? 0
        try disk.resize(used + (400 << 10))
        let before = try sha256(store)
        let failed = try Tools.run(Tools.memtool, ["split", store, "--parts", "2", "--out", dir])
        #expect(failed.status == 1)
        #expect(failed.stderr.contains("is full") && failed.stderr.contains("unchanged"), "\(failed.stderr)")
        #expect(try sha256(store) == before)
        #expect(!FileManager.default.fileExists(atPath: dir) && !FileManager.default.fileExists(atPath: dir + ".splitting"))
        try disk.resize(16 << 20)
        #expect(try Tools.run(Tools.memtool, ["split", store, "--parts", "2", "--out", dir]).status == 0)
        #expect(try Tools.run(Tools.memtool, ["verify", dir]).status == 0)
    }

    /// A store on a read-only medium opens without a lock file (Spec/FORMAT.md, "Opening
    /// without a lock file"), with or without a stale one beside it, and answers queries.
    @Test(arguments: [false, true])
    func aStoreOnAReadOnlyMediumIsRead(keepLockFile: Bool) throws {
        let disk = try SmallFilesystem(bytes: 8 << 20)
        let store = disk.file("m.pkm")
        #expect(try Tools.run(Tools.memtool, ["create", store, "--synthetic", "--rows", "4096", "--dim", "16", "--heads", "1",
                                              "--key-dim", "8", "--topk", "4"]).status == 0)
        if !keepLockFile { try FileManager.default.removeItem(atPath: store + "-lock") }
        try disk.remount(["ro"])
        let verify = try Tools.run(Tools.memtool, ["verify", store])
        #expect(verify.status == 0 && verify.stdout.contains("sound"), "\(verify.stdout)\(verify.stderr)")
        #expect(keepLockFile == FileManager.default.fileExists(atPath: store + "-lock"))
        let inspect = try Tools.run(Tools.memtool, ["inspect", store])
        #expect(inspect.status == 0, "\(inspect.stderr)")
        let writer = try Tools.run(Tools.memtool, ["compact", store])
        #expect(writer.status == 1 && !writer.stderr.isEmpty)
        try disk.remount(["rw"])
    }
}
