import CGatherKernel

/// Reading value rows: single rows, batches converted to Float, and the fused lookup-reduce.
///
/// Every read goes through ``forEachRowGroup(_:_:)``, which hands out the stored bytes of the
/// rows as pointers, a group at a time, for one kernel call per group: for a complete raw table
/// of version 3 or later, groups of consecutive rows in the order asked (read in place, each row checked
/// against its checksum the first time it is read after opening); otherwise one group per
/// shard, in storage order, each shard decoded (or read) once per call.
extension Store {
    /// The best gather-reduce code this processor runs: `avx512` (16 floats a vector, for rows
    /// whose chunks are multiples of 16), `avx2` (AVX2, FMA and F16C; multiples of 8) or `portable`.
    public static var reduceKernel: String {
        switch pkm_gather_reduce_level() {
        case Int32(PKM_KERNEL_AVX512): "avx512"
        case Int32(PKM_KERNEL_AVX2): "avx2"
        default: "portable"
        }
    }

    // MARK: Rows

    /// Row `index` as Float.
    public func row(_ index: Int) throws -> [Float] {
        var out = [Float](repeating: 0, count: layout.dim)
        try out.withUnsafeMutableBufferPointer { try row(index, into: $0) }
        return out
    }

    /// Decodes row `index` into the first `dim` floats of `output`, without allocating.
    public func row(_ index: Int, into output: UnsafeMutableBufferPointer<Float>) throws {
        let dim = layout.dim
        guard output.count >= dim else { throw StoreError.invalidArgument("output holds \(output.count) floats, a row has \(dim)") }
        // A cached shard's row, or a raw row whose shard is located, needs no grouping, scratch or transaction.
        if index >= 0, index < readableRows {
            if let residentRows {
                layout.elementType.convert(UnsafeRawPointer(residentRows.base) + index * layout.rowBytes, count: dim, into: output.baseAddress!)
                return
            }
            let shard = index / layout.rowsPerShard
            if let rawRows, rawRows.nibbleTable == nil, let shardRows = rawRows.rows(ofShard: shard) {
                let p = rawRows.location(ofRow: index, shard: shard, shardRows: shardRows)
                if checksRows { try rawRows.verify(row: index) }
                layout.elementType.convert(p, count: dim, into: output.baseAddress!)
                return
            }
            if layout.codec != .raw, let cached = cache.lookup(shard) {
                cache.record(hits: 1, misses: 0)
                let offset = (index - shard * layout.rowsPerShard) * layout.rowBytes
                cached.withBytes { layout.elementType.convert($0.baseAddress! + offset, count: dim, into: output.baseAddress!) }
                return
            }
        }
        try withUnsafePointer(to: index) { i in
            try forEachRowGroup(UnsafeBufferPointer(start: i, count: 1)) { group in
                layout.elementType.convert(group.rows[0]!, count: dim, into: output.baseAddress!)
            }
        }
    }

    /// Decodes the rows at `indices` to Float, row `i` of the output holding `indices[i]`.
    /// - Complexity: O(n log n) to group rows by shard (none for complete raw tables); each
    ///   shard is decoded once per call.
    public func rows(_ indices: [Int], into output: UnsafeMutableBufferPointer<Float>) throws {
        try indices.withUnsafeBufferPointer { try rows($0, into: output) }
    }

    /// ``rows(_:into:)`` over indices in the caller's memory.
    public func rows(_ indices: UnsafeBufferPointer<Int>, into output: UnsafeMutableBufferPointer<Float>) throws {
        let dim = layout.dim
        guard output.count >= indices.count * dim else {
            throw StoreError.invalidArgument("output holds \(output.count) floats, \(indices.count) rows of \(dim) need \(indices.count * dim)")
        }
        let type = layout.elementType
        try forEachRowGroup(indices) { group in
            for k in 0..<group.rows.count {
                type.convert(group.rows[k]!, count: dim, into: output.baseAddress! + group.position(k) * dim)
            }
        }
    }

