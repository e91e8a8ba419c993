import Foundation
import MemoryLayer
import MemoryRetrieval
import MemoryStore
import TensorFiles

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
        /// How the source holds the layer; other than `store`, `renames` name its `keys` and `values`.
        public var layout = CheckpointLayout.store
        /// The layer's name in the store (nil: ``LayerKeys/defaultName``). Naming a layer that a
        /// complete store at the path does not hold adds it to that store, reading its value table.
        public var layer: String?
        /// Adding a layer: read the store's value table without comparing it with the checkpoint's
        /// `values` (which may then be absent).
        public var valuesFromStore = false
        /// The rows of the table the layer reads, from `poolOffset` (modulo the table's rows).
        /// Adding a layer: of the store's table; nil: as many as the checkpoint's values have,
        /// else the whole table. Creating a store: of the checkpoint's values, which become the
        /// table (a pool for the layers added next); nil: all of them.
        public var window: Int?
        public var poolOffset = 0
        /// Adding a gated layer to a store: the last `gateDim` elements of each of the store's rows
        /// are the gate vectors (Spec/RETRIEVAL.md, "Gates"). Creating a store, the checkpoint's
        /// `gates` tensor `[N_p, g]` gives them instead.
        public var gateDim: Int?
        /// The gate's activation; nil: metadata `gate_activation`, else none.
        public var gateActivation: GateActivation?
        public init() {}
    }

    /// How keys saved as `[H, n, 2, d]` (row and column keys side by side) become the store's tensors.
    static let productKeyLayoutHint = "keys saved as [H, n, 2, d] (the product-key-memory package) become " +
        "row_keys = keys[:, :, 0, :][:, None] and col_keys = keys[:, :, 1, :][:, None]"

    static let canonical = ["values", "gates", "row_keys", "col_keys", "cores", "projectors", "virtual_map", "row_proj", "col_proj"]

    /// Imports `source` into the store at `path`: creating it, resuming an interrupted import of
    /// the same source, or, when `options.layer` names a layer a complete store there does not
    /// hold, adding that layer (``Options/layer``).
    @discardableResult
    public static func run(from source: TensorSource, to path: String, options: Options) throws -> RetrievalConfig {
        guard options.layout != .store else { return try importLayer(source, to: path, options: options) }
        // The layer's key tables, rearranged, live in a scratch directory for the import.
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("pkm-import-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        var canonical = options
        canonical.layout = .store
        canonical.renames = [:]  // applied by the conversion
        return try importLayer(source.converted(from: options.layout, renames: options.renames, scratch: scratch), to: path, options: canonical)
    }

    private static func importLayer(_ source: TensorSource, to path: String, options: Options) throws -> RetrievalConfig {
        let name = options.layer ?? LayerKeys.defaultName
        try LayerKeys.validate(name)
        if let pool = try completeStoreTable(at: path, adding: options.layer) {
            return try addLayer(name, from: source, to: path, pool: pool, options: options)
        }
        guard !options.valuesFromStore else {
            throw StoreError.invalidArgument("--values-from-store adds a layer to a complete store; '\(path)' is not one")
        }
        // A new store's table is the checkpoint's values; the layer reads all of them, or the
        // window asked for (a pool of several layers' rows, written by one import and read by
        // the layers added next).
        var (config, entries) = try plan(source, options: options, table: try window(of: source, options: options))
        if options.window != nil || options.poolOffset != 0 {
            config.poolRows = entries["values"]!.shape[0]
            config.poolOffset = options.poolOffset
            try config.validate()
        }
        let tensors = try loadChecked(entries, config: config)

        let values = entries["values"]!
        let sourceType = values.dtype
        let storedType = options.elementType ?? sourceType
        let gates = try entries["gates"].map { try RandomAccessFile(path: $0.path) }
        let layout = TableLayout(elementType: storedType, rows: config.poolRows, dim: config.tableDim,
                                 rowsPerShard: options.rowsPerShard, codec: options.codec, level: options.level,
                                 dictionary: options.dictionary)
        let writer = try StoreWriter.createOrResume(at: path, layout: layout,
                                                    metadata: ["source": (source.path as NSString).lastPathComponent],
                                                    options: options.writer)
        guard !writer.isComplete else { return config }
        // Tensors keep the file's dtype, so export gives back the same bytes.
        if writer.rowsCommitted == 0 { try MemoryLayer.write(name: name, config: config, stored: tensors, to: writer) }
        let file = try RandomAccessFile(path: values.path)
        let sourceRow = config.valueDim * sourceType.size
        let chunkRows = max(1, (16 << 20) / sourceRow)
        var row = writer.rowsCommitted
        var buffer = [UInt8]()
        while row < config.poolRows {
            let n = min(chunkRows, config.poolRows - row)
            buffer = try file.read(at: values.offset + row * sourceRow, count: n * sourceRow)
            if storedType != sourceType { buffer = storedType.encode(sourceType.decode(buffer)) }
            if let gates, let entry = entries["gates"] {
                // A gated layer's table row: its values, then its gate vector.
                let gateRow = config.gateDim * entry.dtype.size
                var gateBytes = try gates.read(at: entry.offset + row * gateRow, count: n * gateRow)
                if storedType != entry.dtype { gateBytes = storedType.encode(entry.dtype.decode(gateBytes)) }
                buffer = interleave(buffer, gateBytes, rows: n)
            }
            try writer.append(buffer)
            row += n
        }
        try writer.finish()
        return config
    }
}

