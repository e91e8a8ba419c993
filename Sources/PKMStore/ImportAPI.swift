import CPKMStore
import Foundation
import MemoryImport
import MemoryRetrieval
import MemoryStore

@_cdecl("pkm_import")
public func cImport(_ storePath: UnsafePointer<CChar>?, _ source: UnsafePointer<CChar>?, _ optionsJSON: UnsafePointer<CChar>?,
                    _ error: UnsafeMutablePointer<pkm_error>?) -> Int32 {
    reporting(error) {
        let store = try string(storePath, "store_path"), source = try string(source, "source")
        let options = try importOptions(optionsJSON.map { String(cString: $0) } ?? "{}")
        try MemoryImport.run(from: TensorSource(path: source), to: store, options: options)
    }
}

@_cdecl("pkm_export")
public func cExport(_ storePath: UnsafePointer<CChar>?, _ destination: UnsafePointer<CChar>?,
                    _ error: UnsafeMutablePointer<pkm_error>?) -> Int32 {
    cExportLayer(storePath, nil, destination, error)
}

@_cdecl("pkm_export_layer")
public func cExportLayer(_ storePath: UnsafePointer<CChar>?, _ layer: UnsafePointer<CChar>?, _ destination: UnsafePointer<CChar>?,
                         _ error: UnsafeMutablePointer<pkm_error>?) -> Int32 {
    reporting(error) {
        let store = try Store.open(at: try string(storePath, "store_path"), cacheBytes: 0)
        try MemoryImport.export(store, layer: try layer.map { try string($0, "layer") }, to: try string(destination, "destination"))
    }
}

/// The options of `pkm_import`, each checked and named when wrong.
private struct ImportOptionsJSON: Decodable {
    var rename: [String: String]?
    var scoring: String?
    var topk: Int?
    var top_m: Int?
    var activation: String?
    var addressing: String?
    var address_key: UInt64?
    var dtype: String?
    var codec: String?
    var level: Int?
    var rows_per_shard: Int?
    var dictionary: Bool?
    var threads: Int?
    var layout: String?
    var layer: String?
    var values_from_store: Bool?
    var window: Int?
    var pool_offset: Int?
    var gate_dim: Int?
    var gate_activation: String?
}

private func importOptions(_ json: String) throws -> MemoryImport.Options {
    let given: ImportOptionsJSON
    do { given = try JSONDecoder().decode(ImportOptionsJSON.self, from: Data(json.utf8)) } catch {
        throw CAPIError.argument("options_json is not a JSON object of the documented options: \(error)")
    }
    func parse<T: RawRepresentable<String>>(_ value: String?, _ name: String, _ all: [T]) throws -> T? {
        guard let value else { return nil }
        guard let parsed = T(rawValue: value) else {
            throw CAPIError.argument("\(name) '\(value)' is not one of \(all.map(\.rawValue).joined(separator: ", "))")
        }
        return parsed
    }
    var options = MemoryImport.Options()
    options.renames = given.rename ?? [:]
    options.scoring = try parse(given.scoring, "scoring", Scoring.allCases)
    options.topK = given.topk
    options.topM = given.top_m
    options.activation = try parse(given.activation, "activation", Activation.allCases)
    options.addressing = try parse(given.addressing, "addressing", Addressing.allCases)
    options.addressKey = given.address_key
    options.elementType = try parse(given.dtype, "dtype", ElementType.valueTypes)
    if let t = options.elementType, !t.isFloatingPoint { throw CAPIError.argument("dtype must be f32, f16 or bf16") }
    options.codec = try parse(given.codec, "codec", CodecKind.allCases) ?? .zstd
    options.level = given.level ?? 3
    options.rowsPerShard = given.rows_per_shard
    options.dictionary = given.dictionary ?? false
    if let threads = given.threads {
        guard threads >= 1 else { throw CAPIError.argument("threads must be at least 1, got \(threads)") }
        options.writer.threads = threads
    }
    options.writer.createdBy = "pkmstore \(pkmstoreVersion)"
    options.layout = try parse(given.layout, "layout", CheckpointLayout.allCases) ?? .store
    options.layer = given.layer
    options.valuesFromStore = given.values_from_store ?? false
    options.window = given.window
    options.poolOffset = given.pool_offset ?? 0
    options.gateDim = given.gate_dim
    options.gateActivation = try parse(given.gate_activation, "gate_activation", GateActivation.allCases)
    return options
}
