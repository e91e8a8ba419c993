import ArgumentParser
import Foundation
import MemoryImport
import MemoryLayer
import MemoryStore

struct Verify: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Decode every shard and tensor and check their checksums, and every layer against the value table.",
        discussion: """
            Exits 0 when the store is sound, 1 with every damaged shard or tensor, or inconsistent layer, named otherwise. \
            Given the directory `memtool split` wrote, checks every part and that the parts tile the table exactly \
            (one split, no gap or overlap, the same layers in each).
            """)

    @Argument(help: "Path of the store, or of a split's directory.")
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

    struct SplitReport: Encodable {
        var path: String
        var sound: Bool
        var split: String
        var parts: Int
        var problems: [String]
    }

    func run() throws {
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: store, isDirectory: &isDirectory), isDirectory.boolValue {
            return try runReportingErrors { try verifySplit() }
        }
        try runReportingErrors {
            let s = try Store.open(at: store, cacheBytes: 0, checksInBackground: false)  // checks every row itself
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

    private func verifySplit() throws {
        let progress = ProgressReporter("verify", unit: "parts")
        progress.begin()
        let (manifest, problems) = try MemorySplit.verify(store) { progress.update($0, of: $1) }
        let report = SplitReport(path: store, sound: problems.isEmpty, split: manifest.split, parts: manifest.parts.count, problems: problems)
        if json {
            print(try jsonString(report))
        } else {
            for p in problems { print("damaged: \(p)") }
            print("\(report.sound ? "sound" : "DAMAGED"): split \(manifest.split) by \(manifest.axis.rawValue), \(manifest.parts.count) parts tiling a " +
                  "\(manifest.tableRows) x \(manifest.tableDim) table, \(manifest.layers.count) layer\(manifest.layers.count == 1 ? "" : "s"), \(problems.count) problems")
        }
        if !report.sound { throw ExitCode.failure }
    }
}
