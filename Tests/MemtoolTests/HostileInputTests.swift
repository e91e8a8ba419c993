import Foundation
import Testing
import _MemorySupport
import TestSupport
@testable import MemoryStore
import TensorFiles

@Suite struct HostileInputTests {
    /// Runs an import of `file` and expects exit 1 with `message` on stderr and no complete store.
    func expectRefused(_ scratch: ScratchDirectory, _ file: String, _ message: String, extra: [String] = []) throws {
        let store = scratch.file("h-\(UUID().uuidString).pkm")
        let result = try Tools.run(Tools.memtool, ["import", store, "--from", file] + extra)
        #expect(result.status == 1, "exit \(result.status) for \(message)")
        #expect(result.stderr.contains(message), "stderr was: \(result.stderr)")
        #expect(!result.stderr.contains("Fatal error"))
        if FileManager.default.fileExists(atPath: store) {
            #expect((try? Store.open(at: store).isComplete) != true)
        }
    }

    func writeSafetensors(_ path: String, header: String, data: [UInt8] = [], lengthOverride: UInt64? = nil) {
        var bytes = [UInt8]()
        withUnsafeBytes(of: (lengthOverride ?? UInt64(header.utf8.count)).littleEndian) { bytes += $0 }
        bytes += Array(header.utf8) + data
        #expect(FileManager.default.createFile(atPath: path, contents: Data(bytes)))
    }

