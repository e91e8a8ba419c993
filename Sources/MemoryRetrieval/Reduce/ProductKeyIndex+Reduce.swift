import _MemorySupport

/// The fused lookup-reduce: the selected rows' weighted sums, then the projectors.
extension ProductKeyIndex {
    /// The reduced output `[batch, d_out]` for a batch of queries, plus the search result.
    ///
    /// All selected rows of a block of queries go to `values` in one `gatherReduce`, grouped per
    /// (query, projector), so each shard is read once per block; then each query's per-projector
    /// sums are multiplied by the projectors.
    /// A gated layer (`gateDim` > 0) needs `gateInputs` `[batch, gateDim]`, one vector per query.
    public func lookup(queries: [Float], batch: Int, values: some ValueRows, gateInputs: [Float]? = nil) throws -> (output: [Float], search: SearchResult) {
        try withOptionalBuffer(gateInputs) { gates in
            try checkGateInputs(gates, batch: batch)
            let found = try search(queries: queries, batch: batch)
            return (try reduceChecked(found, values: values, gateInputs: gates), found)
        }
    }

    /// The lookup-reduce half of `lookup`: the output `[batch, d_out]` of already selected slots.
    public func reduce(_ found: SearchResult, values: some ValueRows, gateInputs: [Float]? = nil) throws -> [Float] {
        try withOptionalBuffer(gateInputs) { gates in
            try checkGateInputs(gates, batch: found.batch)
            return try reduceChecked(found, values: values, gateInputs: gates)
        }
    }

    /// `reduce(_:values:gateInputs:)` once the gate inputs are checked.
    private func reduceChecked(_ found: SearchResult, values: some ValueRows, gateInputs: UnsafeBufferPointer<Float>?) throws -> [Float] {
        var output = [Float](repeating: 0, count: found.batch * config.outputDim)
        try found.indices.withUnsafeBufferPointer { idx in
            try found.weights.withUnsafeBufferPointer { w in
                try output.withUnsafeMutableBufferPointer { out in
                    try reduceChecked(indices: idx, weights: w, batch: found.batch, values: values, gateInputs: gateInputs, into: out)
                }
            }
        }
        return output
    }

    /// The lookup into caller-provided buffers, without copies: the search into `indices` and
    /// `weights`, then the reduce into `output` `[batch, d_out]` (overwritten).
    public func lookup(queries: UnsafeBufferPointer<Float>, batch: Int, values: some ValueRows, gateInputs: UnsafeBufferPointer<Float>? = nil,
                       output: UnsafeMutableBufferPointer<Float>, indices: UnsafeMutableBufferPointer<Int>,
                       weights: UnsafeMutableBufferPointer<Float>) throws {
        try checkGateInputs(gateInputs, batch: batch)
        try search(queries: queries, batch: batch, indices: indices, weights: weights)
        try reduceChecked(indices: UnsafeBufferPointer(indices), weights: UnsafeBufferPointer(weights), batch: batch, values: values,
                          gateInputs: gateInputs, into: output)
    }

    /// Refuses gate inputs that do not fit the layer: required `[batch, gateDim]` of finite floats
    /// for a gated layer, absent for another.
    private func checkGateInputs(_ inputs: UnsafeBufferPointer<Float>?, batch: Int) throws(RetrievalError) {
        let g = config.gateDim
        guard g > 0 else {
            if inputs != nil { throw .invalidConfig(field: "gateInputs", reason: "the layer has no gate (gateDim 0), yet gate inputs were given") }
            return
        }
        guard let inputs else {
            throw .invalidConfig(field: "gateInputs", reason: "the layer is gated by \(g) columns: a lookup needs gate inputs [batch, \(g)]")
        }
        guard inputs.count == batch * g else {
            throw .invalidConfig(field: "gateInputs", reason: "\(inputs.count) floats are not \(batch) gate inputs of \(g)")
        }
        for (i, x) in inputs.enumerated() where !x.isFinite {
            throw .invalidConfig(field: "gateInputs", reason: "gate input \(i / g) contains NaN or infinity")
        }
    }

    /// The reduce of selected slots laid out as ``SearchResult``'s into `output` `[batch, d_out]` (overwritten).
    /// A gated layer scales each slot's weights by its gate (Spec/RETRIEVAL.md, "Gates"), from
    /// `gateInputs` `[batch, gateDim]`.
    public func reduce(indices: UnsafeBufferPointer<Int>, weights: UnsafeBufferPointer<Float>, batch: Int,
                       values: some ValueRows, gateInputs: UnsafeBufferPointer<Float>? = nil,
                       into output: UnsafeMutableBufferPointer<Float>) throws {
        try checkGateInputs(gateInputs, batch: batch)
        try reduceChecked(indices: indices, weights: weights, batch: batch, values: values, gateInputs: gateInputs, into: output)
    }

