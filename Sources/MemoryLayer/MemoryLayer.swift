import Foundation
import MemoryRetrieval
import MemoryStore

/// A memory layer served from a store: the retrieval parameters (`meta/retrieval`), the key,
/// core, projector and map tensors held in memory, and the value table read from the store's shards.
///
/// ```swift
/// let layer = try MemoryLayer(store: Store.open(at: "memory.pkm"))
/// let (output, found) = try layer.lookup(queries: q, batch: b)
/// ```
public final class MemoryLayer: Sendable {
    public let store: Store
    public let index: ProductKeyIndex
    public var config: RetrievalConfig { index.config }

    /// Tensor names of Spec/RETRIEVAL.md, "Tensors".
    public enum TensorName {
        public static let rowKeys = "row_keys", colKeys = "col_keys", cores = "cores", projectors = "projectors"
        public static let virtualMap = "virtual_map", rowProj = "row_proj", colProj = "col_proj"
    }

    /// The `meta` record holding the retrieval parameters.
    public static let retrievalRecordName = "retrieval"

    /// Serves the layer that `store` holds.
    /// - Parameters:
    ///   - threads: worker threads for a batch.
    ///   - limitsBLASThreads: see ``ProductKeyIndex``: by default OpenBLAS is set to one thread for the process.
    public init(store: Store, threads: Int = ProcessInfo.processInfo.activeProcessorCount, limitsBLASThreads: Bool = true) throws {
        guard store.isComplete else {
            throw StoreError.incomplete(rowsCommitted: store.state.rowsCommitted, rows: store.layout.rows)
        }
        guard let config = try Self.retrievalConfig(of: store) else {
            throw StoreError.noLayer(path: store.path)
        }
        guard config.physicalRows == store.layout.rows, config.valueDim == store.layout.dim else {
            throw StoreError.inconsistent("retrieval parameters expect a \(config.physicalRows) x \(config.valueDim) value table, the store holds \(store.layout.rows) x \(store.layout.dim)")
        }
        func floats(_ name: String) throws -> [Float]? {
            try store.hasTensor(name) ? store.tensor(named: name).floats() : nil
        }
        let map = try store.hasTensor(TensorName.virtualMap) ? store.tensor(named: TensorName.virtualMap).integers() : nil
        guard let rowKeys = try floats(TensorName.rowKeys) else { throw RetrievalError.missingTensor(TensorName.rowKeys) }
        guard let colKeys = try floats(TensorName.colKeys) else { throw RetrievalError.missingTensor(TensorName.colKeys) }
        let tensors = RetrievalTensors(rowKeys: rowKeys, colKeys: colKeys, cores: try floats(TensorName.cores),
                                       projectors: try floats(TensorName.projectors), virtualMap: map,
                                       rowProj: try floats(TensorName.rowProj), colProj: try floats(TensorName.colProj))
        self.store = store
        index = try ProductKeyIndex(config: config, tensors: tensors, threads: threads, limitsBLASThreads: limitsBLASThreads)
    }

    /// The retrieval parameters the store holds (`meta/retrieval`), or nil for a value table alone.
    public static func retrievalConfig(of store: Store) throws -> RetrievalConfig? {
        guard let record = try store.metaRecord(named: retrievalRecordName) else { return nil }
        do { return try JSONDecoder().decode(RetrievalConfig.self, from: Data(record)) } catch {
            throw StoreError.corruptRecord(name: retrievalRecordName, reason: "it is not a valid retrieval record: \(error)")
        }
    }

    /// Selected slots and weights for queries `[batch, H, 2, d]`.
    public func search(queries: [Float], batch: Int) throws -> SearchResult {
        try index.search(queries: queries, batch: batch)
    }

    /// The lookup-reduce of already selected slots, from the store.
    public func reduce(_ found: SearchResult) throws -> [Float] {
        try index.reduce(found, values: StoreRows(store: store))
    }

    /// The output `[batch, d_out]`, with the selected slots and weights.
    public func lookup(queries: [Float], batch: Int) throws -> (output: [Float], search: SearchResult) {
        try index.lookup(queries: queries, batch: batch, values: StoreRows(store: store))
    }

    /// The search into caller-provided buffers (see ``ProductKeyIndex``): no copies of queries or results.
    public func search(queries: UnsafeBufferPointer<Float>, batch: Int,
                       indices: UnsafeMutableBufferPointer<Int>, weights: UnsafeMutableBufferPointer<Float>) throws {
        try index.search(queries: queries, batch: batch, indices: indices, weights: weights)
    }

    /// The lookup into caller-provided buffers: `output` `[batch, d_out]`, the slots into
    /// `indices` `[batch, H, k]` and `weights` `[batch, H, k, c]`.
    public func lookup(queries: UnsafeBufferPointer<Float>, batch: Int, output: UnsafeMutableBufferPointer<Float>,
                       indices: UnsafeMutableBufferPointer<Int>, weights: UnsafeMutableBufferPointer<Float>) throws {
        try index.lookup(queries: queries, batch: batch, values: StoreRows(store: store), output: output, indices: indices, weights: weights)
    }

    /// Writes the retrieval parameters and tensors of a layer into a store being built, after
    /// checking them together (the value table is written by the caller through `writer`).
    public static func write(config: RetrievalConfig, tensors: RetrievalTensors, to writer: StoreWriter) throws {
        try ProductKeyIndex.validate(config: config, tensors: tensors)
        guard writer.layout.rows == config.physicalRows, writer.layout.dim == config.valueDim else {
            throw StoreError.invalidArgument("the value table is \(writer.layout.rows) x \(writer.layout.dim), the retrieval parameters need \(config.physicalRows) x \(config.valueDim)")
        }
        let c = config
        func put(_ name: String, _ values: [Float]?, _ shape: [Int]) throws {
            guard let values else { return }
            try writer.putTensor(name, Tensor(shape: shape, floats: values))
        }
        try put(TensorName.rowKeys, tensors.rowKeys, [c.heads, c.rank, c.gridRows, c.keyDim])
        try put(TensorName.colKeys, tensors.colKeys, [c.heads, c.rank, c.gridCols, c.keyDim])
        try put(TensorName.cores, tensors.cores, [c.heads, c.cores, c.rank, c.rank])
        try put(TensorName.projectors, tensors.projectors, [c.expansion, c.valueDim, c.outputDim])
        try put(TensorName.rowProj, tensors.rowProj, [c.heads, c.rank])
        try put(TensorName.colProj, tensors.colProj, [c.heads, c.rank])
        if let map = tensors.virtualMap {
            try writer.putTensor(TensorName.virtualMap, Tensor(dtype: .i64, shape: [map.count], bytes: map.withUnsafeBytes { Array($0) }))
        }
        try writeRetrievalRecord(config, to: writer)
    }

    /// Writes `config` as the store's `meta/retrieval` record (JSON with sorted keys).
    public static func writeRetrievalRecord(_ config: RetrievalConfig, to writer: StoreWriter) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        try writer.putMetaRecord(retrievalRecordName, Array(try encoder.encode(config)))
    }
}

/// The store's value table as the retrieval module's row source.
struct StoreRows: ValueRows {
    let store: Store
    var dim: Int { store.layout.dim }
    var rows: Int { store.layout.rows }

    func gatherReduce(indices: UnsafeBufferPointer<Int>, weights: UnsafeBufferPointer<Float>, chunks: Int,
                      targets: UnsafeBufferPointer<Int>, into output: UnsafeMutableBufferPointer<Float>) throws {
        try store.gatherReduce(indices: indices, weights: weights, chunks: chunks, targets: targets, into: output)
    }
}
