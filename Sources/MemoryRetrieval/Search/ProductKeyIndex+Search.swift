import _MemorySupport

/// Search: scoring the keys, selecting the top-k slots and their weights (Spec/RETRIEVAL.md).
extension ProductKeyIndex {
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

    /// The search into caller-provided buffers, without copies: `queries` `[batch, H, 2, d]`,
    /// `indices` `[batch, H, k]` and `weights` `[batch, H, k, c]` (laid out as ``SearchResult``'s).
    public func search(queries: UnsafeBufferPointer<Float>, batch: Int,
                       indices: UnsafeMutableBufferPointer<Int>, weights: UnsafeMutableBufferPointer<Float>) throws(RetrievalError) {
        try search(queries: queries, batch: batch, indices: indices, weights: weights, exhaustive: false)
    }

    private func search(queries: [Float], batch: Int, exhaustive: Bool) throws(RetrievalError) -> SearchResult {
        let c = config
        var result = SearchResult(batch: batch, indices: [Int](repeating: 0, count: max(0, batch) * c.heads * c.topK),
                                  weights: [Float](repeating: 0, count: max(0, batch) * c.heads * c.topK * c.cores))
        try queries.withUnsafeBufferPointer { q throws(RetrievalError) in
            try result.indices.withUnsafeMutableBufferPointer { idx throws(RetrievalError) in
                try result.weights.withUnsafeMutableBufferPointer { w throws(RetrievalError) in
                    try search(queries: q, batch: batch, indices: idx, weights: w, exhaustive: exhaustive)
                }
            }
        }
        return result
    }

    private func search(queries: UnsafeBufferPointer<Float>, batch: Int, indices: UnsafeMutableBufferPointer<Int>,
                        weights: UnsafeMutableBufferPointer<Float>, exhaustive: Bool) throws(RetrievalError) {
        try checkQueries(queries, batch: batch)
        let c = config
        guard indices.count == batch * c.heads * c.topK, weights.count == batch * c.heads * c.topK * c.cores else {
            throw .invalidConfig(field: "batch", reason: "buffers of \(indices.count) indices and \(weights.count) weights for " +
                                 "\(batch) queries, which need \(batch * c.heads * c.topK) and \(batch * c.heads * c.topK * c.cores)")
        }
        nonisolated(unsafe) let (q, idx, w) = (queries, indices, weights)
        let all = 0..<c.heads
        if batch <= Self.headSplitBatch && threads > 1 && c.heads > 1 {
            // Small batches are bound by reading the keys: each worker takes some heads for the
            // whole batch and streams only their keys, instead of every worker streaming all keys.
            let groups = min(threads, c.heads)
            WorkerPool.shared.run(tasks: groups, helpers: groups - 1) { g in
                searchBlock(q, 0..<batch, heads: (g * c.heads / groups)..<((g + 1) * c.heads / groups), idx, w, exhaustive: exhaustive)
            }
        } else {
            forEachBlock(batch) { range in searchBlock(q, range, heads: all, idx, w, exhaustive: exhaustive) }
        }
    }

    /// Batches of at most this many queries are split across the workers by head, not by query.
    static let headSplitBatch = 16

