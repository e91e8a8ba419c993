/// Per-block working memory of a search.
struct SearchScratch: Sendable {
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
    /// Working memory of exact selections from approximate scores, per side.
    var exactRows = ExactSelection()
    var exactCols = ExactSelection()
    /// The block's queries rounded for the bfloat16 pairs kernel, per side.
    var rowPairs = QueryPairs()
    var colPairs = QueryPairs()

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

    /// Keeps the best `count` rows and columns of query `b` (all of a side that has no more),
    /// or every row and column when `count` is nil (exhaustive and exact searches).
    mutating func keep(_ b: Int, rows: Int, cols: Int, best count: Int?) {
        guard let count else {
            keptRows = Array(0..<rows)
            keptCols = Array(0..<cols)
            return
        }
        rowScores.withUnsafeBufferPointer { rowSelection.select(UnsafeBufferPointer(rebasing: $0[(b * rows)..<((b + 1) * rows)]), count: count) }
        colScores.withUnsafeBufferPointer { colSelection.select(UnsafeBufferPointer(rebasing: $0[(b * cols)..<((b + 1) * cols)]), count: count) }
        keptRows = rowSelection.positions.sorted()
        keptCols = colSelection.positions.sorted()
    }

    /// ``keep(_:rows:cols:best:)`` from approximate scores in `rowScores`/`colScores`: the same
    /// rows and columns, found by rescoring in f32 only the keys that can be among them, whose f32
    /// scores then replace the approximate ones.
    mutating func keepExactly(_ b: Int, best count: Int, tables: ApproximateTables, head h: Int,
                              rowKeys: UnsafePointer<Float>, colKeys: UnsafePointer<Float>,
                              query q: (row: UnsafePointer<Float>, col: UnsafePointer<Float>)) {
        let rows = tables.rows[h], cols = tables.cols[h]
        keptRows = rowScores.withUnsafeMutableBufferPointer {
            exactRows.select(count: count, approximate: $0.baseAddress! + b * rows.count, table: rows, keys: rowKeys, query: q.row)
        }
        keptCols = colScores.withUnsafeMutableBufferPointer {
            exactCols.select(count: count, approximate: $0.baseAddress! + b * cols.count, table: cols, keys: colKeys, query: q.col)
        }
    }

    /// ``keepExactly(_:best:tables:head:rowKeys:colKeys:query:)`` from scores of the pairs kernel
    /// (``ApproximateKeys/scorePairs(_:batch:into:)``), the queries rounded as `rowPairs`/`colPairs` hold them.
    mutating func keepPairs(_ b: Int, best count: Int, tables: ApproximateTables, head h: Int,
                            rowKeys: UnsafePointer<Float>, colKeys: UnsafePointer<Float>,
                            query q: (row: UnsafePointer<Float>, col: UnsafePointer<Float>)) {
        let rows = tables.rows[h], cols = tables.cols[h], rowTerm = rowPairs.terms[b], colTerm = colPairs.terms[b]
        keptRows = rowScores.withUnsafeMutableBufferPointer {
            exactRows.selectPairs(count: count, approximate: $0.baseAddress! + b * rows.count, table: rows, keys: rowKeys, query: q.row, term: rowTerm)
        }
        keptCols = colScores.withUnsafeMutableBufferPointer {
            exactCols.selectPairs(count: count, approximate: $0.baseAddress! + b * cols.count, table: cols, keys: colKeys, query: q.col, term: colTerm)
        }
    }

    mutating func prepareSubgrid(rank r: Int, cores c: Int, rows: Int, cols: Int) {
        let need = r * rows + r * cols + c * r * cols + c * rows * cols + rows * cols
        if subgrid.count < need { subgrid = [Float](repeating: 0, count: need) }
    }
}