    /// Adds the weighted sum of rows to `output`: `output[chunk t] += weights[i*chunks + t] * row(indices[i])[chunk t]`.
    ///
    /// The fused lookup-reduce of Spec/RETRIEVAL.md: rows are gathered and summed in one pass
    /// (``RowKernels/gatherReduce``), nothing of size k x dim is materialised, and accumulation
    /// is in Float whatever the stored type.
    /// - Parameters:
    ///   - chunks: the row splits into this many equal parts, each with its own weight (MCS); 1 for a plain weighted sum.
    public func gatherReduce(indices: UnsafeBufferPointer<Int>, weights: UnsafeBufferPointer<Float>, chunks: Int = 1,
                             into output: UnsafeMutableBufferPointer<Float>) throws {
        let dim = layout.dim
        guard output.count == dim else { throw StoreError.invalidArgument("output holds \(output.count) floats, rows have \(dim)") }
        try checkReduce(indices: indices, weights: weights, chunks: chunks, width: dim)
        try reduce(indices: indices, weights: weights, chunks: chunks, width: dim, targets: nil, into: output)
    }

    /// The batched form: row `i` adds into output row `targets[i]` of `output` (`targets.max + 1` rows of `width`).
    /// One call for a whole batch of queries reads each shard once for all of them; runs of
    /// consecutive rows with the same target are summed in registers.
    /// - Parameter width: the first `width` elements of each row are summed (nil: the whole row), as
    ///   a gated layer sums the value columns before its gate's (Spec/RETRIEVAL.md, "Gates").
    public func gatherReduce(indices: UnsafeBufferPointer<Int>, weights: UnsafeBufferPointer<Float>, chunks: Int, width: Int? = nil,
                             targets: UnsafeBufferPointer<Int>, into output: UnsafeMutableBufferPointer<Float>) throws {
        let dim = width ?? layout.dim
        guard dim >= 1, dim <= layout.dim else { throw StoreError.invalidArgument("width \(dim) is not in 1...\(layout.dim)") }
        try checkReduce(indices: indices, weights: weights, chunks: chunks, width: dim)
        guard targets.count == indices.count else {
            throw StoreError.invalidArgument("\(targets.count) targets for \(indices.count) rows")
        }
        guard output.count % dim == 0 else {
            throw StoreError.invalidArgument("output holds \(output.count) floats, not whole rows of \(dim)")
        }
        try reduce(indices: indices, weights: weights, chunks: chunks, width: dim, targets: targets, into: output)
    }

    /// Throws unless every target indexes one of the `outputs` output rows of `dim`.
    private func checkTargets(_ targets: UnsafeBufferPointer<Int>, outputs: Int, width dim: Int) throws {
        guard Self.largest(targets) < UInt(outputs) else {
            throw StoreError.invalidArgument("targets must index the \(outputs) output rows of \(dim)")
        }
    }

    /// The per-slot gate dots of a gated layer (Spec/RETRIEVAL.md, "Gates"): `scores[i]` =
    /// Σ_j `inputs[queries[i] * width + j]` x row(`indices[i]`)`[column + j]`, in Float, with
    /// `inputs` holding `queries.max + 1` vectors of `width`. Prefetches whole rows, so that the
    /// reduce of the same rows that follows reads them from cache.
    public func gatherDots(indices: UnsafeBufferPointer<Int>, column: Int, width: Int, inputs: UnsafeBufferPointer<Float>,
                           queries: UnsafeBufferPointer<Int>, into scores: UnsafeMutableBufferPointer<Float>) throws {
        guard column >= 0, width >= 1, column + width <= layout.dim else {
            throw StoreError.invalidArgument("columns \(column)..<\(column + width) are outside the rows of \(layout.dim)")
        }
        guard queries.count == indices.count, scores.count == indices.count else {
            throw StoreError.invalidArgument("\(queries.count) queries and \(scores.count) scores for \(indices.count) rows")
        }
        guard inputs.count % width == 0, Self.largest(queries) < UInt(inputs.count / width) else {
            throw StoreError.invalidArgument("queries must index the \(inputs.count / width) gate inputs of \(width)")
        }
        guard let u = inputs.baseAddress, let q = queries.baseAddress, let out = scores.baseAddress, !indices.isEmpty else { return }
        let type = layout.elementType, rowBytes = layout.rowBytes
        try forEachRowGroup(indices) { group in
            let first = group.positions == nil ? group.first : 0
            RowKernels.gatherDots(group.rows, positions: group.positions, type: type, column: column, width: width, rowBytes: rowBytes,
                                  inputs: u, queries: q + first, into: out + first)
        }
    }

