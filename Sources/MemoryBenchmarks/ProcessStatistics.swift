import Foundation

// What the benchmarks measure about the process and the machine around a run.

/// The process's peak resident set size so far.
package func peakResidentBytes() -> Int {
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    return usage.ru_maxrss * 1024
}

/// A resident-set figure of `/proc/self/status` (`RssAnon:`, `RssFile:`) in bytes, or 0 where unavailable.
package func residentBytes(_ field: String) -> Int {
    procField("/proc/self/status", field) * 1024  // given in kB
}

/// Bytes this process caused to be read from storage (`read_bytes` of `/proc/self/io`), or 0 where unavailable.
package func diskReadBytes() -> Int {
    procField("/proc/self/io", "read_bytes:")
}

/// The first number on the line of `file` that starts with `field`, or 0 where unavailable.
private func procField(_ file: String, _ field: String) -> Int {
    guard let text = try? String(contentsOfFile: file, encoding: .utf8) else { return 0 }
    for line in text.split(separator: "\n") where line.hasPrefix(field) {
        return line.dropFirst(field.count).split(whereSeparator: { $0 == " " || $0 == "\t" }).first.flatMap { Int($0) } ?? 0
    }
    return 0
}

/// Writes dirty pages and drops the page cache (root only); returns whether it could.
package func dropPageCache() -> Bool {
    sync()
    guard let handle = FileHandle(forWritingAtPath: "/proc/sys/vm/drop_caches") else { return false }
    defer { try? handle.close() }
    return (try? handle.write(contentsOf: Data("3\n".utf8))) != nil
}

package extension Duration {
    /// The duration in seconds as a Double.
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) * 1e-18 }
}
