import Foundation
import MemoryLayer
import MemoryRetrieval
import MemoryStore
import _MemorySupport

/// Builds a complete synthetic memory: values N(0, 0.02), keys N(0, 1/√d), cores N(0, 1),
/// projectors N(0, 1/√v), all deterministic per seed. Used by `memtool create --synthetic`.
public enum SyntheticMemory {
    /// Random tensors for `config`, from `seed`.
    public static func tensors(for c: RetrievalConfig, seed: UInt64) -> RetrievalTensors {
        func normal(_ count: Int, _ stream: UInt64, _ scale: Float) -> [Float] {
            // One synthetic "row" per tensor stream, reusing the value generator's Gaussian source.
            SyntheticRows(seed: seed &+ stream &* 0x1000_0000_01B3, dim: count, standardDeviation: scale).floats(0..<1)
        }
        let keyScale = 1 / Float(c.keyDim).squareRoot()
        var mapGenerator = SeededGenerator(seed: seed ^ 0x0BAD_5EED)
        return RetrievalTensors(
            rowKeys: normal(c.heads * c.rank * c.gridRows * c.keyDim, 1, keyScale),
            colKeys: normal(c.heads * c.rank * c.gridCols * c.keyDim, 2, keyScale),
            cores: c.scoring == .pkm ? nil : normal(c.heads * c.cores * c.rank * c.rank, 3, 1),
            projectors: c.expansion > 1 || c.outputDim != c.valueDim
                ? normal(c.expansion * c.valueDim * c.outputDim, 4, 1 / Float(c.valueDim).squareRoot()) : nil,
            virtualMap: c.addressing == .table ? mapGenerator.permutation(c.virtualSlots) : nil)
    }

    /// Creates (or resumes, or finds finished) the store at `path`: tensors first, then the value table in batches.
    public static func create(at path: String, config: RetrievalConfig, layout: TableLayout, seed: UInt64,
                              options: StoreWriter.Options = .init()) throws {
        let writer = try StoreWriter.createOrResume(at: path, layout: layout,
                                                    metadata: ["source": "synthetic", "seed": String(seed)], options: options)
        guard !writer.isComplete else { return }
        if writer.rowsCommitted == 0 {
            try MemoryLayer.write(config: config, tensors: tensors(for: config, seed: seed), to: writer)
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
