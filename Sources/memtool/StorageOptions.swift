import ArgumentParser
import MemoryStore

/// How the value table is laid out on disk.
struct StorageOptions: ParsableArguments {
    @Option(help: "Rows per shard (default: as many as fit in 64 KiB raw, a power of two).")
    var rowsPerShard: Int?

    @Option(help: "Shard codec: zstd (byte planes + zstd) or raw (uncompressed, read in place).")
    var codec: CodecKind = .zstd

    @Option(help: "zstd compression level, 1 to 22.")
    var level: Int = 3

    @Flag(help: "Train a zstd dictionary on the first shards and store it in the store.")
    var trainDictionary = false

    func layout(elementType: ElementType, rows: Int, dim: Int) throws -> TableLayout {
        let layout = TableLayout(elementType: elementType, rows: rows, dim: dim, rowsPerShard: rowsPerShard,
                                 codec: codec, level: level, dictionary: trainDictionary)
        do { try layout.validate() } catch let error as StoreError { throw ValidationError(error.description) }
        return layout
    }
}

extension CodecKind: ExpressibleByArgument {}
extension ElementType: ExpressibleByArgument {}
