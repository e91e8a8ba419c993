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
    /// [H, 2, n, k_dim/2], and `values.weight` [n², v]; its PEER variant (`values_v.weight` and
    /// `values_u.weight`, no `values.weight`) as a gated layer: values_v the values, values_u
    /// the gates, GELU.
    case metaMemory = "meta-memory"
    /// UltraMem's memory layer (`UltraMemLayerV1`): `keys` [H, 2, n, d, r] after its LayerNorm
    /// over d (`keys_norm.weight`/`.bias`, eps from metadata `eps`, default 1e-5),
    /// `tucker_core.i` [H, r, r] as the cores, `tucker_core_u`/`_v` as row_proj/col_proj,
    /// `values_for_look_up` [N_p, v], `values_proj.weight` [hidden, E·v] as the projectors,
    /// `shuffle_index` as the virtual map; Tucker scoring with m = k (metadata `knn`), no activation.
    /// UltraMemV2's layer (`UltraMemLayerV2`) reads the same way from a file holding its key
    /// layer's tensors and its value layer's (`values_for_look_up`, the pool, with `--window`
    /// and `--pool-offset` giving the layer's rows of it, and `pre_values_for_look_up` as the
    /// gate table, GELU when metadata `mem_use_glu_act` is `true`); a value layer saved in rank
    /// files, and value_expand_time 1, are converted by python/pkmstore/convert.py.
    case ultramem
}

extension TensorSource {
    /// The source with a layer of `layout` under the store's tensor names: the key tables
    /// rearranged into `.npy` files in `scratch` (a directory the caller removes after the
    /// import), the values read where they are. `renames` may name the layer's `keys` and
    /// `values` in the file (for example `model.layers.3.mem.keys`).
    public func converted(from layout: CheckpointLayout, renames: [String: String], scratch: String) throws -> TensorSource {
        guard layout != .store else { return self }
        if layout == .ultramem { return try ultramemConverted(renames: renames, scratch: scratch) }
        func bad(_ why: String) -> TensorFileError { TensorFileError(path, "as a \(layout.rawValue) layer: \(why)") }
        // Meta's PEER variant: values_v as the values, values_u as the gate table (Spec/RETRIEVAL.md, "Gates").
        let peer = layout == .metaMemory && renames["values"] == nil && entries["values.weight"] == nil
            && entries["values_v.weight"] != nil && entries["values_u.weight"] != nil
        let keysName = renames["keys"] ?? "keys", valuesName = renames["values"] ?? (peer ? "values_v.weight" : "values.weight")
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
        case .store, .ultramem:  // returned above
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
        if peer {
            converted["gates"] = entries["values_u.weight"]
            metadata["gate_activation"] = "gelu"
        }
        return TensorSource(path: path, entries: converted, metadata: metadata)
    }
}

