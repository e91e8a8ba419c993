import Foundation
import Testing
import _MemorySupport
import TestSupport
import TensorFiles

/// Files written for users (``OutputFile``): only the file named changes, all at once.
@Suite struct OutputFileTests {
    private func contents(_ path: String) throws -> [UInt8] { Array(try Data(contentsOf: URL(fileURLWithPath: path))) }

    @Test func aLinkStaysALinkAndItsTargetKeepsItsMode() throws {
        let scratch = ScratchDirectory()
        let target = scratch.file("target.npy"), link = scratch.file("link.npy")
        #expect(FileManager.default.createFile(atPath: target, contents: Data([1]), attributes: [.posixPermissions: 0o600]))
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: target)
        let values: [Float] = [1, 2, 3]
        try values.withUnsafeBytes { try NPYFile.write(path: link, dtype: .f32, shape: [3], bytes: $0) }
        #expect(try FileManager.default.destinationOfSymbolicLink(atPath: link) == target)
        #expect(try NPYFile.entry(path: target, name: "x").shape == [3])
        #expect((try FileManager.default.attributesOfItem(atPath: target)[.posixPermissions] as? Int) == 0o600)
        #expect(try FileManager.default.contentsOfDirectory(atPath: scratch.path).sorted() == ["link.npy", "target.npy"])
    }

    @Test func aPipeIsWrittenWhereItIs() throws {
        let scratch = ScratchDirectory()
        let pipe = scratch.file("pipe")
        try #require(mkfifo(pipe, 0o600) == 0)
        let received = Locked<[UInt8]>([])
        let reader = Thread {
            guard let handle = FileHandle(forReadingAtPath: pipe) else { return }
            let bytes = handle.readDataToEndOfFile()
            received.withLock { $0 = Array(bytes) }
        }
        reader.start()
        try OutputFile.write(Data("report".utf8), to: pipe)
        while !reader.isFinished { usleep(1000) }
        #expect(received.withLock { $0 } == Array("report".utf8))
        var st = stat()
        #expect(lstat(pipe, &st) == 0 && st.st_mode & S_IFMT == S_IFIFO)
        // A reader that leaves at once: an error, not SIGPIPE.
        let quitter = Thread { if let handle = FileHandle(forReadingAtPath: pipe) { try? handle.close() } }
        quitter.start()
        #expect(throws: OutputFileError.self) { try OutputFile.write(Data(repeating: 1, count: 1 << 20), to: pipe) }
        while !quitter.isFinished { usleep(1000) }
    }

    @Test func anUnfinishedWriteLeavesTheOldFileAndNoPartialFile() throws {
        let scratch = ScratchDirectory()
        let path = scratch.file("out.safetensors")
        #expect(FileManager.default.createFile(atPath: path, contents: Data([7, 7, 7])))
        do {
            let writer = try SafetensorsWriter(path: path, tensors: [.init(name: "t", dtype: .f32, shape: [4])], metadata: [:])
            let half: [Float] = [1, 2]
            try half.withUnsafeBytes { try writer.write($0) }
            #expect(throws: TensorFileError.self) { try writer.finish() }
        }
        #expect(try contents(path) == [7, 7, 7])
        #expect(try FileManager.default.contentsOfDirectory(atPath: scratch.path) == ["out.safetensors"])
        #expect(throws: OutputFileError.self) { try OutputFile.write(Data([1]), to: scratch.path) }
    }

    @Test func twoWritersOfOneOutputNeverMixTheirBytes() throws {
        let scratch = ScratchDirectory()
        let path = scratch.file("out.bin")
        let first = try OutputFile(path: path), second = try OutputFile(path: path)
        try first.write(Data(repeating: 1, count: 4096))
        try second.write(Data(repeating: 2, count: 4096))
        try second.write(Data(repeating: 2, count: 4096))
        try first.write(Data(repeating: 1, count: 4096))
        try second.finish()
        try first.finish()
        #expect(try Data(contentsOf: URL(fileURLWithPath: path)) == Data(repeating: 1, count: 8192))
        #expect(try FileManager.default.contentsOfDirectory(atPath: scratch.path) == ["out.bin"])
    }

    @Test func aKilledWritersTemporaryFileIsRemovedByTheNext() throws {
        let scratch = ScratchDirectory()
        let path = scratch.file("out.bin")
        let child = Process()
        child.executableURL = URL(fileURLWithPath: "/bin/true")
        try child.run()
        child.waitUntilExit()  // a process id that is gone
        let dead = path + ".partial.\(child.processIdentifier).1", alive = path + ".partial.\(getpid()).999999"
        for leftover in [dead, alive] { #expect(FileManager.default.createFile(atPath: leftover, contents: Data([1]))) }
        try OutputFile.write(Data([2]), to: path)
        #expect(!FileManager.default.fileExists(atPath: dead))
        #expect(FileManager.default.fileExists(atPath: alive), "a live writer's file is left alone")
    }
}
