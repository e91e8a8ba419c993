import ArgumentParser
import Foundation
import MemoryBenchmarks
import MemoryLayer
import MemoryRetrieval
import MemoryStore
import _MemorySupport
import TensorFiles

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure lookups on a store against the memory system's limit and the brute force, in the same run.",
        discussion: """
            Per batch: the search, the store's lookup-reduce, and the same reduce by the same kernel over a flat \
            mmap'd copy of the values with no checks (the memory limit; written next to the store unless \
            --no-memory-limit). Grids up to 2^22 slots also run the brute force that scores every slot. --cold drops \
            the page cache first (root only) and skips warm-up. --reduced-rows writes the rows and weights reduced, \
            for Tools/peers/embedding_bag.py to reduce the same rows with PyTorch in the same session.
            """)

    @Argument(help: "Path of the store (made by create or import).")
    var store: String

    @Option(help: "Queries to measure.")
    var queries: Int = 4096

    @Option(help: "Queries per batch.")
    var batch: Int = 64

    @Option(help: "Worker threads (default: all cores).")
    var threads: Int = ProcessInfo.processInfo.activeProcessorCount

    @Option(help: "Query distribution: uniform, clustered, or replay:Q.npy (float32 [N, H, 2, d]).")
    var distribution: String = "clustered"

    @Option(help: "Queries run before measuring (not with --cold), at most 2^24.")
    var warmup: Int = 256

    @Flag(help: "Drop the page cache before opening the store, and skip the warm-up.")
    var cold = false

    @Option(help: "Bytes of decoded shards to cache (zstd), or of a nibble table's slots to copy into memory once checked when they fit.")
    var cacheBytes: Int = 1 << 30

    @Flag(name: [.customLong("no-memory-limit"), .customLong("no-upper-bound")],
          help: "Skip the memory limit (it needs a flat copy of the raw values on disk).")
    var noMemoryLimit = false

    @Flag(help: "Read raw rows without checking their checksums, to measure what the checks cost.")
    var noRowChecks = false

    @Flag(help: "Open the store without its background check of the rows (Store.open checksInBackground:; never with --cold), so that reads test each row's group until they have checked every group themselves.")
    var noBackgroundCheck = false

    @Flag(help: "Open the store with its table decoded into memory in huge pages (Store.open resident:), as a server with the memory to spare would.")
    var resident = false

    @Option(help: "Write the physical rows and weights of the measured reduces to PATH.rows.npy and PATH.weights.npy.")
    var reducedRows: String?

    @Flag(help: "Skip the brute force over all slots (run by default on grids up to 2^22 slots).")
    var noBruteForce = false

    @Option(help: "Where to keep the flat copy for the memory limit (default: STORE.flat, reused while newer than the store and holding its rows, rewritten otherwise).")
    var flatPath: String?

    @Option(help: "Seed of the queries.")
    var seed: UInt64 = 1

    @Option(help: "The layer to measure (default: the store's only layer).")
    var layer: String?

    @Option(help: "'all': run every layer of the store on every batch in turn, as a model does, and report each and the total.")
    var layers: String?

    @Option(help: "Write the report as JSON to this file.")
    var json: String?

    func validate() throws {
        guard queries >= 1, batch >= 1, threads >= 1 else { throw ValidationError("--queries, --batch and --threads must be at least 1") }
        guard threads <= Self.maxThreads else { throw ValidationError("--threads must be at most \(Self.maxThreads) (got \(threads))") }
        guard warmup >= 0, warmup <= Self.maxWarmup else { throw ValidationError("--warmup must be in 0...\(Self.maxWarmup) (got \(warmup))") }
        guard cacheBytes >= 0 else { throw ValidationError("--cache-bytes must not be negative (got \(cacheBytes))") }
        guard ["uniform", "clustered"].contains(distribution) || distribution.hasPrefix("replay:") else {
            throw ValidationError("--distribution must be uniform, clustered or replay:FILE.npy")
        }
        guard layers == nil || layers == "all" else { throw ValidationError("--layers takes 'all' (got '\(layers!)')") }
        guard layers == nil || layer == nil else { throw ValidationError("give --layer NAME or --layers all, not both") }
        guard layers == nil || !cold, layers == nil || reducedRows == nil, layers == nil || !distribution.hasPrefix("replay:") else {
            throw ValidationError("--layers all runs warm, generated queries and writes no reduced rows")
        }
    }

    static let maxThreads = 1024, maxWarmup = 1 << 24

    /// Refuses a run whose query batches do not fit in memory (they are generated before timing).
    private func checkMemory(_ c: RetrievalConfig) throws {
        let queryBytes = checkedProduct(max(queries, batch), c.heads, 2, c.keyDim, 4)
        let resultBytes = checkedProduct(batch, c.heads, c.topK, 8 + 4 * c.cores, 2)
        try MachineLimits.requireMemory(queryBytes.flatMap { q in resultBytes.map { q + $0 } },
                                        for: "\(max(queries, batch)) queries of [\(c.heads), 2, \(c.keyDim)] floats in batches of \(batch)")
    }

    /// Replayed queries: a floating .npy of shape [N >= 1, H, 2, d] for this layer.
    private func replayedQueries(_ path: String, _ c: RetrievalConfig) throws -> [Float] {
        let entry = try NPYFile.entry(path: path, name: "queries")
        guard [.f32, .f16, .bf16].contains(entry.dtype), entry.shape.count == 4, entry.shape[0] >= 1,
              entry.shape[1] == c.heads, entry.shape[2] == 2, entry.shape[3] == c.keyDim else {
            throw TensorFileError(path, "replayed queries have shape \(entry.shape) and dtype \(entry.dtype.safetensorsName), " +
                                  "the store needs [N >= 1, \(c.heads), 2, \(c.keyDim)] of float32, float16 or bfloat16")
        }
        return try entry.load().floats()
    }

    func run() throws {
        try runReportingErrors {
            if let json { try OutputFile.check(json) }  // before the run
            let probe = try Store.open(at: store, cacheBytes: 0)
            let names = layers == nil ? [try probe.layerKeys(layer).name] : try probe.layerNames()
            guard let config = try MemoryLayer.retrievalConfig(of: probe, layer: names.first) else { throw StoreError.noLayer(path: store) }
            try checkMemory(config)
            var options = LookupBenchmark.Options()
            options.queries = queries; options.batch = batch; options.warmupQueries = warmup; options.seed = seed
            if noBruteForce { options.bruteForceLimit = 0 }
            switch distribution {
            case "uniform": options.distribution = .uniform
            case "clustered": options.distribution = .clustered(centres: 256, spread: 0.25)
            default: options.distribution = .replay(try replayedQueries(String(distribution.dropFirst(7)), config))
            }
            options.reducedRowsPath = reducedRows
            if !noMemoryLimit {
                let path = flatPath ?? store + ".flat"
                let source = try Store.open(at: store, cacheBytes: 0)
                let fresh = (try? FileManager.default.attributesOfItem(atPath: path)[.modificationDate] as? Date).flatMap { flat in
                    (try? FileManager.default.attributesOfItem(atPath: store)[.modificationDate] as? Date).map { flat > $0 }
                } ?? false
                // A table that fits in a quarter of memory is read into it in huge pages (the
                // limit of memory reads); a larger one is mapped, read in 2 MiB folios first (the
                // limit of the page cache), and in a cold run mapped as it is (that of the disk).
                let inMemory = !cold && source.layout.rawBytes <= MachineLimits.memoryBytes / 4
                let kept = fresh ? try? FlatTable(path: path, dim: source.layout.dim, elementType: source.layout.elementType, inMemory: inMemory, largeFolios: !cold) : nil
                options.flatTable = try kept.flatMap { try $0.holdsRows(of: source) ? $0 : nil } ?? FlatTable(path: path, from: source, inMemory: inMemory, largeFolios: !cold)
            }
            var dropped = false
            if cold {
                dropped = dropPageCache()
                if !dropped { printError("warning: could not drop the page cache (needs root); the run is only as cold as the cache allows") }
            }
            // A cold run measures reads from storage: no background check, which would read the table in.
            let opened = try Store.open(at: store, cacheBytes: cacheBytes, checksRows: !noRowChecks, checksInBackground: !noBackgroundCheck && !cold,
                                        resident: resident)
            if layers != nil {
                let served = try names.map { try MemoryLayer(store: opened, name: $0, threads: threads) }
                return try reportLayers(LayeredBenchmark.run(layers: served, options: options, label: distribution))
            }
            let layer = try MemoryLayer(store: opened, name: names[0], threads: threads)
            let r = try LookupBenchmark.run(layer: layer, options: options, label: distribution, cold: cold)
            let c = layer.config
            print("layer      \(layer.name): \(c.scoring.rawValue), H=\(c.heads) d=\(c.keyDim) k=\(c.topK)\(c.scoring == .pkm ? "" : " m=\(c.topM) r=\(c.rank) c=\(c.cores)"), " +
                  "\(c.virtualSlots) virtual slots (\(c.gridRows)x\(c.gridCols)) over \(c.physicalRows) rows x \(c.valueDim) \(layer.store.layout.elementType.rawValue) \(r.codec), E=\(c.expansion)")
            print("run        \(r.queries) \(r.distribution) queries, batch \(r.batch), \(r.threads) threads, \(cold ? (dropped ? "cold (page cache dropped)" : "cold (cache not dropped)") : "warm"), open \(String(format: "%.2f", r.openMilliseconds)) ms")
            print(String(format: "search     %10.0f queries/s   batch p50 %.2f ms  p90 %.2f ms  p99 %.2f ms", r.searchQueriesPerSecond,
                         r.searchBatchMilliseconds.p50, r.searchBatchMilliseconds.p90, r.searchBatchMilliseconds.p99))
            print(String(format: "lookup     %10.0f queries/s   batch p50 %.2f ms  p90 %.2f ms  p99 %.2f ms", r.lookupQueriesPerSecond,
                         r.lookupBatchMilliseconds.p50, r.lookupBatchMilliseconds.p90, r.lookupBatchMilliseconds.p99))
            let hitRate = r.cacheHitRate.map { String(format: "%.1f%%", 100 * $0) } ?? "n/a (rows read in place)"
            print(String(format: "reduce     %10.0f queries/s   %.2f M rows/s batch after batch (batch p50 %.3f ms, p99 %.3f ms); within lookups %.2f M rows/s, %.0f%% of lookup time",
                         r.reduceQueriesPerSecond, r.rowsPerSecond / 1e6, r.reduceBatchMilliseconds.p50, r.reduceBatchMilliseconds.p99,
                         r.lookupReduceRowsPerSecond / 1e6, 100 * (1 - r.searchShare)))
            print("           cache hit rate \(hitRate); row checks \(r.rowChecks ? "on" : "off")\(r.resident ? " (resident table, checked at open)" : "")\(checkState(r)); kernel \(r.kernel); BLAS \(r.blasKernels)")
            if let limit = r.memoryLimitReduceQueriesPerSecond, let ratio = r.reduceToMemoryLimit {
                print(String(format: "memory lim %10.0f queries/s   %.2f M rows/s, same kernel over a flat copy %@, no checks; store/limit = %.2f (outputs agree to %.1e)",
                             limit, limit * Double(r.rowsPerQuery) / 1e6, r.memoryLimitInMemory == true ? "in huge pages" : "mapped",
                             ratio, r.memoryLimitMaxRelativeDifference ?? 0))
            }
            if let bf = r.bruteForceQueriesPerSecond, let agree = r.bruteForceAgreement {
                print(String(format: "brute      %10.0f queries/s   scoring all slots; product keys are %.0fx faster; %.1f%% of slots agree",
                             bf, r.searchQueriesPerSecond / bf, 100 * agree))
            }
            print(String(format: "io         %.0f bytes decompressed and %.0f bytes read from disk per query (%.0f reads/s of 4 KiB); peak RSS %@ (at the end: %@ anonymous, %@ of mapped files)",
                         r.bytesDecompressedPerQuery, r.diskBytesPerQuery, r.diskReadsPerSecond, humanBytes(r.peakRSSBytes),
                         humanBytes(r.residentAnonymousBytes), humanBytes(r.residentFileBytes)))
            if let json { try writeJSON(r, to: json) }
        }
    }

    /// How far the store had checked its rows when the reduce passes began.
    private func checkState(_ r: LookupBenchmark.Report) -> String {
        guard r.rowChecks && !r.resident && !r.cold && r.codec != "zstd" else { return "" }  // zstd: every decode checks
        let waited = r.backgroundCheckWaitMilliseconds.map { String(format: ", after waiting %.0f ms for the background check", $0) } ?? ""
        let copied = r.slotsInMemory ? "; the slots then copied into memory, within the cache budget" : ""
        return r.everyRowChecked ? " (every row checked before the reduce passes\(waited)\(copied))" : " (rows left unchecked at the reduce passes\(waited))"
    }

    private func reportLayers(_ r: LayeredBenchmark.Report) throws {
        print("run        \(r.layers.count) layers of \(store) on every batch in turn: \(r.queries) \(r.distribution) queries, batch \(r.batch), \(r.threads) threads, \(r.codec)")
        for l in r.layers {
            print(String(format: "layer      %@: lookup %8.0f queries/s, batch p50 %.2f ms p99 %.2f ms; reduce %.2f M rows/s", l.name,
                         l.lookupQueriesPerSecond, l.lookupBatchMilliseconds.p50, l.lookupBatchMilliseconds.p99, l.reduceRowsPerSecond / 1e6) +
                  (l.memoryLimitReduceRowsPerSecond.map { String(format: " (memory limit %.2f M rows/s)", $0 / 1e6) } ?? ""))
        }
        print(String(format: "all layers %8.0f queries/s through every layer, batch p50 %.2f ms p99 %.2f ms; reduce %.2f M rows/s", r.queriesPerSecond,
                     r.batchMilliseconds.p50, r.batchMilliseconds.p99, r.reduceRowsPerSecond / 1e6) +
              (r.reduceToMemoryLimit.map { String(format: ", store/memory limit = %.2f (outputs agree to %.1e)", $0, r.memoryLimitMaxRelativeDifference ?? 0) } ?? ""))
        print("           peak RSS \(humanBytes(r.peakRSSBytes))")
        if let json { try writeJSON(r, to: json) }
    }
}
