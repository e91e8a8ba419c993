import Foundation

/// How shards are encoded (Spec/FORMAT.md, "Codecs").
public enum CodecKind: String, Codable, Sendable, CaseIterable {
    /// Rows stored as they are; read zero-copy from the map.
    case raw
    /// Byte planes (sign moved out of the exponent byte), each plane zstd-compressed when that pays.
    case zstd
    /// Each row on its own, its elements' top bytes as 4-bit codes (``NibbleCode``); bf16 and f32
    /// tables, from format version 6. Decoded a row at a time, without its neighbours.
    case nibble
}

/// The layout of a value table: what a writer needs to know before the first row.
public struct TableLayout: Codable, Sendable, Equatable {
    public var elementType: ElementType
    public var rows: Int
    public var dim: Int
    public var rowsPerShard: Int
    public var codec: CodecKind
    public var level: Int
    /// Whether shards were compressed with the trained dictionary stored as tensor `__zstd_dictionary`.
    public var dictionary: Bool

    /// The raw shard size that the default rows-per-shard of zstd tables aims at (Spec/FORMAT.md,
    /// "Shard size").
    public static let defaultShardBytes = 64 << 10

    /// The blob size that the default rows-per-shard of tables read in place (raw and nibble)
    /// aims at: their reads locate each row through its shard's address, and a table of fewer,
    /// larger shards keeps that table of addresses in the second-level cache (Spec/FORMAT.md,
    /// "Shard size").
    public static let defaultInPlaceShardBytes = 1 << 20

    public init(elementType: ElementType, rows: Int, dim: Int, rowsPerShard: Int? = nil,
                codec: CodecKind = .zstd, level: Int = 3, dictionary: Bool = false) {
        self.elementType = elementType
        self.rows = rows
        self.dim = dim
        self.rowsPerShard = rowsPerShard ?? Self.defaultRowsPerShard(dim: dim, elementType: elementType, codec: codec)
        self.codec = codec
        self.level = level
        self.dictionary = dictionary
    }

    /// As many rows as fit in ``defaultShardBytes`` less 64 bytes (at least 1); for raw, as
    /// many whole blobs of the current version (rows, their checksums and the header, ``RawShardLayout``)
    /// as fit in ``defaultInPlaceShardBytes`` less LMDB's 16-byte overflow-page header, so that a
    /// raw shard fills whole 4 KiB pages instead of spilling into one more; for nibble likewise.
    public static func defaultRowsPerShard(dim: Int, elementType: ElementType, codec: CodecKind = .zstd) -> Int {
        // Saturating: an out-of-range `dim` is refused by `validate()`, not trapped on here.
        let (bytes, overflow) = max(dim, 0).multipliedReportingOverflow(by: elementType.size)
        guard !overflow else { return 1 }
        switch codec {
        case .zstd:
            return max(1, (defaultShardBytes - 64) / max(1, bytes))
        case .raw:
            return rowsFilling(RawShardLayout(version: Manifest.currentVersion, rowBytes: bytes), escapedBytes: 0)
        case .nibble:
            let slot = NibbleCode.slotBytes(dim: max(dim, 1), elementType: elementType)
            return rowsFilling(.nibblePages(slotBytes: slot), escapedBytes: bytes / 64)
        }
    }

    /// The most rows whose blob in `layout` fits ``defaultInPlaceShardBytes`` less LMDB's 16-byte
    /// overflow-page header, with `escapedBytes` a row to spare (a nibble shard's escaped rows:
    /// room for one in 64).
    private static func rowsFilling(_ layout: RawShardLayout, escapedBytes: Int) -> Int {
        let perRow = layout.rowBytes + layout.checksumBytes + escapedBytes
        var rows = max(1, (defaultInPlaceShardBytes - 64) / max(1, perRow))
        while rows > 1 && layout.blobBytes(rows: rows) + rows * escapedBytes > defaultInPlaceShardBytes - 16 { rows -= 1 }
        return rows
    }

    public var rowBytes: Int { dim * elementType.size }
    public var shardCount: Int { rows == 0 ? 0 : (rows + rowsPerShard - 1) / rowsPerShard }
    public var rawBytes: Int { rows * rowBytes }

    /// The rows held by shard `index`.
    public func rowRange(ofShard index: Int) -> Range<Int> {
        let start = index * rowsPerShard
        return start..<min(rows, start + rowsPerShard)
    }

    /// Checks the limits of Spec/FORMAT.md; throws a message naming the bad field.
    public func validate() throws {
        func bad(_ s: String) -> StoreError { .invalidArgument("invalid table layout: \(s)") }
        guard elementType.isFloatingPoint else { throw bad("values must be f32, f16 or bf16 (got \(elementType.rawValue))") }
        guard rows >= 1 else { throw bad("rows must be at least 1 (got \(rows))") }
        guard rows <= 1 << 40 else { throw bad("rows must be at most 2^40 (got \(rows))") }
        guard dim >= 1, dim <= 1 << 20 else { throw bad("dim must be in 1...2^20 (got \(dim))") }
        guard rowsPerShard >= 1 else { throw bad("rows per shard must be at least 1 (got \(rowsPerShard))") }
        guard rowsPerShard <= (1 << 28) / rowBytes else {
            throw bad("a shard may hold at most 256 MiB of raw rows (\(rowsPerShard) rows of \(rowBytes) bytes; at most \((1 << 28) / rowBytes) rows)")
        }
        guard (1...22).contains(level) || codec != .zstd else { throw bad("zstd level must be in 1...22 (got \(level))") }
        guard !(dictionary && codec != .zstd) else { throw bad("a dictionary needs the zstd codec") }
        if codec == .nibble {
            guard elementType != .f16 else {
                throw bad("the nibble codec codes bf16 and f32 values; an f16 top byte holds two mantissa bits, so most f16 rows would be stored whole (Spec/FORMAT.md, \"Nibble\"): use zstd or raw")
            }
            guard NibbleCode.slotBytes(dim: dim, elementType: elementType) >= NibbleCode.minimumSlotBytes else {
                throw bad("the nibble codec needs rows of at least \(elementType == .bf16 ? 5 : 3) \(elementType.rawValue) values (got \(dim))")
            }
        }
    }
}

