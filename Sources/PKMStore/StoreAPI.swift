import CPKMStore
import MemoryStore
import MemoryRetrieval
import _MemorySupport

/// The stores open through the C API.
let openStores = HandleTable<Store>(kind: "store")

@_cdecl("pkm_version")
public func cVersion() -> UnsafePointer<CChar> { libraryVersion }

/// The version text, allocated once and never freed: static storage, as the header promises.
nonisolated(unsafe) private let libraryVersion: UnsafePointer<CChar> = {
    let text = Array("pkmstore \(pkmstoreVersion) (C API \(PKM_API_VERSION), store format \(Manifest.currentVersion))".utf8CString)
    let copy = UnsafeMutablePointer<CChar>.allocate(capacity: text.count)
    copy.initialize(from: text, count: text.count)
    return UnsafePointer(copy)
}()

@_cdecl("pkm_store_open")
public func cStoreOpen(_ path: UnsafePointer<CChar>?, _ cacheBytes: Int, _ out: UnsafeMutablePointer<UInt64>?,
                       _ error: UnsafeMutablePointer<pkm_error>?) -> Int32 {
    cStoreOpenWith(path, cacheBytes, 0, out, error)
}

@_cdecl("pkm_store_open_with")
public func cStoreOpenWith(_ path: UnsafePointer<CChar>?, _ cacheBytes: Int, _ flags: UInt32, _ out: UnsafeMutablePointer<UInt64>?,
                           _ error: UnsafeMutablePointer<pkm_error>?) -> Int32 {
    reporting(error) {
        let path = try string(path, "path"), out = try required(out, "out")!
        let known = UInt32(PKM_OPEN_RESIDENT) | UInt32(PKM_OPEN_NO_BACKGROUND_CHECK)
        guard flags & ~known == 0 else { throw CAPIError.argument("unknown open flags \(flags)") }
        let store = try Store.open(at: path, cacheBytes: try size(cacheBytes, "cache_bytes"),
                                   checksInBackground: flags & UInt32(PKM_OPEN_NO_BACKGROUND_CHECK) == 0,
                                   resident: flags & UInt32(PKM_OPEN_RESIDENT) != 0)
        out.pointee = openStores.insert(store)
    }
}

@_cdecl("pkm_store_close")
public func cStoreClose(_ handle: UInt64, _ error: UnsafeMutablePointer<pkm_error>?) -> Int32 {
    reporting(error) { try openStores.remove(handle) }
}

@_cdecl("pkm_store_wait_checked")
public func cStoreWaitChecked(_ handle: UInt64, _ timeoutSeconds: Double, _ everyRowChecked: UnsafeMutablePointer<Int32>?,
                              _ error: UnsafeMutablePointer<pkm_error>?) -> Int32 {
    reporting(error) {
        let store = try openStores.object(handle), out = try required(everyRowChecked, "every_row_checked")!
        guard timeoutSeconds >= 0, timeoutSeconds.isFinite else { throw CAPIError.argument("timeout_seconds must be finite and not negative, not \(timeoutSeconds)") }
        out.pointee = store.waitUntilEveryRowChecked(timeout: .milliseconds(min(timeoutSeconds, 1e9) * 1e3)) ? 1 : 0
    }
}

@_cdecl("pkm_store_layout")
public func cStoreLayout(_ handle: UInt64, _ out: UnsafeMutablePointer<pkm_layout>?, _ error: UnsafeMutablePointer<pkm_error>?) -> Int32 {
    reporting(error) {
        let store = try openStores.object(handle), out = try required(out, "out")!
        let t = store.layout
        out.pointee = pkm_layout(rows: Int64(t.rows), dim: Int64(t.dim), rows_per_shard: Int64(t.rowsPerShard),
                                 shard_count: Int64(t.shardCount), rows_committed: Int64(store.readableRows),
                                 element_type: Int32(t.elementType.code), codec: t.codec == .raw ? 0 : t.codec == .zstd ? 1 : 2,
                                 format_version: Int32(store.manifest.formatVersion), complete: store.isComplete ? 1 : 0)
    }
}

