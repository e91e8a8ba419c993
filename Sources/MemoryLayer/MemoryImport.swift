import Foundation
import MemoryRetrieval
import MemoryStore
import TensorFiles

/// Tensors a user brings: a safetensors file or a directory of `.npy` files named after the tensors.
public struct TensorSource: Sendable {
    public let path: String
    public let entries: [String: TensorEntry]
    public let metadata: [String: String]

    /// Opens `path` (a `.safetensors` file or a directory of `.npy` files), reading headers only.
    public init(path: String) throws {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw TensorFileError(path, "no such file or directory")
        }
        self.path = path
        if isDirectory.boolValue {
            var entries: [String: TensorEntry] = [:]
            for file in try FileManager.default.contentsOfDirectory(atPath: path).sorted() where file.hasSuffix(".npy") {
                let name = String(file.dropLast(4))
                entries[name] = try NPYFile.entry(path: (path as NSString).appendingPathComponent(file), name: name)
            }
            guard !entries.isEmpty else { throw TensorFileError(path, "the directory holds no .npy files") }
            self.entries = entries
            metadata = [:]
        } else {
            let file = try SafetensorsFile(path: path)
            entries = Dictionary(file.entries.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
            metadata = file.metadata
        }
    }
}

/// Turns a trained memory layer (tensor names of Spec/RETRIEVAL.md) into a store, and back.
public enum MemoryImport {
    /// Choices a user makes on import; nil means "from the file's metadata, else the default".
    public struct Options: Sendable {
        /// Canonical name → name in the source file (`--rename values=model.layers.3.mem.values`).
        public var renames: [String: String] = [:]
        public var scoring: Scoring?
        public var topK: Int?
        public var topM: Int?
        public var activation: Activation?
        /// How virtual slots map to rows; nil: metadata `addressing`, else `table` when the file
        /// holds a `virtual_map`, `identity` otherwise (keyed is always asked for by name).
        public var addressing: Addressing?
        public var addressKey: UInt64?
        /// Convert values to this type; nil keeps the file's.
        public var elementType: ElementType?
        public var rowsPerShard: Int?
        public var codec: CodecKind = .zstd
        public var level = 3
        public var dictionary = false
        public var writer = StoreWriter.Options()
        public init() {}
    }

    /// How keys saved as `[H, n, 2, d]` (row and column keys side by side) become the store's tensors.
    static let productKeyLayoutHint = "keys saved as [H, n, 2, d] (the product-key-memory package) become " +
        "row_keys = keys[:, :, 0, :][:, None] and col_keys = keys[:, :, 1, :][:, None]"

    static let canonical = ["values", "row_keys", "col_keys", "cores", "projectors", "virtual_map", "row_proj", "col_proj"]

