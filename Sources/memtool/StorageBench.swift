import ArgumentParser
import Foundation
import MemoryBenchmarks
import MemoryStore
import _MemorySupport

struct StorageBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "storage-bench",
        abstract: "Measure import, compression, decoding and random row reads of the storage layer.",
        discussion: "Each element type and codec is measured on the same synthetic N(0, 0.02) rows, with a flat mmap'd file of those rows as the baseline in the same run.")

    @Option(help: "Rows in each test table.")
    var rows: Int = 1 << 20

    @Option(help: "Row dimension.")
    var dim: Int = 64

    @Option(help: "Rows per shard (default: 64 KiB of raw rows).")
    var rowsPerShard: Int?

    @Option(help: "zstd level.")
    var level: Int = 3

    @Option(help: "Random single-row reads per measurement.")
    var reads: Int = 1 << 20

    @Option(help: "Element types to measure, comma-separated.")
    var dtypes: String = "bf16,f16,f32"

    @Option(help: "Directory for the temporary stores.")
    var directory: String = NSTemporaryDirectory()

    @Option(help: "Write the results as JSON to this file.")
    var json: String?

    func validate() throws {
        guard reads >= 1, reads <= 1 << 28 else { throw ValidationError("--reads must be in 1...2^28 (got \(reads))") }
        for t in try elementTypes() {
            let layout = TableLayout(elementType: t, rows: rows, dim: dim, rowsPerShard: rowsPerShard, level: level)
            do { try layout.validate() } catch let error as StoreError { throw ValidationError(error.description) }
        }
        // The rows are generated in memory once per type, and written to a store and a flat file.
        let rowBytes = checkedProduct(rows, dim, 4)
        try MachineLimits.requireMemory(rowBytes.flatMap { r in checkedProduct(reads, 8).map { r + $0 } },
                                        for: "\(rows) rows of \(dim) elements and \(reads) read positions")
        try MachineLimits.requireDisk(rowBytes, at: (directory as NSString).appendingPathComponent("x"), for: "the test stores and flat files")
    }

    private func elementTypes() throws -> [ElementType] {
        try dtypes.split(separator: ",").map { s in
            guard let t = ElementType(rawValue: String(s)), t.isFloatingPoint else { throw ValidationError("unknown dtype '\(s)'") }
            return t
        }
    }

    func run() throws {
        var c = StorageBenchmark.Configuration()
        c.rows = rows; c.dim = dim; c.rowsPerShard = rowsPerShard; c.level = level; c.randomReads = reads; c.directory = directory
        let types = try elementTypes()
        let bench = StorageBenchmark(configuration: c)
        var results: [StorageBenchmark.Result] = []
        print("dtype codec      rows/shard import MB/s shards/raw file/raw decode GB/s  store rows/s   flat rows/s store/flat uncached rows/s")
        try runReportingErrors {
            if let json { try OutputFile.check(json) }  // before the run
            for t in types {
                for v in StorageBenchmark.variants where StorageBenchmark.measures(v, t) {
                    let r = try bench.run(elementType: t, variant: v)
                    results.append(r)
                    print(String(format: "%-5@ %-10@ %10d %11.0f %10.3f %8.3f %11.2f %13.0f %13.0f %10.2f %15.0f",
                                 r.elementType.rawValue, r.codec, r.rowsPerShard, r.importMBps, r.shardRatio, r.fileRatio,
                                 r.decodeGBps, r.storeRowReadsPerSecond, r.flatRowReadsPerSecond, r.storeToFlat, r.uncachedRowReadsPerSecond))
                }
            }
            if let json { try writeJSON(results, to: json) }
        }
    }
}
