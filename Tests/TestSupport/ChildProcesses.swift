import Foundation

/// Runs the built `memtool` and the repository's Python tools as child processes.
package enum Tools {
    /// The package root, found from this file's location.
    package static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// The `memtool` under test: `$MEMTOOL` when set (Tools/test.sh points it at the plain
    /// release build that users run), else the one beside the test bundle in the build products.
    package static let memtool: URL = {
        if let path = ProcessInfo.processInfo.environment["MEMTOOL"], !path.isEmpty { return URL(fileURLWithPath: path) }
        var dir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        for _ in 0..<3 {
            let candidate = dir.appendingPathComponent("memtool")
            if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
            dir = dir.deletingLastPathComponent()
        }
        return root.appendingPathComponent(".build/debug/memtool")
    }()

    package struct Result {
        package var status: Int32
        package var stdout: String
        package var stderr: String
    }

    /// Runs `executable` with `arguments` to completion.
    @discardableResult
    package static func run(_ executable: URL, _ arguments: [String]) throws -> Result {
        let process = Process()
        process.executableURL = executable
        process.arguments = arguments
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        // Read both pipes before waiting so a chatty child cannot block on a full pipe.
        nonisolated(unsafe) var errData = Data()
        let errRead = DispatchGroup()
        errRead.enter()
        Thread {
            errData = err.fileHandleForReading.readDataToEndOfFile()
            errRead.leave()
        }.start()
        let outData = out.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        errRead.wait()
        return Result(status: process.terminationStatus, stdout: String(decoding: outData, as: UTF8.self),
                      stderr: String(decoding: errData, as: UTF8.self))
    }

    package static func memtool(_ arguments: String...) throws -> Result { try run(memtool, arguments) }

    package static func python(_ arguments: [String]) throws -> Result {
        try run(URL(fileURLWithPath: "/usr/bin/env"), ["python3"] + arguments)
    }
}

extension Tools {
    /// Runs `memtool arguments` with its output discarded and kills it with SIGKILL once
    /// `ready()` holds (asked every 0.5 ms while it runs); returns the process once it has ended
    /// (`terminationReason` says whether it finished before the kill).
    package static func memtoolKilled(_ arguments: [String], once ready: () -> Bool) throws -> Process {
        let process = Process()
        process.executableURL = memtool
        process.arguments = arguments
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        while process.isRunning && !ready() { usleep(500) }
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        return process
    }

    /// ``memtoolKilled(_:once:)`` `delay` microseconds after the start.
    package static func memtoolKilled(_ arguments: [String], after delay: useconds_t) throws -> Process {
        try memtoolKilled(arguments) { usleep(delay); return true }
    }
}
