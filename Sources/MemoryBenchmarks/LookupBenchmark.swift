import Foundation
import MemoryLayer
import MemoryRetrieval
import MemoryStore
import TensorFiles

/// The offline lookup benchmark behind `memtool bench`. For each batch of deterministic queries
/// it times the search, the store's lookup-reduce, and the same reduce over a flat uncompressed
/// copy of the value table with the same kernel and no checks (the memory limit), and checks
/// that both reduces agree. On small grids it also times the brute force that scores every
/// slot, and checks the search against it. It can write the rows and weights it reduced, for a
/// peer (`Tools/peers/embedding_bag.py`) to reduce the same rows in the same session.
public struct LookupBenchmark {
    public struct Options: Sendable {
        public var queries = 4096
        public var batch = 64
        public var warmupQueries = 256
        public var distribution = QueryDistribution.clustered(centres: 256, spread: 0.25)
        public var seed: UInt64 = 1
        /// The flat copy for the memory limit; nil skips it.
        public var flatTable: FlatTable?
        /// Where to write the physical rows (int64 `[queries, H·k]`) and weights (float32, the
        /// first core's) of the measured reduces, as `PATH.rows.npy` and `PATH.weights.npy`.
        public var reducedRowsPath: String?
        /// Brute force runs on grids up to this many slots, over at most `bruteForceQueries` queries.
        public var bruteForceLimit = 1 << 22
        public var bruteForceQueries = 256
        public init() {}
    }

    /// Latency of one batch, in milliseconds.
    public struct Percentiles: Codable, Sendable {
        public var p50: Double
        public var p90: Double
        public var p99: Double

        init(_ samples: [Double]) {
            let s = samples.sorted()
            func at(_ q: Double) -> Double { s.isEmpty ? 0 : s[min(s.count - 1, Int(q * Double(s.count)))] }
            p50 = at(0.5); p90 = at(0.9); p99 = at(0.99)
        }
    }

    public struct Report: Codable, Sendable {
        public var queries: Int
        public var batch: Int
        public var threads: Int
        public var distribution: String
        public var cold: Bool
        public var virtualSlots: Int
        public var physicalRows: Int
        public var codec: String
        public var searchQueriesPerSecond: Double
        /// Search followed by the store's lookup-reduce.
        public var lookupQueriesPerSecond: Double
        public var reduceQueriesPerSecond: Double
        /// The same reduce over the flat uncompressed copy, with the same kernel and no checks;
        /// nil when not measured.
        public var memoryLimitReduceQueriesPerSecond: Double?
        /// `reduceQueriesPerSecond / memoryLimitReduceQueriesPerSecond`.
        public var reduceToMemoryLimit: Double?
        /// Largest relative difference between the store's and the flat copy's outputs.
        public var memoryLimitMaxRelativeDifference: Double?
        /// Earlier names of the three fields above (Spec/CLI.md keeps field names within a format version).
        public var upperBoundReduceQueriesPerSecond: Double?
        public var reduceToUpperBound: Double?
        public var upperBoundMaxRelativeDifference: Double?
        /// Whether the store checked rows against their checksums (`Store.checksRows`).
        public var rowChecks: Bool
        /// Whether the store's table was loaded into memory at open (`Store.isResident`).
        public var resident: Bool
        /// How long the run waited, after its lookups and before the reduce passes, for the
        /// store's background check to finish (`Store.waitForBackgroundCheck`); nil when none ran.
        public var backgroundCheckWaitMilliseconds: Double?
        /// Whether every row had been checked since open when the reduce passes began, so that
        /// they read without testing each row's group (`Store.everyRowChecked`).
        public var everyRowChecked: Bool
        /// Whether the reduce passes read a nibble table's slots copied into memory by its
        /// background check (`Store.readsSlotsInMemory`: the slots fit the cache budget).
        public var slotsInMemory: Bool
        /// Whether the memory limit's flat copy was read into huge-page memory (else mapped); nil when not measured.
        public var memoryLimitInMemory: Bool?
        /// The gather-reduce kernel in use: `avx2` or `portable`.
        public var kernel: String
        /// The OpenBLAS kernels the search's matrix products ran on (``BLASKernels/loaded``).
        public var blasKernels: String
        public var bruteForceQueriesPerSecond: Double?
        /// Share of the selected slots that the brute force also selects (1 for PKM, which is exact).
        public var bruteForceAgreement: Double?
        public var searchBatchMilliseconds: Percentiles
        public var lookupBatchMilliseconds: Percentiles
        /// The store's lookup-reduce alone, per batch.
        public var reduceBatchMilliseconds: Percentiles
        /// Share of lookup time spent in scoring and selection (the rest is lookup-reduce).
        public var searchShare: Double
        /// Value rows reduced per second by the store's reduce alone, batch after batch (in a
        /// cold run: within the lookups).
        public var rowsPerSecond: Double
        /// Value rows each query reduces (H·k).
        public var rowsPerQuery: Int
        /// Value rows reduced per second within the lookups, each batch's reduce after its search:
        /// rows read for the first time since open are checked against their checksums there.
        public var lookupReduceRowsPerSecond: Double
        /// Decoded-shard cache hits / shard reads; nil for raw stores, which read in place.
        public var cacheHitRate: Double?
        public var bytesDecompressedPerQuery: Double
        /// Bytes the kernel read from storage for the store's lookup-reduce per query (`/proc/self/io`
        /// read_bytes, counted around the store's reduce only).
        public var diskBytesPerQuery: Double
        /// Those bytes as 4 KiB reads per second of the lookups' reduce time.
        public var diskReadsPerSecond: Double
        public var openMilliseconds: Double
        public var peakRSSBytes: Int
        /// Resident anonymous memory (heap, caches) at the end of the run.
        public var residentAnonymousBytes: Int
        /// Resident pages of mapped files at the end of the run: the store's map (and the upper
        /// bound's flat copy when measured), reclaimable page cache.
        public var residentFileBytes: Int
    }

