import CLMDB

/// An error code returned by LMDB, with the library's own description.
///
/// Match specific conditions with the static names: `catch LMDBError.mapFull { ... }`.
public struct LMDBError: RawRepresentable, Error, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: Int32
    public init(rawValue: Int32) { self.rawValue = rawValue }

    public static let notFound = LMDBError(rawValue: MDB_NOTFOUND)
    public static let keyExists = LMDBError(rawValue: MDB_KEYEXIST)
    public static let mapFull = LMDBError(rawValue: MDB_MAP_FULL)
    public static let mapResized = LMDBError(rawValue: MDB_MAP_RESIZED)
    public static let readersFull = LMDBError(rawValue: MDB_READERS_FULL)
    public static let txnFull = LMDBError(rawValue: MDB_TXN_FULL)
    public static let corrupted = LMDBError(rawValue: MDB_CORRUPTED)
    public static let invalid = LMDBError(rawValue: MDB_INVALID)
    public static let versionMismatch = LMDBError(rawValue: MDB_VERSION_MISMATCH)
    public static let noSpace = LMDBError(rawValue: 28)  // ENOSPC

    public var description: String { String(cString: mdb_strerror(rawValue)) }

    public static func ~= (lhs: LMDBError, rhs: any Error) -> Bool {
        (rhs as? LMDBError)?.rawValue == lhs.rawValue
    }
}

/// Turns an LMDB return code into a thrown ``LMDBError``.
@inline(__always)
func check(_ code: Int32) throws(LMDBError) {
    if code != 0 { throw LMDBError(rawValue: code) }
}
