import Foundation
import MemoryLayer
import MemoryRetrieval
import MemoryStore
import TensorFiles

extension MemoryImport {
    /// Writes the store's layer back out as safetensors: its tensors as stored, the value table
    /// as `values` in its stored type, and the retrieval parameters in `__metadata__`.
    public static func export(_ store: Store, to path: String, progress: ((Int, Int) -> Void)? = nil) throws {
        let layout = store.layout
        guard store.isComplete else { throw StoreError.incomplete(rowsCommitted: store.state.rowsCommitted, rows: layout.rows) }
        let names = try store.tensorNames().filter { !$0.hasPrefix("__") }
        let tensors = try names.map { try store.tensor(named: $0) }
        var metadata = ["format": "pkm-store export", "source_format_version": String(store.manifest.formatVersion)]
        if let c = try MemoryLayer.retrievalConfig(of: store) {
            metadata["scoring"] = c.scoring.rawValue
            metadata["topk"] = String(c.topK)
            metadata["top_m"] = String(c.topM)
            metadata["activation"] = c.activation.rawValue
            metadata["addressing"] = c.addressing.rawValue
            if c.addressing == .keyed { metadata["address_key"] = String(c.addressKey) }
        }
        var declarations = zip(names, tensors).map { SafetensorsWriter.Declaration(name: $0, dtype: $1.dtype, shape: $1.shape) }
        declarations.append(.init(name: "values", dtype: layout.elementType, shape: [layout.rows, layout.dim]))
        let writer = try SafetensorsWriter(path: path, tensors: declarations, metadata: metadata)
        for t in tensors { try t.bytes.withUnsafeBytes { try writer.write($0) } }
        for s in 0..<layout.shardCount {
            try store.withShardRows(s) { try writer.write($0) }
            if s % 256 == 255 { progress?(s + 1, layout.shardCount) }
        }
        try writer.finish()
        progress?(layout.shardCount, layout.shardCount)
    }
}
