import ArgumentParser
import Foundation
import MemoryStore

struct Verify: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Decode every shard and tensor and check their checksums.",
        discussion: "Exits 0 when the store is sound, 1 with every damaged shard or tensor named otherwise.")

    @Argument(help: "Path of the store.")
    var store: String

    @Flag(help: "Print a JSON document instead of text.")
    var json = false

    struct Report: Encodable {
        var path: String
        var sound: Bool
        var complete: Bool
        var shardsChecked: Int
        var tensorsChecked: Int
        var bytesDecoded: Int
        var problems: [String]
    }

    func run() throws {
        try runReportingErrors {
            let s = try Store.open(at: store, cacheBytes: 0)
            let progress = ProgressReporter("verify", unit: "shards")
            progress.begin()
            let result = try s.verify { progress.update($0, of: $1) }
            let report = Report(path: store, sound: result.isSound, complete: s.isComplete, shardsChecked: result.shardsChecked,
                                tensorsChecked: result.tensorsChecked, bytesDecoded: result.bytesDecoded,
                                problems: result.problems.map(\.description))
            if json {
                print(try jsonString(report))
            } else {
                for p in report.problems { print("damaged: \(p)") }
                print("\(result.isSound ? "sound" : "DAMAGED"): \(result.shardsChecked) shards, \(result.tensorsChecked) tensors, " +
                      "\(humanBytes(result.bytesDecoded)) decoded, \(result.problems.count) problems" +
                      (s.isComplete ? "" : " (incomplete: \(s.state.rowsCommitted) of \(s.layout.rows) rows committed)"))
            }
            if !result.isSound { throw ExitCode.failure }
        }
    }
}
