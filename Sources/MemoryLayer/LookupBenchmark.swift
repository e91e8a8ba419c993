import Foundation
import MemoryRetrieval
import MemoryStore

/// The offline lookup benchmark behind `memtool bench`. For each batch of deterministic queries
/// it times the search, the store's lookup-reduce, and the same reduce over a flat uncompressed
/// copy of the value table (the upper bound), and checks that both reduces agree. On small grids
/// it also times the brute force that scores every slot, and checks the search against it.
public struct LookupBenchmark {
    public struct Options: Sendable {
        public var queries = 4096
        public var batch = 64
        public var warmupQueries = 256
        public var distribution = QueryDistribution.clustered(centres: 256, spread: 0.25)
        public var seed: UInt64 = 1
        /// The flat copy for the upper bound; nil skips it.
        public var flatTable: FlatTable?
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
        /// The same reduce over the flat uncompressed copy; nil when not measured.
        public var upperBoundReduceQueriesPerSecond: Double?
        /// `reduceQueriesPerSecond / upperBoundReduceQueriesPerSecond`: the headline ratio.
        public var reduceToUpperBound: Double?
        /// Largest relative difference between the store's and the flat copy's outputs.
        public var upperBoundMaxRelativeDifference: Double?
        public var bruteForceQueriesPerSecond: Double?
        /// Share of the selected slots that the brute force also selects (1 for PKM, which is exact).
        public var bruteForceAgreement: Double?
        public var searchBatchMilliseconds: Percentiles
        public var lookupBatchMilliseconds: Percentiles
        /// Share of lookup time spent in scoring and selection (the rest is lookup-reduce).
        public var searchShare: Double
        public var rowsPerSecond: Double
        /// Decoded-shard cache hits / shard reads; nil for raw stores, which read in place.
        public var cacheHitRate: Double?
        public var bytesDecompressedPerQuery: Double
        /// Bytes the kernel read from storage for the store's lookup-reduce per query (`/proc/self/io`
        /// read_bytes, counted around the store's reduce only).
        public var diskBytesPerQuery: Double
        /// Those bytes as 4 KiB reads per second of lookup time.
        public var diskReadsPerSecond: Double
        public var openMilliseconds: Double
        public var peakRSSBytes: Int
        /// Resident anonymous memory (heap, caches) at the end of the run.
        public var residentAnonymousBytes: Int
        /// Resident pages of mapped files at the end of the run: the store's map (and the upper
        /// bound's flat copy when measured), reclaimable page cache.
        public var residentFileBytes: Int
    }