    /// The largest of `values` as unsigned (negatives as huge), in one vectorised pass.
    static func largest(_ values: UnsafeBufferPointer<Int>) -> UInt {
        UInt(pkm_largest_unsigned(values.baseAddress, values.count))
    }

    /// Convenience over arrays.
    public func gatherReduce(indices: [Int], weights: [Float], chunks: Int = 1, into output: inout [Float]) throws {
        try indices.withUnsafeBufferPointer { i in
            try weights.withUnsafeBufferPointer { w in
                try output.withUnsafeMutableBufferPointer { try gatherReduce(indices: i, weights: w, chunks: chunks, into: $0) }
            }
        }
    }

    /// The batched form over arrays (`output` holds `targets.max + 1` rows of the row dimension).
    public func gatherReduce(indices: [Int], weights: [Float], chunks: Int = 1, targets: [Int], into output: inout [Float]) throws {
        try indices.withUnsafeBufferPointer { i in
            try weights.withUnsafeBufferPointer { w in
                try targets.withUnsafeBufferPointer { t in
                    try output.withUnsafeMutableBufferPointer { try gatherReduce(indices: i, weights: w, chunks: chunks, targets: t, into: $0) }
                }
            }
        }
    }

    private func checkReduce(indices: UnsafeBufferPointer<Int>, weights: UnsafeBufferPointer<Float>, chunks: Int, width dim: Int) throws {
        guard chunks >= 1, dim % chunks == 0 else {
            throw StoreError.invalidArgument("row dimension \(dim) does not split into \(chunks) equal chunks")
        }
        guard weights.count == indices.count * chunks else {
            throw StoreError.invalidArgument("\(weights.count) weights for \(indices.count) rows x \(chunks) chunks")
        }
    }

    private func reduce(indices: UnsafeBufferPointer<Int>, weights: UnsafeBufferPointer<Float>, chunks: Int, width dim: Int,
                        targets: UnsafeBufferPointer<Int>?, into output: UnsafeMutableBufferPointer<Float>) throws {
        guard let w = weights.baseAddress, let out = output.baseAddress, !indices.isEmpty else { return }  // no rows: nothing to add
        let type = layout.elementType
        // A nibble table's slots are decoded in registers as they are summed, when the kernel fits.
        let nibbleKernel = rawRows?.nibbleTable != nil && dim == layout.dim && type == .bf16 && pkm_nibble_gather_reduce_fits(dim, chunks) != 0
        func reducePlain(_ group: RowGroup) {
            // A group of consecutive positions passes its weights and targets from its first.
            let first = group.positions == nil ? group.first : 0
            RowKernels.gatherReduce(group.rows, positions: group.positions, type: type, dim: dim, chunks: chunks,
                                    weights: w + first * chunks, targets: targets.map { $0.baseAddress! + first }, into: out)
        }
        // The kernel that locates the rows checks the indices and targets as it reads them; the
        // other roads check them first.
        if let map = locatingRowMap(nibbleKernel: nibbleKernel) {
            return try reduceLocating(indices, map: map, weights: w, chunks: chunks, width: dim, targets: targets, into: output,
                                      adding: reducePlain)
        }
        if let targets { try checkTargets(targets, outputs: output.count / dim, width: dim) }
        guard nibbleKernel, let rawRows, let table = rawRows.nibbleTable else { return try forEachRowGroup(indices, reducePlain) }
        // Nibble slots decoded in registers as they are summed; the kernel lists the escaped ones,
        // whose rows are then read together (their misses overlapping) and added by the plain kernel.
        let capacity = min(indices.count, Self.rawGroupRows)
        let escaped = UnsafeMutableBufferPointer<Int>.allocate(capacity: capacity)
        let escapedRows = UnsafeMutableBufferPointer<UnsafeRawPointer?>.allocate(capacity: capacity)
        defer { escaped.deallocate(); escapedRows.deallocate() }
        try forEachRowGroup(indices, coded: true) { group in
            guard group.coded else { return reducePlain(group) }
            let slots = group.rows.baseAddress!, first = group.first
            let count = table.withUnsafeBufferPointer {
                pkm_nibble_gather_reduce(slots, nil, group.rows.count, dim, chunks, w + first * chunks, targets.map { $0.baseAddress! + first },
                                         out, RowKernels.prefetchDistance, $0.baseAddress, escaped.baseAddress)
            }
            try addEscapedRows(count, escaped, slots: UnsafeMutablePointer(mutating: slots), first: first, indices, rawRows,
                               into: escapedRows, reducePlain)
        }
    }

