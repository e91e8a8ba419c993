import Foundation
import _MemorySupport

/// Adding and removing memory layers: each change is one transaction, so a process killed at
/// any moment leaves the old set of layers or the new one.
extension StoreWriter {
    /// Opens the store at `path`, complete or not, to add or remove layers. Only stores of
    /// ``Manifest/writableVersions`` can be changed (older ones are rewritten by a re-encoding
    /// compaction), and not a part of a split table.
    public static func editing(at path: String, options: Options = Options()) throws -> StoreWriter {
        let claim = PathClaim(path)  // before the file is probed (see PathClaim)
        defer { withExtendedLifetime(claim) {} }
        guard FileManager.default.fileExists(atPath: path), !Environment.isEmptyEnvironment(at: path) else {
            throw StoreError.notFound(path: path)
        }
        let (manifest, state) = try readHead(path)
        guard let manifest else { throw StoreError.notAStore(path: path, reason: "it holds no manifest (its creation was interrupted)") }
        guard Manifest.writableVersions.contains(manifest.formatVersion) else {
            throw StoreError.invalidArgument("'\(path)' is a store of format version \(manifest.formatVersion), which this memtool does not edit; " +
                                             "rewrite it as version \(Manifest.currentVersion) first (memtool compact \(path) --codec \(manifest.table.codec.rawValue))")
        }
        guard state != nil else { throw StoreError.inconsistent("the import state record is missing") }
        let writer = try StoreWriter(path: path, layout: manifest.table, metadata: manifest.metadata, options: options, fresh: false, editing: true)
        let records = try writer.env.read { try StoredRecords.catalog($0, env: writer.env, version: Manifest.currentVersion)?.records ?? [] }
        guard !records.contains(TablePart.recordName) else {
            throw StoreError.invalidArgument("'\(path)' is a part of a split table, whose parts hold the same layers: change the whole store and split it again")
        }
        return writer
    }

    /// The names of the layers stored so far, in UTF-8 order.
    public func layerNames() throws -> [String] {
        try env.read { txn in
            try StoredRecords.catalog(txn, env: env, version: Manifest.currentVersion)?.records.compactMap(LayerKeys.layer(ofRecord:)) ?? []
        }.sorted { Array($0.utf8).lexicographicallyPrecedes($1.utf8) }
    }

    /// Stores layer `name` in one transaction: its retrieval record (JSON) and its tensors (by
    /// their names of Spec/RETRIEVAL.md), replacing any layer of that name whole. Works on a
    /// complete store too: layers are not part of the value table's import.
    public func putLayer(_ name: String, record: [UInt8], tensors: [String: Tensor]) throws {
        try LayerKeys.validate(name)
        let keys = LayerKeys(name: name, formatVersion: Manifest.currentVersion)
        for base in tensors.keys where base.isEmpty || keys.tensor(base).utf8.count > 400 {
            throw StoreError.invalidArgument("tensor name '\(base)' of layer '\(name)' is empty or too long")
        }
        try commitWithGrowth { txn in
            try self.deleteLayer(keys, txn)
            for (base, tensor) in tensors.sorted(by: { $0.key < $1.key }) { try self.putTensor(keys.tensor(base), tensor, txn) }
            try self.putRecord(keys.record, record, txn)
        }
    }

    /// Removes layer `name` (its record and tensors) in one transaction; the value table stays.
    public func removeLayer(_ name: String) throws {
        guard try layerNames().contains(name) else { throw StoreError.unknownLayer(name: name, layers: try layerNames()) }
        try commitWithGrowth { txn in try self.deleteLayer(LayerKeys(name: name, formatVersion: Manifest.currentVersion), txn) }
    }

    /// Deletes the record and every tensor of the layer `keys` names, and their catalog entries, in `txn`.
    private func deleteLayer(_ keys: LayerKeys, _ txn: WriteTransaction) throws {
        var doomed: [String] = []
        try Self.updateCatalog(txn, env: env) { catalog in
            doomed = catalog.tensors.keys.filter { $0.hasPrefix(keys.tensorPrefix) }
            for name in doomed { catalog.tensors[name] = nil }
            catalog.records.removeAll { $0 == keys.record }
        }
        for name in doomed { try withName(name) { try txn.delete(env.tensors, key: $0) } }
        try withName(keys.record) { try txn.delete(env.meta, key: $0) }
    }
}
