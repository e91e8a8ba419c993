import Foundation
import MemoryStore
import _MemorySupport

/// Measures the storage layer on synthetic N(0, 0.02) rows: import speed, compression, decode
/// speed, and warm random single-row reads against a flat mmap'd file in the same run.
public struct StorageBenchmark {
    public struct Configuration: Sendable {
        public var rows = 1 << 20
        public var dim = 64
        public var rowsPerShard: Int?
        public var level = 3
        public var randomReads = 1 << 20
        public var directory = NSTemporaryDirectory()
        public var seed: UInt64 = 1
        public init() {}
    }

    /// One row of results: one element type with one codec.
    public struct Result: Sendable, Codable {
        public var elementType: ElementType
        public var codec: String
        public var rows: Int
        public var dim: Int
        public var rowsPerShard: Int
        public var rawBytes: Int
        public var importMBps: Double
        /// Shard blob bytes / raw bytes.
        public var shardRatio: Double
        /// Store file bytes / raw bytes (adds LMDB pages and their slack).
        public var fileRatio: Double
        /// Raw bytes produced per second decoding every shard on one thread, cache off.
        public var decodeGBps: Double
        /// Warm random single-row reads per second from the store (whole table cached or mapped).
        public var storeRowReadsPerSecond: Double
        /// The same reads from a flat mmap'd file of the same rows.
        public var flatRowReadsPerSecond: Double
        /// Random single-row reads per second with the shard cache off (each read decodes its shard).
        public var uncachedRowReadsPerSecond: Double
        public var storeToFlat: Double { storeRowReadsPerSecond / flatRowReadsPerSecond }
    }

    public var configuration: Configuration

    public init(configuration: Configuration) { self.configuration = configuration }

    /// The codecs measured: raw, zstd, zstd with a trained dictionary, and nibble (bf16 and f32 only).
    public static let variants: [(name: String, codec: CodecKind, dictionary: Bool)] =
        [("raw", .raw, false), ("zstd", .zstd, false), ("zstd+dict", .zstd, true), ("nibble", .nibble, false)]

    /// Whether `variant` can store tables of `elementType` (the nibble codec does not code f16).
    public static func measures(_ variant: (name: String, codec: CodecKind, dictionary: Bool), _ elementType: ElementType) -> Bool {
        variant.codec != .nibble || elementType != .f16
    }

    /// Runs one element type and codec variant.
    public func run(elementType: ElementType, variant: (name: String, codec: CodecKind, dictionary: Bool)) throws -> Result {
        let c = configuration
        let layout = TableLayout(elementType: elementType, rows: c.rows, dim: c.dim, rowsPerShard: c.rowsPerShard,
                                 codec: variant.codec, level: c.level, dictionary: variant.dictionary)
        let bytes = SyntheticRows(seed: c.seed, dim: c.dim).bytes(0..<c.rows, as: elementType)
        let stem = (c.directory as NSString).appendingPathComponent("storage-bench-\(getpid())-\(elementType.rawValue)-\(variant.name)")
        let path = stem + ".pkm"
        defer {
            for p in [path, path + "-lock", stem + ".flat"] { try? FileManager.default.removeItem(atPath: p) }
        }
        let clock = ContinuousClock()

        let importTime = try clock.measure {
            let writer = try StoreWriter.create(at: path, layout: layout)
            try writer.append(bytes)
            try writer.finish()
        }

        // Without the background check: the runs time the reads, each check included.
        let cold = try Store.open(at: path, cacheBytes: 0, checksInBackground: false)
        let stats = try cold.storageStatistics()
        var decoded = 0
        let decodeTime = try clock.measure {
            for s in 0..<layout.shardCount { try cold.withShardRows(s) { decoded += $0.count } }
        }

        var generator = UInt64(c.seed)
        let picks = (0..<c.randomReads).map { _ in Int(splitMix(&generator) % UInt64(c.rows)) }
        var out = [Float](repeating: 0, count: c.dim)

        let uncachedReads = min(c.randomReads, 1 << 16)
        let uncachedTime = try clock.measure {
            try out.withUnsafeMutableBufferPointer { o in
                for i in 0..<uncachedReads { try cold.row(picks[i], into: o) }
            }
        }

        let warm = try Store.open(at: path, cacheBytes: layout.rawBytes * 2 + (64 << 20), checksInBackground: false)
        for s in 0..<layout.shardCount { try warm.withShardRows(s) { _ in } }
        let storeTime = try clock.measure {
            try out.withUnsafeMutableBufferPointer { o in
                for r in picks { try warm.row(r, into: o) }
            }
        }

        let flat = try FlatTable(path: stem + ".flat", bytes: bytes, dim: c.dim, elementType: elementType)
        var sink: Float = 0
        for r in 0..<c.rows where r % 64 == 0 { out.withUnsafeMutableBufferPointer { flat.row(r, into: $0.baseAddress!) } }
        let flatTime = clock.measure {
            out.withUnsafeMutableBufferPointer { o in
                for r in picks { flat.row(r, into: o.baseAddress!); sink += o[0] }
            }
        }
        if sink.isNaN { print("") }  // keeps the loop from being optimised away

        let raw = Double(layout.rawBytes)
        return Result(
            elementType: elementType, codec: variant.name, rows: c.rows, dim: c.dim, rowsPerShard: layout.rowsPerShard,
            rawBytes: layout.rawBytes, importMBps: raw / importTime.seconds / 1e6,
            shardRatio: Double(stats.shardBytes) / raw, fileRatio: Double(stats.fileBytes) / raw,
            decodeGBps: Double(decoded) / decodeTime.seconds / 1e9,
            storeRowReadsPerSecond: Double(picks.count) / storeTime.seconds,
            flatRowReadsPerSecond: Double(picks.count) / flatTime.seconds,
            uncachedRowReadsPerSecond: Double(uncachedReads) / uncachedTime.seconds)
    }
}