    /// Reads the rows of the `count` escaped slots listed in `escaped` (their k in the call
    /// starting at `first`) together, their misses overlapping, and adds them with the plain kernel.
    private func addEscapedRows(_ count: Int, _ escaped: UnsafeMutableBufferPointer<Int>, slots: UnsafeMutablePointer<UnsafeRawPointer?>,
                                first: Int, _ indices: UnsafeBufferPointer<Int>, _ index: RawRowIndex,
                                into rows: UnsafeMutableBufferPointer<UnsafeRawPointer?>, _ reducePlain: (RowGroup) -> Void) throws {
        guard count > 0 else { return }
        try index.escapedRows(count: count, row: { indices[first + escaped[$0]] }, slot: { slots[escaped[$0]]! },
                              into: rows.baseAddress!, checking: checksRows,
                              fromStorage: readingFromDisk.load(ordering: .relaxed) && !readsWholeTable)
        for k in 0..<count { escaped[k] += first }  // positions in the call, as RowGroup's are
        reducePlain(RowGroup(rows: UnsafeBufferPointer(rebasing: rows[0..<count]),
                             positions: UnsafeBufferPointer(rebasing: escaped[0..<count]), first: first))
    }

    /// The rows' map when the kernel can locate the rows itself (`pkm_gather_reduce_rows`, or
    /// `pkm_nibble_gather_reduce_rows` for a nibble table when `nibbleKernel`): a resident table, a
    /// nibble table's slots in memory (``SlotsInMemory``, flat), or a table read in place whose
    /// shards are all known, while its reads are served from memory (from storage,
    /// ``forEachRowGroup`` asks for every row's pages first) and, with checks, while it remembers
    /// which groups it has checked.
    private func locatingRowMap(nibbleKernel: Bool) -> pkm_row_map? {
        if let residentRows { return RowKernels.flatMap(base: residentRows.base, rowBytes: layout.rowBytes, rows: readableRows) }
        if nibbleKernel, let slotsInMemory, let base = slotsInMemory.base, let rawRows {
            return rawRows.slotsMap(base: base, slotBytes: slotsInMemory.slotBytes, rows: readableRows)
        }
        guard let rawRows, rawRows.nibbleTable == nil || nibbleKernel, rawRows.everyShardKnown, !readingFromDisk.load(ordering: .relaxed),
              !checksRows || rawRows.remembersChecks else { return nil }
        return rawRows.rowMap(checking: checksRows)
    }