/// The store's identity record (`meta/manifest`), written once when a store is created.
public struct Manifest: Codable, Sendable, Equatable {
    public static let formatName = "pkm-store"
    /// The format version this code writes and the newest it reads.
    public static let currentVersion = 7
    /// The versions this code resumes imports of and edits the layers of: those whose records
    /// and shards it writes unchanged (version 6 adds only the nibble codec to version 5, and
    /// version 7 only lays nibble shards out anew: see ``isWritable``).
    public static let writableVersions = 5...currentVersion

    /// Whether this code resumes the import of this store: a version in ``writableVersions``
    /// whose shards it writes as they are (a nibble table's from version 7 on; layers, which
    /// write no shards, are edited in every writable version).
    public var isWritable: Bool { Self.writableVersions.contains(formatVersion) && (table.codec != .nibble || formatVersion >= 7) }

    public var format: String
    public var formatVersion: Int
    public var table: TableLayout
    public var createdBy: String
    public var createdAt: String
    /// Free-form string pairs from the importer (for example the source file).
    public var metadata: [String: String]

    /// - Parameter createdBy: the program and version that creates the store (for example `memtool 0.1.0`).
    public init(table: TableLayout, createdBy: String, metadata: [String: String] = [:]) {
        self.format = Self.formatName
        self.formatVersion = Self.currentVersion
        self.table = table
        self.createdBy = createdBy
        self.createdAt = ISO8601DateFormatter().string(from: Date())
        self.metadata = metadata
    }

    package func encoded() throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return try encoder.encode(self)
    }

    /// Decodes the stored `meta/manifest` record: sealed with its key from version 3, with seed 0
    /// in version 2, bare JSON in version 1. The version the manifest states must match its seal.
    package static func decodeRecord(_ bytes: UnsafeRawBufferPointer) throws -> Manifest {
        let mismatch = StoreError.corruptRecord(name: "manifest", reason: "its checksum does not match")
        for sealedAs in [3, 2] {  // version 3's seal is also every later version's
            guard let json = MetaRecord.unseal(bytes, key: "manifest", version: sealedAs) else { continue }
            let manifest = try decode(json)
            guard sealedAs == 3 ? manifest.formatVersion >= 3 : manifest.formatVersion == sealedAs else { throw mismatch }
            return manifest
        }
        let manifest: Manifest
        do {
            manifest = try decode(bytes)
        } catch let error as StoreError {
            if case .unsupportedVersion = error { throw error }
            throw mismatch
        }
        guard manifest.formatVersion == 1 else { throw mismatch }
        return manifest
    }

    /// Decodes and checks a manifest's JSON; refuses other formats and newer versions.
    package static func decode(_ bytes: UnsafeRawBufferPointer) throws -> Manifest {
        let data = Data(bytes)
        // Read the version first, so a newer store is refused with that reason, not a field error.
        guard let probe = try? JSONDecoder().decode(ManifestVersionProbe.self, from: data) else {
            throw StoreError.badManifest("not a JSON object")
        }
        guard probe.format == formatName else {
            throw StoreError.badManifest("format is '\(probe.format ?? "missing")', expected '\(formatName)'")
        }
        guard let version = probe.formatVersion else { throw StoreError.badManifest("formatVersion is missing") }
        guard version <= currentVersion else { throw StoreError.unsupportedVersion(found: version, supported: currentVersion) }
        guard version >= 1 else { throw StoreError.badManifest("formatVersion \(version) is not valid") }
        let manifest: Manifest
        do {
            manifest = try JSONDecoder().decode(Manifest.self, from: data)
        } catch let DecodingError.keyNotFound(key, _) {
            throw StoreError.badManifest("field '\(key.stringValue)' is missing")
        } catch let DecodingError.dataCorrupted(context) {
            throw StoreError.badManifest("field '\(context.codingPath.map(\.stringValue).joined(separator: "."))' has a bad value")
        } catch let DecodingError.typeMismatch(_, context) {
            throw StoreError.badManifest("field '\(context.codingPath.map(\.stringValue).joined(separator: "."))' has the wrong type")
        } catch {
            throw StoreError.badManifest("\(error)")
        }
        do { try manifest.table.validate() } catch let StoreError.invalidArgument(why) { throw StoreError.badManifest(why) }
        return manifest
    }
}

/// The two fields every manifest version keeps, read before the rest.
private struct ManifestVersionProbe: Decodable {
    var format: String?
    var formatVersion: Int?
}

/// The import progress record (`meta/state`), rewritten in the same transaction as each batch of shards.
public struct ImportState: Codable, Sendable, Equatable {
    /// Rows durably stored, a prefix of the table: always a multiple of rows-per-shard until complete.
    public var rowsCommitted: Int
    /// True once every row is stored; a store that is not complete refuses to serve lookups.
    public var complete: Bool

    public init(rowsCommitted: Int, complete: Bool) {
        self.rowsCommitted = rowsCommitted
        self.complete = complete
    }
}

