import Dispatch
import Foundation
import _MemorySupport

/// Appending rows, tensors and records, and the commits that make them durable.
extension StoreWriter {
    /// Appends whole rows (little-endian elements of the layout's type), `rows.count` a multiple of the row size.
    public func append(_ rows: UnsafeRawBufferPointer) throws {
        try requireIncomplete()
        let rowBytes = layout.rowBytes
        guard rows.count % rowBytes == 0 else {
            throw StoreError.invalidArgument("\(rows.count) bytes is not a whole number of \(rowBytes)-byte rows")
        }
        let incoming = rows.count / rowBytes
        guard rowsCommitted + pending.count / rowBytes + incoming <= layout.rows else {
            throw StoreError.invalidArgument("more rows than the \(layout.rows) the layout declares")
        }
        var shardsPerBatch = max(1, options.batchBytes / (layout.rowsPerShard * rowBytes))
        // The first commit of a store with a dictionary trains it: give it enough shards.
        if layout.dictionary && rowsCommitted == 0 { shardsPerBatch = max(shardsPerBatch, Self.dictionaryTrainingShards) }
        let batch = shardsPerBatch * layout.rowsPerShard * rowBytes
        var offset = 0
        while offset < rows.count {
            let take = min(batch - pending.count, rows.count - offset)
            pending.append(contentsOf: UnsafeRawBufferPointer(rebasing: rows[offset..<(offset + take)]))
            offset += take
            if pending.count == batch { try flush(final: false) }
        }
    }

    /// Convenience for arrays of rows in the stored element type.
    public func append<T>(_ values: [T]) throws {
        try values.withUnsafeBytes { try append($0) }
    }

    /// Stores (or replaces) a named tensor that belongs to no layer (``putLayer(_:record:tensors:)`` stores those).
    public func putTensor(_ name: String, _ tensor: Tensor) throws {
        guard !name.isEmpty, name.utf8.count <= 400 else {
            throw StoreError.invalidArgument("tensor names must be 1 to 400 bytes of UTF-8")
        }
        guard !name.hasPrefix(LayerKeys.prefix) else { throw StoreError.invalidArgument("tensor '\(name)' belongs to a layer: store it with putLayer") }
        try requireIncomplete()
        try commitWithGrowth { txn in try self.putTensor(name, tensor, txn) }
    }

    /// Stores (or replaces) a `meta` record that belongs to no layer; `manifest`, `state` and
    /// `catalog` belong to the writer, `layers/…` to ``putLayer(_:record:tensors:)``.
    public func putMetaRecord(_ name: String, _ bytes: [UInt8]) throws {
        guard !Catalog.reservedRecords.contains(name), !name.isEmpty, name.utf8.count <= 400, !name.hasPrefix(LayerKeys.prefix) else {
            throw StoreError.invalidArgument("'\(name)' cannot be written as a meta record")
        }
        try requireIncomplete()
        try commitWithGrowth { txn in try self.putRecord(name, bytes, txn) }
    }

    /// Stores a sealed meta record and its catalog entry in `txn`.
    func putRecord(_ name: String, _ bytes: [UInt8], _ txn: WriteTransaction) throws {
        try withName(name) { key in try MetaRecord.seal(bytes, key: name).withUnsafeBytes { try txn.put(env.meta, key: key, value: $0) } }
        try Self.updateCatalog(txn, env: env) { if !$0.records.contains(name) { $0.records = ($0.records + [name]).sorted() } }
    }

    /// Writes the remaining rows and marks the store complete; throws if rows are missing.
    public func finish() throws {
        let total = rowsCommitted + pending.count / layout.rowBytes
        guard total == layout.rows else {
            throw StoreError.invalidArgument("the import supplied \(total) rows, the layout declares \(layout.rows)")
        }
        try requireIncomplete()
        try flush(final: true)
        isComplete = true
    }

    private func requireIncomplete() throws {
        guard !isComplete else { throw StoreError.invalidArgument("the store at '\(path)' is complete; nothing more can be written") }
    }