    public static func run(layer: MemoryLayer, options: Options, label: String, cold: Bool) throws -> Report {
        let c = layer.config, store = layer.store
        let batches = max(1, options.queries / options.batch)
        var generator = QueryGenerator(config: c, distribution: options.distribution, seed: options.seed)
        let work = (0..<batches).map { _ in generator.next(batch: options.batch) }
        let flat = options.flatTable.map(FlatRows.init)
        if !cold {
            // The warm-up goes through the upper bound too, so both start with their pages mapped.
            var warm = QueryGenerator(config: c, distribution: options.distribution, seed: options.seed ^ 1)
            for _ in 0..<max(0, options.warmupQueries / options.batch) {
                let found = try layer.search(queries: warm.next(batch: options.batch), batch: options.batch)
                _ = try layer.reduce(found)
                if let flat { _ = try layer.index.reduce(found, values: flat) }
            }
        }
        let clock = ContinuousClock()
        var searchTimes: [Double] = [], reduceTimes: [Double] = [], flatTimes: [Double] = []
        var hits = 0, misses = 0, maxDifference = 0.0
        let decodedBefore = store.bytesDecoded
        var disk = 0  // read by the store's lookup-reduce only: the upper bound's flat copy reads too
        for q in work {
            var found: SearchResult?
            let s = try clock.measure { found = try layer.search(queries: q, batch: options.batch) }
            let before = store.cacheStatistics
            var output: [Float] = []
            let diskBefore = diskReadBytes()
            let r = try clock.measure { output = try layer.reduce(found!) }
            disk += diskReadBytes() - diskBefore
            let after = store.cacheStatistics
            hits += after.hits - before.hits
            misses += after.misses - before.misses
            searchTimes.append(s.seconds * 1e3)
            reduceTimes.append(r.seconds * 1e3)
            if let flat {
                var reference: [Float] = []
                let f = try clock.measure { reference = try layer.index.reduce(found!, values: flat) }
                flatTimes.append(f.seconds * 1e3)
                for (a, b) in zip(output, reference) { maxDifference = max(maxDifference, Double(abs(a - b)) / max(Double(abs(b)), 1e-3)) }
            }
        }
        let decoded = store.bytesDecoded - decodedBefore

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
        let lookupSeconds = searchSeconds + reduceSeconds
        let flatSeconds = flatTimes.reduce(0, +) / 1e3
        return Report(
            queries: batches * options.batch, batch: options.batch, threads: layer.index.threads, distribution: label, cold: cold,
            virtualSlots: c.virtualSlots, physicalRows: c.physicalRows, codec: store.layout.codec.rawValue,
            searchQueriesPerSecond: total / searchSeconds, lookupQueriesPerSecond: total / lookupSeconds,
            reduceQueriesPerSecond: total / reduceSeconds,
            upperBoundReduceQueriesPerSecond: flat == nil ? nil : total / flatSeconds,
            reduceToUpperBound: flat == nil ? nil : flatSeconds / reduceSeconds,
            upperBoundMaxRelativeDifference: flat == nil ? nil : maxDifference,
            bruteForceQueriesPerSecond: bruteRate, bruteForceAgreement: agreement,
            searchBatchMilliseconds: Percentiles(searchTimes),
            lookupBatchMilliseconds: Percentiles(zip(searchTimes, reduceTimes).map { $0 + $1 }),
            searchShare: searchSeconds / lookupSeconds,
            rowsPerSecond: total * Double(c.heads * c.topK) / reduceSeconds,
            cacheHitRate: store.layout.codec == .raw || hits + misses == 0 ? nil : Double(hits) / Double(hits + misses),
            bytesDecompressedPerQuery: Double(decoded) / total, diskBytesPerQuery: Double(disk) / total,
            diskReadsPerSecond: Double(disk) / 4096 / reduceSeconds,
            openMilliseconds: store.openDuration.seconds * 1e3, peakRSSBytes: peakResidentBytes(),
            residentAnonymousBytes: residentBytes("RssAnon:"), residentFileBytes: residentBytes("RssFile:"))
    }
}

/// The process's peak resident set size so far.
public func peakResidentBytes() -> Int {
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    return usage.ru_maxrss * 1024
}

/// A resident-set figure of `/proc/self/status` (`RssAnon:`, `RssFile:`) in bytes, or 0 where unavailable.
public func residentBytes(_ field: String) -> Int {
    procField("/proc/self/status", field) * 1024  // given in kB
}

/// Bytes this process caused to be read from storage (`read_bytes` of `/proc/self/io`), or 0 where unavailable.
public func diskReadBytes() -> Int {
    procField("/proc/self/io", "read_bytes:")
}

/// The first number on the line of `file` that starts with `field`, or 0 where unavailable.
private func procField(_ file: String, _ field: String) -> Int {
    guard let text = try? String(contentsOfFile: file, encoding: .utf8) else { return 0 }
    for line in text.split(separator: "\n") where line.hasPrefix(field) {
        return line.dropFirst(field.count).split(whereSeparator: { $0 == " " || $0 == "\t" }).first.flatMap { Int($0) } ?? 0
    }
    return 0
}

/// Writes dirty pages and drops the page cache (root only); returns whether it could.
public func dropPageCache() -> Bool {
    sync()
    guard let handle = FileHandle(forWritingAtPath: "/proc/sys/vm/drop_caches") else { return false }
    defer { try? handle.close() }
    return (try? handle.write(contentsOf: Data("3\n".utf8))) != nil
}