@_cdecl("pkm_store_rows")
public func cStoreRows(_ handle: UInt64, _ indices: UnsafePointer<Int64>?, _ count: Int, _ out: UnsafeMutablePointer<Float>?,
                       _ error: UnsafeMutablePointer<pkm_error>?) -> Int32 {
    reporting(error) {
        let store = try openStores.object(handle), count = try size(count, "count")
        guard let floats = checkedProduct(count, store.layout.dim) else { throw CAPIError.argument("count \(count) is too large") }
        let rows = try required(indices, "indices", count: count), out = try required(out, "out", count: floats)
        guard count > 0 else { return }
        try store.rows(indexBuffer(rows!, count), into: UnsafeMutableBufferPointer(start: out!, count: floats))
    }
}

@_cdecl("pkm_store_gather_reduce")
public func cStoreGatherReduce(_ handle: UInt64, _ indices: UnsafePointer<Int64>?, _ weights: UnsafePointer<Float>?, _ count: Int,
                               _ chunks: Int, _ targets: UnsafePointer<Int64>?, _ outputs: Int, _ out: UnsafeMutablePointer<Float>?,
                               _ error: UnsafeMutablePointer<pkm_error>?) -> Int32 {
    reporting(error) {
        let store = try openStores.object(handle), count = try size(count, "count"), chunks = try size(chunks, "chunks")
        let outputs = try size(outputs, "outputs")
        guard outputs >= 1 else { throw CAPIError.argument("outputs must be at least 1") }
        guard let weightCount = checkedProduct(count, chunks), let floats = checkedProduct(outputs, store.layout.dim) else {
            throw CAPIError.argument("count \(count), chunks \(chunks) or outputs \(outputs) is too large")
        }
        let rows = try required(indices, "indices", count: count), w = try required(weights, "weights", count: weightCount)
        let out = try required(out, "out")!
        let output = UnsafeMutableBufferPointer(start: out, count: floats)
        guard count > 0 else { return }
        let rowBuffer = indexBuffer(rows!, count)
        let weightBuffer = UnsafeBufferPointer(start: w!, count: weightCount)
        if let targets {
            let targetBuffer = indexBuffer(targets, count)
            try store.gatherReduce(indices: rowBuffer, weights: weightBuffer, chunks: chunks, targets: targetBuffer, into: output)
        } else {
            try store.gatherReduce(indices: rowBuffer, weights: weightBuffer, chunks: chunks,
                                   into: UnsafeMutableBufferPointer(rebasing: output[0..<store.layout.dim]))
        }
    }
}

@_cdecl("pkm_store_gate_scores")
public func cStoreGateScores(_ handle: UInt64, _ indices: UnsafePointer<Int64>?, _ count: Int, _ column: Int, _ width: Int,
                             _ inputs: UnsafePointer<Float>?, _ inputCount: Int, _ queries: UnsafePointer<Int64>?,
                             _ activation: UnsafePointer<CChar>?, _ scores: UnsafeMutablePointer<Float>?,
                             _ error: UnsafeMutablePointer<pkm_error>?) -> Int32 {
    reporting(error) {
        let store = try openStores.object(handle), count = try size(count, "count"), column = try size(column, "column")
        let width = try size(width, "width"), inputCount = try size(inputCount, "input_count")
        guard let name = try required(activation, "activation") else { return }
        guard let act = GateActivation(rawValue: String(cString: name)) else {
            throw CAPIError.argument("activation '\(String(cString: name))' is not none or gelu")
        }
        guard width >= 1, inputCount % width == 0 else { throw CAPIError.argument("input_count \(inputCount) is not a whole number of gate inputs of \(width)") }
        let rows = try required(indices, "indices", count: count), q = try required(queries, "queries", count: count)
        let u = try required(inputs, "inputs", count: inputCount), out = try required(scores, "scores", count: count)
        guard count > 0 else { return }
        let output = UnsafeMutableBufferPointer(start: out!, count: count)
        try store.gatherDots(indices: indexBuffer(rows!, count), column: column, width: width,
                             inputs: UnsafeBufferPointer(start: u!, count: inputCount), queries: indexBuffer(q!, count), into: output)
        for i in 0..<count { output[i] = act.apply(output[i]) }
    }
}

