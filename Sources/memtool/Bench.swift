import ArgumentParser
import Foundation
import MemoryLayer
import MemoryStore

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure lookups on a store: search alone and the whole lookup, with latencies and cache figures.")

    @Argument(help: "Path of the store (made by create or import).")
    var store: String

    @Option(help: "Queries to measure.")
    var queries: Int = 4096

    @Option(help: "Queries per batch.")
    var batch: Int = 64

    @Option(help: "Worker threads (default: all cores).")
    var threads: Int = ProcessInfo.processInfo.activeProcessorCount

    @Option(help: "Query distribution: uniform or clustered.")
    var distribution: String = "clustered"

    @Option(help: "Queries run before measuring.")
    var warmup: Int = 256

    @Option(help: "Bytes of decoded shards to cache.")
    var cacheBytes: Int = 1 << 30

    @Option(help: "Seed of the queries.")
    var seed: UInt64 = 1

    @Option(help: "Write the report as JSON to this file.")
    var json: String?

    func validate() throws {
        guard queries >= 1, batch >= 1, threads >= 1 else { throw ValidationError("--queries, --batch and --threads must be at least 1") }
        guard ["uniform", "clustered"].contains(distribution) else { throw ValidationError("--distribution must be uniform or clustered") }
    }

    func run() throws {
        try runReportingErrors {
            let layer = try MemoryLayer(store: Store.open(at: store, cacheBytes: cacheBytes), threads: threads)
            var options = LookupBenchmark.Options()
            options.queries = queries; options.batch = batch; options.warmupQueries = warmup; options.seed = seed
            options.distribution = distribution == "uniform" ? .uniform : .clustered(centres: 256, spread: 0.25)
            let r = try LookupBenchmark.run(layer: layer, options: options, label: distribution)
            let c = layer.config
            print("memory     \(c.scoring.rawValue), H=\(c.heads) d=\(c.keyDim) k=\(c.topK)\(c.scoring == .pkm ? "" : " m=\(c.topM) r=\(c.rank) c=\(c.cores)"), " +
                  "\(c.virtualSlots) virtual slots (\(c.gridRows)x\(c.gridCols)) over \(c.physicalRows) rows x \(c.valueDim) \(layer.store.layout.elementType.rawValue), E=\(c.expansion)")
            print("run        \(r.queries) \(r.distribution) queries, batch \(r.batch), \(r.threads) threads, open \(String(format: "%.2f", r.openMilliseconds)) ms")
            print(String(format: "search     %10.0f queries/s   batch p50 %.2f ms  p90 %.2f ms  p99 %.2f ms", r.searchQueriesPerSecond,
                         r.searchBatchMilliseconds.p50, r.searchBatchMilliseconds.p90, r.searchBatchMilliseconds.p99))
            print(String(format: "lookup     %10.0f queries/s   batch p50 %.2f ms  p90 %.2f ms  p99 %.2f ms", r.lookupQueriesPerSecond,
                         r.lookupBatchMilliseconds.p50, r.lookupBatchMilliseconds.p90, r.lookupBatchMilliseconds.p99))
            let hitRate = r.cacheHitRate.map { String(format: "%.1f%%", 100 * $0) } ?? "n/a (raw shards are read in place)"
            print(String(format: "split      %.0f%% scoring and selection, %.0f%% lookup-reduce; %.2f M rows/s; cache hit rate %@; peak RSS %@",
                         100 * r.searchShare, 100 * (1 - r.searchShare), r.rowsPerSecond / 1e6, hitRate, humanBytes(r.peakRSSBytes)))
            if let json { try jsonString(r).write(toFile: json, atomically: true, encoding: .utf8) }
        }
    }
}
