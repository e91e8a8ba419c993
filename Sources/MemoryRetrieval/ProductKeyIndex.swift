import Foundation
import _MemorySupport

/// The tensors of a memory layer, as Float (keys, cores, projectors) and Int64 (the map).
public struct RetrievalTensors: Sendable {
    public var rowKeys: [Float]
    public var colKeys: [Float]
    public var cores: [Float]?
    public var projectors: [Float]?
    public var virtualMap: [Int64]?
    public var rowProj: [Float]?
    public var colProj: [Float]?

    public init(rowKeys: [Float], colKeys: [Float], cores: [Float]? = nil, projectors: [Float]? = nil,
                virtualMap: [Int64]? = nil, rowProj: [Float]? = nil, colProj: [Float]? = nil) {
        self.rowKeys = rowKeys
        self.colKeys = colKeys
        self.cores = cores
        self.projectors = projectors
        self.virtualMap = virtualMap
        self.rowProj = rowProj
        self.colProj = colProj
    }
}

/// Slots selected for a batch: `indices[(b*H + h)*k + s]` (virtual slot ids, in rank order)
/// and `weights[((b*H + h)*k + s)*c + t]`.
public struct SearchResult: Sendable, Equatable {
    public var batch: Int
    public var indices: [Int]
    public var weights: [Float]
}

/// Product-key retrieval as defined in Spec/RETRIEVAL.md: scoring, top-k selection, weights,
/// addressing and the fused lookup-reduce. Holds no storage; values come through ``ValueRows``.
///
/// ```swift
/// let index = try ProductKeyIndex(config: config, tensors: tensors)
/// let result = try index.search(queries: q, batch: b)
/// let out = try index.lookup(queries: q, batch: b, values: rows).output
/// ```
public final class ProductKeyIndex: Sendable {
    public let config: RetrievalConfig
    let tensors: RetrievalTensors
    public let address: VirtualAddress
    /// Per head, the rank-1 ranking tables `Σ_a u[a] K_row[h,a]` and `Σ_b v[b] K_col[h,b]` (Tucker).
    let rankRowKeys: [[Float]]
    let rankColKeys: [[Float]]
    /// bfloat16 copies of the first-stage tables for small batches (Spec/RETRIEVAL.md, "Exact
    /// selection from approximate scores").
    let approximateTables: ApproximateTables?
    /// Blocks of at most this many queries score bfloat16 keys, half the bytes of f32, where that
    /// wins (measured, BENCHMARKS.md "Small batches"): single queries; up to 2 beyond 8 MiB of
    /// first-stage tables (f32) and up to 4 beyond 32 MiB, where reading the keys bounds them.
    /// Larger blocks are bound by arithmetic, which OpenBLAS's sgemm over f32 keys does better.
    let approximateBatch: Int
    /// Blocks of at least this many queries score bfloat16 keys with bfloat16 queries, where the
    /// CPU multiplies bfloat16 pairs (``ApproximateKeys/hasPairs``); smaller ones use sgemm.
    let pairsBatch: Int
    /// Worker threads for batches.
    public let threads: Int
    /// Search working memory kept between blocks: fresh buffers of this size come from mmap
    /// and cost the kernel a page-zeroing pass each time.
    let scratchPool = Locked<[SearchScratch]>([])
    /// Per-block reduce working memory kept between blocks, for the same reason.
    let reducePool = Locked<[ReduceScratch]>([])

    /// - Parameters:
    ///   - threads: worker threads for a batch.
    ///   - limitsBLASThreads: OpenBLAS's thread count is one setting for the whole process. The
    ///     index runs one block of queries per worker itself, so by default it sets OpenBLAS to a
    ///     single thread (once per process, which also applies to the embedder's own BLAS calls);
    ///     pass false to keep the process's setting (sgemm may then oversubscribe the cores).
    public convenience init(config: RetrievalConfig, tensors: RetrievalTensors,
                            threads: Int = ProcessInfo.processInfo.activeProcessorCount, limitsBLASThreads: Bool = true) throws(RetrievalError) {
        try self.init(config: config, tensors: tensors, threads: threads, limitsBLASThreads: limitsBLASThreads, approximateBatch: nil)
    }

    /// - Parameter approximateBatch: the largest block that scores bfloat16 keys; nil: by the
    ///   tables' size (``approximateBatch``). Tests set it to reach that path with small tables.
    init(config: RetrievalConfig, tensors: RetrievalTensors, threads: Int, limitsBLASThreads: Bool,
         approximateBatch: Int?, pairsBatch: Int? = nil) throws(RetrievalError) {
        let c = config
        address = try Self.checkedAddress(config: c, tensors: tensors)
        if limitsBLASThreads { KeyScoring.singleThreaded }
        self.config = c
        self.tensors = tensors
        self.threads = max(1, threads)
        let tableBytes = c.heads * (c.gridRows + c.gridCols) * c.keyDim * 4
        self.approximateBatch = approximateBatch ?? (tableBytes > 32 << 20 ? 4 : tableBytes > 8 << 20 ? 2 : 1)
        self.pairsBatch = pairsBatch ?? (tableBytes > 8 << 20 ? self.approximateBatch + 1 : Int.max)

        var rankRows: [[Float]] = [], rankCols: [[Float]] = []
        if c.scoring == .tucker {
            for h in 0..<c.heads {
                let (u, v): ([Float], [Float])
                if let rp = tensors.rowProj, let cp = tensors.colProj {
                    (u, v) = (Array(rp[(h * c.rank)..<((h + 1) * c.rank)]), Array(cp[(h * c.rank)..<((h + 1) * c.rank)]))
                } else {
                    var sum = [Float](repeating: 0, count: c.rank * c.rank)
                    for t in 0..<c.cores {
                        let base = (h * c.cores + t) * c.rank * c.rank
                        for e in 0..<(c.rank * c.rank) { sum[e] += tensors.cores![base + e] }
                    }
                    (u, v) = leadingSingularPair(sum, size: c.rank)
                }
                rankRows.append(Self.combine(tensors.rowKeys, head: h, weights: u, rows: c.gridRows, config: c))
                rankCols.append(Self.combine(tensors.colKeys, head: h, weights: v, rows: c.gridCols, config: c))
            }
        }
        rankRowKeys = rankRows
        rankColKeys = rankCols
        approximateTables = c.scoring == .tuckerExact ? nil : Self.approximate(c, tensors: tensors, rankRows: rankRows, rankCols: rankCols)
    }

