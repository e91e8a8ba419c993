import CLMDB
import Foundation

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
    public static let noSpace = LMDBError(rawValue: ENOSPC)
    /// LMDB reports a short write (what a full filesystem gives) as EIO.
    public static let io = LMDBError(rawValue: EIO)

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

/// Bytes available to unprivileged writers on the filesystem holding `path` (its directory
/// when `path` does not exist yet), or nil when the filesystem cannot be asked.
func freeBytes(near path: String) -> Int? {
    var info = statvfs()
    let target = FileManager.default.fileExists(atPath: path) ? path : (path as NSString).deletingLastPathComponent
    guard statvfs(target.isEmpty ? "." : target, &info) == 0 else { return nil }
    return Int(info.f_bavail) * Int(info.f_frsize)
}

/// Whether `error`, from writing near `path`, means the filesystem ran out of space:
/// ENOSPC, or a short write (EIO) with less than `needed` bytes left.
func isOutOfSpace(_ error: any Error, near path: String, needed: Int) -> Bool {
    guard let error = error as? LMDBError else { return false }
    if error == .noSpace { return true }
    return error == .io && (freeBytes(near: path) ?? Int.max) < needed
}
