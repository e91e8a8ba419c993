import _MemorySupport

/// The sealing of `meta` records (Spec/FORMAT.md, "Meta records"): each record is its JSON
/// followed by an XXH64 seal, so a bit flip in a record, or in the key it is stored under, is
/// reported instead of being read as different parameters. Version 3 seeds the seal with the
/// XXH64 of the key; version 2 seals with seed 0; version-1 stores hold bare JSON.
package enum MetaRecord {
    package static let sealSize = 8

    /// The stored form of `json` under `key`, as this code writes it (version 3).
    package static func seal(_ json: [UInt8], key: String) -> [UInt8] {
        var out = json
        json.withUnsafeBytes { withUnsafeBytes(of: XXH64.hash($0, seed: seed(key: key, version: 3)).littleEndian) { out += $0 } }
        return out
    }

    /// The JSON of a record sealed as format `version` seals it, or nil when the seal does not match.
    package static func unseal(_ bytes: UnsafeRawBufferPointer, key: String, version: Int) -> UnsafeRawBufferPointer? {
        guard bytes.count >= sealSize else { return nil }
        let json = UnsafeRawBufferPointer(rebasing: bytes[..<(bytes.count - sealSize)])
        let stored = bytes.loadUnaligned(fromByteOffset: json.count, as: UInt64.self)
        return UInt64(littleEndian: stored) == XXH64.hash(json, seed: seed(key: key, version: version)) ? json : nil
    }

    /// The JSON of record `key` of a store of `version`, checked against its seal from version 2.
    package static func payload(_ bytes: UnsafeRawBufferPointer, key: String, version: Int) throws -> UnsafeRawBufferPointer {
        if version < 2 { return bytes }
        guard let json = unseal(bytes, key: key, version: version) else {
            throw StoreError.corruptRecord(name: key, reason: "its checksum does not match")
        }
        return json
    }

    private static func seed(key: String, version: Int) -> UInt64 {
        version >= 3 ? withName(key) { XXH64.hash($0) } : 0
    }
}
