/// What went wrong with a store, in terms a user can act on.
public enum StoreError: Error, Equatable, Sendable, CustomStringConvertible {
    case notFound(path: String)
    case notAStore(path: String, reason: String)
    case unsupportedVersion(found: Int, supported: Int)
    case badManifest(String)
    case inconsistent(String)
    case corruptShard(shard: Int, rows: Range<Int>, reason: String)
    case missingShard(shard: Int, rows: Range<Int>)
    case corruptTensor(name: String, reason: String)
    case corruptRecord(name: String, reason: String)
    case tensorNotFound(String)
    /// The store holds a value table but no memory layer (no retrieval record).
    case noLayer(path: String)
    /// The store has no layer of that name, or holds several and none was named (`name` nil).
    case unknownLayer(name: String?, layers: [String])
    case rowOutOfRange(row: Int, rows: Int)
    case incomplete(rowsCommitted: Int, rows: Int)
    case invalidArgument(String)
    case codec(String)
    case layoutMismatch(String)
    case diskFull(path: String, freeBytes: Int, kept: String)

    public var description: String {
        switch self {
        case .notFound(let path): "no store at '\(path)'"
        case .notAStore(let path, let reason): "'\(path)' is not a readable store: \(reason)"
        case .unsupportedVersion(let found, let supported):
            "store format version \(found) is newer than this reader supports (\(supported)); upgrade memtool"
        case .badManifest(let why): "bad manifest: \(why)"
        case .inconsistent(let why): "store is inconsistent: \(why)"
        case .corruptShard(let shard, let rows, let reason):
            "shard \(shard) (rows \(rows.lowerBound)..<\(rows.upperBound)) is corrupt: \(reason)"
        case .missingShard(let shard, let rows):
            "shard \(shard) (rows \(rows.lowerBound)..<\(rows.upperBound)) is missing"
        case .corruptTensor(let name, let reason): "tensor '\(name)' is corrupt: \(reason)"
        case .corruptRecord(let name, let reason): "meta record '\(name)' is corrupt: \(reason)"
        case .tensorNotFound(let name): "tensor '\(name)' is not in the store"
        case .noLayer(let path): "'\(path)' holds no memory layer (no retrieval record): it holds a value table only"
        case .unknownLayer(let name?, let layers):
            "the store has no layer '\(name)' (its layers: \(layers.isEmpty ? "none" : layers.joined(separator: ", ")))"
        case .unknownLayer(nil, let layers):
            "the store holds \(layers.count) layers (\(layers.joined(separator: ", "))): name one (--layer NAME)"
        case .rowOutOfRange(let row, let rows): "row \(row) is out of range (the table has \(rows) rows)"
        case .incomplete(let committed, let rows):
            "store is incomplete: \(committed) of \(rows) rows committed (re-run the import to finish it)"
        case .invalidArgument(let why): why
        case .codec(let why): "codec error: \(why)"
        case .layoutMismatch(let why): "cannot resume: \(why)"
        case .diskFull(let path, let free, let kept):
            "the disk holding '\(path)' is full (\(free) bytes free): \(kept)"
        }
    }
}
