import ArgumentParser
import MemoryFormat
import MemoryImport

struct Split: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Cut a store's value table into part stores, to serve it from several processes or machines (Spec/DISTRIBUTED.md).",
        discussion: """
            Writes DIR/part-0.pkm ... and DIR/split.json. By rows, part K holds rows [K*N/P, (K+1)*N/P) of the table; by dims, \
            columns [K*v/P, (K+1)*v/P) of every row. Every part carries all the store's layers (keys, cores, projectors), so any \
            of them can search. The parts are checked before DIR appears; killed at any moment, DIR does not exist. \
            `memtool verify DIR` checks a split: every part, and that the parts tile the table.
            """)

    @Argument(help: "Path of the (complete) store to split.")
    var store: String

    @Option(help: "Number of parts.")
    var parts: Int

    @Option(help: "Cut the table by rows (each part holds a row range) or by dims (each part a slice of every row's columns).")
    var by: TablePart.Axis = .rows

    @Option(help: "The new directory to write the parts and split.json into.")
    var out: String

    @Flag(help: "Print split.json instead of a summary.")
    var json = false

    func run() throws {
        try runReportingErrors {
            let progress = ProgressReporter("split", unit: "shards")
            progress.begin()
            let manifest = try MemorySplit.run(store, parts: parts, axis: by, into: out, createdBy: "memtool \(memtoolVersion)") {
                progress.update($0, of: $1)
            }
            if json {
                print(try jsonString(manifest))
                return
            }
            print("split \(store) by \(by.rawValue) into \(manifest.parts.count) parts in \(out) (split \(manifest.split)):")
            for entry in manifest.parts {
                print("  \(entry.file)  \(by.rawValue) \(entry.first)..<\(entry.first + entry.count)")
            }
        }
    }
}

extension TablePart.Axis: ExpressibleByArgument {}
