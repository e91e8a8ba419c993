import Foundation

/// What a store holds besides its shards (`meta/catalog`, Spec/FORMAT.md, "meta/catalog"):
/// every tensor with its record's checksum, and every other meta record. The writer updates it
/// in the same transaction as the tensor or record it describes.
///
/// LMDB keeps no checksums of its own pages: a flipped bit in the record that locates the
/// `tensors` database can make it read as empty, or as an older page. Per-record checksums
/// cannot see a record that is not there; the catalog can, so readers take the names from it.
package struct Catalog: Codable, Equatable {
    /// Tensor name → the checksum stored in its record (byte 8).
    package var tensors: [String: UInt64] = [:]
    /// Names of the meta records other than `manifest`, `state` and `catalog`.
    package var records: [String] = []

    package static let key = "catalog"
    /// Meta records that the catalog does not list.
    package static let reservedRecords: Set<String> = ["manifest", "state", key]

    package init() {}

    package func encoded() throws -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return Array(try encoder.encode(self))
    }

    package static func decode(_ json: UnsafeRawBufferPointer) throws -> Catalog {
        do { return try JSONDecoder().decode(Catalog.self, from: Data(json)) } catch {
            throw StoreError.corruptRecord(name: key, reason: "it is not a valid catalog")
        }
    }
}