    @Test func hostileSafetensorsAreRefusedWithTheirReason() throws {
        let scratch = ScratchDirectory()
        let good = #"{"values":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}"#
        let cases: [(String, UInt64?, [UInt8], String)] = [
            ("{", nil, [], "header length 1 is too small"),
            (#"{"a":"#, nil, [], "header is not a JSON object"),
            (good, 1 << 40, [], "exceeds the 104857600-byte limit"),
            (good, 1000, [], "runs past the end of the file"),
            (good, nil, [UInt8](repeating: 0, count: 8), "lie outside the 8 data bytes"),
            (#"{"values":{"dtype":"F32","shape":[4,4],"data_offsets":[0,16]}}"#, nil, [UInt8](repeating: 0, count: 16), "needs 64 bytes, data_offsets give 16"),
            (#"{"values":{"dtype":"F32","shape":[1099511627776,1099511627776],"data_offsets":[0,16]}}"#, nil, [UInt8](repeating: 0, count: 16), "invalid shape"),
            (#"{"values":{"dtype":"F64","shape":[2],"data_offsets":[0,16]}}"#, nil, [UInt8](repeating: 0, count: 16), "unsupported dtype F64"),
            (#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#, nil, [UInt8](repeating: 0, count: 12), "overlap"),
            (#"{"__metadata__":{"topk":5}}"#, nil, [], "is not a string"),
            (good, nil, [UInt8](repeating: 0, count: 16), "tensor 'row_keys' is missing"),
        ]
        for (i, (header, length, data, message)) in cases.enumerated() {
            let file = scratch.file("bad\(i).safetensors")
            writeSafetensors(file, header: header, data: data, lengthOverride: length)
            try expectRefused(scratch, file, message)
        }
        let tiny = scratch.file("tiny.safetensors")
        #expect(FileManager.default.createFile(atPath: tiny, contents: Data([1, 2, 3])))
        try expectRefused(scratch, tiny, "too short")
    }

    @Test func hostileNPYFilesAreRefusedWithTheirReason() throws {
        let scratch = ScratchDirectory()
        let script = """
        import numpy as np, os, sys
        d = sys.argv[1]
        for name in ['pickled', 'fortran', 'bigendian', 'truncated']: os.makedirs(os.path.join(d, name), exist_ok=True)
        np.save(os.path.join(d, 'pickled', 'values.npy'), np.array([{'a': 1}, None], dtype=object), allow_pickle=True)
        np.save(os.path.join(d, 'fortran', 'values.npy'), np.asfortranarray(np.ones((3, 4), dtype=np.float32)))
        np.save(os.path.join(d, 'bigendian', 'values.npy'), np.ones((3, 4), dtype='>f4'))
        np.save(os.path.join(d, 'truncated', 'values.npy'), np.ones((30, 4), dtype=np.float32))
        p = os.path.join(d, 'truncated', 'values.npy'); open(p, 'r+b').truncate(os.path.getsize(p) - 10)
        """
        let made = try Tools.python(["-c", script, scratch.path])
        try #require(made.status == 0, "\(made.stderr)")
        try expectRefused(scratch, scratch.file("pickled"), "object arrays (pickled Python objects) are refused")
        try expectRefused(scratch, scratch.file("fortran"), "Fortran-order arrays are not supported")
        try expectRefused(scratch, scratch.file("bigendian"), "big-endian dtype '>f4' is not supported")
        try expectRefused(scratch, scratch.file("truncated"), "needs 480 data bytes, the file holds 470")
    }

    @Test func inconsistentOrNonFiniteCheckpointsAreRefused() throws {
        let scratch = ScratchDirectory()
        let script = """
        import numpy as np, os, sys
        d = sys.argv[1]
        def save(case, **t):
            os.makedirs(os.path.join(d, case), exist_ok=True)
            for k, v in t.items(): np.save(os.path.join(d, case, k + '.npy'), v)
        f = np.float32
        save('shapes', values=np.ones((64, 8), f), row_keys=np.ones((2, 1, 8, 4), f), col_keys=np.ones((3, 1, 8, 4), f))
        save('grid', values=np.ones((60, 8), f), row_keys=np.ones((2, 1, 8, 4), f), col_keys=np.ones((2, 1, 8, 4), f))
        k = np.ones((2, 1, 8, 4), f); k[1, 0, 3, 2] = np.nan
        save('nan', values=np.ones((64, 8), f), row_keys=k, col_keys=np.ones((2, 1, 8, 4), f))
        save('map', values=np.ones((16, 8), f), row_keys=np.ones((2, 1, 8, 4), f), col_keys=np.ones((2, 1, 8, 4), f),
             projectors=np.ones((4, 8, 8), f), virtual_map=np.zeros(64, np.int64))
        """
        let made = try Tools.python(["-c", script, scratch.path])
        try #require(made.status == 0, "\(made.stderr)")
        try expectRefused(scratch, scratch.file("shapes"), "col_keys has shape [3, 1, 8, 4], which disagrees with row_keys [2, 1, 8, 4]")
        try expectRefused(scratch, scratch.file("grid"), "make a grid of 8 x 8 slots, which is not a whole multiple E of the 60 rows of values [60, 8]")
        try expectRefused(scratch, scratch.file("nan"), "tensor 'row_keys' is invalid: contains NaN or infinity")
        try expectRefused(scratch, scratch.file("map"), "makes it not a permutation")
        let usage = try Tools.memtool("import", scratch.file("u.pkm"), "--from", scratch.file("grid"), "--rename", "values")
        #expect(usage.status == 2 && usage.stderr.contains("--rename takes CANONICAL=NAME_IN_FILE"))
    }

    @Test func queriesOfTheWrongShapeAreRefused() throws {
        let scratch = ScratchDirectory()
        let path = scratch.file("m.pkm")
        try #require(try Tools.memtool("create", path, "--synthetic", "--rows", "4096", "--dim", "16", "--heads", "2", "--key-dim", "8", "--topk", "4").status == 0)
        let made = try Tools.python(["-c", "import numpy as np, sys; np.save(sys.argv[1], np.ones((3, 2, 2, 9), np.float32)); q = np.ones((3, 2, 2, 8), np.float32); q[1,1,0,0] = np.inf; np.save(sys.argv[2], q)",
                                     scratch.file("q.npy"), scratch.file("inf.npy")])
        try #require(made.status == 0, "\(made.stderr)")
        let wrong = try Tools.memtool("query", path, "--queries", scratch.file("q.npy"), "--output", scratch.file("o.npy"))
        #expect(wrong.status == 1 && wrong.stderr.contains("the store needs [B, 2, 2, 8] of float32"))
        let inf = try Tools.memtool("query", path, "--queries", scratch.file("inf.npy"), "--output", scratch.file("o.npy"))
        #expect(inf.status == 1 && inf.stderr.contains("query 1, head 1 contains NaN or infinity"))
    }

    /// An output path that names a store (or its lock file) is refused, whatever writes it, and
    /// the store still opens whole; a full device is an error, not a success.
    @Test func outputsNeverReplaceAStoreAndAFullDeviceFails() throws {
        let scratch = ScratchDirectory()
        let path = scratch.file("m.pkm")
        try #require(try Tools.memtool("create", path, "--synthetic", "--rows", "4096", "--dim", "16", "--heads", "2", "--key-dim", "8", "--topk", "4").status == 0)
        let made = try Tools.python(["-c", "import numpy as np, sys; np.save(sys.argv[1], np.ones((3, 2, 2, 8), np.float32))", scratch.file("q.npy")])
        try #require(made.status == 0, "\(made.stderr)")
        let before = try Data(contentsOf: URL(fileURLWithPath: path))
        let attempts: [[String]] = [
            ["query", path, "--queries", scratch.file("q.npy"), "--output", path],
            ["query", path, "--queries", scratch.file("q.npy"), "--output", scratch.file("o.npy"), "--indices", path + "-lock"],
            ["export", path, "--to", path],
            ["bench", path, "--queries", "8", "--json", path],
        ]
        for arguments in attempts {
            let result = try Tools.run(Tools.memtool, arguments)
            #expect(result.status == 1, "\(arguments): exit \(result.status)")
            #expect(result.stderr.contains("holds an LMDB database or lock file (a store?); not replacing it"), "\(arguments): \(result.stderr)")
        }
        #expect(try Data(contentsOf: URL(fileURLWithPath: path)) == before)
        #expect(try Store.open(at: path).verify().isSound)
        let twice = try Tools.memtool("query", path, "--queries", scratch.file("q.npy"), "--output", scratch.file("o.npy"), "--weights", scratch.file("o.npy"))
        #expect(twice.status == 2 && twice.stderr.contains("must name different files"), "\(twice.stderr)")
        let nowhere = try Tools.memtool("bench", path, "--queries", "8", "--json", scratch.file("no/such/b.json"))
        #expect(nowhere.status == 1 && nowhere.stderr.contains("cannot write: the directory"), "\(nowhere.stderr)")
        if FileManager.default.fileExists(atPath: "/dev/full") {
            let full = try Tools.memtool("query", path, "--queries", scratch.file("q.npy"), "--output", "/dev/full")
            #expect(full.status == 1 && full.stderr.contains("/dev/full: cannot write: No space left on device"), "\(full.stderr)")
            let export = try Tools.memtool("export", path, "--to", "/dev/full")
            #expect(export.status == 1 && export.stderr.contains("No space left on device"), "\(export.stderr)")
            var st = stat()
            #expect(stat("/dev/full", &st) == 0 && st.st_mode & S_IFMT == S_IFCHR, "/dev/full must still be the device")
        }
    }

    /// A directory, a pipe or a device where a store or tensor file is expected is refused at
    /// once (a pipe used to block the command for good), and compact --output never replaces one.
    @Test func filesThatAreNotRegularAreRefused() throws {
        let scratch = ScratchDirectory()
        let path = scratch.file("m.pkm"), pipe = scratch.file("pipe")
        try #require(try Tools.memtool("create", path, "--synthetic", "--rows", "4096", "--dim", "16", "--heads", "2", "--key-dim", "8", "--topk", "4").status == 0)
        try #require(mkfifo(pipe, 0o600) == 0)
        #expect(FileManager.default.createFile(atPath: scratch.file("q.npy"), contents: Data("\u{93}NUMPY".utf8)))
        let cases: [([String], String)] = [
            (["inspect", scratch.path], "is not a readable store: it is a directory"),
            (["inspect", pipe], "is not a readable store: it is not a regular file"),
            (["create", scratch.path, "--synthetic", "--rows", "64"], "it is a directory"),
            (["query", path, "--queries", pipe, "--output", scratch.file("o.npy")], "is not a regular file (a device, pipe or socket)"),
            (["import", scratch.file("n.pkm"), "--from", pipe], "is not a regular file (a device, pipe or socket)"),
            (["import", scratch.file("n.pkm"), "--from", scratch.file("q.npy")], "is one .npy file: import takes a .safetensors file or a directory of .npy files"),
            (["compact", path, "--output", pipe], "is not a regular file: compact --output writes a store file there"),
            (["create", scratch.file("no/such/m.pkm"), "--synthetic", "--rows", "64"], "cannot create '\(scratch.file("no/such/m.pkm"))': No such file or directory"),
        ]
        for (arguments, message) in cases {
            let result = try Tools.run(Tools.memtool, arguments)
            #expect(result.status == 1 && result.stderr.contains(message), "\(arguments): exit \(result.status), \(result.stderr)")
        }
        var st = stat()
        #expect(lstat(pipe, &st) == 0 && st.st_mode & S_IFMT == S_IFIFO)
        #expect(!FileManager.default.fileExists(atPath: pipe + "-lock"))
    }

    /// Every name of a store leads to one lock file (LMDB's reader table): a reader that came
    /// through a link with a lock file of its own would be invisible to writers. An in-place
    /// compaction through a link replaces the file and leaves the link.
    @Test func aStoreReachedThroughALinkSharesItsLockFile() throws {
        let scratch = ScratchDirectory()
        let path = scratch.file("m.pkm"), link = scratch.file("link.pkm")
        try #require(try Tools.memtool("create", path, "--synthetic", "--rows", "4096", "--dim", "16", "--heads", "2", "--key-dim", "8", "--topk", "4").status == 0)
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: path)
        let made = try Tools.python(["-c", "import numpy as np, sys; np.save(sys.argv[1], np.ones((3, 2, 2, 8), np.float32))", scratch.file("q.npy")])
        try #require(made.status == 0, "\(made.stderr)")
        #expect(try Tools.memtool("query", link, "--queries", scratch.file("q.npy"), "--output", scratch.file("o.npy")).status == 0)
        #expect(try Tools.memtool("compact", link, "--codec", "raw").status == 0)
        #expect(try Tools.memtool("compact", path, "--output", link, "--codec", "zstd").status == 0)
        #expect(!FileManager.default.fileExists(atPath: link + "-lock"))
        #expect(!FileManager.default.fileExists(atPath: link + ".compacting"))
        #expect(try FileManager.default.destinationOfSymbolicLink(atPath: link) == path)
        let inspected = try Tools.memtool("inspect", link, "--json")
        #expect(inspected.status == 0 && inspected.stdout.contains("\"codec\" : \"zstd\""), "\(inspected.stdout)")
        #expect(try Store.open(at: path).verify().isSound)
    }
}
