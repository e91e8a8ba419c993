import CPKMStore
import Foundation
import MemoryLayer
import MemoryRetrieval
import MemoryStore
import _MemorySupport

/// The layers open through the C API.
let openLayers = HandleTable<MemoryLayer>(kind: "layer")

@_cdecl("pkm_layer_open")
public func cLayerOpen(_ path: UnsafePointer<CChar>?, _ threads: Int32, _ cacheBytes: Int, _ out: UnsafeMutablePointer<UInt64>?,
                       _ error: UnsafeMutablePointer<pkm_error>?) -> Int32 {
    cLayerOpenNamed(path, nil, threads, cacheBytes, out, error)
}

@_cdecl("pkm_layer_open_named")
public func cLayerOpenNamed(_ path: UnsafePointer<CChar>?, _ name: UnsafePointer<CChar>?, _ threads: Int32, _ cacheBytes: Int,
                            _ out: UnsafeMutablePointer<UInt64>?, _ error: UnsafeMutablePointer<pkm_error>?) -> Int32 {
    reporting(error) {
        let name = try name.map { try string($0, "name") }
        let path = try string(path, "path"), out = try required(out, "out")!
        guard threads >= 0 else { throw CAPIError.argument("threads must be 0 (all cores) or more, got \(threads)") }
        let store = try Store.open(at: path, cacheBytes: try size(cacheBytes, "cache_bytes"))
        let workers = threads == 0 ? ProcessInfo.processInfo.activeProcessorCount : Int(threads)
        out.pointee = openLayers.insert(try MemoryLayer(store: store, name: name, threads: workers))
    }
}

@_cdecl("pkm_store_layer_open")
public func cStoreLayerOpen(_ storeHandle: UInt64, _ name: UnsafePointer<CChar>?, _ threads: Int32, _ out: UnsafeMutablePointer<UInt64>?,
                            _ error: UnsafeMutablePointer<pkm_error>?) -> Int32 {
    reporting(error) {
        let store = try openStores.object(storeHandle), out = try required(out, "out")!
        let name = try name.map { try string($0, "name") }
        guard threads >= 0 else { throw CAPIError.argument("threads must be 0 (all cores) or more, got \(threads)") }
        let workers = threads == 0 ? ProcessInfo.processInfo.activeProcessorCount : Int(threads)
        out.pointee = openLayers.insert(try MemoryLayer(store: store, name: name, threads: workers))
    }
}

@_cdecl("pkm_layer_close")
public func cLayerClose(_ handle: UInt64, _ error: UnsafeMutablePointer<pkm_error>?) -> Int32 {
    reporting(error) { try openLayers.remove(handle) }
}

@_cdecl("pkm_layer_describe")
public func cLayerDescribe(_ handle: UInt64, _ out: UnsafeMutablePointer<pkm_layer_info>?, _ error: UnsafeMutablePointer<pkm_error>?) -> Int32 {
    reporting(error) {
        let c = try openLayers.object(handle).config, out = try required(out, "out")!
        out.pointee = pkm_layer_info(heads: Int64(c.heads), key_dim: Int64(c.keyDim), top_k: Int64(c.topK), cores: Int64(c.cores),
                                     output_dim: Int64(c.outputDim), value_dim: Int64(c.valueDim), physical_rows: Int64(c.physicalRows),
                                     virtual_slots: Int64(c.virtualSlots), expansion: Int64(c.expansion))
    }
}

@_cdecl("pkm_layer_config_json")
public func cLayerConfigJSON(_ handle: UInt64, _ buffer: UnsafeMutablePointer<CChar>?, _ capacity: Int, _ needed: UnsafeMutablePointer<Int>?,
                             _ error: UnsafeMutablePointer<pkm_error>?) -> Int32 {
    reporting(error) {
        let layer = try openLayers.object(handle)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        try writeList(String(decoding: try encoder.encode(layer.config), as: UTF8.self), buffer, capacity, needed)
    }
}

@_cdecl("pkm_layer_search")
public func cLayerSearch(_ handle: UInt64, _ queries: UnsafePointer<Float>?, _ batch: Int, _ indices: UnsafeMutablePointer<Int64>?,
                         _ weights: UnsafeMutablePointer<Float>?, _ error: UnsafeMutablePointer<pkm_error>?) -> Int32 {
    reporting(error) {
        let layer = try openLayers.object(handle)
        let shape = try LookupShape(layer.config, batch: batch)
        try layer.search(queries: try shape.queries(queries), batch: shape.batch,
                         indices: try shape.indices(indices), weights: try shape.weights(weights))
    }
}