extension MemoryImport {
    /// Rows of `a` and of `b` (`rows` each) side by side: row i is a's row i, then b's.
    static func interleave(_ a: [UInt8], _ b: [UInt8], rows: Int) -> [UInt8] {
        let (aRow, bRow) = (a.count / rows, b.count / rows)
        var out = [UInt8]()
        out.reserveCapacity(a.count + b.count)
        for i in 0..<rows {
            out.append(contentsOf: a[(i * aRow)..<((i + 1) * aRow)])
            out.append(contentsOf: b[(i * bRow)..<((i + 1) * bRow)])
        }
        return out
    }

    /// The rows of the checkpoint's values a new store's layer reads, when a window is asked for
    /// (nil: all of them); refused when it does not fit the values.
    private static func window(of source: TensorSource, options: Options) throws -> (rows: Int, dim: Int)? {
        guard options.window != nil || options.poolOffset != 0 else { return nil }
        guard let values = source.entries[options.renames["values"] ?? "values"], values.shape.count == 2 else { return nil }
        let window = options.window ?? values.shape[0]
        guard window >= 1, window <= values.shape[0], options.poolOffset >= 0, options.poolOffset < values.shape[0] else {
            throw StoreError.invalidArgument("a window of \(window) rows from row \(options.poolOffset) does not fit the checkpoint's \(values.shape[0]) rows of values")
        }
        return (window, values.shape[1])
    }

    /// Loads every tensor but the values and checks them with `config` (finite keys, a true
    /// permutation), before the store is touched.
    static func loadChecked(_ entries: [String: TensorEntry], config: RetrievalConfig) throws -> [String: Tensor] {
        var tensors: [String: Tensor] = [:]
        for (name, entry) in entries where name != "values" && name != "gates" { tensors[name] = try entry.load() }
        let retrieval = RetrievalTensors(
            rowKeys: try tensors["row_keys"]!.floats(), colKeys: try tensors["col_keys"]!.floats(),
            cores: try tensors["cores"]?.floats(), projectors: try tensors["projectors"]?.floats(),
            virtualMap: try tensors["virtual_map"]?.integers(),
            rowProj: try tensors["row_proj"]?.floats(), colProj: try tensors["col_proj"]?.floats())
        try ProductKeyIndex.validate(config: config, tensors: retrieval)
        return tensors
    }

    /// The value table of the complete store at `path` when the import adds layer `layer` to it
    /// (or finds it added); nil when the import creates or resumes a store (no store there, an
    /// incomplete one, or no layer named).
    private static func completeStoreTable(at path: String, adding layer: String?) throws -> TableLayout? {
        guard layer != nil, FileManager.default.fileExists(atPath: path) else { return nil }
        let store = try Store.open(at: path, cacheBytes: 0)
        return store.isComplete ? store.layout : nil
    }

    /// Whether `store` holds layer `name` already: exactly this one (the import ran before:
    /// nothing to do), or another (refused, naming the way to replace it).
    private static func holds(_ name: String, in store: Store, config: RetrievalConfig, tensors: [String: Tensor]) throws -> Bool {
        guard try store.layerNames().contains(name) else { return false }
        let keys = try store.layerKeys(name)
        let stored = try store.tensorNames().filter { $0.hasPrefix(keys.tensorPrefix) }
        let same = try store.metaRecord(named: keys.record) == MemoryLayer.record(config)
            && Set(stored) == Set(tensors.keys.map(keys.tensor))
            && tensors.allSatisfy { base, tensor in try store.tensor(named: keys.tensor(base)) == tensor }
        guard same else {
            throw StoreError.invalidArgument("'\(store.path)' already holds another layer '\(name)' (memtool remove-layer \(store.path) \(name) removes it)")
        }
        return true
    }