    private func checkQueries(_ queries: UnsafeBufferPointer<Float>, batch: Int) throws(RetrievalError) {
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

    /// Searches queries `range` in `heads`, writing their slots into `indices` and `weights` (whole-batch buffers).
    private func searchBlock(_ queries: UnsafeBufferPointer<Float>, _ range: Range<Int>, heads: Range<Int>,
                             _ indices: UnsafeMutableBufferPointer<Int>, _ weights: UnsafeMutableBufferPointer<Float>,
                             exhaustive: Bool) {
        let c = config
        let n = range.count, d = c.keyDim, stride = c.heads * 2 * d
        var scratch = scratchPool.withLock { $0.popLast() } ?? SearchScratch(config: c)
        scratch.reserve(block: n)
        defer { scratchPool.withLock { $0.append(scratch) } }
        // The smallest batches score bfloat16 copies of the first-stage keys and select exactly
        // from them; large ones too, with the queries rounded as well, where the CPU multiplies
        // bfloat16 pairs (AVX512-BF16: twice sgemm's multiply-adds per instruction).
        let approximate = !exhaustive && c.scoring != .tuckerExact
        let tables = n <= approximateBatch && approximate ? approximateTables : nil
        let pairTables = tables == nil && approximate && n >= pairsBatch && approximateTables?.rows.first?.hasPairs == true ? approximateTables : nil
        for h in heads {
            let qRow = queries.baseAddress! + range.lowerBound * stride + h * 2 * d
            let qCol = qRow + d
            if let pairTables {
                scratch.rowPairs.prepare(qRow, stride: stride, batch: n, dim: d)
                scratch.colPairs.prepare(qCol, stride: stride, batch: n, dim: d)
                scratch.rowScores.withUnsafeMutableBufferPointer { pairTables.rows[h].scorePairs(scratch.rowPairs, batch: n, into: $0.baseAddress!) }
                scratch.colScores.withUnsafeMutableBufferPointer { pairTables.cols[h].scorePairs(scratch.colPairs, batch: n, into: $0.baseAddress!) }
            }
            switch (c.scoring, tables ?? pairTables) {
            case (.pkm, nil):
                scoreAll(tensors.rowKeys, offset: h * c.gridRows * d, count: c.gridRows, qRow, n, into: &scratch.rowScores)
                scoreAll(tensors.colKeys, offset: h * c.gridCols * d, count: c.gridCols, qCol, n, into: &scratch.colScores)
            case (.tucker, nil) where !exhaustive:
                scoreAll(rankRowKeys[h], offset: 0, count: c.gridRows, qRow, n, into: &scratch.rowScores)
                scoreAll(rankColKeys[h], offset: 0, count: c.gridCols, qCol, n, into: &scratch.colScores)
            case (_, _?) where pairTables != nil:
                break
            case (_, let tables?):
                scratch.rowScores.withUnsafeMutableBufferPointer { tables.rows[h].score(qRow, stride: stride, batch: n, into: $0.baseAddress!) }
                scratch.colScores.withUnsafeMutableBufferPointer { tables.cols[h].score(qCol, stride: stride, batch: n, into: $0.baseAddress!) }
            default:
                break
            }
            for b in 0..<n {
                let slot = ((range.lowerBound + b) * c.heads + h) * c.topK
                let q = (row: qRow + b * stride, col: qCol + b * stride)
                let best = c.scoring == .pkm ? c.topK : c.topM
                if let tables {
                    firstStageKeys(head: h) { rowKeys, colKeys in
                        scratch.keepExactly(b, best: best, tables: tables, head: h, rowKeys: rowKeys, colKeys: colKeys, query: q)
                    }
                } else if let pairTables {
                    firstStageKeys(head: h) { rowKeys, colKeys in
                        scratch.keepPairs(b, best: best, tables: pairTables, head: h, rowKeys: rowKeys, colKeys: colKeys, query: q)
                    }
                }
                let kept = tables != nil || pairTables != nil
                switch c.scoring {
                case .pkm: selectPKM(b, &scratch, exhaustive: exhaustive, kept: kept)
                case .tucker: selectTucker(b, head: h, q, &scratch, exact: exhaustive, kept: kept)
                case .tuckerExact: selectTucker(b, head: h, q, &scratch, exact: true, kept: false)
                }
                for s in 0..<c.topK { indices[slot + s] = scratch.selected[s] }
                // Weights: the per-core scores of the selected slots, through the activation per core.
                let w = weights.baseAddress! + slot * c.cores
                for e in 0..<(c.topK * c.cores) { w[e] = scratch.coreScores[e] }
                for t in 0..<c.cores { c.activation.apply(w + t, count: c.topK, stride: c.cores) }
            }
        }
    }

    /// The f32 tables of head `h`'s first stage (PKM: its keys; Tucker: its rank-1 tables), for `body`.
    private func firstStageKeys<T>(head h: Int, _ body: (UnsafePointer<Float>, UnsafePointer<Float>) -> T) -> T {
        let c = config
        if c.scoring == .pkm {
            return tensors.rowKeys.withUnsafeBufferPointer { r in
                tensors.colKeys.withUnsafeBufferPointer { k in
                    body(r.baseAddress! + h * c.gridRows * c.keyDim, k.baseAddress! + h * c.gridCols * c.keyDim)
                }
            }
        }
        return rankRowKeys[h].withUnsafeBufferPointer { r in rankColKeys[h].withUnsafeBufferPointer { k in body(r.baseAddress!, k.baseAddress!) } }
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
    private func selectPKM(_ b: Int, _ s: inout SearchScratch, exhaustive: Bool, kept: Bool) {
        let c = config
        if !kept { s.keep(b, rows: c.gridRows, cols: c.gridCols, best: exhaustive ? nil : c.topK) }
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
                              _ s: inout SearchScratch, exact: Bool, kept: Bool) {
        let c = config, r = c.rank, d = c.keyDim, nc = c.cores
        if !kept { s.keep(b, rows: c.gridRows, cols: c.gridCols, best: exact ? nil : c.topM) }
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
}
