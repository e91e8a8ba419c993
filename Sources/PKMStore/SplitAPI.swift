import CPKMStore
import Foundation
import MemoryFormat
import MemoryImport
import MemoryStore
import _MemorySupport

// A value table served in parts (Spec/DISTRIBUTED.md): splitting, the part record, and the
// reduce in three steps (addresses, per-part sums, projection). (API version 3.)

@_cdecl("pkm_split")
public func cSplit(_ storePath: UnsafePointer<CChar>?, _ directory: UnsafePointer<CChar>?, _ parts: Int, _ axis: UnsafePointer<CChar>?,
                   _ error: UnsafeMutablePointer<pkm_error>?) -> Int32 {
    reporting(error) {
        let name = try string(axis, "axis")
        guard let axis = TablePart.Axis(rawValue: name) else { throw CAPIError.argument("axis must be \"rows\" or \"dims\", got \"\(name)\"") }
        try MemorySplit.run(try string(storePath, "store_path"), parts: try size(parts, "parts"), axis: axis,
                            into: try string(directory, "directory"), createdBy: "pkmstore \(pkmstoreVersion)")
    }
}

@_cdecl("pkm_store_part_json")
public func cStorePartJSON(_ handle: UInt64, _ buffer: UnsafeMutablePointer<CChar>?, _ capacity: Int, _ needed: UnsafeMutablePointer<Int>?,
                           _ error: UnsafeMutablePointer<pkm_error>?) -> Int32 {
    reporting(error) {
        let part = try openStores.object(handle).tablePart()
        try writeList(try part.map { String(decoding: try $0.encoded(), as: UTF8.self) } ?? "", buffer, capacity, needed)
    }
}

@_cdecl("pkm_layer_address")
public func cLayerAddress(_ handle: UInt64, _ slots: UnsafePointer<Int64>?, _ count: Int, _ rows: UnsafeMutablePointer<Int64>?,
                          _ projectors: UnsafeMutablePointer<Int64>?, _ error: UnsafeMutablePointer<pkm_error>?) -> Int32 {
    reporting(error) {
        let layer = try openLayers.object(handle), n = try size(count, "count")
        guard n > 0 else { return }
        let s = try required(slots, "slots")!, r = try required(rows, "rows")!, p = try required(projectors, "projectors")!
        try layer.index.addresses(of: indexBuffer(s, n), rows: mutableIndexBuffer(r, n), projectors: mutableIndexBuffer(p, n))
    }
}

@_cdecl("pkm_layer_project")
public func cLayerProject(_ handle: UInt64, _ sums: UnsafePointer<Float>?, _ batch: Int, _ out: UnsafeMutablePointer<Float>?,
                          _ error: UnsafeMutablePointer<pkm_error>?) -> Int32 {
    reporting(error) {
        let layer = try openLayers.object(handle), c = layer.config
        guard batch >= 1 else { throw CAPIError.argument("batch must be at least 1, got \(batch)") }
        guard let inCount = checkedProduct(batch, c.expansion, c.valueDim), let outCount = checkedProduct(batch, c.outputDim) else {
            throw CAPIError.argument("batch \(batch) is too large")
        }
        try layer.index.project(sums: UnsafeBufferPointer(start: try required(sums, "sums")!, count: inCount), queries: batch,
                                into: UnsafeMutableBufferPointer(start: try required(out, "out")!, count: outCount))
    }
}

/// A caller's int64 output array as Swift's Int (see `indexBuffer`).
private func mutableIndexBuffer(_ p: UnsafeMutablePointer<Int64>, _ count: Int) -> UnsafeMutableBufferPointer<Int> {
    UnsafeMutableBufferPointer(start: UnsafeMutableRawPointer(p).bindMemory(to: Int.self, capacity: count), count: count)
}