    /// Passes of the reduce alone; the fastest counts (Tools/peers/embedding_bag.py does the same).
    static let reducePasses = 3

    public static func run(layer: MemoryLayer, options: Options, label: String, cold: Bool) throws -> Report {
        let c = layer.config, store = layer.store
        let batches = max(1, options.queries / options.batch)
        var generator = QueryGenerator(config: c, distribution: options.distribution, seed: options.seed)
        let work = (0..<batches).map { _ in generator.next(batch: options.batch) }
        let flat = options.flatTable.map(FlatRows.init)
        let gates = layer.benchmarkGateInputs(batch: options.batch)
        if !cold {
            // The warm-up goes through the upper bound too, so both start with their pages mapped.
            var warm = QueryGenerator(config: c, distribution: options.distribution, seed: options.seed ^ 1)
            for _ in 0..<max(0, options.warmupQueries / options.batch) {
                let found = try layer.search(queries: warm.next(batch: options.batch), batch: options.batch)
                _ = try layer.reduce(found, gateInputs: gates)
                if let flat { _ = try layer.index.reduce(found, values: flat, gateInputs: gates) }
            }
        }
        let clock = ContinuousClock()
        // Lookups: each batch's search, then the store's reduce of its slots (rows read for the
        // first time since open are checked then).
        var searchTimes: [Double] = [], lookupReduceTimes: [Double] = []
        var hits = 0, misses = 0
        let decodedBefore = store.bytesDecoded
        var disk = 0  // read by the store's lookup-reduce only: the memory limit's flat copy reads too
        var searched: [SearchResult] = []
        for q in work {
            var found: SearchResult?
            let s = try clock.measure { found = try layer.search(queries: q, batch: options.batch) }
            let before = store.cacheStatistics
            let diskBefore = diskReadBytes()
            let r = try clock.measure { _ = try layer.reduce(found!, gateInputs: gates) }
            disk += diskReadBytes() - diskBefore
            let after = store.cacheStatistics
            hits += after.hits - before.hits
            misses += after.misses - before.misses
            searchTimes.append(s.seconds * 1e3)
            lookupReduceTimes.append(r.seconds * 1e3)
            searched.append(found!)
        }
        // The reduce alone, batch after batch as a peer is timed (the best of three passes, so
        // that every page is mapped): the store, then the memory limit (the same kernel over the
        // flat copy, no checks), whose outputs must agree. A timed pass drops each output as the
        // peer does, so its allocation reuses the last one's memory (kept, every output would
        // fault in fresh pages); the comparison is of one untimed pass of each. A cold run keeps
        // the reduces of its lookups, which are the ones that read from storage.
        var reduceTimes = lookupReduceTimes, flatTimes: [Double] = [], maxDifference = 0.0
        // The reduce passes measure a reader that has been serving for a while: the store's
        // background check of the groups in memory has finished (it runs at idle priority, so
        // waiting for it is what lets it run when every core is reducing).
        var waited: Duration?
        if !cold && store.checksInBackground {
            let start = clock.now
            if store.waitForBackgroundCheck(timeout: .seconds(600)) != nil { waited = clock.now - start }
        }
        let everyRowChecked = store.everyRowChecked, slotsInMemory = store.readsSlotsInMemory
        if !cold {
            func bestPass(_ reduce: (SearchResult) throws -> [Float]) throws -> [Double] {
                var best: [Double]?
                for _ in 0..<Self.reducePasses {
                    let times = try searched.map { found in try clock.measure { _ = try reduce(found) }.seconds * 1e3 }
                    if best == nil || times.reduce(0, +) < best!.reduce(0, +) { best = times }
                }
                return best!
            }
            let reduceStore = { (found: SearchResult) in try layer.reduce(found, gateInputs: gates) }
            reduceTimes = try bestPass(reduceStore)
            if let flat {
                let reduceFlat = { (found: SearchResult) in try layer.index.reduce(found, values: flat, gateInputs: gates) }
                flatTimes = try bestPass(reduceFlat)
                for found in searched {
                    for (a, b) in zip(try reduceStore(found), try reduceFlat(found)) {
                        maxDifference = max(maxDifference, Double(abs(a - b)) / max(Double(abs(b)), 1e-3))
                    }
                }
            }
        }
        var reducedRows: [Int64] = [], reducedWeights: [Float] = []
        if options.reducedRowsPath != nil {
            for found in searched {
                for (slot, vid) in found.indices.enumerated() {
                    reducedRows.append(Int64(layer.index.address.address(of: vid).row))
                    reducedWeights.append(found.weights[slot * c.cores])
                }
            }
        }
        let decoded = store.bytesDecoded - decodedBefore
        if let path = options.reducedRowsPath {
            let shape = [batches * options.batch, c.heads * c.topK]
            try reducedRows.withUnsafeBytes { try NPYFile.write(path: path + ".rows.npy", dtype: .i64, shape: shape, bytes: $0) }
            try reducedWeights.withUnsafeBytes { try NPYFile.write(path: path + ".weights.npy", dtype: .f32, shape: shape, bytes: $0) }
        }

        var bruteRate: Double?, agreement: Double?
        if c.virtualSlots <= options.bruteForceLimit {
            let n = min(options.bruteForceQueries, options.batch * batches)
            let q = Array(work.joined().prefix(n * c.heads * 2 * c.keyDim))
            var exact: SearchResult?, fast: SearchResult?
            let t = try clock.measure { exact = try layer.index.exhaustiveSearch(queries: q, batch: n) }
            fast = try layer.search(queries: q, batch: n)
            bruteRate = Double(n) / t.seconds
            var same = 0
            for g in stride(from: 0, to: exact!.indices.count, by: c.topK) {
                same += Set(exact!.indices[g..<(g + c.topK)]).intersection(fast!.indices[g..<(g + c.topK)]).count
            }
            agreement = Double(same) / Double(exact!.indices.count)
        }

        let total = Double(batches * options.batch)
        let searchSeconds = searchTimes.reduce(0, +) / 1e3, reduceSeconds = reduceTimes.reduce(0, +) / 1e3
        let lookupReduceSeconds = lookupReduceTimes.reduce(0, +) / 1e3
        let lookupSeconds = searchSeconds + lookupReduceSeconds
        let flatSeconds = flatTimes.reduce(0, +) / 1e3
        // A cold run measures no memory limit (its flat copy would be warm): nil, not infinite.
        let limited = flat != nil && !flatTimes.isEmpty
        return Report(
            queries: batches * options.batch, batch: options.batch, threads: layer.index.threads, distribution: label, cold: cold,
            virtualSlots: c.virtualSlots, physicalRows: c.physicalRows, codec: store.layout.codec.rawValue,
            searchQueriesPerSecond: total / searchSeconds, lookupQueriesPerSecond: total / lookupSeconds,
            reduceQueriesPerSecond: total / reduceSeconds,
            memoryLimitReduceQueriesPerSecond: !limited ? nil : total / flatSeconds,
            reduceToMemoryLimit: !limited ? nil : flatSeconds / reduceSeconds,
            memoryLimitMaxRelativeDifference: !limited ? nil : maxDifference,
            upperBoundReduceQueriesPerSecond: !limited ? nil : total / flatSeconds,
            reduceToUpperBound: !limited ? nil : flatSeconds / reduceSeconds,
            upperBoundMaxRelativeDifference: !limited ? nil : maxDifference,
            rowChecks: store.checksRows, resident: store.isResident,
            backgroundCheckWaitMilliseconds: waited.map { $0.seconds * 1e3 }, everyRowChecked: everyRowChecked,
            slotsInMemory: slotsInMemory, memoryLimitInMemory: options.flatTable?.inMemory,
            kernel: Store.reduceKernel,
            blasKernels: BLASKernels.loaded,
            bruteForceQueriesPerSecond: bruteRate, bruteForceAgreement: agreement,
            searchBatchMilliseconds: Percentiles(searchTimes),
            lookupBatchMilliseconds: Percentiles(zip(searchTimes, lookupReduceTimes).map { $0 + $1 }),
            reduceBatchMilliseconds: Percentiles(reduceTimes),
            searchShare: searchSeconds / lookupSeconds,
            rowsPerSecond: total * Double(c.heads * c.topK) / reduceSeconds, rowsPerQuery: c.heads * c.topK,
            lookupReduceRowsPerSecond: total * Double(c.heads * c.topK) / lookupReduceSeconds,
            cacheHitRate: store.layout.codec == .raw || hits + misses == 0 ? nil : Double(hits) / Double(hits + misses),
            bytesDecompressedPerQuery: Double(decoded) / total, diskBytesPerQuery: Double(disk) / total,
            diskReadsPerSecond: Double(disk) / 4096 / lookupReduceSeconds,
            openMilliseconds: store.openDuration.seconds * 1e3, peakRSSBytes: peakResidentBytes(),
            residentAnonymousBytes: residentBytes("RssAnon:"), residentFileBytes: residentBytes("RssFile:"))
    }
}
