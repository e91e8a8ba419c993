/// The sealing of `meta` records (Spec/FORMAT.md, "Meta records"): from format version 2 each
/// record is its JSON followed by the XXH64 of that JSON, so a bit flip in a record is reported
/// instead of being read as different parameters. Version-1 stores hold bare JSON.
enum MetaRecord {
    static let sealSize = 8

    /// The stored form of `json`.
    static func seal(_ json: [UInt8]) -> [UInt8] {
        var out = json
        json.withUnsafeBytes { withUnsafeBytes(of: XXH64.hash($0).littleEndian) { out += $0 } }
        return out
    }

    /// The JSON of a sealed record, or nil when `bytes` does not end in the checksum of the rest.
    static func unseal(_ bytes: UnsafeRawBufferPointer) -> UnsafeRawBufferPointer? {
        guard bytes.count >= sealSize else { return nil }
        let json = UnsafeRawBufferPointer(rebasing: bytes[..<(bytes.count - sealSize)])
        let stored = bytes.loadUnaligned(fromByteOffset: json.count, as: UInt64.self)
        return UInt64(littleEndian: stored) == XXH64.hash(json) ? json : nil
    }

    /// The JSON of record `name` of a store of `version`: checked against its seal from version 2.
    static func payload(_ bytes: UnsafeRawBufferPointer, name: String, version: Int) throws -> UnsafeRawBufferPointer {
        if version < 2 { return bytes }
        guard let json = unseal(bytes) else { throw StoreError.corruptRecord(name: name, reason: "its checksum does not match") }
        return json
    }
}