    /// `reduce(indices:weights:batch:values:gateInputs:into:)` once the gate inputs are checked.
    private func reduceChecked(indices: UnsafeBufferPointer<Int>, weights: UnsafeBufferPointer<Float>, batch: Int,
                               values: some ValueRows, gateInputs: UnsafeBufferPointer<Float>?,
                               into output: UnsafeMutableBufferPointer<Float>) throws {
        let c = config
        guard values.dim == c.tableDim, values.rows == c.poolRows else {
            throw RetrievalError.invalidConfig(field: "poolRows",
                                               reason: "the value table is \(values.rows) x \(values.dim), the layer needs \(c.poolRows) x \(c.tableDim)")
        }
        guard batch >= 1, indices.count == batch * c.heads * c.topK, weights.count == indices.count * c.cores,
              output.count == batch * c.outputDim else {
            throw RetrievalError.invalidConfig(field: "batch", reason: "\(indices.count) slots, \(weights.count) weights and \(output.count) " +
                                               "outputs do not make \(batch) queries of \(c.heads) x \(c.topK) slots, \(c.cores) cores, \(c.outputDim) outputs")
        }
        // One block (a single query, say): no hand-over, and its error thrown as it is.
        if batch <= blockSize(batch) { return try reduceBlock(0..<batch, indices, weights, gateInputs, values, output) }
        let failure = FirstError()
        nonisolated(unsafe) let (idx, w, gates, out) = (indices, weights, gateInputs, output)
        forEachBlock(batch) { range in
            do { try reduceBlock(range, idx, w, gates, values, out) } catch { failure.record(error) }
        }
        if let error = failure.error { throw error }
    }

