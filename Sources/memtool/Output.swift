import Foundation
import MemoryStore
import _MemorySupport

/// Writes a line to standard error.
func printError(_ line: String) {
    FileHandle.standardError.write(Data((line + "\n").utf8))
}

/// Says so on standard error when a writer of `store` is about to wait for another writer or an
/// in-place compaction of it, or a reader without its lock file (in any process), which would
/// otherwise look like a hang.
func noteWriterWait(_ store: String) {
    switch StoreWriter.wouldWait(at: store) {
    case .writer:
        printError("'\(store)' is being written by another process (an import, a create, a layer change or an in-place compaction); waiting for that to finish")
    case .locklessReader:
        printError("'\(store)' is being read by a process that cannot open its lock file (another user's); waiting for it to close the store")
    case nil:
        break
    }
}

/// Progress on standard error: a redrawn bar with rate and ETA on a terminal, a plain line every
/// few seconds otherwise. Silent for work that ends within about a second.
final class ProgressReporter: @unchecked Sendable {
    // Invariant: only called from the thread that runs the command.
    private let label: String
    private let unit: String
    private let start = Date()
    private var lastPrint = Date.distantPast
    private let isTerminal = isatty(2) != 0
    private var printed = false

    init(_ label: String, unit: String) {
        self.label = label
        self.unit = unit
    }

    func update(_ done: Int, of total: Int) {
        let now = Date()
        let elapsed = now.timeIntervalSince(start)
        guard elapsed > 1, now.timeIntervalSince(lastPrint) >= (isTerminal ? 0.2 : 5) || done == total else { return }
        lastPrint = now
        let rate = Double(done) / max(elapsed, 1e-9)
        let eta = rate > 0 ? Double(total - done) / rate : 0
        let fraction = total > 0 ? Double(done) / Double(total) : 1
        if isTerminal {
            let width = 30
            let filled = Int(fraction * Double(width))
            let bar = String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled)
            printError("\u{1B}[1A\u{1B}[2K\(label) [\(bar)] \(Int(fraction * 100))% \(format(rate)) \(unit)/s, ETA \(Int(eta)) s")
        } else {
            printError("\(label): \(done)/\(total) \(unit) (\(Int(fraction * 100))%), \(format(rate)) \(unit)/s, ETA \(Int(eta)) s")
        }
        printed = true
    }

    private func format(_ x: Double) -> String {
        x >= 1e6 ? String(format: "%.1fM", x / 1e6) : x >= 1e3 ? String(format: "%.1fk", x / 1e3) : String(format: "%.0f", x)
    }

    /// Reserves the line the terminal bar redraws.
    func begin() { if isTerminal { printError("") } }
}

/// Formats a byte count for people.
func humanBytes(_ n: Int) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"]
    var value = Double(n)
    var unit = 0
    while value >= 1024 && unit < units.count - 1 { value /= 1024; unit += 1 }
    return unit == 0 ? "\(n) B" : String(format: "%.2f %@", value, units[unit])
}

/// Pretty JSON of an encodable value, keys sorted, for `--json`.
func jsonString(_ value: some Encodable) throws -> String {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    return String(decoding: try encoder.encode(value), as: UTF8.self)
}

/// Writes `jsonString(value)` to the file `--json` names (an ``OutputFile``).
func writeJSON(_ value: some Encodable, to path: String) throws {
    try OutputFile.write(Data((jsonString(value) + "\n").utf8), to: path)
}
