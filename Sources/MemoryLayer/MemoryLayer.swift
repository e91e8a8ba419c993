import Foundation
import MemoryRetrieval
import MemoryStore

/// A memory layer served from a store: its retrieval parameters (its record), the key, core,
/// projector and map tensors held in memory, and the value table read from the store's shards.
/// A store may hold several layers reading one value table (Spec/FORMAT.md, "Layers").
///
/// ```swift
/// let layer = try MemoryLayer(store: Store.open(at: "memory.pkm"), name: "block3")
/// let (output, found) = try layer.lookup(queries: q, batch: b)
/// ```
public final class MemoryLayer: Sendable {
    public let store: Store
    /// The layer's name in the store.
    public let name: String
    public let index: ProductKeyIndex
    public var config: RetrievalConfig { index.config }
    /// Set when the store holds a piece of a split table (Spec/DISTRIBUTED.md): the layer then
    /// searches and addresses, but its rows are summed by the parts' owners, not here.
    public let part: TablePart?

    /// Tensor names of Spec/RETRIEVAL.md, "Tensors".
    public enum TensorName {
        public static let rowKeys = "row_keys", colKeys = "col_keys", cores = "cores", projectors = "projectors"
        public static let virtualMap = "virtual_map", rowProj = "row_proj", colProj = "col_proj"
    }

    /// Serves layer `name` of `store` (nil: the store's only layer).
    /// - Parameters:
    ///   - threads: worker threads for a batch.
    ///   - limitsBLASThreads: see ``ProductKeyIndex``: by default OpenBLAS is set to one thread for the process.
    public init(store: Store, name: String? = nil, threads: Int = ProcessInfo.processInfo.activeProcessorCount,
                limitsBLASThreads: Bool = true) throws {
        guard store.isComplete else {
            throw StoreError.incomplete(rowsCommitted: store.state.rowsCommitted, rows: store.layout.rows)
        }
        let (keys, config, tensors) = try Self.read(store, name)
        self.store = store
        self.name = keys.name
        part = try store.tablePart()
        index = try ProductKeyIndex(config: config, tensors: tensors, threads: threads, limitsBLASThreads: limitsBLASThreads)
    }

    /// Reads and checks layer `name` of `store` without building its index: what `verify` asks of every layer.
    public static func check(store: Store, name: String) throws {
        let (_, config, tensors) = try read(store, name)
        try ProductKeyIndex.validate(config: config, tensors: tensors)
    }

    /// The layer's keys, parameters and tensors, checked against the store's value table (the
    /// whole table's shape, for a part store).
    private static func read(_ store: Store, _ name: String?) throws -> (LayerKeys, RetrievalConfig, RetrievalTensors) {
        let keys = try store.layerKeys(name)
        guard let config = try retrievalConfig(of: store, layer: keys.name) else { throw StoreError.noLayer(path: store.path) }
        let table = try store.tablePart().map { (rows: $0.tableRows, dim: $0.tableDim) } ?? (rows: store.layout.rows, dim: store.layout.dim)
        guard config.poolRows == table.rows, config.tableDim == table.dim else {
            throw StoreError.inconsistent("layer '\(keys.name)' expects a \(config.poolRows) x \(config.tableDim) value table\(gateNote(config)), " +
                                          "the store holds \(table.rows) x \(table.dim)")
        }
        func floats(_ base: String) throws -> [Float]? {
            try store.hasTensor(keys.tensor(base)) ? store.tensor(named: keys.tensor(base)).floats() : nil
        }
        let mapName = keys.tensor(TensorName.virtualMap)
        let map = try store.hasTensor(mapName) ? store.tensor(named: mapName).integers() : nil
        guard let rowKeys = try floats(TensorName.rowKeys) else { throw RetrievalError.missingTensor(keys.tensor(TensorName.rowKeys)) }
        guard let colKeys = try floats(TensorName.colKeys) else { throw RetrievalError.missingTensor(keys.tensor(TensorName.colKeys)) }
        let tensors = RetrievalTensors(rowKeys: rowKeys, colKeys: colKeys, cores: try floats(TensorName.cores),
                                       projectors: try floats(TensorName.projectors), virtualMap: map,
                                       rowProj: try floats(TensorName.rowProj), colProj: try floats(TensorName.colProj))
        return (keys, config, tensors)
    }

    /// How a gated layer's row width is made up, for messages.
    private static func gateNote(_ config: RetrievalConfig) -> String {
        config.gateDim > 0 ? " (\(config.valueDim) values and \(config.gateDim) gate columns a row)" : ""
    }

    /// The retrieval parameters of layer `name` (nil: the store's only layer), or nil for a value table alone.
    public static func retrievalConfig(of store: Store, layer name: String? = nil) throws -> RetrievalConfig? {
        guard !(try store.layerNames().isEmpty) else { return nil }
        let keys = try store.layerKeys(name)
        guard let record = try store.metaRecord(named: keys.record) else { return nil }
        do { return try JSONDecoder().decode(RetrievalConfig.self, from: Data(record)) } catch {
            throw StoreError.corruptRecord(name: keys.record, reason: "it is not a valid retrieval record: \(error)")
        }
    }

    /// Selected slots and weights for queries `[batch, H, 2, d]`.
    public func search(queries: [Float], batch: Int) throws -> SearchResult {
        try index.search(queries: queries, batch: batch)
    }