@_cdecl("pkm_layer_lookup")
public func cLayerLookup(_ handle: UInt64, _ queries: UnsafePointer<Float>?, _ batch: Int, _ out: UnsafeMutablePointer<Float>?,
                         _ indices: UnsafeMutablePointer<Int64>?, _ weights: UnsafeMutablePointer<Float>?,
                         _ error: UnsafeMutablePointer<pkm_error>?) -> Int32 {
    reporting(error) { try lookup(handle, queries, batch, nil, out, indices, weights) }
}

@_cdecl("pkm_layer_lookup_gated")
public func cLayerLookupGated(_ handle: UInt64, _ queries: UnsafePointer<Float>?, _ batch: Int, _ gateInputs: UnsafePointer<Float>?,
                              _ out: UnsafeMutablePointer<Float>?, _ indices: UnsafeMutablePointer<Int64>?,
                              _ weights: UnsafeMutablePointer<Float>?, _ error: UnsafeMutablePointer<pkm_error>?) -> Int32 {
    reporting(error) {
        guard let gateInputs else { throw CAPIError.argument("gate_inputs is NULL") }
        try lookup(handle, queries, batch, gateInputs, out, indices, weights)
    }
}

/// pkm_layer_lookup, with a gated layer's gate inputs `[batch, gateDim]` (nil for another layer).
private func lookup(_ handle: UInt64, _ queries: UnsafePointer<Float>?, _ batch: Int, _ gateInputs: UnsafePointer<Float>?,
                    _ out: UnsafeMutablePointer<Float>?, _ indices: UnsafeMutablePointer<Int64>?, _ weights: UnsafeMutablePointer<Float>?) throws {
    let layer = try openLayers.object(handle)
    let shape = try LookupShape(layer.config, batch: batch)
    guard (indices == nil) == (weights == nil) else { throw CAPIError.argument("indices and weights must both be given or both be NULL") }
    let output = UnsafeMutableBufferPointer(start: try required(out, "out", count: shape.outputs)!, count: shape.outputs)
    let gates = gateInputs.map { UnsafeBufferPointer(start: $0, count: shape.batch * layer.config.gateDim) }
    if indices == nil {
        // The caller does not want the slots: the layer's own scratch holds them.
        var slots = [Int](repeating: 0, count: shape.slots), slotWeights = [Float](repeating: 0, count: shape.slotWeights)
        try slots.withUnsafeMutableBufferPointer { i in
            try slotWeights.withUnsafeMutableBufferPointer { w in
                try layer.lookup(queries: try shape.queries(queries), batch: shape.batch, gateInputs: gates, output: output, indices: i, weights: w)
            }
        }
    } else {
        try layer.lookup(queries: try shape.queries(queries), batch: shape.batch, gateInputs: gates, output: output,
                         indices: try shape.indices(indices), weights: try shape.weights(weights))
    }
}

/// The sizes of a batch's queries, slots, weights and outputs, checked against overflow.
private struct LookupShape {
    let batch: Int, queryFloats: Int, slots: Int, slotWeights: Int, outputs: Int

    init(_ c: RetrievalConfig, batch: Int) throws {
        guard batch >= 1 else { throw CAPIError.argument("batch must be at least 1, got \(batch)") }
        guard let q = checkedProduct(batch, c.heads, 2, c.keyDim), let s = checkedProduct(batch, c.heads, c.topK),
              let w = checkedProduct(s, c.cores), let o = checkedProduct(batch, c.outputDim) else {
            throw CAPIError.argument("batch \(batch) is too large")
        }
        self.batch = batch
        (queryFloats, slots, slotWeights, outputs) = (q, s, w, o)
    }

    func queries(_ p: UnsafePointer<Float>?) throws -> UnsafeBufferPointer<Float> {
        UnsafeBufferPointer(start: try required(p, "queries")!, count: queryFloats)
    }

    func indices(_ p: UnsafeMutablePointer<Int64>?) throws -> UnsafeMutableBufferPointer<Int> {
        UnsafeMutableBufferPointer(start: UnsafeMutableRawPointer(try required(p, "indices")!).bindMemory(to: Int.self, capacity: slots), count: slots)
    }

    func weights(_ p: UnsafeMutablePointer<Float>?) throws -> UnsafeMutableBufferPointer<Float> {
        UnsafeMutableBufferPointer(start: try required(p, "weights")!, count: slotWeights)
    }
}
