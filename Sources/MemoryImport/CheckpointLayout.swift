import Foundation
import MemoryStore
import TensorFiles

/// How a checkpoint names and shapes a memory layer's tensors (`memtool import --layout`);
/// the conversions are those of python/pkmstore/convert.py and Spec/RETRIEVAL.md, "Queries
/// from a model".
public enum CheckpointLayout: String, CaseIterable, Sendable {
    /// The tensor names and shapes of Spec/RETRIEVAL.md.
    case store
    /// The `product-key-memory` package's `PKM`: `keys` [H, n, 2, d], `values.weight` [n², dim].
    case pkmPytorch = "pkm-pytorch"
    /// Meta's product-key memory (`HashingMemory`): `keys` [2·H·n, k_dim/2], read as
    /// [H, 2, n, k_dim/2], and `values.weight` [n², v].
    case metaMemory = "meta-memory"
}

extension TensorSource {
    /// The source with a layer of `layout` under the store's tensor names: the key tables
    /// rearranged into `.npy` files in `scratch` (a directory the caller removes after the
    /// import), the values read where they are. `renames` may name the layer's `keys` and
    /// `values` in the file (for example `model.layers.3.mem.keys`).
    public func converted(from layout: CheckpointLayout, renames: [String: String], scratch: String) throws -> TensorSource {
        guard layout != .store else { return self }
        func bad(_ why: String) -> TensorFileError { TensorFileError(path, "as a \(layout.rawValue) layer: \(why)") }
        let keysName = renames["keys"] ?? "keys", valuesName = renames["values"] ?? "values.weight"
        guard let keys = entries[keysName] else { throw bad("it has no tensor '\(keysName)' (name it with --rename keys=NAME)") }
        guard let values = entries[valuesName] else { throw bad("it has no tensor '\(valuesName)' (name it with --rename values=NAME)") }
        guard values.shape.count == 2 else { throw bad("\(valuesName) has shape \(values.shape), expected [n², v]") }
        let floats = try keys.load().floats()
        let (heads, n, d): (Int, Int, Int)
        // Row and column keys of head h, key i: the element offsets of their d floats in `floats`.
        let offset: (_ side: Int, _ h: Int, _ i: Int) -> Int
        switch layout {
        case .pkmPytorch:
            guard keys.shape.count == 4, keys.shape[2] == 2 else { throw bad("\(keysName) has shape \(keys.shape), expected [H, n, 2, d]") }
            (heads, n, d) = (keys.shape[0], keys.shape[1], keys.shape[3])
            offset = { side, h, i in ((h * n + i) * 2 + side) * d }
        case .metaMemory:
            let side = Int(Double(values.shape[0]).squareRoot().rounded())
            guard side * side == values.shape[0] else { throw bad("\(valuesName) has \(values.shape[0]) rows, not n² for a whole n") }
            guard keys.shape.count == 2, side > 0, keys.shape[0] % (2 * side) == 0 else {
                throw bad("\(keysName) has shape \(keys.shape), expected [2·H·n, k_dim/2] with n = \(side)")
            }
            (heads, n, d) = (keys.shape[0] / (2 * side), side, keys.shape[1])
            offset = { s, h, i in ((h * 2 + s) * n + i) * d }
        case .store:
            return self
        }
        guard values.shape[0] == n * n else { throw bad("\(valuesName) has \(values.shape[0]) rows; \(n) keys per side make \(n * n) slots") }
        var converted = entries
        for (side, name) in ["row_keys", "col_keys"].enumerated() {
            var table = [Float](repeating: 0, count: heads * n * d)
            for h in 0..<heads {
                for i in 0..<n {
                    let from = offset(side, h, i), to = (h * n + i) * d
                    for e in 0..<d { table[to + e] = floats[from + e] }
                }
            }
            let file = (scratch as NSString).appendingPathComponent(name + ".npy")
            try table.withUnsafeBytes { try NPYFile.write(path: file, dtype: .f32, shape: [heads, 1, n, d], bytes: $0) }
            converted[name] = try NPYFile.entry(path: file, name: name)
        }
        converted["values"] = values
        var metadata = self.metadata
        metadata["scoring"] = metadata["scoring"] ?? "pkm"
        return TensorSource(path: path, entries: converted, metadata: metadata)
    }
}