    /// Adds layer `name` to the complete store at `path`, reading a window of its value table:
    /// the checkpoint's values must equal those rows byte for byte unless `valuesFromStore`.
    private static func addLayer(_ name: String, from source: TensorSource, to path: String, pool: TableLayout,
                                 options: Options) throws -> RetrievalConfig {
        let valuesName = options.renames["values"] ?? "values"
        let values = source.entries[valuesName]
        guard values != nil || options.valuesFromStore else {
            throw TensorFileError(source.path, "tensor 'values' is missing: give the checkpoint's values, or read the store's with --values-from-store")
        }
        let window = options.window ?? (options.valuesFromStore ? nil : values?.shape.first) ?? pool.rows
        guard window >= 1, window <= pool.rows, options.poolOffset >= 0, options.poolOffset < pool.rows else {
            throw StoreError.invalidArgument("a window of \(window) rows from row \(options.poolOffset) does not fit the store's \(pool.rows) rows")
        }
        let gateDim = options.gateDim ?? 0
        guard source.entries[options.renames["gates"] ?? "gates"] == nil else {
            throw TensorFileError(source.path, "a layer added to a store reads its gates from the store's rows: give --gate-dim, not a 'gates' tensor")
        }
        guard gateDim == 0 || options.valuesFromStore else {
            throw StoreError.invalidArgument("a gated layer added to a store reads the store's rows: pass --values-from-store with --gate-dim")
        }
        guard gateDim >= 0, gateDim < pool.dim else {
            throw StoreError.invalidArgument("--gate-dim \(gateDim) leaves no value columns in the store's rows of \(pool.dim)")
        }
        if gateDim == 0, options.gateActivation != nil { throw StoreError.invalidArgument("a gate activation needs --gate-dim") }
        var ungated = options
        (ungated.gateDim, ungated.gateActivation) = (nil, nil)
        var (config, entries) = try plan(source, options: ungated, table: (window, pool.dim - gateDim))
        config.poolRows = pool.rows
        config.poolOffset = options.poolOffset
        config.gateDim = gateDim
        config.gateActivation = options.gateActivation ?? config.gateActivation
        try config.validate()
        entries["values"] = nil
        let tensors = try loadChecked(entries, config: config)
        // Checked through one reader, released before the writer opens the file.
        let added: Bool = try {
            let store = try Store.open(at: path, cacheBytes: 0)
            if try holds(name, in: store, config: config, tensors: tensors) { return true }
            if let values, !options.valuesFromStore {
                guard values.shape == [window, pool.dim] else {
                    throw TensorFileError(source.path, "values \(values.shape) do not match the \(window) x \(pool.dim) rows the layer would read from the store")
                }
                try requireSameValues(values, in: store, window: options.poolOffset..<(options.poolOffset + window))
            }
            return false
        }()
        if added { return config }
        var writerOptions = options.writer
        writerOptions.progress = nil
        try MemoryLayer.write(name: name, config: config, stored: tensors, to: StoreWriter.editing(at: path, options: writerOptions))
        return config
    }

    /// Throws unless the checkpoint's values, in the store's element type, are the stored rows of `window`.
    private static func requireSameValues(_ values: TensorEntry, in store: Store, window: Range<Int>) throws {
        let file = try RandomAccessFile(path: values.path)
        let storedType = store.layout.elementType, sourceRow = store.layout.dim * values.dtype.size
        var row = 0
        try forEachStoredRun(of: store, window: window) { stored in
            let n = stored.count / store.layout.rowBytes
            var bytes = try file.read(at: values.offset + row * sourceRow, count: n * sourceRow)
            if values.dtype != storedType { bytes = storedType.encode(values.dtype.decode(bytes)) }
            guard bytes.elementsEqual(stored) else {
                throw StoreError.invalidArgument("the checkpoint's values differ from the store's rows \(window.lowerBound + row)..< (mod \(store.layout.rows)): " +
                                                 "a layer reads the store's one value table; pass --values-from-store to use the store's rows anyway")
            }
            row += n
        }
    }
}