    private func reduceBlock(_ range: Range<Int>, _ indices: UnsafeBufferPointer<Int>, _ weights: UnsafeBufferPointer<Float>,
                             _ gateInputs: UnsafeBufferPointer<Float>?, _ values: some ValueRows,
                             _ output: UnsafeMutableBufferPointer<Float>) throws {
        let c = config, perQuery = c.heads * c.topK, slots = range.count * perQuery
        var scratch = reducePool.withLock { $0.popLast() } ?? ReduceScratch()
        defer { reducePool.withLock { $0.append(scratch) } }
        scratch.reserve(slots: slots, cores: c.cores, groups: range.count * c.expansion, accumulators: range.count * c.expansion * c.valueDim,
                        gated: gateInputs != nil)
        let first = range.lowerBound * perQuery
        // E = 1: slot k of the block adds into query k / (H·k); those targets are the same for
        // every block, so they are written once. Identity addressing then reads the slots and
        // weights where the search left them.
        if c.expansion == 1 && scratch.bagTargets < slots {
            for k in scratch.bagTargets..<slots { scratch.targets[k] = k / perQuery }
            scratch.bagTargets = slots
        }
        let rowsInPlace = c.expansion == 1 && c.addressing == .identity && !c.readsPoolWindow
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
                    let slotRows = rowsInPlace ? UnsafeBufferPointer(rebasing: indices[first..<(first + slots)])
                                               : UnsafeBufferPointer(rebasing: rows[0..<slots])
                    if let gateInputs {
                        // The gate scales every core's weight of its slot, in the reduce's order: from
                        // where the search left them (E = 1), or from their sorted copy (E > 1).
                        let unsorted = c.expansion == 1 ? UnsafeBufferPointer(rebasing: weights[(first * c.cores)..<((first + slots) * c.cores)]) : nil
                        try scratch.gateQueries.withUnsafeMutableBufferPointer { queries in
                            try scratch.gates.withUnsafeMutableBufferPointer { scores in
                                try gate(slotRows, targets: UnsafeBufferPointer(rebasing: targets[0..<slots]),
                                         inputs: UnsafeBufferPointer(rebasing: gateInputs[(range.lowerBound * c.gateDim)..<(range.upperBound * c.gateDim)]),
                                         from: unsorted, weights: UnsafeMutableBufferPointer(rebasing: w[0..<(slots * c.cores)]), values: values,
                                         queries: UnsafeMutableBufferPointer(rebasing: queries[0..<slots]),
                                         scores: UnsafeMutableBufferPointer(rebasing: scores[0..<slots]))
                            }
                        }
                    }
                    try scratch.accumulators.withUnsafeMutableBufferPointer { a in
                        let count = range.count * c.expansion * c.valueDim
                        for e in 0..<count { a[e] = 0 }
                        try values.gatherReduce(indices: slotRows,
                                                weights: c.expansion == 1 && gateInputs == nil
                                                    ? UnsafeBufferPointer(rebasing: weights[(first * c.cores)..<((first + slots) * c.cores)])
                                                    : UnsafeBufferPointer(rebasing: w[0..<(slots * c.cores)]), chunks: c.cores, width: c.valueDim,
                                                targets: UnsafeBufferPointer(rebasing: targets[0..<slots]),
                                                into: UnsafeMutableBufferPointer(rebasing: a[0..<count]))
                    }
                }
            }
        }
        scratch.accumulators.withUnsafeBufferPointer { acc in
            project(UnsafeBufferPointer(rebasing: acc[0..<(range.count * c.expansion * c.valueDim)]), queries: range.count,
                    into: UnsafeMutableBufferPointer(rebasing: output[(range.lowerBound * c.outputDim)..<(range.upperBound * c.outputDim)]))
        }
    }

    /// Sets each slot's `weights` (all cores) to its weights in `source` (nil: `weights` itself)
    /// times its gate γ(u_b · G[row]), with u_b the gate input of the slot's query (`targets` / E
    /// in the block) and G[row] the last `gateDim` elements of its row.
    private func gate(_ rows: UnsafeBufferPointer<Int>, targets: UnsafeBufferPointer<Int>, inputs: UnsafeBufferPointer<Float>,
                      from source: UnsafeBufferPointer<Float>?, weights: UnsafeMutableBufferPointer<Float>, values: some ValueRows,
                      queries: UnsafeMutableBufferPointer<Int>, scores: UnsafeMutableBufferPointer<Float>) throws {
        let c = config
        for k in rows.indices { queries[k] = targets[k] / c.expansion }
        try values.gatherDots(indices: rows, column: c.valueDim, width: c.gateDim, inputs: inputs, queries: UnsafeBufferPointer(queries), into: scores)
        for k in rows.indices {
            let g = c.gateActivation.apply(scores[k])
            for t in 0..<c.cores { weights[k * c.cores + t] = (source?[k * c.cores + t] ?? weights[k * c.cores + t]) * g }
        }
    }

    /// The output `[queries, d_out]` (overwritten) from per-projector sums `[queries, E, v]`:
    /// each query's sums times the projectors, or the sums themselves without projectors.
    private func project(_ acc: UnsafeBufferPointer<Float>, queries: Int, into output: UnsafeMutableBufferPointer<Float>) {
        let c = config
        guard let projectors = tensors.projectors else {
            // The sums themselves, one copy per query (one for the block when they lie back to back).
            let whole = c.expansion == 1 && c.outputDim == c.valueDim
            let rows = whole ? 1 : queries, count = whole ? queries * c.valueDim : c.valueDim
            for b in 0..<rows {
                (output.baseAddress! + b * c.outputDim).update(from: acc.baseAddress! + b * c.expansion * c.valueDim, count: count)
            }
            return
        }
        for b in 0..<queries {
            let out = output.baseAddress! + b * c.outputDim
            let accB = b * c.expansion * c.valueDim
            for j in 0..<c.outputDim { out[j] = 0 }
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

/// The reduce in three steps, for a table whose rows are summed elsewhere (Spec/DISTRIBUTED.md):
/// where each selected slot's row is, the per-projector sums (by whoever holds the rows), then
/// the projectors. `reduce` is these three on one table.
extension ProductKeyIndex {
    /// The table row and projector of each virtual slot in `slots`; throws for a slot outside `0 ..< N_v`.
    public func addresses(of slots: UnsafeBufferPointer<Int>, rows: UnsafeMutableBufferPointer<Int>,
                          projectors: UnsafeMutableBufferPointer<Int>) throws(RetrievalError) {
        guard rows.count == slots.count, projectors.count == slots.count else {
            throw .invalidConfig(field: "slots", reason: "\(slots.count) slots need \(slots.count) rows and projectors (got \(rows.count) and \(projectors.count))")
        }
        for k in slots.indices {
            let vid = slots[k]
            guard vid >= 0, vid < config.virtualSlots else {
                throw .invalidConfig(field: "slots", reason: "slot \(k) is \(vid), outside the layer's 0..<\(config.virtualSlots)")
            }
            (rows[k], projectors[k]) = address.address(of: vid)
        }
    }

    /// The output `[queries, d_out]` (overwritten) from the sums `[queries, E, v]` of each query's
    /// rows per projector, weighted as the search weighted them.
    public func project(sums: UnsafeBufferPointer<Float>, queries: Int, into output: UnsafeMutableBufferPointer<Float>) throws(RetrievalError) {
        let c = config
        guard queries >= 1, sums.count == queries * c.expansion * c.valueDim, output.count == queries * c.outputDim else {
            throw .invalidConfig(field: "queries", reason: "\(sums.count) sums and \(output.count) outputs do not make \(queries) queries of " +
                                 "\(c.expansion) x \(c.valueDim) sums and \(c.outputDim) outputs")
        }
        project(sums, queries: queries, into: output)
    }
}

/// `body` with `array`'s buffer, or with nil.
func withOptionalBuffer<R>(_ array: [Float]?, _ body: (UnsafeBufferPointer<Float>?) throws -> R) rethrows -> R {
    guard let array else { return try body(nil) }
    return try array.withUnsafeBufferPointer { try body($0) }
}
