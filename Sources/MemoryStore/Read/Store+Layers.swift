/// The memory layers a store holds (Spec/FORMAT.md, "Layers"): each a retrieval record and its
/// tensors, all reading the store's one value table.
extension Store {
    /// The names of the store's layers, in UTF-8 order; a store of version 1 to 3 holds at most
    /// one, ``LayerKeys/defaultName``.
    public func layerNames() throws -> [String] {
        let records = try metaRecordNames()
        if manifest.formatVersion < 4 { return records.contains("retrieval") ? [LayerKeys.defaultName] : [] }
        return records.compactMap(LayerKeys.layer(ofRecord:)).sorted { Array($0.utf8).lexicographicallyPrecedes($1.utf8) }
    }

    /// Where layer `name` is kept; with nil, the store's only layer. Throws ``StoreError/noLayer(path:)``
    /// for a store without layers and ``StoreError/unknownLayer(name:layers:)`` for a name it does
    /// not hold, or nil when it holds several.
    public func layerKeys(_ name: String? = nil) throws -> LayerKeys {
        let names = try layerNames()
        guard !names.isEmpty else { throw StoreError.noLayer(path: path) }
        guard let chosen = name ?? (names.count == 1 ? names[0] : nil) else { throw StoreError.unknownLayer(name: nil, layers: names) }
        guard names.contains(chosen) else { throw StoreError.unknownLayer(name: chosen, layers: names) }
        return LayerKeys(name: chosen, formatVersion: manifest.formatVersion)
    }
}