    /// The reduce by the kernel that locates each row as it prefetches it, in calls of
    /// ``rawGroupRows`` rows (a nibble table's escaped rows added after each call's coded rows,
    /// as by the other road). The rows of groups not yet checked are summed with the others, then
    /// checked before the call returns: a damaged row throws, naming shard and row (and leaves
    /// the output partly summed, as any error does). Once most of the table is checked, or a
    /// reduce met no row left to check with few groups left, it also checks groups beyond its own
    /// rows (``RawRowIndex/sweep(afterReading:stalled:)``, groups in memory only), until every
    /// group is checked and the reads no longer consult the bitmap. `reducePlain` adds the escaped rows.
    /// The kernel checks each index and target as it reads it (no pass over them before): a call
    /// that refused one throws the error the checks of the other roads throw, for its own rows.
    private func reduceLocating(_ indices: UnsafeBufferPointer<Int>, map: pkm_row_map, weights: UnsafePointer<Float>, chunks: Int,
                                width dim: Int, targets targetRows: UnsafeBufferPointer<Int>?, into output: UnsafeMutableBufferPointer<Float>,
                                adding reducePlain: (RowGroup) -> Void) throws {
        let out = output.baseAddress!, outputs = output.count / dim, targets = targetRows?.baseAddress
        let group = min(indices.count, Self.rawGroupRows)
        let scratch = rowScratch.take(count: group)
        defer { rowScratch.give(scratch) }
        let readsBefore = residentRows == nil ? sampleStorageReads(rows: indices.count) : nil
        let table = residentRows == nil ? rawRows?.nibbleTable : nil
        let escaped = UnsafeMutableBufferPointer<Int>.allocate(capacity: table == nil ? 0 : group)
        let escapedRows = UnsafeMutableBufferPointer<UnsafeRawPointer?>.allocate(capacity: table == nil ? 0 : group)
        defer { escaped.deallocate(); escapedRows.deallocate() }
        var start = 0, met = 0
        while start < indices.count {
            let n = min(group, indices.count - start)
            let slice = UnsafeBufferPointer(rebasing: indices[start..<(start + n)])
            var unchecked = 0, escapes = 0, refused = false
            if let table {
                var m = map
                escapes = table.withUnsafeBufferPointer { t in
                    pkm_nibble_gather_reduce_rows(&m, slice.baseAddress, n, dim, chunks, weights + start * chunks, targets.map { $0 + start },
                                                  out, outputs, RowKernels.prefetchDistance, t.baseAddress, scratch.pointers.baseAddress,
                                                  escaped.baseAddress, scratch.positions.baseAddress, &unchecked)
                }
                refused = escapes < 0  // SIZE_MAX
            } else if let listed = RowKernels.gatherReduce(slice, map: map, type: layout.elementType, dim: dim, chunks: chunks,
                                                           weights: weights + start * chunks, targets: targets.map { $0 + start }, into: out,
                                                           outputs: outputs, rows: scratch.pointers.baseAddress!,
                                                           unchecked: scratch.positions.baseAddress!) {
                unchecked = listed
            } else {
                refused = true
            }
            if refused {
                try checkReadable(slice)
                if let targetRows { try checkTargets(UnsafeBufferPointer(rebasing: targetRows[start..<(start + n)]), outputs: outputs, width: dim) }
                throw StoreError.invalidArgument("the reduce kernel refused an index or target that the checks accept")
            }
            if unchecked > 0, let rawRows {
                try verify(unchecked, of: rawRows, indices: slice.baseAddress!, positions: scratch.positions.baseAddress!)
            }
            met += unchecked
            if escapes > 0, let rawRows {
                try addEscapedRows(escapes, escaped, slots: scratch.pointers.baseAddress!, first: start, indices, rawRows,
                                   into: escapedRows, reducePlain)
            }
            start += n
        }
        startBackgroundCheck()
        // Reads that met no group left to check have stalled: the rest is for the sweep.
        if map.checked != nil, let rawRows { rawRows.sweep(afterReading: indices.count, stalled: met == 0) }
        if let readsBefore { noteStorageReads(since: readsBefore, rows: indices.count) }
    }

    /// Calls `body` with the stored bytes (little-endian elements of `layout.elementType`) of shard `index`.
    /// The buffer must not escape `body`, and `body` should not read from this store: it holds
    /// one of the store's limited concurrent reader slots.
    public func withShardRows<T>(_ index: Int, _ body: (UnsafeRawBufferPointer) throws -> T) throws -> T {
        guard index >= 0, index < layout.shardCount else {
            throw StoreError.invalidArgument("shard \(index) is out of range (the table has \(layout.shardCount) shards)")
        }
        let rows = layout.rowRange(ofShard: index)
        guard rows.upperBound <= readableRows else { throw StoreError.incomplete(rowsCommitted: state.rowsCommitted, rows: layout.rows) }
        if let residentRows {
            return try body(UnsafeRawBufferPointer(start: residentRows.base + rows.lowerBound * layout.rowBytes, count: rows.count * layout.rowBytes))
        }
        if layout.codec != .raw, let cached = cache.lookup(index) {
            return try cached.withBytes { try body(UnsafeRawBufferPointer(start: $0.baseAddress!, count: rows.count * layout.rowBytes)) }
        }
        let context = try contexts.acquire()
        defer { contexts.release(context) }
        return try withShard(index, context: context, contiguous: true) { shard in
            try body(UnsafeRawBufferPointer(start: shard.base, count: rows.count * layout.rowBytes))
        }
    }
}
