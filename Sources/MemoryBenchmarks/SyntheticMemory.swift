import Foundation
import MemoryLayer
import MemoryRetrieval
import MemoryStore
import _MemorySupport

/// Builds a complete synthetic memory: values N(0, 0.02), keys N(0, 1/√d), cores N(0, 1) (or of
/// a chosen spectrum), projectors N(0, 1/√v), all deterministic per seed. Used by
/// `memtool create --synthetic`.
public enum SyntheticMemory {
    /// Random tensors for `config`, from `seed`. With `coreDecay` (Tucker), each head's cores sum
    /// to a matrix of singular values 1, decay, decay², ...: trained cores are pushed towards
    /// rank 1 (decay near 0), random ones are not.
    public static func tensors(for c: RetrievalConfig, seed: UInt64, coreDecay: Double? = nil) -> RetrievalTensors {
        func normal(_ count: Int, _ stream: UInt64, _ scale: Float) -> [Float] {
            // One synthetic "row" per tensor stream, reusing the value generator's Gaussian source.
            SyntheticRows(seed: seed &+ stream &* 0x1000_0000_01B3, dim: count, standardDeviation: scale).floats(0..<1)
        }
        let keyScale = 1 / Float(c.keyDim).squareRoot()
        var mapGenerator = SeededGenerator(seed: seed ^ 0x0BAD_5EED)
        return RetrievalTensors(
            rowKeys: normal(c.heads * c.rank * c.gridRows * c.keyDim, 1, keyScale),
            colKeys: normal(c.heads * c.rank * c.gridCols * c.keyDim, 2, keyScale),
            cores: c.scoring == .pkm ? nil : coreDecay.map { spectrumCores(c, decay: $0, seed: seed) }
                ?? normal(c.heads * c.cores * c.rank * c.rank, 3, 1),
            projectors: c.expansion > 1 || c.outputDim != c.valueDim
                ? normal(c.expansion * c.valueDim * c.outputDim, 4, 1 / Float(c.valueDim).squareRoot()) : nil,
            virtualMap: c.addressing == .table ? mapGenerator.permutation(c.virtualSlots) : nil)
    }

    /// Cores `[H, c, r, r]` whose sum per head is U diag(1, decay, decay², ...) Vᵀ for random
    /// orthogonal U and V, each core that sum / c plus N(0, 0.3/c) noise that sums to zero over cores.
    static func spectrumCores(_ c: RetrievalConfig, decay: Double, seed: UInt64) -> [Float] {
        var rng = SeededGenerator(seed: seed ^ 0xC0DE_C0DE)
        let r = c.rank
        func orthogonal() -> [[Double]] {  // Gram-Schmidt of a Gaussian matrix, by rows
            var rows: [[Double]] = []
            while rows.count < r {
                var v = (0..<r).map { _ in Double(rng.normal()) }
                for u in rows {
                    let p = zip(u, v).map(*).reduce(0, +)
                    v = zip(v, u).map { $0 - p * $1 }
                }
                let norm = v.map { $0 * $0 }.reduce(0, +).squareRoot()
                if norm > 1e-6 { rows.append(v.map { $0 / norm }) }
            }
            return rows
        }
        var out = [Float](repeating: 0, count: c.heads * c.cores * r * r)
        for h in 0..<c.heads {
            let u = orthogonal(), v = orthogonal()
            var sum = [Double](repeating: 0, count: r * r)
            for a in 0..<r { for b in 0..<r { for s in 0..<r { sum[a * r + b] += u[s][a] * pow(decay, Double(s)) * v[s][b] } } }
            var noise = (0..<(c.cores * r * r)).map { _ in Double(rng.normal()) * 0.3 / Double(c.cores) }
            for e in 0..<(r * r) {
                let mean = (0..<c.cores).map { noise[$0 * r * r + e] }.reduce(0, +) / Double(c.cores)
                for t in 0..<c.cores { noise[t * r * r + e] -= mean }
            }
            for t in 0..<c.cores {
                for e in 0..<(r * r) { out[((h * c.cores + t) * r * r) + e] = Float(sum[e] / Double(c.cores) + noise[t * r * r + e]) }
            }
        }
        return out
    }

    /// Creates (or resumes, or finds finished) the store at `path`: the layers' tensors first
    /// (layer `l` of `layers` drawn from seed `seed + l`, all with `config`, all reading the one
    /// value table), then the value table in batches.
    public static func create(at path: String, config: RetrievalConfig, layout: TableLayout, seed: UInt64, coreDecay: Double? = nil,
                              layers: [String] = [LayerKeys.defaultName], options: StoreWriter.Options = .init()) throws {
        var metadata = ["source": "synthetic", "seed": String(seed)]
        if let coreDecay { metadata["core_decay"] = String(coreDecay) }
        let writer = try StoreWriter.createOrResume(at: path, layout: layout, metadata: metadata, options: options)
        guard !writer.isComplete else { return }
        if writer.rowsCommitted == 0 {
            for (l, name) in layers.enumerated() {
                try MemoryLayer.write(name: name, config: config, tensors: tensors(for: config, seed: seed &+ UInt64(l), coreDecay: coreDecay), to: writer)
            }
        }
        let generator = SyntheticRows(seed: seed, dim: layout.dim)
        // Generate on all cores, a chunk of rows per worker, then append in order.
        let chunk = max(layout.rowsPerShard, (4 << 20) / layout.rowBytes / layout.rowsPerShard * layout.rowsPerShard)
        let workers = max(1, options.threads)
        var next = writer.rowsCommitted
        while next < layout.rows {
            let starts = (0..<workers).map { next + $0 * chunk }.filter { $0 < layout.rows }
            var pieces = [[UInt8]](repeating: [], count: starts.count)
            pieces.withUnsafeMutableBufferPointer { slots in
                // Each worker writes its own slot of the buffer; the array itself is not shared.
                nonisolated(unsafe) let slots = slots
                DispatchQueue.concurrentPerform(iterations: starts.count) { w in
                    let range = starts[w]..<min(layout.rows, starts[w] + chunk)
                    slots[w] = generator.bytes(range, as: layout.elementType)
                }
            }
            for piece in pieces { try writer.append(piece) }
            next = min(layout.rows, next + starts.count * chunk)
        }
        try writer.finish()
    }
}
