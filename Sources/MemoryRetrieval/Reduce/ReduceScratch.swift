/// Per-block working memory of a reduce: each selected slot's row, target (query, projector)
/// and weights, the (query, projector) accumulators, and for E > 1 the grouping by target.
struct ReduceScratch: Sendable {
    var rows: [Int] = []
    var targets: [Int] = []
    var weights: [Float] = []
    var accumulators: [Float] = []
    var groupStart: [Int] = []
    var addressed: [(row: Int, target: Int)] = []
    /// A gated layer's gate dot of each slot, and the slot's query in the block.
    var gates: [Float] = []
    var gateQueries: [Int] = []
    /// For E = 1: how many leading entries of `targets` hold their slot's query.
    var bagTargets = 0

    mutating func reserve(slots: Int, cores: Int, groups: Int, accumulators count: Int, gated: Bool) {
        if gated && gates.count < slots {
            gates = [Float](repeating: 0, count: slots)
            gateQueries = [Int](repeating: 0, count: slots)
        }
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
