import Foundation
import MemoryLayer
import MemoryRetrieval
import MemoryStore
import TensorFiles

extension MemoryImport {
    /// Writes layer `layer` of the store (nil: its only layer, or the value table alone when it
    /// holds none) back out as safetensors, a single-layer checkpoint: the layer's tensors as
    /// stored (names without the layer prefix), the rows of its window of the value table as
    /// `values` in their stored type (a gated layer's rows as `values` and `gates`, which import
    /// joins again), and the retrieval parameters in `__metadata__`.
    public static func export(_ store: Store, layer: String? = nil, to path: String, progress: ((Int, Int) -> Void)? = nil) throws {
        let layout = store.layout
        guard store.isComplete else { throw StoreError.incomplete(rowsCommitted: store.state.rowsCommitted, rows: layout.rows) }
        var names: [String] = [], stored: [String] = []
        var metadata = ["format": "pkm-store export", "source_format_version": String(store.manifest.formatVersion)]
        var window = 0..<layout.rows, gateDim = 0
        if try layer != nil || !store.layerNames().isEmpty {
            let keys = try store.layerKeys(layer)
            stored = try store.tensorNames().filter { $0.hasPrefix(keys.tensorPrefix) && !$0.hasPrefix("__") }
            names = stored.map { String($0.dropFirst(keys.tensorPrefix.count)) }
            guard let c = try MemoryLayer.retrievalConfig(of: store, layer: keys.name) else { throw StoreError.noLayer(path: store.path) }
            metadata["scoring"] = c.scoring.rawValue
            metadata["topk"] = String(c.topK)
            metadata["top_m"] = String(c.topM)
            metadata["activation"] = c.activation.rawValue
            metadata["addressing"] = c.addressing.rawValue
            if c.addressing == .keyed { metadata["address_key"] = String(c.addressKey) }
            window = c.poolOffset..<(c.poolOffset + c.physicalRows)
            if c.gateDim > 0 {
                gateDim = c.gateDim
                metadata["gate_activation"] = c.gateActivation.rawValue
            }
        }
        let tensors = try stored.map { try store.tensor(named: $0) }
        var declarations = zip(names, tensors).map { SafetensorsWriter.Declaration(name: $0, dtype: $1.dtype, shape: $1.shape) }
        let valueDim = layout.dim - gateDim
        declarations.append(.init(name: "values", dtype: layout.elementType, shape: [window.count, valueDim]))
        if gateDim > 0 { declarations.append(.init(name: "gates", dtype: layout.elementType, shape: [window.count, gateDim])) }
        let writer = try SafetensorsWriter(path: path, tensors: declarations, metadata: metadata)
        for t in tensors { try t.bytes.withUnsafeBytes { try writer.write($0) } }
        guard gateDim > 0 else {
            try forEachStoredRun(of: store, window: window, progress: progress) { try writer.write($0) }
            return try writer.finish()
        }
        // Columns 0 ..< v of every row, then v ..< v + g of every row.
        let size = layout.elementType.size
        for columns in [0..<valueDim, valueDim..<layout.dim] {
            try forEachStoredRun(of: store, window: window, progress: progress) { run in
                var part = [UInt8]()
                part.reserveCapacity(run.count / layout.dim * columns.count)
                for row in stride(from: 0, to: run.count, by: layout.rowBytes) {
                    part.append(contentsOf: run[(row + columns.lowerBound * size)..<(row + columns.upperBound * size)])
                }
                try part.withUnsafeBytes { try writer.write($0) }
            }
        }
        try writer.finish()
    }

    /// Calls `body` with the stored bytes of pool rows `window.lowerBound ..< window.upperBound`
    /// taken modulo the table's rows (a layer's window wraps past the last row), in order, a
    /// shard's part at a time.
    static func forEachStoredRun(of store: Store, window: Range<Int>, progress: ((Int, Int) -> Void)? = nil,
                                 _ body: (UnsafeRawBufferPointer) throws -> Void) throws {
        let layout = store.layout, rowBytes = layout.rowBytes
        var done = 0
        while done < window.count {
            let row = (window.lowerBound + done) % layout.rows, shard = row / layout.rowsPerShard
            let shardRows = layout.rowRange(ofShard: shard)
            let n = min(shardRows.upperBound - row, window.count - done)
            try store.withShardRows(shard) { bytes in
                let start = (row - shardRows.lowerBound) * rowBytes
                try body(UnsafeRawBufferPointer(rebasing: bytes[start..<(start + n * rowBytes)]))
            }
            done += n
            if shard % 256 == 255 { progress?(done, window.count) }
        }
        progress?(window.count, window.count)
    }
}
