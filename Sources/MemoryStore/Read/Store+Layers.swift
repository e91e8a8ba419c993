import _MemorySupport

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

extension Store {
    /// Layer `name`'s retrieval record and tensors, by their names of Spec/RETRIEVAL.md (without
    /// the `layers/NAME/` prefix; before version 4 every tensor but the dictionary is the layer's).
    public func layerContents(_ name: String) throws -> (record: [UInt8], tensors: [String: Tensor]) {
        let keys = try layerKeys(name)
        guard let record = try metaRecord(named: keys.record) else { throw StoreError.noLayer(path: path) }
        var tensors: [String: Tensor] = [:]
        for full in try tensorNames() where !StoredRecords.tableTensors.contains(full) && full.hasPrefix(keys.tensorPrefix) {
            tensors[String(full.dropFirst(keys.tensorPrefix.count))] = try tensor(named: full)
        }
        return (record, tensors)
    }

    /// The digest of every layer (Spec/FORMAT.md, "Parts"): equal for two stores exactly when
    /// their layers' names, records and tensors are byte for byte the same (up to XXH64).
    public func layersDigest() throws -> String {
        var h: UInt64 = 0
        func add(_ bytes: [UInt8]) { h = bytes.withUnsafeBytes { XXH64.hash($0, seed: h) } }
        for name in try layerNames() {
            let (record, tensors) = try layerContents(name)
            add(Array(name.utf8))
            add(record)
            for base in tensors.keys.sorted(by: { Array($0.utf8).lexicographicallyPrecedes($1.utf8) }) {
                let t = tensors[base]!
                add(Array(base.utf8))
                add([t.dtype.code] + t.shape.flatMap { withUnsafeBytes(of: Int64($0).littleEndian, Array.init) })
                add(t.bytes)
            }
        }
        return String(h, radix: 16).leftPadded(to: 16)
    }

    /// The store's part record when it holds a piece of a split table (Spec/FORMAT.md, "Parts"), nil otherwise.
    public func tablePart() throws -> TablePart? {
        try metaRecord(named: TablePart.recordName).map { try TablePart.decode($0, table: layout) }
    }
}

private extension String {
    func leftPadded(to width: Int) -> String { String(repeating: "0", count: max(0, width - count)) + self }
}
