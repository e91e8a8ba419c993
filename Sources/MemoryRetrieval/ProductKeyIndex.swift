import Dispatch
import Foundation

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

    public init(config: RetrievalConfig, tensors: RetrievalTensors,
                threads: Int = ProcessInfo.processInfo.activeProcessorCount) throws(RetrievalError) {
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
        try checkQueries(queries, batch: batch)
        let c = config
        var result = SearchResult(batch: batch, indices: [Int](repeating: 0, count: batch * c.heads * c.topK),
                                  weights: [Float](repeating: 0, count: batch * c.heads * c.topK * c.cores))
        queries.withUnsafeBufferPointer { q in
            result.indices.withUnsafeMutableBufferPointer { idx in
                result.weights.withUnsafeMutableBufferPointer { w in
                    nonisolated(unsafe) let (q, idx, w) = (q, idx, w)
                    forEachBlock(batch) { range in searchBlock(q, range, idx, w) }
                }
            }
        }
        return result
    }

    /// Runs `body` over blocks of the batch on the worker threads.
    private func forEachBlock(_ batch: Int, _ body: @Sendable (Range<Int>) -> Void) {
        let block = max(1, min(32, (batch + threads - 1) / threads))
        let blocks = (batch + block - 1) / block
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
                             _ indices: UnsafeMutableBufferPointer<Int>, _ weights: UnsafeMutableBufferPointer<Float>) {
        let c = config
        let n = range.count, d = c.keyDim, stride = c.heads * 2 * d
        var scratch = SearchScratch(config: c, block: n)
        var selection = TopSelection(capacity: c.topK)
        for h in 0..<c.heads {
            let qRow = queries.baseAddress! + range.lowerBound * stride + h * 2 * d
            let qCol = qRow + d
            switch c.scoring {
            case .pkm:
                scoreAll(tensors.rowKeys, offset: h * c.gridRows * d, count: c.gridRows, qRow, n, into: &scratch.rowScores)
                scoreAll(tensors.colKeys, offset: h * c.gridCols * d, count: c.gridCols, qCol, n, into: &scratch.colScores)
            case .tucker:
                scoreAll(rankRowKeys[h], offset: 0, count: c.gridRows, qRow, n, into: &scratch.rowScores)
                scoreAll(rankColKeys[h], offset: 0, count: c.gridCols, qCol, n, into: &scratch.colScores)
            case .tuckerExact:
                break
            }
            for b in 0..<n {
                let slot = ((range.lowerBound + b) * c.heads + h) * c.topK
                let q = (row: qRow + b * stride, col: qCol + b * stride)
                selection.reset()
                switch c.scoring {
                case .pkm: selectPKM(b, &scratch, &selection)
                case .tucker: selectTucker(b, head: h, q, &scratch, &selection, exact: false)
                case .tuckerExact: selectTucker(b, head: h, q, &scratch, &selection, exact: true)
                }
                for s in 0..<c.topK { indices[slot + s] = selection.indices[s] }
                // Weights: the per-core scores of the selected slots, through the activation per core.
                let w = weights.baseAddress! + slot * c.cores
                for s in 0..<c.topK {
                    for t in 0..<c.cores { w[s * c.cores + t] = c.scoring == .pkm ? selection.scores[s] : scratch.coreScores[s * c.cores + t] }
                }
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
    private func selectPKM(_ b: Int, _ s: inout SearchScratch, _ selection: inout TopSelection) {
        let c = config
        s.rows.reset(); s.cols.reset()
        s.rowScores.withUnsafeBufferPointer { s.rows.offerAll(UnsafeBufferPointer(rebasing: $0[(b * c.gridRows)..<((b + 1) * c.gridRows)])) }
        s.colScores.withUnsafeBufferPointer { s.cols.offerAll(UnsafeBufferPointer(rebasing: $0[(b * c.gridCols)..<((b + 1) * c.gridCols)])) }
        for (ri, i) in s.rows.indices.enumerated() {
            for (cj, j) in s.cols.indices.enumerated() {
                selection.offer(s.rows.scores[ri] + s.cols.scores[cj], i * c.gridCols + j)
            }
        }
    }

    /// Tucker: pre-select m rows and columns by the rank-1 scores (or take all, exact), score the
    /// sub-grid with every core, keep the top k by total; per-core scores go to `s.coreScores`.
    private func selectTucker(_ b: Int, head h: Int, _ q: (row: UnsafePointer<Float>, col: UnsafePointer<Float>),
                              _ s: inout SearchScratch, _ selection: inout TopSelection, exact: Bool) {
        let c = config, r = c.rank, d = c.keyDim
        let rows: [Int], cols: [Int]
        if exact {
            rows = Array(0..<c.gridRows)
            cols = Array(0..<c.gridCols)
        } else {
            s.rows.reset(); s.cols.reset()
            s.rowScores.withUnsafeBufferPointer { s.rows.offerAll(UnsafeBufferPointer(rebasing: $0[(b * c.gridRows)..<((b + 1) * c.gridRows)])) }
            s.colScores.withUnsafeBufferPointer { s.cols.offerAll(UnsafeBufferPointer(rebasing: $0[(b * c.gridCols)..<((b + 1) * c.gridCols)])) }
            rows = s.rows.indices
            cols = s.cols.indices
        }
        // S_row[a][i] for kept rows, and T_t[a][j] = Σ_b cores[h,t,a,b] S_col[b][j] for kept columns.
        let sRow = tensors.rowKeys.withUnsafeBufferPointer { k in
            rows.flatMap { i in (0..<r).map { a in KeyScoring.dot(k.baseAddress! + ((h * r + a) * c.gridRows + i) * d, q.row, d) } }
        }
        let sCol = tensors.colKeys.withUnsafeBufferPointer { k in
            cols.flatMap { j in (0..<r).map { bb in KeyScoring.dot(k.baseAddress! + ((h * r + bb) * c.gridCols + j) * d, q.col, d) } }
        }
        let cores = tensors.cores!
        var tCol = [Float](repeating: 0, count: cols.count * c.cores * r)  // [j][t][a]
        for jj in 0..<cols.count {
            for t in 0..<c.cores {
                for a in 0..<r {
                    var sum: Float = 0
                    for bb in 0..<r { sum += cores[((h * c.cores + t) * r + a) * r + bb] * sCol[jj * r + bb] }
                    tCol[(jj * c.cores + t) * r + a] = sum
                }
            }
        }
        var perCore = [Float](repeating: 0, count: c.cores)
        // Remember every candidate's per-core scores by its position, to report the selected ones.
        var candidateScores = [Float](repeating: 0, count: rows.count * cols.count * c.cores)
        for (ii, i) in rows.enumerated() {
            for (jj, j) in cols.enumerated() {
                var total: Float = 0
                for t in 0..<c.cores {
                    var sum: Float = 0
                    for a in 0..<r { sum += sRow[ii * r + a] * tCol[(jj * c.cores + t) * r + a] }
                    perCore[t] = sum
                    total += sum
                }
                let position = ii * cols.count + jj
                for t in 0..<c.cores { candidateScores[position * c.cores + t] = perCore[t] }
                selection.offer(total, i * c.gridCols + j)
            }
        }
        // Map each selected vid back to its candidate position to fetch its per-core scores.
        let rowPosition = Dictionary(uniqueKeysWithValues: rows.enumerated().map { ($1, $0) })
        let colPosition = Dictionary(uniqueKeysWithValues: cols.enumerated().map { ($1, $0) })
        for (sIdx, vid) in selection.indices.enumerated() {
            let position = rowPosition[vid / c.gridCols]! * cols.count + colPosition[vid % c.gridCols]!
            for t in 0..<c.cores { s.coreScores[sIdx * c.cores + t] = candidateScores[position * c.cores + t] }
        }
    }

    // MARK: Lookup

    /// The reduced output `[batch, d_out]` for a batch of queries, plus the search result.
    ///
    /// All selected rows of a block of queries go to `values` in one `gatherReduce`, grouped per
    /// (query, projector), so each shard is read once per block; then each query's per-projector
    /// sums are multiplied by the projectors.
    public func lookup(queries: [Float], batch: Int, values: some ValueRows) throws -> (output: [Float], search: SearchResult) {
        let c = config
        guard values.dim == c.valueDim, values.rowCount == c.physicalRows else {
            throw RetrievalError.invalidConfig(field: "physicalRows",
                                               reason: "the value table is \(values.rowCount) x \(values.dim), the layer needs \(c.physicalRows) x \(c.valueDim)")
        }
        let found = try search(queries: queries, batch: batch)
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
        return (output, found)
    }

    private func reduceBlock(_ range: Range<Int>, _ indices: UnsafeBufferPointer<Int>, _ weights: UnsafeBufferPointer<Float>,
                             _ values: some ValueRows, _ output: UnsafeMutableBufferPointer<Float>) throws {
        let c = config, perQuery = c.heads * c.topK
        var rows = [Int](), targets = [Int](), w = [Float]()
        rows.reserveCapacity(range.count * perQuery)
        targets.reserveCapacity(range.count * perQuery)
        w.reserveCapacity(range.count * perQuery * c.cores)
        for b in range {
            for s in 0..<perQuery {
                let slot = b * perQuery + s
                let (row, p) = address.address(of: indices[slot])
                rows.append(row)
                targets.append((b - range.lowerBound) * c.expansion + p)
                for t in 0..<c.cores { w.append(weights[slot * c.cores + t]) }
            }
        }
        var acc = [Float](repeating: 0, count: range.count * c.expansion * c.valueDim)
        try rows.withUnsafeBufferPointer { r in
            try w.withUnsafeBufferPointer { wp in
                try targets.withUnsafeBufferPointer { t in
                    try acc.withUnsafeMutableBufferPointer { a in
                        try values.gatherReduce(indices: r, weights: wp, chunks: c.cores, targets: t, into: a)
                    }
                }
            }
        }
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

/// Per-block working memory of a search.
private struct SearchScratch {
    var rowScores: [Float]
    var colScores: [Float]
    var rows: TopSelection
    var cols: TopSelection
    var coreScores: [Float]

    init(config c: RetrievalConfig, block: Int) {
        rowScores = [Float](repeating: 0, count: block * c.gridRows)
        colScores = [Float](repeating: 0, count: block * c.gridCols)
        // PKM keeps the top min(k, side) rows and columns: still exact (Spec/RETRIEVAL.md, PKM).
        let side = c.scoring == .pkm ? c.topK : c.topM
        rows = TopSelection(capacity: max(1, min(side, c.gridRows)))
        cols = TopSelection(capacity: max(1, min(side, c.gridCols)))
        coreScores = [Float](repeating: 0, count: c.topK * c.cores)
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
