import Dispatch
import Foundation
import Synchronization

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
    private let rankRowKeys: [[Float]]
    private let rankColKeys: [[Float]]
    /// Worker threads for batches.
    public let threads: Int
    /// Search working memory kept between blocks: fresh buffers of this size come from mmap
    /// and cost the kernel a page-zeroing pass each time.
    private let scratchPool = Mutex<[SearchScratch]>([])
    /// Per-block reduce working memory kept between blocks, for the same reason.
    private let reducePool = Mutex<[ReduceScratch]>([])

    /// - Parameters:
    ///   - threads: worker threads for a batch.
    ///   - limitsBLASThreads: OpenBLAS's thread count is one setting for the whole process. The
    ///     index runs one block of queries per worker itself, so by default it sets OpenBLAS to a
    ///     single thread (once per process, which also applies to the embedder's own BLAS calls);
    ///     pass false to keep the process's setting (sgemm may then oversubscribe the cores).
    public init(config: RetrievalConfig, tensors: RetrievalTensors,
                threads: Int = ProcessInfo.processInfo.activeProcessorCount, limitsBLASThreads: Bool = true) throws(RetrievalError) {
        try config.validate()
        if limitsBLASThreads { KeyScoring.singleThreaded }
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
        address = try VirtualAddress(map: map, virtualSlots: c.virtualSlots, physicalRows: c.physicalRows)
        self.config = c
        self.tensors = tensors
        self.threads = max(1, threads)

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

    // MARK: Search

    /// Selected slots and weights for a batch of queries `[batch, H, 2, d]`.
    public func search(queries: [Float], batch: Int) throws(RetrievalError) -> SearchResult {
        try search(queries: queries, batch: batch, exhaustive: false)
    }

    /// The same search scoring every one of the N_v slots: the brute force that product keys
    /// avoid. Equal to `search` for PKM (which is exact) and to `tucker-exact` for Tucker.
    /// Needs N_v floats of working memory per thread: for small grids and benchmarks.
    public func exhaustiveSearch(queries: [Float], batch: Int) throws(RetrievalError) -> SearchResult {
        try search(queries: queries, batch: batch, exhaustive: true)
    }

    private func search(queries: [Float], batch: Int, exhaustive: Bool) throws(RetrievalError) -> SearchResult {
        try checkQueries(queries, batch: batch)
        let c = config
        var result = SearchResult(batch: batch, indices: [Int](repeating: 0, count: batch * c.heads * c.topK),
                                  weights: [Float](repeating: 0, count: batch * c.heads * c.topK * c.cores))
        queries.withUnsafeBufferPointer { q in
            result.indices.withUnsafeMutableBufferPointer { idx in
                result.weights.withUnsafeMutableBufferPointer { w in
                    nonisolated(unsafe) let (q, idx, w) = (q, idx, w)
                    forEachBlock(batch) { range in searchBlock(q, range, idx, w, exhaustive: exhaustive) }
                }
            }
        }
        return result
    }

    /// Runs `body` over blocks of the batch on the worker threads.
    private func forEachBlock(_ batch: Int, _ body: @Sendable (Range<Int>) -> Void) {
        // Large blocks amortise sgemm's packing of each key panel over more queries.
        let block = max(1, min(256, (batch + threads - 1) / threads))
        let blocks = (batch + block - 1) / block
        if blocks == 1 { return body(0..<batch) }  // no hand-over to a worker for a small batch
        DispatchQueue.concurrentPerform(iterations: blocks) { i in
            body((i * block)..<min(batch, (i + 1) * block))
        }
    }

    private func checkQueries(_ queries: [Float], batch: Int) throws(RetrievalError) {
        let c = config
        let per = c.heads * 2 * c.keyDim
        guard batch >= 1, queries.count == batch * per else {
            throw .queryShape(expected: "[\(batch), \(c.heads), 2, \(c.keyDim)] = \(batch * per)", got: queries.count)
        }
        for b in 0..<batch {
            for h in 0..<c.heads where !queries[((b * c.heads + h) * 2 * c.keyDim)..<((b * c.heads + h + 1) * 2 * c.keyDim)].allSatisfy(\.isFinite) {
                throw .nonFiniteQuery(query: b, head: h)
            }
        }
    }

    /// Searches queries `range`, writing their slots into `indices` and `weights` (whole-batch buffers).
    private func searchBlock(_ queries: UnsafeBufferPointer<Float>, _ range: Range<Int>,
                             _ indices: UnsafeMutableBufferPointer<Int>, _ weights: UnsafeMutableBufferPointer<Float>,
                             exhaustive: Bool) {
        let c = config
        let n = range.count, d = c.keyDim, stride = c.heads * 2 * d
        var scratch = scratchPool.withLock { $0.popLast() } ?? SearchScratch(config: c)
        scratch.reserve(block: n)
        defer { scratchPool.withLock { $0.append(scratch) } }
        for h in 0..<c.heads {
            let qRow = queries.baseAddress! + range.lowerBound * stride + h * 2 * d
            let qCol = qRow + d
            switch c.scoring {
            case .pkm:
                scoreAll(tensors.rowKeys, offset: h * c.gridRows * d, count: c.gridRows, qRow, n, into: &scratch.rowScores)
                scoreAll(tensors.colKeys, offset: h * c.gridCols * d, count: c.gridCols, qCol, n, into: &scratch.colScores)
            case .tucker where !exhaustive:
                scoreAll(rankRowKeys[h], offset: 0, count: c.gridRows, qRow, n, into: &scratch.rowScores)
                scoreAll(rankColKeys[h], offset: 0, count: c.gridCols, qCol, n, into: &scratch.colScores)
            case .tucker, .tuckerExact:
                break
            }
            for b in 0..<n {
                let slot = ((range.lowerBound + b) * c.heads + h) * c.topK
                let q = (row: qRow + b * stride, col: qCol + b * stride)
                switch c.scoring {
                case .pkm: selectPKM(b, &scratch, exhaustive: exhaustive)
                case .tucker: selectTucker(b, head: h, q, &scratch, exact: exhaustive)
                case .tuckerExact: selectTucker(b, head: h, q, &scratch, exact: true)
                }
                for s in 0..<c.topK { indices[slot + s] = scratch.selected[s] }
                // Weights: the per-core scores of the selected slots, through the activation per core.
                let w = weights.baseAddress! + slot * c.cores
                for e in 0..<(c.topK * c.cores) { w[e] = scratch.coreScores[e] }
                for t in 0..<c.cores { c.activation.apply(w + t, count: c.topK, stride: c.cores) }
            }
        }
    }

    private func scoreAll(_ keys: [Float], offset: Int, count: Int, _ q: UnsafePointer<Float>, _ n: Int, into out: inout [Float]) {
        keys.withUnsafeBufferPointer { k in
            out.withUnsafeMutableBufferPointer { o in
                KeyScoring.score(keys: k.baseAddress! + offset, count: count, dim: config.keyDim, queries: q,
                                 queryStride: config.heads * 2 * config.keyDim, batch: n, into: o.baseAddress!)
            }
        }
    }

    /// PKM: the top-k rows and columns, then the top-k of their k² sums (exact; see the spec).
    private func selectPKM(_ b: Int, _ s: inout SearchScratch, exhaustive: Bool) {
        let c = config
        if exhaustive {
            s.keptRows = Array(0..<c.gridRows)
            s.keptCols = Array(0..<c.gridCols)
        } else {
            s.keepBest(b, rows: c.gridRows, cols: c.gridCols, count: c.topK)
        }
        let mr = s.keptRows.count, mc = s.keptCols.count
        s.prepareSubgrid(rank: 0, cores: 0, rows: mr, cols: mc)
        s.subgrid.withUnsafeMutableBufferPointer { total in
            for ii in 0..<mr {
                let x = s.rowScores[b * c.gridRows + s.keptRows[ii]]
                for jj in 0..<mc { total[ii * mc + jj] = x + s.colScores[b * c.gridCols + s.keptCols[jj]] }
            }
            s.slots.select(UnsafeBufferPointer(rebasing: total[0..<(mr * mc)]), count: c.topK)
        }
        for (k, p) in s.slots.positions.enumerated() {
            s.selected[k] = s.keptRows[p / mc] * c.gridCols + s.keptCols[p % mc]
            s.coreScores[k] = s.slots.scores[k]
        }
    }

    /// Tucker: pre-select m rows and columns by the rank-1 scores (or take all, exact), score the
    /// sub-grid with every core, keep the top k by total; per-core scores go to `s.coreScores`.
    private func selectTucker(_ b: Int, head h: Int, _ q: (row: UnsafePointer<Float>, col: UnsafePointer<Float>),
                              _ s: inout SearchScratch, exact: Bool) {
        let c = config, r = c.rank, d = c.keyDim, nc = c.cores
        if exact {
            s.keptRows = Array(0..<c.gridRows)
            s.keptCols = Array(0..<c.gridCols)
        } else {
            s.keepBest(b, rows: c.gridRows, cols: c.gridCols, count: c.topM)
        }
        let mr = s.keptRows.count, mc = s.keptCols.count
        s.prepareSubgrid(rank: r, cores: nc, rows: mr, cols: mc)
        tensors.rowKeys.withUnsafeBufferPointer { rk in
            tensors.colKeys.withUnsafeBufferPointer { ck in
                tensors.cores!.withUnsafeBufferPointer { cores in
                    s.subgrid.withUnsafeMutableBufferPointer { g in
                        let sRow = g.baseAddress!                     // [a][ii]
                        let sCol = sRow + r * mr                      // [b][jj]
                        let tCol = sCol + r * mc                      // [t][a][jj] = Σ_b cores[h,t,a,b] S_col[b][jj]
                        let perCore = tCol + nc * r * mc              // [t][ii][jj]
                        let total = perCore + nc * mr * mc            // [ii][jj]
                        for a in 0..<r {
                            for (ii, i) in s.keptRows.enumerated() { sRow[a * mr + ii] = KeyScoring.dot(rk.baseAddress! + ((h * r + a) * c.gridRows + i) * d, q.row, d) }
                            for (jj, j) in s.keptCols.enumerated() { sCol[a * mc + jj] = KeyScoring.dot(ck.baseAddress! + ((h * r + a) * c.gridCols + j) * d, q.col, d) }
                        }
                        for t in 0..<nc {
                            for a in 0..<r {
                                let out = tCol + (t * r + a) * mc
                                for jj in 0..<mc { out[jj] = 0 }
                                for bb in 0..<r {
                                    let w = cores[((h * nc + t) * r + a) * r + bb]
                                    for jj in 0..<mc { out[jj] += w * sCol[bb * mc + jj] }
                                }
                            }
                        }
                        for e in 0..<(mr * mc) { total[e] = 0 }
                        for t in 0..<nc {
                            for ii in 0..<mr {
                                let out = perCore + (t * mr + ii) * mc
                                for jj in 0..<mc { out[jj] = 0 }
                                for a in 0..<r {
                                    let x = sRow[a * mr + ii], src = tCol + (t * r + a) * mc
                                    for jj in 0..<mc { out[jj] += x * src[jj] }
                                }
                                let tot = total + ii * mc
                                for jj in 0..<mc { tot[jj] += out[jj] }
                            }
                        }
                        // The sub-grid's positions ascend with vid, so position order breaks ties as the spec says.
                        s.slots.select(UnsafeBufferPointer(start: total, count: mr * mc), count: c.topK)
                        for (k, p) in s.slots.positions.enumerated() {
                            s.selected[k] = s.keptRows[p / mc] * c.gridCols + s.keptCols[p % mc]
                            for t in 0..<nc { s.coreScores[k * nc + t] = perCore[t * mr * mc + p] }
                        }
                    }
                }
            }
        }
    }

    // MARK: Lookup

    /// The reduced output `[batch, d_out]` for a batch of queries, plus the search result.
    ///
    /// All selected rows of a block of queries go to `values` in one `gatherReduce`, grouped per
    /// (query, projector), so each shard is read once per block; then each query's per-projector
    /// sums are multiplied by the projectors.
    public func lookup(queries: [Float], batch: Int, values: some ValueRows) throws -> (output: [Float], search: SearchResult) {
        let found = try search(queries: queries, batch: batch)
        return (try reduce(found, values: values), found)
    }

    /// The lookup-reduce half of `lookup`: the output `[batch, d_out]` of already selected slots.
    public func reduce(_ found: SearchResult, values: some ValueRows) throws -> [Float] {
        let c = config, batch = found.batch
        guard values.dim == c.valueDim, values.rowCount == c.physicalRows else {
            throw RetrievalError.invalidConfig(field: "physicalRows",
                                               reason: "the value table is \(values.rowCount) x \(values.dim), the layer needs \(c.physicalRows) x \(c.valueDim)")
        }
        var output = [Float](repeating: 0, count: batch * c.outputDim)
        let failure = LockedError()
        found.indices.withUnsafeBufferPointer { idx in
            found.weights.withUnsafeBufferPointer { w in
                output.withUnsafeMutableBufferPointer { out in
                    nonisolated(unsafe) let (idx, w, out) = (idx, w, out)
                    forEachBlock(batch) { range in
                        do { try reduceBlock(range, idx, w, values, out) } catch { failure.record(error) }
                    }
                }
            }
        }
        if let error = failure.error { throw error }
        return output
    }

    private func reduceBlock(_ range: Range<Int>, _ indices: UnsafeBufferPointer<Int>, _ weights: UnsafeBufferPointer<Float>,
                             _ values: some ValueRows, _ output: UnsafeMutableBufferPointer<Float>) throws {
        let c = config, perQuery = c.heads * c.topK, slots = range.count * perQuery
        var scratch = reducePool.withLock { $0.popLast() } ?? ReduceScratch()
        defer { reducePool.withLock { $0.append(scratch) } }
        scratch.reserve(slots: slots, cores: c.cores, groups: range.count * c.expansion, accumulators: range.count * c.expansion * c.valueDim)
        let first = range.lowerBound * perQuery
        // E = 1: slot k of the block adds into query k / (H·k); those targets are the same for
        // every block, so they are written once. Identity addressing then reads the slots and
        // weights where the search left them.
        if c.expansion == 1 && scratch.bagTargets < slots {
            for k in scratch.bagTargets..<slots { scratch.targets[k] = k / perQuery }
            scratch.bagTargets = slots
        }
        let rowsInPlace = c.expansion == 1 && c.addressing == .identity
        try scratch.rows.withUnsafeMutableBufferPointer { rows in
            try scratch.targets.withUnsafeMutableBufferPointer { targets in
                try scratch.weights.withUnsafeMutableBufferPointer { w in
                    if c.expansion == 1 {
                        if !rowsInPlace {
                            for k in 0..<slots { rows[k] = address.address(of: indices[first + k]).row }
                        }
                    } else {
                        // Rows grouped by (query, projector), so that the kernel sums each group in
                        // registers: a counting sort by target.
                        let groups = range.count * c.expansion
                        scratch.groupStart.withUnsafeMutableBufferPointer { start in
                            scratch.addressed.withUnsafeMutableBufferPointer { addressed in
                                for g in 0...groups { start[g] = 0 }
                                for k in 0..<slots {
                                    let (row, p) = address.address(of: indices[first + k])
                                    addressed[k] = (row, (k / perQuery) * c.expansion + p)
                                    start[addressed[k].target + 1] += 1
                                }
                                for g in 0..<groups { start[g + 1] += start[g] }
                                for k in 0..<slots {
                                    let (row, target) = addressed[k], to = start[target]
                                    start[target] += 1
                                    rows[to] = row
                                    targets[to] = target
                                    for t in 0..<c.cores { w[to * c.cores + t] = weights[(first + k) * c.cores + t] }
                                }
                            }
                        }
                    }
                    try scratch.accumulators.withUnsafeMutableBufferPointer { a in
                        let count = range.count * c.expansion * c.valueDim
                        for e in 0..<count { a[e] = 0 }
                        try values.gatherReduce(indices: rowsInPlace ? UnsafeBufferPointer(rebasing: indices[first..<(first + slots)])
                                                                : UnsafeBufferPointer(rebasing: rows[0..<slots]),
                                                weights: c.expansion == 1 ? UnsafeBufferPointer(rebasing: weights[(first * c.cores)..<((first + slots) * c.cores)])
                                                            : UnsafeBufferPointer(rebasing: w[0..<(slots * c.cores)]), chunks: c.cores,
                                                targets: UnsafeBufferPointer(rebasing: targets[0..<slots]),
                                                into: UnsafeMutableBufferPointer(rebasing: a[0..<count]))
                    }
                }
            }
        }
        let acc = scratch.accumulators
        for b in range {
            let out = output.baseAddress! + b * c.outputDim
            let accB = (b - range.lowerBound) * c.expansion * c.valueDim
            guard let projectors = tensors.projectors else {
                for j in 0..<c.valueDim { out[j] = acc[accB + j] }
                continue
            }
            // out += acc[p] (v) x projectors[p] (v x d_out), row by row of the projector.
            projectors.withUnsafeBufferPointer { proj in
                for p in 0..<c.expansion {
                    for i in 0..<c.valueDim {
                        let a = acc[accB + p * c.valueDim + i]
                        if a == 0 { continue }
                        let prow = proj.baseAddress! + (p * c.valueDim + i) * c.outputDim
                        for j in 0..<c.outputDim { out[j] += a * prow[j] }
                    }
                }
            }
        }
    }
}