    /// The lookup-reduce of already selected slots, from the store (a gated layer's `gateInputs` `[batch, gateDim]`).
    public func reduce(_ found: SearchResult, gateInputs: [Float]? = nil) throws -> [Float] {
        try index.reduce(found, values: try wholeTable(), gateInputs: gateInputs)
    }

    /// The output `[batch, d_out]`, with the selected slots and weights; a gated layer needs
    /// `gateInputs` `[batch, gateDim]` (Spec/RETRIEVAL.md, "Gates").
    public func lookup(queries: [Float], batch: Int, gateInputs: [Float]? = nil) throws -> (output: [Float], search: SearchResult) {
        try index.lookup(queries: queries, batch: batch, values: try wholeTable(), gateInputs: gateInputs)
    }

    /// The store's rows as the layer's value table; refused for a part of a split table.
    private func wholeTable() throws -> StoreRows {
        if let part {
            throw StoreError.invalidArgument("'\(store.path)' holds part \(part.index) of \(part.parts) of a split value table (\(part.axis.rawValue) " +
                                             "\(part.first)..<\(part.first + part.count)): search it here, look rows up through the split (Spec/DISTRIBUTED.md)")
        }
        return StoreRows(store: store)
    }

    /// The search into caller-provided buffers (see ``ProductKeyIndex``): no copies of queries or results.
    public func search(queries: UnsafeBufferPointer<Float>, batch: Int,
                       indices: UnsafeMutableBufferPointer<Int>, weights: UnsafeMutableBufferPointer<Float>) throws {
        try index.search(queries: queries, batch: batch, indices: indices, weights: weights)
    }

    /// The lookup into caller-provided buffers: `output` `[batch, d_out]`, the slots into
    /// `indices` `[batch, H, k]` and `weights` `[batch, H, k, c]`.
    public func lookup(queries: UnsafeBufferPointer<Float>, batch: Int, gateInputs: UnsafeBufferPointer<Float>? = nil,
                       output: UnsafeMutableBufferPointer<Float>, indices: UnsafeMutableBufferPointer<Int>,
                       weights: UnsafeMutableBufferPointer<Float>) throws {
        try index.lookup(queries: queries, batch: batch, values: try wholeTable(), gateInputs: gateInputs, output: output,
                         indices: indices, weights: weights)
    }

    /// Writes layer `name` (parameters and tensors, checked together) into a store in one
    /// transaction; the value table is written by the caller through `writer`.
    public static func write(name: String = LayerKeys.defaultName, config: RetrievalConfig, tensors: RetrievalTensors,
                             to writer: StoreWriter) throws {
        try ProductKeyIndex.validate(config: config, tensors: tensors)
        let c = config
        var stored: [String: Tensor] = [:]
        func put(_ base: String, _ values: [Float]?, _ shape: [Int]) throws {
            if let values { stored[base] = try Tensor(shape: shape, floats: values) }
        }
        try put(TensorName.rowKeys, tensors.rowKeys, [c.heads, c.rank, c.gridRows, c.keyDim])
        try put(TensorName.colKeys, tensors.colKeys, [c.heads, c.rank, c.gridCols, c.keyDim])
        try put(TensorName.cores, tensors.cores, [c.heads, c.cores, c.rank, c.rank])
        try put(TensorName.projectors, tensors.projectors, [c.expansion, c.valueDim, c.outputDim])
        try put(TensorName.rowProj, tensors.rowProj, [c.heads, c.rank])
        try put(TensorName.colProj, tensors.colProj, [c.heads, c.rank])
        if let map = tensors.virtualMap {
            stored[TensorName.virtualMap] = try Tensor(dtype: .i64, shape: [map.count], bytes: map.withUnsafeBytes { Array($0) })
        }
        try write(name: name, config: config, stored: stored, to: writer)
    }

    /// Writes layer `name` from tensors already in their stored form (any float dtype for keys,
    /// cores and projectors, I64 or I32 for the map), which the caller has checked against `config`.
    public static func write(name: String, config: RetrievalConfig, stored tensors: [String: Tensor], to writer: StoreWriter) throws {
        guard writer.layout.rows == config.poolRows, writer.layout.dim == config.tableDim else {
            throw StoreError.invalidArgument("the value table is \(writer.layout.rows) x \(writer.layout.dim), layer '\(name)' needs " +
                                             "\(config.poolRows) x \(config.tableDim)\(gateNote(config))")
        }
        try writer.putLayer(name, record: try record(config), tensors: tensors)
    }

    /// `config` as a retrieval record: JSON with sorted keys.
    public static func record(_ config: RetrievalConfig) throws -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return Array(try encoder.encode(config))
    }
}

/// The store's value table as the retrieval module's row source.
struct StoreRows: ValueRows {
    let store: Store
    var dim: Int { store.layout.dim }
    var rows: Int { store.layout.rows }

    func gatherReduce(indices: UnsafeBufferPointer<Int>, weights: UnsafeBufferPointer<Float>, chunks: Int, width: Int,
                      targets: UnsafeBufferPointer<Int>, into output: UnsafeMutableBufferPointer<Float>) throws {
        try store.gatherReduce(indices: indices, weights: weights, chunks: chunks, width: width, targets: targets, into: output)
    }

    func gatherDots(indices: UnsafeBufferPointer<Int>, column: Int, width: Int, inputs: UnsafeBufferPointer<Float>,
                    queries: UnsafeBufferPointer<Int>, into scores: UnsafeMutableBufferPointer<Float>) throws {
        try store.gatherDots(indices: indices, column: column, width: width, inputs: inputs, queries: queries, into: scores)
    }
}
