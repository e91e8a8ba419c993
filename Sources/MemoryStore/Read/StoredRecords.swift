import Foundation
import _MemorySupport

/// The reads of the `meta` and `tensors` databases that a reader and a resuming writer share:
/// the manifest, the import state, the catalog and the trained dictionary, each checked as
/// Spec/FORMAT.md says.
enum StoredRecords {
    /// The tensor holding the trained zstd dictionary.
    static let dictionaryTensor = "__zstd_dictionary"

    /// The trained zstd dictionary (tensor ``dictionaryTensor``), or nil when the store holds
    /// none (a table too small to train on; its shards do not use one). Read through `env`: a
    /// writer resuming an import reads it through its own environment. A dictionary the catalog
    /// lists but the store lacks is damage.
    static func dictionary(_ txn: ReadTransaction, env: Environment, version: Int) throws -> ZstdDictionary? {
        let record = try withName(dictionaryTensor) { try txn.withValue(env.tensors, key: $0) { $0.map(Array.init) } }
        guard let record else {
            if version >= 3, try catalog(txn, env: env, version: version)?.tensors[dictionaryTensor] != nil {
                throw StoreError.corruptTensor(name: dictionaryTensor, reason: "the catalog lists it, but it is missing")
            }
            return nil
        }
        let tensor = try record.withUnsafeBytes { try Tensor.decode(record: $0, name: dictionaryTensor, version: version) }
        return try ZstdDictionary(bytes: tensor.bytes)
    }

    /// The nibble code of a nibble table (tensor ``NibbleCode/tensorName``): every shard is coded
    /// with it, so a nibble store without one (rows stored but no table) is damage; nil for a
    /// table with no rows stored yet.
    static func nibbleCode(_ txn: ReadTransaction, env: Environment, version: Int) throws -> NibbleCode? {
        let name = NibbleCode.tensorName
        let record = try withName(name) { try txn.withValue(env.tensors, key: $0) { $0.map(Array.init) } }
        guard let record else {
            guard txn.count(env.shards) == 0 else { throw StoreError.corruptTensor(name: name, reason: "the table's shards are nibble-coded, and it is missing") }
            return nil
        }
        let tensor = try record.withUnsafeBytes { try Tensor.decode(record: $0, name: name, version: version) }
        guard tensor.dtype == .u8, tensor.shape == [NibbleCode.tableEntries] else {
            throw StoreError.corruptTensor(name: name, reason: "it must be u8 of shape [\(NibbleCode.tableEntries)]")
        }
        return try NibbleCode(topBytes: tensor.bytes)
    }

    /// The tensors a writer makes for its table (a compaction makes its own).
    static let tableTensors: Set<String> = [dictionaryTensor, NibbleCode.tensorName]

    static func manifest(_ txn: ReadTransaction, env: Environment) throws -> Manifest? {
        try withName("manifest") { key in
            try txn.withValue(env.meta, key: key) { bytes in try bytes.map { try Manifest.decodeRecord($0) } }
        }
    }

    static func state(_ txn: ReadTransaction, env: Environment, version: Int) throws -> ImportState? {
        try withName("state") { key in
            try txn.withValue(env.meta, key: key) { bytes in
                try bytes.map {
                    let json = try MetaRecord.payload($0, key: "state", version: version)
                    do { return try JSONDecoder().decode(ImportState.self, from: Data(json)) } catch {
                        throw StoreError.inconsistent("the import state record is not valid JSON")
                    }
                }
            }
        }
    }

    /// The catalog (format version 3 on; nil before); a version-3 store without one is damaged.
    static func catalog(_ txn: ReadTransaction, env: Environment, version: Int) throws -> Catalog? {
        guard version >= 3 else { return nil }
        return try withName(Catalog.key) { key in
            try txn.withValue(env.meta, key: key) { bytes in
                guard let bytes else { throw StoreError.corruptRecord(name: Catalog.key, reason: "it is missing") }
                return try Catalog.decode(MetaRecord.payload(bytes, key: Catalog.key, version: version))
            }
        }
    }
}
