import Foundation
import MemoryLayer
import MemoryRetrieval
import MemoryStore

/// `memtool bench --layers all`: the layers of one store run as a model runs them, every layer
/// on every batch in turn (layer 0, 1, … of batch 0, then of batch 1), sharing the store's
/// value table, shard cache and page cache. Times each layer's lookups, then the reduces alone
/// batch after batch in the same order, over the store and over the flat copy (the memory
/// limit), and checks that the two agree.
public enum LayeredBenchmark {
    public struct LayerReport: Codable, Sendable {
        public var name: String
        public var lookupQueriesPerSecond: Double
        public var lookupBatchMilliseconds: LookupBenchmark.Percentiles
        /// The store's reduce alone, batch after batch, in rows per second.
        public var reduceRowsPerSecond: Double
        public var memoryLimitReduceRowsPerSecond: Double?
    }

    public struct Report: Codable, Sendable {
        public var layers: [LayerReport]
        public var queries: Int
        public var batch: Int
        public var threads: Int
        public var distribution: String
        public var codec: String
        /// Queries passed through every layer per second.
        public var queriesPerSecond: Double
        /// One batch through every layer.
        public var batchMilliseconds: LookupBenchmark.Percentiles
        public var reduceRowsPerSecond: Double
        public var memoryLimitReduceRowsPerSecond: Double?
        public var reduceToMemoryLimit: Double?
        public var memoryLimitMaxRelativeDifference: Double?
        public var peakRSSBytes: Int
    }

    public static func run(layers: [MemoryLayer], options: LookupBenchmark.Options, label: String) throws -> Report {
        guard let first = layers.first else { throw StoreError.noLayer(path: "") }
        let batches = max(1, options.queries / options.batch)
        let flat = options.flatTable.map(FlatRows.init)
        let gates = layers.map { $0.benchmarkGateInputs(batch: options.batch) }
        let work = layers.enumerated().map { l, layer in
            var generator = QueryGenerator(config: layer.config, distribution: options.distribution, seed: options.seed &+ UInt64(l))
            return (0..<batches).map { _ in generator.next(batch: options.batch) }
        }
        for (l, layer) in layers.enumerated() {
            var warm = QueryGenerator(config: layer.config, distribution: options.distribution, seed: (options.seed &+ UInt64(l)) ^ 1)
            for _ in 0..<max(0, options.warmupQueries / options.batch) {
                let found = try layer.search(queries: warm.next(batch: options.batch), batch: options.batch)
                _ = try layer.reduce(found, gateInputs: gates[l])
                if let flat { _ = try layer.index.reduce(found, values: flat, gateInputs: gates[l]) }
            }
        }
        let clock = ContinuousClock()
        var lookupTimes = [[Double]](repeating: [], count: layers.count), batchTimes: [Double] = []
        var found = [[SearchResult]](repeating: [], count: layers.count)
        for b in 0..<batches {
            var batchTime = 0.0
            for (l, layer) in layers.enumerated() {
                var result: SearchResult?
                let t = try clock.measure { result = try layer.search(queries: work[l][b], batch: options.batch); _ = try layer.reduce(result!, gateInputs: gates[l]) }
                lookupTimes[l].append(t.seconds * 1e3)
                batchTime += t.seconds * 1e3
                found[l].append(result!)
            }
            batchTimes.append(batchTime)
        }
        // The reduces alone, in the model's order, the fastest of three passes (as LookupBenchmark).
        func bestPass(_ reduce: (Int, SearchResult) throws -> [Float]) throws -> (times: [Double], outputs: [[Float]]) {
            var best: (times: [Double], outputs: [[Float]])?
            for _ in 0..<LookupBenchmark.reducePasses {
                var times = [Double](repeating: 0, count: layers.count), outputs: [[Float]] = []
                for b in 0..<batches {
                    for l in layers.indices {
                        times[l] += try clock.measure { outputs.append(try reduce(l, found[l][b])) }.seconds
                    }
                }
                if best == nil || times.reduce(0, +) < best!.times.reduce(0, +) { best = (times, outputs) }
            }
            return best!
        }
        let store = try bestPass { try layers[$0].reduce($1, gateInputs: gates[$0]) }
        var limit: (times: [Double], outputs: [[Float]])?, maxDifference: Double?
        if let flat {
            limit = try bestPass { try layers[$0].index.reduce($1, values: flat, gateInputs: gates[$0]) }
            var worst = 0.0
            for (output, reference) in zip(store.outputs, limit!.outputs) {
                for (a, b) in zip(output, reference) { worst = max(worst, Double(abs(a - b)) / max(Double(abs(b)), 1e-3)) }
            }
            maxDifference = worst
        }
        let total = Double(batches * options.batch)
        func rows(_ l: Int) -> Double { total * Double(layers[l].config.heads * layers[l].config.topK) }
        let allRows = (0..<layers.count).map(rows).reduce(0, +)
        let reports = layers.enumerated().map { l, layer in
            LayerReport(name: layer.name, lookupQueriesPerSecond: total / (lookupTimes[l].reduce(0, +) / 1e3),
                        lookupBatchMilliseconds: .init(lookupTimes[l]), reduceRowsPerSecond: rows(l) / store.times[l],
                        memoryLimitReduceRowsPerSecond: limit.map { rows(l) / $0.times[l] })
        }
        let storeSeconds = store.times.reduce(0, +), limitSeconds = limit.map { $0.times.reduce(0, +) }
        return Report(layers: reports, queries: batches * options.batch, batch: options.batch, threads: first.index.threads,
                      distribution: label, codec: first.store.layout.codec.rawValue,
                      queriesPerSecond: total / (batchTimes.reduce(0, +) / 1e3), batchMilliseconds: .init(batchTimes),
                      reduceRowsPerSecond: allRows / storeSeconds, memoryLimitReduceRowsPerSecond: limitSeconds.map { allRows / $0 },
                      reduceToMemoryLimit: limitSeconds.map { $0 / storeSeconds }, memoryLimitMaxRelativeDifference: maxDifference,
                      peakRSSBytes: peakResidentBytes())
    }
}
