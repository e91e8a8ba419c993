import Foundation
import MemoryLayer
import MemoryRetrieval
import MemoryStore
import TensorFiles

extension MemoryImport {
    /// The retrieval parameters the source's shapes, metadata and the options describe; reads no tensor data.
    public static func plan(_ source: TensorSource, options: Options) throws -> (RetrievalConfig, [String: TensorEntry]) {
        try plan(source, options: options, table: nil)
    }

    /// ``plan(_:options:)`` for a layer that reads `table` rows of `dim` of a store's value table
    /// (the checkpoint's `values` then optional).
    static func plan(_ source: TensorSource, options: Options, table: (rows: Int, dim: Int)?) throws -> (RetrievalConfig, [String: TensorEntry]) {
        var found: [String: TensorEntry] = [:]
        for name in canonical {
            let sourceName = options.renames[name] ?? name
            if var e = source.entries[sourceName] {
                e.name = name
                found[name] = e
            } else if options.renames[name] != nil {
                throw TensorFileError(source.path, "renamed tensor '\(sourceName)' (for \(name)) is not in the file")
            }
        }
        func bad(_ why: String) -> TensorFileError { TensorFileError(source.path, why) }
        func require(_ name: String) throws -> TensorEntry {
            guard let e = found[name] else {
                throw bad("tensor '\(name)' is missing (found: \(source.entries.keys.sorted().joined(separator: ", ")); map other names with --rename \(name)=NAME)")
            }
            return e
        }
        func rank(_ e: TensorEntry, _ n: Int, _ layout: String) throws {
            guard e.shape.count == n else { throw bad("tensor '\(e.name)' has shape \(e.shape), expected \(layout)") }
        }
        func floating(_ e: TensorEntry) throws {
            guard [.f32, .f16, .bf16].contains(e.dtype) else { throw bad("tensor '\(e.name)' is \(e.dtype.safetensorsName), expected F32, F16 or BF16") }
        }
        let values = table == nil ? try require("values") : found["values"]
        let rowKeys = try require("row_keys"), colKeys = try require("col_keys")
        if let values { try rank(values, 2, "[N_p, v]"); try floating(values) }
        try rank(rowKeys, 4, "[H, r, n_row, d]"); try floating(rowKeys)
        try rank(colKeys, 4, "[H, r, n_col, d]"); try floating(colKeys)
        let (h, r, nRow, d) = (rowKeys.shape[0], rowKeys.shape[1], rowKeys.shape[2], rowKeys.shape[3])
        guard colKeys.shape[0] == h, colKeys.shape[1] == r, colKeys.shape[3] == d else {
            throw bad("col_keys has shape \(colKeys.shape), which disagrees with row_keys \(rowKeys.shape) in H, r or d")
        }
        let nCol = colKeys.shape[2], (nP, v) = table ?? (values!.shape[0], values!.shape[1])
        var cores = 1
        if let c = found["cores"] {
            try rank(c, 4, "[H, c, r, r]"); try floating(c)
            guard c.shape[0] == h, c.shape[2] == r, c.shape[3] == r else { throw bad("cores has shape \(c.shape), expected [\(h), c, \(r), \(r)]") }
            cores = c.shape[1]
        }
        let slots = nRow.multipliedReportingOverflow(by: nCol)
        guard !slots.overflow, nP > 0, slots.partialValue % nP == 0 else {
            throw bad("row_keys \(rowKeys.shape) and col_keys \(colKeys.shape), read as [H, r, n, d], make a grid of " +
                      "\(nRow) x \(nCol) slots, which is not a whole multiple E of the \(nP) rows of values [\(nP), \(v)]. " +
                      "Check that both key tensors are laid out [H, r, n, d]; " + Self.productKeyLayoutHint)
        }
        let expansion = slots.partialValue / nP
        var outputDim = v
        if let p = found["projectors"] {
            try rank(p, 3, "[E, v, d_out]"); try floating(p)
            guard p.shape[0] == expansion, p.shape[1] == v else { throw bad("projectors has shape \(p.shape), expected [\(expansion), \(v), d_out]") }
            outputDim = p.shape[2]
        }
        if let m = found["virtual_map"] {
            guard m.shape == [slots.partialValue], [.i64, .i32].contains(m.dtype) else {
                throw bad("virtual_map has shape \(m.shape) and dtype \(m.dtype.safetensorsName), expected [\(slots.partialValue)] of I64 or I32")
            }
        }
        for name in ["row_proj", "col_proj"] {
            if let e = found[name] {
                try floating(e)
                guard e.shape == [h, r] else { throw bad("\(name) has shape \(e.shape), expected [\(h), \(r)]") }
            }
        }
        let meta = source.metadata
        func metaInt(_ key: String) throws -> Int? {
            guard let s = meta[key] else { return nil }
            guard let n = Int(s) else { throw bad("__metadata__ '\(key)' = '\(s)' is not an integer") }
            return n
        }
        let scoring = try options.scoring ?? meta["scoring"].map {
            guard let s = Scoring(rawValue: $0) else { throw bad("__metadata__ 'scoring' = '\($0)' is not pkm, tucker or tucker-exact") }
            return s
        } ?? (found["cores"] == nil ? .pkm : .tucker)
        let activation = try options.activation ?? meta["activation"].map {
            guard let a = Activation(rawValue: $0) else { throw bad("__metadata__ 'activation' = '\($0)' is not softmax, none, relu or sigmoid") }
            return a
        } ?? .softmax
        let topK = try options.topK ?? metaInt("topk") ?? min(32, slots.partialValue)
        let topM = try options.topM ?? metaInt("top_m") ?? (scoring == .tucker ? min(max(topK, 64), min(nRow, nCol)) : 0)
        let hasMap = found["virtual_map"] != nil
        let addressing = try options.addressing ?? meta["addressing"].map {
            guard let a = Addressing(rawValue: $0) else { throw bad("__metadata__ 'addressing' = '\($0)' is not identity, table or keyed") }
            return a
        } ?? (hasMap ? .table : .identity)
        if addressing == .table && !hasMap {
            throw bad("addressing 'table' needs a virtual_map tensor [\(slots.partialValue)] (I64 or I32); the file has none")
        }
        if addressing != .table && hasMap {
            throw bad("the file holds a virtual_map, which addressing '\(addressing.rawValue)' would ignore: import it with --addressing table")
        }
        if addressing != .keyed, let key = options.addressKey {
            throw bad("an address key (\(key)) applies only to keyed addressing, not '\(addressing.rawValue)'")
        }
        // A key in the metadata of a non-keyed layer (exports before addressing was recorded) means nothing.
        let addressKey = addressing != .keyed ? 0 : try options.addressKey ?? meta["address_key"].map {
            guard let k = UInt64($0) else { throw bad("__metadata__ 'address_key' = '\($0)' is not an unsigned integer") }
            return k
        } ?? 0
        // A gate table [N, g] beside the values: the table's rows become values then gate vector.
        var gateDim = 0
        if let g = found["gates"] {
            try rank(g, 2, "[N_p, g]"); try floating(g)
            let rows = values?.shape[0] ?? nP
            guard g.shape[0] == rows else { throw bad("gates has shape \(g.shape), expected [\(rows), g]: one gate vector per row of values") }
            gateDim = g.shape[1]
        }
        // (A layer added to a store takes its gate from the store's rows: see addLayer, which plans without gate options.)
        if let asked = options.gateDim, asked != gateDim {
            throw bad("--gate-dim \(asked) disagrees with the file's gates (\(gateDim == 0 ? "none: it has no 'gates' tensor" : "\(gateDim) columns"))")
        }
        let gateActivation = try options.gateActivation ?? meta["gate_activation"].map {
            guard let a = GateActivation(rawValue: $0) else { throw bad("__metadata__ 'gate_activation' = '\($0)' is not none or gelu") }
            return a
        } ?? .none
        if gateDim == 0, options.gateActivation != nil {
            throw bad("a gate activation was given, but the file has no 'gates' tensor")
        }
        let config = RetrievalConfig(scoring: scoring, heads: h, keyDim: d, gridRows: nRow, gridCols: nCol, rank: r, cores: cores,
                                     expansion: expansion, physicalRows: nP, valueDim: v, outputDim: outputDim, topK: topK,
                                     topM: topM, activation: activation, addressing: addressing, addressKey: addressKey,
                                     gateDim: gateDim, gateActivation: gateActivation)
        do { try config.validate() } catch {
            guard case .invalidConfig(let field, let reason) = error else { throw error }
            let context: String
            switch field {
            case "rank" where scoring == .pkm:
                context = "PKM scoring takes one key table per side, but row_keys \(rowKeys.shape), read as [H, r, n_row, d], " +
                          "has r = \(r) tables. " + Self.productKeyLayoutHint + "; for Tucker scoring give cores [H, c, r, r]"
            case "cores": context = "cores \(found["cores"]?.shape ?? []) gives c = \(cores) scoring cores: \(reason) (values [\(nP), \(v)])"
            case "topK": context = "k (--topk, or __metadata__ 'topk') \(reason)"
            case "topM": context = "m (--top-m, or __metadata__ 'top_m') \(reason)"
            case "gridRows", "gridCols": context = "row_keys \(rowKeys.shape) and col_keys \(colKeys.shape): \(reason)"
            default: context = "\(field): \(reason)"
            }
            throw bad(context)
        }
        return (config, found)
    }
}
