import _MemorySupport

/// Maps a virtual slot to (row of the value table, projector) (Spec/RETRIEVAL.md, "Addressing"):
/// the layer's row `id mod N_p`, moved into its window of the pool when it reads one.
public struct VirtualAddress: Sendable {
    public enum Map: Sendable {
        case identity
        /// A stored permutation of `0 ..< N_v`.
        case table([Int64])
        /// The keyed Feistel bijection, computed on the fly: no table even at 2^30 slots.
        case keyed(UInt64)
    }

    public let map: Map
    public let virtualSlots: Int
    public let physicalRows: Int
    public let poolRows: Int
    public let poolOffset: Int
    private let halfBits: Int
    private let rowsDivisor: Divisor

    public init(map: Map, virtualSlots: Int, physicalRows: Int, poolRows: Int? = nil, poolOffset: Int = 0) throws(RetrievalError) {
        if case .table(let table) = map {
            guard table.count == virtualSlots else {
                throw .tensorShape(name: "virtual_map", expected: [virtualSlots], got: [table.count])
            }
            var seen = [Bool](repeating: false, count: virtualSlots)
            for (i, x) in table.enumerated() {
                guard x >= 0, x < virtualSlots, !seen[Int(x)] else {
                    throw .invalidTensor(name: "virtual_map", reason: "entry \(i) = \(x) makes it not a permutation of 0..<\(virtualSlots)")
                }
                seen[Int(x)] = true
            }
        }
        self.map = map
        self.virtualSlots = virtualSlots
        self.physicalRows = physicalRows
        self.poolRows = poolRows ?? physicalRows
        self.poolOffset = poolOffset
        var bits = 2
        while (1 << bits) < virtualSlots { bits += 2 }
        halfBits = bits / 2
        rowsDivisor = Divisor(physicalRows, dividendsBelow: virtualSlots)
    }

    /// The slot's identifier after the map: row `id % N_p`, projector `id / N_p`.
    @inline(__always)
    public func id(of vid: Int) -> Int {
        switch map {
        case .identity: vid
        case .table(let t): Int(t[vid])
        case .keyed(let key): keyed(vid, key: key)
        }
    }

    /// (row of the value table, projector) of virtual slot `vid`.
    @inline(__always)
    public func address(of vid: Int) -> (row: Int, projector: Int) {
        let i = id(of: vid)
        if virtualSlots == physicalRows { return (pooled(i), 0) }  // E = 1
        let p = rowsDivisor.divide(i)
        return (pooled(i - p * physicalRows), p)
    }

    /// `(row + offset) mod pool rows`; row < N_p ≤ pool rows and offset < pool rows.
    @inline(__always)
    private func pooled(_ row: Int) -> Int {
        let r = row + poolOffset
        return r >= poolRows ? r - poolRows : r
    }

    private func keyed(_ vid: Int, key: UInt64) -> Int {
        let h = UInt64(halfBits), mask = (UInt64(1) << h) - 1
        var x = UInt64(vid)
        repeat {
            var left = x >> h, right = x & mask
            for round in 0..<UInt64(4) {
                let f = mix64(key ^ (round &* 0x9E37_79B9_7F4A_7C15) ^ right) & mask
                (left, right) = (right, left ^ f)
            }
            x = (left << h) | right
        } while x >= UInt64(virtualSlots)
        return Int(x)
    }
}