/// Per-block working memory of a reduce: each selected slot's row, target (query, projector)
/// and weights, the (query, projector) accumulators, and for E > 1 the grouping by target.
private struct ReduceScratch: Sendable {
    var rows: [Int] = []
    var targets: [Int] = []
    var weights: [Float] = []
    var accumulators: [Float] = []
    var groupStart: [Int] = []
    var addressed: [(row: Int, target: Int)] = []
    /// For E = 1: how many leading entries of `targets` hold their slot's query.
    var bagTargets = 0

    mutating func reserve(slots: Int, cores: Int, groups: Int, accumulators count: Int) {
        if rows.count < slots {
            rows = [Int](repeating: 0, count: slots)
            targets = rows
            bagTargets = 0
            addressed = [(row: Int, target: Int)](repeating: (0, 0), count: slots)
        }
        if weights.count < slots * cores { weights = [Float](repeating: 0, count: slots * cores) }
        if accumulators.count < count { accumulators = [Float](repeating: 0, count: count) }
        if groupStart.count < groups + 1 { groupStart = [Int](repeating: 0, count: groups + 1) }
    }
}

/// Per-block working memory of a search.
private struct SearchScratch: Sendable {
    var rowScores: [Float]
    var colScores: [Float]
    var rowSelection = TopSelection()
    var colSelection = TopSelection()
    var slots = TopSelection()
    /// Per selected slot: its vid, and its score per core.
    var selected: [Int]
    var coreScores: [Float]
    /// Kept rows and columns in ascending order, so the sub-grid they span ascends in vid.
    var keptRows: [Int] = []
    var keptCols: [Int] = []
    /// The sub-grid's working memory: S_row, S_col, the core-mixed columns, per-core and total scores.
    var subgrid: [Float] = []

