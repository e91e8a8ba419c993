import ArgumentParser
import Foundation
import MemoryStore

struct Create: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create a store filled with a synthetic value table.",
        discussion: """
            Values are drawn from N(0, 0.02), deterministic per seed. An interrupted run leaves a store \
            marked incomplete; running the same command again resumes it.
            """)

    @Argument(help: "Path of the store file to create.")
    var store: String

    @Flag(help: "Fill the table with synthetic Gaussian values (the only source create supports).")
    var synthetic = false

    @Option(help: "Seed of the synthetic values.")
    var seed: UInt64 = 0

    @Option(help: "Physical rows in the value table.")
    var rows: Int = 1 << 16

    @Option(help: "Row dimension.")
    var dim: Int = 64

    @Option(help: "Element type of stored values: f32, f16 or bf16.")
    var dtype: ElementType = .bf16

    @OptionGroup var storage: StorageOptions

    func validate() throws {
        guard synthetic else { throw ValidationError("create needs --synthetic (use import for real tables)") }
        guard rows >= 1 else { throw ValidationError("--rows must be at least 1") }
        guard dim >= 1 else { throw ValidationError("--dim must be at least 1") }
    }

    func run() throws {
        let layout = try storage.layout(elementType: dtype, rows: rows, dim: dim)
        try runReportingErrors {
            let progress = ProgressReporter("create", unit: "rows")
            var options = StoreWriter.Options()
            options.progress = { done, total in progress.update(done, of: total) }
            let writer = try StoreWriter.createOrResume(at: store, layout: layout,
                                                        metadata: ["source": "synthetic", "seed": String(seed)], options: options)
            if writer.rowsCommitted > 0 { printError("resuming at row \(writer.rowsCommitted) of \(rows)") }
            progress.begin()
            let generator = SyntheticRows(seed: seed, dim: dim)
            let step = max(layout.rowsPerShard, (8 << 20) / layout.rowBytes / layout.rowsPerShard * layout.rowsPerShard)
            var next = writer.rowsCommitted
            while next < rows {
                let end = min(rows, next + step)
                try writer.append(generator.bytes(next..<end, as: dtype))
                next = end
            }
            try writer.finish()
            let opened = try Store.open(at: store, cacheBytes: 0)
            let stats = try opened.storageStatistics()
            print("created \(store): \(rows) rows x \(dim) \(dtype.rawValue), \(stats.shards) shards, " +
                  "\(humanBytes(stats.fileBytes)) on disk for \(humanBytes(layout.rawBytes)) raw")
        }
    }
}
