import CLMDB
import Foundation
import _MemorySupport

/// The store's meta records and named tensors, read through the catalog from version 3.
extension Store {
    /// The `meta` record `name` (for example `retrieval`), or nil when absent.
    public func metaRecord(named name: String) throws -> [UInt8]? {
        try env.read { txn in
            let json = try withName(name) { key in
                try txn.withValue(env.meta, key: key) { bytes in
                    try bytes.map { Array(try MetaRecord.payload($0, key: name, version: manifest.formatVersion)) }
                }
            }
            if json == nil, try catalog(txn)?.records.contains(name) == true {
                throw StoreError.corruptRecord(name: name, reason: "the catalog lists it, but it is missing")
            }
            return json
        }
    }

    /// The store's catalog (format version 3 on; nil before): the authoritative list of its
    /// tensors and records, which LMDB's unchecked B-tree pages could otherwise hide.
    func catalog(_ txn: ReadTransaction) throws -> Catalog? {
        try StoredRecords.catalog(txn, env: env, version: manifest.formatVersion)
    }

    /// Names of the tensors in the store, in key order (from the catalog, from version 3).
    public func tensorNames() throws -> [String] {
        if let catalog = try env.read({ try catalog($0) }) { return catalog.tensors.keys.sorted { Array($0.utf8).lexicographicallyPrecedes($1.utf8) } }
        return try keys(of: env.tensors)
    }

    /// Names of the `meta` records other than the manifest, import state and catalog (from the
    /// catalog, from version 3).
    func metaRecordNames() throws -> [String] {
        if let catalog = try env.read({ try catalog($0) }) { return catalog.records }
        return try keys(of: env.meta).filter { !Catalog.reservedRecords.contains($0) }
    }

    /// The keys of database `dbi` as UTF-8 names, in key order.
    func keys(of dbi: MDB_dbi) throws -> [String] {
        try env.read { txn in
            var names: [String] = []
            try txn.forEachEntry(dbi) { key, _ in names.append(String(decoding: key, as: UTF8.self)) }
            return names
        }
    }

    /// The tensor stored under `name`, checksum-verified.
    public func tensor(named name: String) throws -> Tensor {
        try env.read { txn in
            try withName(name) { key in
                let catalog = try catalog(txn)
                let listed = catalog?.tensors[name]
                return try txn.withValue(env.tensors, key: key) { record in
                    guard let record else {
                        if listed != nil { throw StoreError.corruptTensor(name: name, reason: "the catalog lists it, but it is missing") }
                        throw StoreError.tensorNotFound(name)
                    }
                    let tensor = try Tensor.decode(record: record, name: name, version: manifest.formatVersion)
                    if catalog != nil {
                        guard let listed else { throw StoreError.corruptTensor(name: name, reason: "it is not in the catalog") }
                        guard listed == record.loadUnaligned(fromByteOffset: 8, as: UInt64.self).littleEndian else {
                            throw StoreError.corruptTensor(name: name, reason: "it is not the version the catalog lists")
                        }
                    }
                    return tensor
                }
            }
        }
    }

    /// Whether a tensor named `name` exists.
    public func hasTensor(_ name: String) throws -> Bool {
        try env.read { txn in try withName(name) { try txn.withValue(env.tensors, key: $0) { $0 != nil } } }
    }
}