    /// The retrieval parameters the source's shapes, metadata and the options describe; reads no tensor data.
    public static func plan(_ source: TensorSource, options: Options) throws -> (RetrievalConfig, [String: TensorEntry]) {
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
            guard [.f32, .f16, .bf16].contains(e.dtype) else { throw bad("tensor '\(e.name)' is \(e.dtype.rawValue), expected F32, F16 or BF16") }
        }
        let values = try require("values"), rowKeys = try require("row_keys"), colKeys = try require("col_keys")
        try rank(values, 2, "[N_p, v]"); try floating(values)
        try rank(rowKeys, 4, "[H, r, n_row, d]"); try floating(rowKeys)
        try rank(colKeys, 4, "[H, r, n_col, d]"); try floating(colKeys)
        let (h, r, nRow, d) = (rowKeys.shape[0], rowKeys.shape[1], rowKeys.shape[2], rowKeys.shape[3])
        guard colKeys.shape[0] == h, colKeys.shape[1] == r, colKeys.shape[3] == d else {
            throw bad("col_keys has shape \(colKeys.shape), which disagrees with row_keys \(rowKeys.shape) in H, r or d")
        }
        let nCol = colKeys.shape[2], (nP, v) = (values.shape[0], values.shape[1])
        var cores = 1
        if let c = found["cores"] {
            try rank(c, 4, "[H, c, r, r]"); try floating(c)
            guard c.shape[0] == h, c.shape[2] == r, c.shape[3] == r else { throw bad("cores has shape \(c.shape), expected [\(h), c, \(r), \(r)]") }
            cores = c.shape[1]
        }
        let slots = nRow.multipliedReportingOverflow(by: nCol)
        guard !slots.overflow, nP > 0, slots.partialValue % nP == 0 else {
            throw bad("row_keys \(rowKeys.shape) and col_keys \(colKeys.shape), read as [H, r, n, d], make a grid of " +
                      "\(nRow) x \(nCol) slots, which is not a whole multiple E of the \(nP) rows of values \(values.shape). " +
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
                throw bad("virtual_map has shape \(m.shape) and dtype \(m.dtype.rawValue), expected [\(slots.partialValue)] of I64 or I32")
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
        let config = RetrievalConfig(scoring: scoring, heads: h, keyDim: d, gridRows: nRow, gridCols: nCol, rank: r, cores: cores,
                                     expansion: expansion, physicalRows: nP, valueDim: v, outputDim: outputDim, topK: topK,
                                     topM: topM, activation: activation, addressing: addressing, addressKey: addressKey)
        do { try config.validate() } catch {
            guard case .invalidConfig(let field, let reason) = error else { throw error }
            let context: String
            switch field {
            case "rank" where scoring == .pkm:
                context = "PKM scoring takes one key table per side, but row_keys \(rowKeys.shape), read as [H, r, n_row, d], " +
                          "has r = \(r) tables. " + Self.productKeyLayoutHint + "; for Tucker scoring give cores [H, c, r, r]"
            case "cores": context = "cores \(found["cores"]?.shape ?? []) gives c = \(cores) scoring cores: \(reason) (values \(values.shape))"
            case "topK": context = "k (--topk, or __metadata__ 'topk') \(reason)"
            case "topM": context = "m (--top-m, or __metadata__ 'top_m') \(reason)"
            case "gridRows", "gridCols": context = "row_keys \(rowKeys.shape) and col_keys \(colKeys.shape): \(reason)"
            default: context = "\(field): \(reason)"
            }
            throw bad(context)
        }
        return (config, found)
    }

    /// Imports `source` into the store at `path` (creating it, or resuming an interrupted import of the same source).
    @discardableResult
    public static func run(from source: TensorSource, to path: String, options: Options) throws -> RetrievalConfig {
        let (config, entries) = try plan(source, options: options)
        // Load and check every small tensor (finite keys, a true permutation) before touching the store.
        var tensors: [String: Tensor] = [:]
        for (name, entry) in entries where name != "values" { tensors[name] = try entry.load() }
        let retrieval = RetrievalTensors(
            rowKeys: try tensors["row_keys"]!.floats(), colKeys: try tensors["col_keys"]!.floats(),
            cores: try tensors["cores"]?.floats(), projectors: try tensors["projectors"]?.floats(),
            virtualMap: try tensors["virtual_map"]?.integers(),
            rowProj: try tensors["row_proj"]?.floats(), colProj: try tensors["col_proj"]?.floats())
        _ = try ProductKeyIndex(config: config, tensors: retrieval, threads: 1)

        let values = entries["values"]!
        let sourceType = ElementType(values.dtype)!
        let storedType = options.elementType ?? sourceType
        let layout = TableLayout(elementType: storedType, rows: config.physicalRows, dim: config.valueDim,
                                 rowsPerShard: options.rowsPerShard, codec: options.codec, level: options.level,
                                 dictionary: options.dictionary)
        let writer = try StoreWriter.createOrResume(at: path, layout: layout,
                                                    metadata: ["source": (source.path as NSString).lastPathComponent],
                                                    options: options.writer)
        guard !writer.isComplete else { return config }
        if writer.rowsCommitted == 0 {
            // Tensors keep the file's dtype, so export gives back the same bytes.
            for (name, tensor) in tensors.sorted(by: { $0.key < $1.key }) { try writer.putTensor(name, tensor) }
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            try writer.putRecord(MemoryLayer.recordName, Array(try encoder.encode(config)))
        }
        let file = try RandomAccessFile(path: values.path)
        let sourceRow = config.valueDim * sourceType.size
        let chunkRows = max(1, (16 << 20) / sourceRow)
        var row = writer.rowsCommitted
        var buffer = [UInt8]()
        while row < config.physicalRows {
            let n = min(chunkRows, config.physicalRows - row)
            buffer = try file.read(at: values.offset + row * sourceRow, count: n * sourceRow)
            if storedType != sourceType { buffer = storedType.encode(sourceType.decode(buffer)) }
            try writer.append(buffer)
            row += n
        }
        try writer.finish()
        return config
    }

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
        declarations.append(.init(name: "values", dtype: TensorDType(layout.elementType), shape: [layout.rows, layout.dim]))
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

extension ElementType {
    /// The value type of a floating tensor dtype.
    init?(_ dtype: TensorDType) {
        switch dtype {
        case .f32: self = .f32
        case .f16: self = .f16
        case .bf16: self = .bf16
        default: return nil
        }
    }
}

extension TensorDType {
    init(_ type: ElementType) {
        switch type {
        case .f32: self = .f32
        case .f16: self = .f16
        case .bf16: self = .bf16
        }
    }
}
