import ArgumentParser
import Foundation

/// Refuses, with the numbers, requests this machine cannot hold, before any work starts: a
/// request that would exhaust memory or disk part-way is a crash or a half-written store.
enum MachineLimits {
    /// Physical memory of the machine.
    static var memoryBytes: Int { Int(clamping: ProcessInfo.processInfo.physicalMemory) }

    /// Bytes free for an unprivileged writer on the filesystem that holds (or would hold) `path`.
    static func freeDiskBytes(forFileAt path: String) -> Int? {
        var directory = (path as NSString).deletingLastPathComponent
        if directory.isEmpty { directory = "." }
        var s = statvfs()
        guard statvfs(directory, &s) == 0 else { return nil }
        return Int(clamping: UInt64(s.f_bavail).multipliedReportingOverflow(by: UInt64(s.f_frsize)).partialValue)
    }

    /// Throws unless `bytes` (nil: beyond any count) fit in physical memory.
    static func requireMemory(_ bytes: Int?, for what: String) throws {
        let limit = memoryBytes
        guard let bytes, bytes <= limit else {
            throw ValidationError("\(what) need\(bytes.map { " \(humanBytes($0))" } ?? " more than 2^63 bytes") of memory; this machine has \(humanBytes(limit))")
        }
    }

    /// Throws unless at least `bytes` (nil: beyond any count) are free on the filesystem of `path`.
    static func requireDisk(_ bytes: Int?, at path: String, for what: String) throws {
        guard let free = freeDiskBytes(forFileAt: path) else { return }  // the writer reports what it cannot open
        guard let bytes, bytes <= free else {
            throw ValidationError("\(what) need\(bytes.map { " at least \(humanBytes($0))" } ?? " more than 2^63 bytes") of disk at '\(path)'; \(humanBytes(free)) are free")
        }
    }

}
