import Foundation
import MemoryRetrieval
import MemoryStore

/// The offline lookup benchmark behind `memtool bench`: search alone, then the whole lookup,
/// over the same deterministic query batches, with per-batch latencies and cache figures.
public struct LookupBenchmark {
    public struct Options: Sendable {
        public var queries = 4096
        public var batch = 64
        public var warmupQueries = 256
        public var distribution = QueryDistribution.clustered(centres: 256, spread: 0.25)
        public var seed: UInt64 = 1
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
        public var virtualSlots: Int
        public var physicalRows: Int
        public var searchQueriesPerSecond: Double
        public var lookupQueriesPerSecond: Double
        public var searchBatchMilliseconds: Percentiles
        public var lookupBatchMilliseconds: Percentiles
        /// Share of lookup time spent in scoring and selection (the rest is lookup-reduce).
        public var searchShare: Double
        public var rowsPerSecond: Double
        /// Hits over shard reads of the decoded-shard cache; nil for raw stores, which read in place.
        public var cacheHitRate: Double?
        public var openMilliseconds: Double
        public var peakRSSBytes: Int
    }

    public static func run(layer: MemoryLayer, options: Options, label: String) throws -> Report {
        let c = layer.config
        let batches = max(1, options.queries / options.batch)
        var generator = QueryGenerator(config: c, distribution: options.distribution, seed: options.seed)
        let work = (0..<batches).map { _ in generator.next(batch: options.batch) }
        var warm = QueryGenerator(config: c, distribution: options.distribution, seed: options.seed ^ 1)
        for _ in 0..<max(0, options.warmupQueries / options.batch) {
            _ = try layer.lookup(queries: warm.next(batch: options.batch), batch: options.batch)
        }
        let clock = ContinuousClock()
        // Search and lookup of the same batch back to back, so drift in the machine's speed hits both alike.
        var searchTimes: [Double] = [], lookupTimes: [Double] = []
        var hits = 0, misses = 0
        for q in work {
            let s = try clock.measure { _ = try layer.search(queries: q, batch: options.batch) }
            let before = layer.store.cacheStatistics
            let l = try clock.measure { _ = try layer.lookup(queries: q, batch: options.batch) }
            let after = layer.store.cacheStatistics
            hits += after.hits - before.hits
            misses += after.misses - before.misses
            searchTimes.append(s.seconds * 1e3)
            lookupTimes.append(l.seconds * 1e3)
        }
        let total = Double(batches * options.batch)
        let searchSeconds = searchTimes.reduce(0, +) / 1e3, lookupSeconds = lookupTimes.reduce(0, +) / 1e3
        return Report(
            queries: batches * options.batch, batch: options.batch, threads: layer.index.threads, distribution: label,
            virtualSlots: c.virtualSlots, physicalRows: c.physicalRows,
            searchQueriesPerSecond: total / searchSeconds, lookupQueriesPerSecond: total / lookupSeconds,
            searchBatchMilliseconds: Percentiles(searchTimes), lookupBatchMilliseconds: Percentiles(lookupTimes),
            searchShare: min(1, searchSeconds / lookupSeconds),
            rowsPerSecond: total * Double(c.heads * c.topK) / lookupSeconds,
            cacheHitRate: layer.store.layout.codec == .raw || hits + misses == 0 ? nil : Double(hits) / Double(hits + misses),
            openMilliseconds: layer.store.openDuration.seconds * 1e3,
            peakRSSBytes: peakResidentBytes())
    }
}

/// The process's peak resident set size so far.
public func peakResidentBytes() -> Int {
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    return usage.ru_maxrss * 1024
}