extension TensorSource {
    /// An UltraMem layer under the store's names (``CheckpointLayout/ultramem``); the computed
    /// tensors are written as `.npy` files in `scratch`.
    private func ultramemConverted(renames: [String: String], scratch: String) throws -> TensorSource {
        func bad(_ why: String) -> TensorFileError { TensorFileError(path, "as an ultramem layer: \(why)") }
        func entry(_ name: String) throws -> TensorEntry {
            let named = renames[name] ?? name
            guard let e = entries[named] else { throw bad("it has no tensor '\(named)'") }
            return e
        }
        func write(_ name: String, _ values: [Float], _ shape: [Int]) throws -> TensorEntry {
            let file = (scratch as NSString).appendingPathComponent(name + ".npy")
            try values.withUnsafeBytes { try NPYFile.write(path: file, dtype: .f32, shape: shape, bytes: $0) }
            return try NPYFile.entry(path: file, name: name)
        }
        let keysEntry = try entry("keys")
        guard keysEntry.shape.count == 5, keysEntry.shape[1] == 2 else { throw bad("keys have shape \(keysEntry.shape), UltraMem's are [H, 2, n, d, r]") }
        let (heads, n, d, r) = (keysEntry.shape[0], keysEntry.shape[2], keysEntry.shape[3], keysEntry.shape[4])
        // Any number of heads: how the model's queries reach each head is the caller's (UltraMemV2's
        // head h reads query pair h / 2; pkmstore.convert documents both versions).
        let keys = try keysEntry.load().floats()
        func vector(_ name: String, _ count: Int) throws -> [Float]? {
            guard let e = entries[renames[name] ?? name] else { return nil }
            let x = try e.load().floats()
            guard x.count == count else { throw bad("\(name) has shape \(e.shape), expected \(count) values") }
            return x
        }
        let weight = try vector("keys_norm.weight", d), bias = try vector("keys_norm.bias", d)
        guard let eps = Double(metadata["eps"] ?? "1e-5"), eps > 0 else { throw bad("__metadata__ 'eps' = '\(metadata["eps"] ?? "")' is not a positive number") }
        // keys[h, side, i, :, a] normalised over d (in double), then laid out [H, r, n, d] per side.
        var sides = [[Float]](repeating: [Float](repeating: 0, count: heads * r * n * d), count: 2)
        for h in 0..<heads {
            for side in 0..<2 {
                for i in 0..<n {
                    for a in 0..<r {
                        let at = { (e: Int) in (((h * 2 + side) * n + i) * d + e) * r + a }
                        var mean = 0.0
                        for e in 0..<d { mean += Double(keys[at(e)]) }
                        mean /= Double(d)
                        var variance = 0.0
                        for e in 0..<d { variance += (Double(keys[at(e)]) - mean) * (Double(keys[at(e)]) - mean) }
                        let scale = 1 / (variance / Double(d) + eps).squareRoot()
                        for e in 0..<d {
                            let x = (Double(keys[at(e)]) - mean) * scale * Double(weight?[e] ?? 1) + Double(bias?[e] ?? 0)
                            sides[side][((h * r + a) * n + i) * d + e] = Float(x)
                        }
                    }
                }
            }
        }
        var cores: [[Float]] = []
        while let core = entries["tucker_core.\(cores.count)"] {
            guard core.shape == [heads, r, r] else { throw bad("tucker_core.\(cores.count) has shape \(core.shape), expected [\(heads), \(r), \(r)]") }
            cores.append(try core.load().floats())
        }
        guard !cores.isEmpty else { throw bad("it has no tucker_core.0") }
        var stacked = [Float](repeating: 0, count: heads * cores.count * r * r)
        for h in 0..<heads {
            for (t, core) in cores.enumerated() {
                for e in 0..<(r * r) { stacked[((h * cores.count + t) * r * r) + e] = core[h * r * r + e] }
            }
        }
        let values = try entry("values_for_look_up")
        guard values.shape.count == 2 else { throw bad("values_for_look_up has shape \(values.shape), expected [N_p, v]") }
        let v = values.shape[1]
        let projEntry = try entry("values_proj.weight")
        guard projEntry.shape.count == 2, v > 0, projEntry.shape[1] % v == 0 else {
            throw bad("values_proj.weight has shape \(projEntry.shape), which does not take E x \(v) inputs")
        }
        let (hidden, expansion) = (projEntry.shape[0], projEntry.shape[1] / v)
        let proj = try projEntry.load().floats()
        var projectors = [Float](repeating: 0, count: expansion * v * hidden)  // [E, v, hidden] = values_proj.weight transposed
        for o in 0..<hidden {
            for k in 0..<(expansion * v) { projectors[k * hidden + o] = proj[o * expansion * v + k] }
        }
        guard let u = try vector("tucker_core_u", heads * r), let w = try vector("tucker_core_v", heads * r) else {
            throw bad("it has no tucker_core_u / tucker_core_v (the rank-1 buffers)")
        }
        var converted: [String: TensorEntry] = [
            "row_keys": try write("row_keys", sides[0], [heads, r, n, d]), "col_keys": try write("col_keys", sides[1], [heads, r, n, d]),
            "cores": try write("cores", stacked, [heads, cores.count, r, r]),
            "projectors": try write("projectors", projectors, [expansion, v, hidden]),
            "row_proj": try write("row_proj", u, [heads, r]), "col_proj": try write("col_proj", w, [heads, r])]
        converted["values"] = values
        converted["virtual_map"] = try entry("shuffle_index")
        var metadata = self.metadata
        // UltraMemV2's pre-value gate, when the file holds its value layer's tensors.
        if let gates = entries[renames["gates"] ?? "pre_values_for_look_up"] {
            converted["gates"] = gates
            metadata["gate_activation"] = metadata["gate_activation"] ?? (metadata["mem_use_glu_act"] == "true" ? "gelu" : "none")
        }
        metadata["scoring"] = "tucker"
        metadata["activation"] = metadata["activation"] ?? "none"
        metadata["addressing"] = "table"
        if let knn = metadata["knn"] {
            metadata["topk"] = metadata["topk"] ?? knn
            metadata["top_m"] = metadata["top_m"] ?? knn
        }
        return TensorSource(path: path, entries: converted, metadata: metadata)
    }
}