    /// Checks `tensors` against `config` (shapes, finiteness, a true permutation) as the
    /// initialiser does, without preparing a search: for writers that only validate a layer.
    public static func validate(config: RetrievalConfig, tensors: RetrievalTensors) throws(RetrievalError) {
        _ = try checkedAddress(config: config, tensors: tensors)
    }

    /// The address map of a layer whose tensors pass every check.
    private static func checkedAddress(config: RetrievalConfig, tensors: RetrievalTensors) throws(RetrievalError) -> VirtualAddress {
        try config.validate()
        let c = config
        func expect(_ name: String, _ array: [Float]?, _ shape: [Int], required: Bool = true) throws(RetrievalError) {
            guard let array else {
                if required { throw .missingTensor(name) }
                return
            }
            guard array.count == shape.reduce(1, *) else { throw .tensorShape(name: name, expected: shape, got: [array.count]) }
            guard array.allSatisfy(\.isFinite) else { throw .invalidTensor(name: name, reason: "contains NaN or infinity") }
        }
        try expect("row_keys", tensors.rowKeys, [c.heads, c.rank, c.gridRows, c.keyDim])
        try expect("col_keys", tensors.colKeys, [c.heads, c.rank, c.gridCols, c.keyDim])
        try expect("cores", tensors.cores, [c.heads, c.cores, c.rank, c.rank], required: c.scoring != .pkm)
        try expect("projectors", tensors.projectors, [c.expansion, c.valueDim, c.outputDim], required: c.expansion > 1)
        try expect("row_proj", tensors.rowProj, [c.heads, c.rank], required: false)
        try expect("col_proj", tensors.colProj, [c.heads, c.rank], required: false)
        if (tensors.rowProj == nil) != (tensors.colProj == nil) {
            throw .invalidTensor(name: "row_proj", reason: "row_proj and col_proj must be given together")
        }
        if tensors.projectors == nil && c.outputDim != c.valueDim {
            throw .invalidConfig(field: "outputDim", reason: "without projectors the output is the value row (\(c.valueDim)), not \(c.outputDim)")
        }
        let map: VirtualAddress.Map
        switch c.addressing {
        case .identity: map = .identity
        case .keyed: map = .keyed(c.addressKey)
        case .table:
            guard let table = tensors.virtualMap else { throw .missingTensor("virtual_map") }
            map = .table(table)
        }
        return try VirtualAddress(map: map, virtualSlots: c.virtualSlots, physicalRows: c.physicalRows,
                                  poolRows: c.poolRows, poolOffset: c.poolOffset)
    }

    /// The bfloat16 tables of the first stage, per head: PKM's keys or Tucker's rank-1 tables.
    private static func approximate(_ c: RetrievalConfig, tensors: RetrievalTensors, rankRows: [[Float]], rankCols: [[Float]]) -> ApproximateTables {
        func tables(_ keys: [Float], _ rankTables: [[Float]], _ n: Int) -> [ApproximateKeys] {
            (0..<c.heads).map { h in
                c.scoring == .pkm
                    ? keys.withUnsafeBufferPointer { ApproximateKeys(keys: $0.baseAddress! + h * n * c.keyDim, count: n, dim: c.keyDim) }
                    : rankTables[h].withUnsafeBufferPointer { ApproximateKeys(keys: $0.baseAddress!, count: n, dim: c.keyDim) }
            }
        }
        return ApproximateTables(rows: tables(tensors.rowKeys, rankRows, c.gridRows), cols: tables(tensors.colKeys, rankCols, c.gridCols))
    }

    /// `Σ_a w[a] keys[h, a]` as one `[rows, d]` table: ranking by it equals ranking by `Σ_a w[a] S[a]`.
    private static func combine(_ keys: [Float], head h: Int, weights w: [Float], rows n: Int, config c: RetrievalConfig) -> [Float] {
        var out = [Float](repeating: 0, count: n * c.keyDim)
        for a in 0..<c.rank {
            let base = (h * c.rank + a) * n * c.keyDim
            for e in 0..<(n * c.keyDim) { out[e] += w[a] * keys[base + e] }
        }
        return out
    }

    /// Queries per block of `batch`: large blocks amortise sgemm's packing of each key panel over
    /// more queries, up to 256; at least one block per worker.
    func blockSize(_ batch: Int) -> Int { max(1, min(256, (batch + threads - 1) / threads)) }

    /// Runs `body` over blocks of the batch on this thread and `threads - 1` of the process's
    /// worker pool (``WorkerPool``).
    func forEachBlock(_ batch: Int, _ body: @Sendable (Range<Int>) -> Void) {
        let block = blockSize(batch)
        let blocks = (batch + block - 1) / block
        if blocks == 1 { return body(0..<batch) }  // no hand-over to a worker for a small batch
        WorkerPool.shared.run(tasks: blocks, helpers: threads - 1) { i in
            body((i * block)..<min(batch, (i + 1) * block))
        }
    }
}
