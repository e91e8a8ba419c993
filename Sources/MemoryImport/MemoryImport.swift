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
        public init() {}
    }

    /// How keys saved as `[H, n, 2, d]` (row and column keys side by side) become the store's tensors.
    static let productKeyLayoutHint = "keys saved as [H, n, 2, d] (the product-key-memory package) become " +
        "row_keys = keys[:, :, 0, :][:, None] and col_keys = keys[:, :, 1, :][:, None]"

    static let canonical = ["values", "row_keys", "col_keys", "cores", "projectors", "virtual_map", "row_proj", "col_proj"]

    /// Imports `source` into the store at `path` (creating it, or resuming an interrupted import of the same source).
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
        let (config, entries) = try plan(source, options: options)
        // Load and check every small tensor (finite keys, a true permutation) before touching the store.
        var tensors: [String: Tensor] = [:]
        for (name, entry) in entries where name != "values" { tensors[name] = try entry.load() }
        let retrieval = RetrievalTensors(
            rowKeys: try tensors["row_keys"]!.floats(), colKeys: try tensors["col_keys"]!.floats(),
            cores: try tensors["cores"]?.floats(), projectors: try tensors["projectors"]?.floats(),
            virtualMap: try tensors["virtual_map"]?.integers(),
            rowProj: try tensors["row_proj"]?.floats(), colProj: try tensors["col_proj"]?.floats())
        try ProductKeyIndex.validate(config: config, tensors: retrieval)

        let values = entries["values"]!
        let sourceType = values.dtype
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
            try MemoryLayer.writeRetrievalRecord(config, to: writer)
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
}
