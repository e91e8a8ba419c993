import ArgumentParser
import Foundation
import MemoryLayer
import MemoryStore

struct Verify: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Decode every shard and tensor and check their checksums, and every layer against the value table.",
        discussion: "Exits 0 when the store is sound, 1 with every damaged shard or tensor, or inconsistent layer, named otherwise.")

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
        var layersChecked: Int
        var bytesDecoded: Int
        var problems: [String]
    }

    func run() throws {
        try runReportingErrors {
            let s = try Store.open(at: store, cacheBytes: 0)
            let progress = ProgressReporter("verify", unit: "shards")
            progress.begin()
            let result = try s.verify { progress.update($0, of: $1) }
            var problems = result.problems.map(\.description)
            // Each layer's record, tensors and shapes, against the one value table it reads.
            let layers = s.isComplete ? try s.layerNames() : []
            for name in layers {
                do { try MemoryLayer.check(store: s, name: name) } catch { problems.append("layer '\(name)': \(error)") }
            }
            let sound = problems.isEmpty
            let report = Report(path: store, sound: sound, complete: s.isComplete, shardsChecked: result.shardsChecked,
                                tensorsChecked: result.tensorsChecked, layersChecked: layers.count, bytesDecoded: result.bytesDecoded,
                                problems: problems)
            if json {
                print(try jsonString(report))
            } else {
                for p in report.problems { print("damaged: \(p)") }
                print("\(sound ? "sound" : "DAMAGED"): \(result.shardsChecked) shards, \(result.tensorsChecked) tensors, \(layers.count) layer\(layers.count == 1 ? "" : "s"), " +
                      "\(humanBytes(result.bytesDecoded)) decoded, \(problems.count) problems" +
                      (s.isComplete ? "" : " (incomplete: \(s.state.rowsCommitted) of \(s.layout.rows) rows committed)"))
            }
            if !sound { throw ExitCode.failure }
        }
    }
}
