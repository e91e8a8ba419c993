import ArgumentParser
import MemoryStore

/// How the value table is laid out on disk.
struct StorageOptions: ParsableArguments {
    @Option(help: "Rows per shard (default: 64 KiB of rows for zstd; for raw and nibble, as many as fit in a 1 MiB shard with its header and row checksums; Spec/FORMAT.md, \"Shard size\").")
    var rowsPerShard: Int?

    @Option(help: "Shard codec: zstd (byte planes + zstd), raw (uncompressed, read in place) or nibble (bf16/f32 rows coded one by one, read in place).")
    var codec: CodecKind = .zstd

    @Option(help: "zstd compression level, 1 to 22.")
    var level: Int = 3

    @Flag(help: "Train a zstd dictionary on the first shards and store it in the store.")
    var trainDictionary = false

    @Option(help: ArgumentHelp("Raw bytes of rows per commit: a killed run resumes from the last commit.", valueName: "bytes"))
    var commitBytes: Int = 64 << 20

    func validate() throws {
        guard commitBytes > 0, commitBytes <= 1 << 36 else { throw ValidationError("--commit-bytes must be in 1...2^36 (got \(commitBytes))") }
    }

    /// Writer options with this commit size and a progress reporter.
    func writerOptions(_ progress: ProgressReporter) -> StoreWriter.Options {
        var options = StoreWriter.Options()
        options.batchBytes = commitBytes
        options.createdBy = "memtool \(memtoolVersion)"
        options.progress = { done, total in progress.update(done, of: total) }
        return options
    }

    func layout(elementType: ElementType, rows: Int, dim: Int) throws -> TableLayout {
        let layout = TableLayout(elementType: elementType, rows: rows, dim: dim, rowsPerShard: rowsPerShard,
                                 codec: codec, level: level, dictionary: trainDictionary)
        do { try layout.validate() } catch let error as StoreError { throw ValidationError(error.description) }
        return layout
    }
}

extension CodecKind: ExpressibleByArgument {}
/// `--dtype`: one of the value types (f32, f16, bf16).
extension ElementType: ExpressibleByArgument {
    public init?(argument: String) {
        guard let type = ElementType(rawValue: argument), type.isFloatingPoint else { return nil }
        self = type
    }

    public static var allValueStrings: [String] { valueTypes.map(\.rawValue) }
}