@_cdecl("pkm_store_tensor_names")
public func cStoreTensorNames(_ handle: UInt64, _ buffer: UnsafeMutablePointer<CChar>?, _ capacity: Int, _ needed: UnsafeMutablePointer<Int>?,
                              _ error: UnsafeMutablePointer<pkm_error>?) -> Int32 {
    reporting(error) {
        let store = try openStores.object(handle)
        try writeList(try store.tensorNames().map { $0 + "\n" }.joined(), buffer, capacity, needed)
    }
}

@_cdecl("pkm_store_layer_names")
public func cStoreLayerNames(_ handle: UInt64, _ buffer: UnsafeMutablePointer<CChar>?, _ capacity: Int, _ needed: UnsafeMutablePointer<Int>?,
                             _ error: UnsafeMutablePointer<pkm_error>?) -> Int32 {
    reporting(error) {
        let store = try openStores.object(handle)
        try writeList(try store.layerNames().map { $0 + "\n" }.joined(), buffer, capacity, needed)
    }
}

@_cdecl("pkm_store_tensor_info")
public func cStoreTensorInfo(_ handle: UInt64, _ name: UnsafePointer<CChar>?, _ elementType: UnsafeMutablePointer<Int32>?,
                             _ rank: UnsafeMutablePointer<Int32>?, _ shape: UnsafeMutablePointer<Int64>?, _ bytes: UnsafeMutablePointer<Int>?,
                             _ error: UnsafeMutablePointer<pkm_error>?) -> Int32 {
    reporting(error) {
        let store = try openStores.object(handle), name = try string(name, "name")
        let tensor = try store.tensor(named: name)
        elementType?.pointee = Int32(tensor.dtype.code)
        rank?.pointee = Int32(tensor.shape.count)
        if let shape { for (i, d) in tensor.shape.enumerated() { shape[i] = Int64(d) } }
        bytes?.pointee = tensor.bytes.count
    }
}

@_cdecl("pkm_store_tensor_read")
public func cStoreTensorRead(_ handle: UInt64, _ name: UnsafePointer<CChar>?, _ out: UnsafeMutableRawPointer?, _ bytes: Int,
                             _ error: UnsafeMutablePointer<pkm_error>?) -> Int32 {
    reporting(error) {
        let store = try openStores.object(handle), name = try string(name, "name")
        let tensor = try store.tensor(named: name)
        guard bytes == tensor.bytes.count else {
            throw CAPIError.argument("tensor '\(name)' holds \(tensor.bytes.count) bytes, the buffer \(bytes)")
        }
        guard bytes > 0 else { return }
        let out = try required(out, "out")!
        tensor.bytes.withUnsafeBytes { out.copyMemory(from: $0.baseAddress!, byteCount: bytes) }
    }
}

@_cdecl("pkm_store_verify")
public func cStoreVerify(_ handle: UInt64, _ problems: UnsafeMutablePointer<Int64>?, _ report: UnsafeMutablePointer<CChar>?, _ capacity: Int,
                         _ error: UnsafeMutablePointer<pkm_error>?) -> Int32 {
    reporting(error) {
        let store = try openStores.object(handle)
        let result = try store.verify()
        problems?.pointee = Int64(result.problems.count)
        if let report, capacity > 0 {
            writeText(result.problems.map { "\($0)\n" }.joined(), into: UnsafeMutableRawBufferPointer(start: report, count: capacity))
        }
    }
}

/// Writes `text` into the caller's buffer, or fails with PKM_ERR_BUFFER saying the size needed.
func writeList(_ text: String, _ buffer: UnsafeMutablePointer<CChar>?, _ capacity: Int, _ needed: UnsafeMutablePointer<Int>?) throws {
    let need = text.utf8.count + 1
    needed?.pointee = need
    guard let buffer, capacity >= need else { throw CAPIError.buffer("the text needs \(need) bytes, the buffer holds \(max(capacity, 0))") }
    writeText(text, into: UnsafeMutableRawBufferPointer(start: buffer, count: capacity))
}

/// A caller's int64 indices as Swift's Int (the same 64-bit integers on every platform the
/// library builds for).
func indexBuffer(_ p: UnsafePointer<Int64>, _ count: Int) -> UnsafeBufferPointer<Int> {
    UnsafeBufferPointer(start: UnsafeMutableRawPointer(mutating: p).bindMemory(to: Int.self, capacity: count), count: count)
}