    /// Compresses the pending rows on all workers and commits them with the new import state.
    private func flush(final: Bool) throws {
        let rowBytes = layout.rowBytes
        let shardBytes = layout.rowsPerShard * rowBytes
        let firstShard = rowsCommitted / layout.rowsPerShard
        let count = (pending.count + shardBytes - 1) / shardBytes
        // Trained once, on the first commit (the dictionary is stored with shard 0). A table too
        // small to train on is compressed without one (its shards leave flag bit 0 clear).
        if layout.dictionary && dictionary == nil && firstShard == 0 && count > 0 { dictionary = try? trainDictionary() }
        // A nibble code likewise, on every row of the first commit (64 MiB by default).
        let newCode = layout.codec == .nibble && nibbleCode == nil && count > 0
        if newCode { nibbleCode = pending.withUnsafeBytes { NibbleCode.train($0, elementType: layout.elementType) } }
        nonisolated(unsafe) var blobs = [[UInt8]](repeating: [], count: count)
        let table = layout, dict = dictionary, codes = nibbleCode
        nonisolated(unsafe) let workers = self.workers
        try pending.withUnsafeBytes { (source: UnsafeRawBufferPointer) in
            nonisolated(unsafe) let source = source
            try blobs.withUnsafeMutableBufferPointer { out in
                nonisolated(unsafe) let out = out
                DispatchQueue.concurrentPerform(iterations: workers.count) { w in
                    for s in stride(from: w, to: count, by: workers.count) {
                        let range = (s * shardBytes)..<min(source.count, (s + 1) * shardBytes)
                        out[s] = workers[w].encode(UnsafeRawBufferPointer(rebasing: source[range]), shard: firstShard + s,
                                                   layout: table, dictionary: dict, codes: codes)
                    }
                }
                if out.contains(where: \.isEmpty) && count > 0 { throw StoreError.codec("a shard failed to encode") }
            }
        }
        let newRows = rowsCommitted + pending.count / rowBytes
        let complete = final && newRows == layout.rows
        try commitWithGrowth { txn in
            if let dict = self.dictionary, firstShard == 0 {
                try self.putTensor(StoredRecords.dictionaryTensor, Tensor(dtype: .u8, shape: [dict.bytes.count], bytes: dict.bytes), txn)
            }
            if newCode, let codes {
                try self.putTensor(NibbleCode.tensorName, Tensor(dtype: .u8, shape: [NibbleCode.tableEntries], bytes: codes.topBytes), txn)
            }
            for (s, blob) in blobs.enumerated() {
                try withShardKey(firstShard + s) { key in try blob.withUnsafeBytes { try txn.put(env.shards, key: key, value: $0, append: true) } }
            }
            try self.putState(ImportState(rowsCommitted: newRows, complete: complete), txn)
        }
        rowsCommitted = newRows
        pending.removeAll(keepingCapacity: true)
        options.progress?(rowsCommitted, layout.rows)
    }

    /// Shards the first commit holds when the store trains a dictionary on them.
    static let dictionaryTrainingShards = 64

    /// A zstd dictionary trained on the byte planes of the first pending shards.
    private func trainDictionary() throws -> ZstdDictionary {
        let shardBytes = layout.rowsPerShard * layout.rowBytes
        let s = layout.elementType.size
        var samples: [[UInt8]] = []
        pending.withUnsafeBytes { src in
            var offset = 0
            while offset < src.count && samples.count < 64 {
                let size = min(shardBytes, src.count - offset)
                let n = size / s
                var planes = [UInt8](repeating: 0, count: size)
                planes.withUnsafeMutableBytes { BytePlanes.split(src.baseAddress! + offset, count: n, elementSize: s, into: $0.baseAddress!) }
                for p in 0..<s { samples.append(Array(planes[(p * n)..<((p + 1) * n)])) }
                offset += shardBytes
            }
        }
        return try ZstdDictionary(bytes: ZstdDictionary.train(samples: samples, capacity: 16 << 10))
    }

    /// Stores a tensor record and its catalog entry in `txn`.
    func putTensor(_ name: String, _ tensor: Tensor, _ txn: WriteTransaction) throws {
        let record = tensor.record(name: name)
        try withName(name) { key in try record.withUnsafeBytes { try txn.put(env.tensors, key: key, value: $0) } }
        let checksum = record.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 8, as: UInt64.self).littleEndian }
        try Self.updateCatalog(txn, env: env) { $0.tensors[name] = checksum }
    }

    /// Rewrites `meta/catalog` in `txn` with `change` applied (an empty catalog when there is none yet).
    static func updateCatalog(_ txn: WriteTransaction, env: Environment, _ change: (inout Catalog) -> Void) throws {
        var catalog = Catalog()
        if let stored = try withName(Catalog.key, { try txn.get(env.meta, key: $0) }) {
            catalog = try stored.withUnsafeBytes { try Catalog.decode(MetaRecord.payload($0, key: Catalog.key, version: Manifest.currentVersion)) }
        }
        change(&catalog)
        let sealed = MetaRecord.seal(try catalog.encoded(), key: Catalog.key)
        try withName(Catalog.key) { key in try sealed.withUnsafeBytes { try txn.put(env.meta, key: key, value: $0) } }
    }

    private func putState(_ state: ImportState, _ txn: WriteTransaction) throws {
        let bytes = MetaRecord.seal(Array(try JSONEncoder().encode(state)), key: "state")
        try withName("state") { key in try bytes.withUnsafeBytes { try txn.put(env.meta, key: key, value: $0) } }
    }

    /// Runs a write transaction, doubling the map and retrying whenever LMDB says it is full.
    func commitWithGrowth(_ body: (WriteTransaction) throws -> Void) throws {
        while true {
            do {
                try env.write(body)
                return
            } catch LMDBError.mapFull {
                let size = env.info.mapSize
                try env.setMapSize(size * 2)
            } catch where isOutOfSpace(error, near: path, needed: 2 * options.batchBytes + (16 << 20)) {
                throw StoreError.diskFull(path: path, freeBytes: freeBytes(near: path) ?? 0,
                                          kept: "the store keeps its last commit (\(rowsCommitted) rows); free space and run the same command to resume")
            }
        }
    }
}