    private let gridRows: Int, gridCols: Int

    init(config c: RetrievalConfig) {
        gridRows = c.gridRows
        gridCols = c.gridCols
        rowScores = []
        colScores = []
        selected = [Int](repeating: 0, count: c.topK)
        coreScores = [Float](repeating: 0, count: c.topK * c.cores)
    }

    /// Makes room for the scores of `block` queries.
    mutating func reserve(block: Int) {
        if rowScores.count < block * gridRows { rowScores = [Float](repeating: 0, count: block * gridRows) }
        if colScores.count < block * gridCols { colScores = [Float](repeating: 0, count: block * gridCols) }
    }

    /// Keeps the best `count` rows and columns of query `b` (all of a side that has no more).
    mutating func keepBest(_ b: Int, rows: Int, cols: Int, count: Int) {
        rowScores.withUnsafeBufferPointer { rowSelection.select(UnsafeBufferPointer(rebasing: $0[(b * rows)..<((b + 1) * rows)]), count: count) }
        colScores.withUnsafeBufferPointer { colSelection.select(UnsafeBufferPointer(rebasing: $0[(b * cols)..<((b + 1) * cols)]), count: count) }
        keptRows = rowSelection.positions.sorted()
        keptCols = colSelection.positions.sorted()
    }

    mutating func prepareSubgrid(rank r: Int, cores c: Int, rows: Int, cols: Int) {
        let need = r * rows + r * cols + c * r * cols + c * rows * cols + rows * cols
        if subgrid.count < need { subgrid = [Float](repeating: 0, count: need) }
    }
}

/// The first error thrown by any worker of a parallel loop.
final class LockedError: @unchecked Sendable {
    // Invariant: `stored` is only touched under `lock`.
    private let lock = NSLock()
    private var stored: (any Error)?

    func record(_ error: any Error) {
        lock.lock(); defer { lock.unlock() }
        if stored == nil { stored = error }
    }

    var error: (any Error)? {
        lock.lock(); defer { lock.unlock() }
        return stored
    }
}
