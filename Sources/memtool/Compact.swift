import ArgumentParser
import MemoryStore

struct Compact: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Rewrite a store without free pages, optionally re-encoding its shards.",
        discussion: "The new store is built beside the target, verified, and renamed over it: a process killed at any point leaves the original intact. In place, writers (imports, layers added or removed) in other processes wait until it has finished and then write the new file; it refuses to start while one is writing.")

    @Argument(help: "Path of the store.")
    var store: String

    @Option(help: "Write the compacted store here instead of replacing the original.")
    var output: String?

    @Option(help: "Re-encode shards with this codec (raw, nibble or zstd; Spec/FORMAT.md, 'Shard blobs').")
    var codec: CodecKind?

    @Option(help: "Re-encode with this zstd level.")
    var level: Int?

    @Option(help: "Re-shard with this many rows per shard.")
    var rowsPerShard: Int?

    @Flag(help: "Re-encode with a zstd dictionary trained on the first shards.")
    var trainDictionary = false

    func run() throws {
        try runReportingErrors {
            var changes = Compaction.Changes()
            changes.codec = codec; changes.level = level; changes.rowsPerShard = rowsPerShard
            if trainDictionary { changes.dictionary = true }
            let progress = ProgressReporter("compact", unit: "shards")
            progress.begin()
            let (before, after) = try Compaction.run(store, destination: output, changes: changes) { progress.update($0, of: $1) }
            print("compacted \(store)\(output.map { " into \($0)" } ?? ""): \(humanBytes(before)) -> \(humanBytes(after))")
        }
    }
}
