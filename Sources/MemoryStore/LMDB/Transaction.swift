import CLMDB
import Foundation

/// A read-only LMDB transaction. Reset and renewed rather than freed when reused, so that a
/// hot path pays no allocation; not `Sendable`: one thread uses it at a time.
///
/// It holds its environment strongly: `deinit` aborts the transaction, which LMDB requires to
/// happen before the environment is closed, and an optimised build may release an unowned
/// environment first.
///
/// A transaction belongs to the process that began it: its reader slot is in the lock file every
/// process shares, so after `fork()` the parent and the child would both hold the same slot. In a
/// child it is never renewed (``ReaderContextPool``) nor aborted: aborting frees the slot, and the
/// parent's next read of it would fail with `MDB_BAD_RSLOT`.
final class ReadTransaction {
    private(set) var handle: OpaquePointer
    private var active = true
    private let env: Environment
    /// The process that began the transaction.
    let owner = getpid()

    init(env: Environment) throws {
        self.env = env
        var txn: OpaquePointer?
        let rc = mdb_txn_begin(env.handle, nil, UInt32(MDB_RDONLY), &txn)
        try Self.checkReader(rc)
        self.handle = txn!
    }

    deinit { if getpid() == owner { mdb_txn_abort(handle) } }

    /// Releases the snapshot but keeps the reader slot, so `renew()` is cheap.
    func reset() {
        if active { mdb_txn_reset(handle); active = false }
    }

    /// Takes a fresh snapshot after `reset()`.
    func renew() throws {
        if active { return }
        try Self.checkReader(mdb_txn_renew(handle))
        active = true
    }

    /// Like `check`, but explains `MDB_MAP_RESIZED`: remapping is unsafe while other threads read,
    /// so a reader outgrown by a writer in another process must be reopened.
    private static func checkReader(_ rc: Int32) throws {
        if rc == MDB_MAP_RESIZED {
            throw StoreError.inconsistent("the store grew past this reader's mapping while open; reopen it")
        }
        try check(rc)
    }

    /// Calls `body` with the bytes stored under `key`, or nil when absent.
    /// The buffer points into the map: it must not escape `body`.
    func withValue<T>(_ dbi: MDB_dbi, key: UnsafeRawBufferPointer, _ body: (UnsafeRawBufferPointer?) throws -> T) throws -> T {
        var k = MDB_val(mv_size: key.count, mv_data: UnsafeMutableRawPointer(mutating: key.baseAddress))
        var v = MDB_val()
        let rc = mdb_get(handle, dbi, &k, &v)
        if rc == MDB_NOTFOUND { return try body(nil) }
        try check(rc)
        return try body(UnsafeRawBufferPointer(start: v.mv_data, count: v.mv_size))
    }

    /// Number of entries in a database.
    func count(_ dbi: MDB_dbi) -> Int {
        var s = MDB_stat()
        mdb_stat(handle, dbi, &s)
        return Int(s.ms_entries)
    }

    /// Calls `body` with every key and value of database `dbi` (0 is LMDB's free list), in key
    /// order. The buffers point into the map: they must not escape `body`.
    func forEachEntry(_ dbi: MDB_dbi, _ body: (_ key: UnsafeRawBufferPointer, _ value: UnsafeRawBufferPointer) throws -> Void) throws {
        var cursor: OpaquePointer?
        try check(mdb_cursor_open(handle, dbi, &cursor))
        defer { mdb_cursor_close(cursor) }
        var k = MDB_val(), v = MDB_val()
        var op = MDB_FIRST
        while mdb_cursor_get(cursor, &k, &v, op) == 0 {
            try body(UnsafeRawBufferPointer(start: k.mv_data, count: k.mv_size), UnsafeRawBufferPointer(start: v.mv_data, count: v.mv_size))
            op = MDB_NEXT
        }
    }
}

/// A write transaction, valid only inside `Environment.write`.
struct WriteTransaction {
    let handle: OpaquePointer

    /// Stores `value` under `key`; with `append`, keys must arrive in increasing order
    /// (`MDB_APPEND`), which makes bulk loads write each page once.
    func put(_ dbi: MDB_dbi, key: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer, append: Bool = false) throws {
        var k = MDB_val(mv_size: key.count, mv_data: UnsafeMutableRawPointer(mutating: key.baseAddress))
        var v = MDB_val(mv_size: value.count, mv_data: UnsafeMutableRawPointer(mutating: value.baseAddress))
        try check(mdb_put(handle, dbi, &k, &v, append ? UInt32(MDB_APPEND) : 0))
    }

    /// Reserves `count` bytes under `key` and lets `fill` write them in place (`MDB_RESERVE`).
    func reserve(_ dbi: MDB_dbi, key: UnsafeRawBufferPointer, count: Int, append: Bool, fill: (UnsafeMutableRawBufferPointer) -> Void) throws {
        var k = MDB_val(mv_size: key.count, mv_data: UnsafeMutableRawPointer(mutating: key.baseAddress))
        var v = MDB_val(mv_size: count, mv_data: nil)
        let flags = UInt32(MDB_RESERVE) | (append ? UInt32(MDB_APPEND) : 0)
        try check(mdb_put(handle, dbi, &k, &v, flags))
        fill(UnsafeMutableRawBufferPointer(start: v.mv_data, count: count))
    }

    func delete(_ dbi: MDB_dbi, key: UnsafeRawBufferPointer) throws {
        var k = MDB_val(mv_size: key.count, mv_data: UnsafeMutableRawPointer(mutating: key.baseAddress))
        let rc = mdb_del(handle, dbi, &k, nil)
        if rc != MDB_NOTFOUND { try check(rc) }
    }

    func get(_ dbi: MDB_dbi, key: UnsafeRawBufferPointer) throws -> [UInt8]? {
        var k = MDB_val(mv_size: key.count, mv_data: UnsafeMutableRawPointer(mutating: key.baseAddress))
        var v = MDB_val()
        let rc = mdb_get(handle, dbi, &k, &v)
        if rc == MDB_NOTFOUND { return nil }
        try check(rc)
        return Array(UnsafeRawBufferPointer(start: v.mv_data, count: v.mv_size))
    }

    func count(_ dbi: MDB_dbi) -> Int {
        var s = MDB_stat()
        mdb_stat(handle, dbi, &s)
        return Int(s.ms_entries)
    }
}

/// The 8-byte big-endian key of shard `index`, so that key order is numeric order.
@inline(__always)
func withShardKey<T>(_ index: Int, _ body: (UnsafeRawBufferPointer) throws -> T) rethrows -> T {
    var key = UInt64(index).bigEndian
    return try withUnsafeBytes(of: &key, body)
}
