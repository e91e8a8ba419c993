import CLMDB
import Foundation
import _MemorySupport

/// The read-only environments this process has open, one per file.
///
/// LMDB forbids opening one environment twice in a process: its reader-liveness locks are
/// POSIX record locks, which the process loses on *every* descriptor of the lock file when any
/// one is closed, after which another process's `mdb_reader_check` frees the slots of readers
/// that are still running (`MDB_BAD_RSLOT`). Every read-only open of a file (by device and
/// inode) therefore shares one ``Environment`` while any user holds it.
enum OpenEnvironments {
    struct FileID: Hashable, Sendable {
        var device: UInt64
        var inode: UInt64

        init?(path: String) {
            var st = stat()
            guard stat(path, &st) == 0 else { return nil }
            self.init(st)
        }

        /// The file an open environment maps.
        init?(_ env: Environment) {
            guard let fd = env.descriptor else { return nil }
            self.init(descriptor: fd)
        }

        /// The file open as `fd`.
        init?(descriptor fd: Int32) {
            var st = stat()
            guard fstat(fd, &st) == 0 else { return nil }
            self.init(st)
        }

        private init(_ st: stat) {
            device = UInt64(st.st_dev)
            inode = UInt64(st.st_ino)
        }
    }

    private final class Entry: @unchecked Sendable {
        // Invariant: only read or written under `opened`'s lock.
        weak var env: Environment?
        /// Whether an environment of the file is open, or its deinit is still closing it.
        var open = false
        /// The lock file it uses.
        var lock: FileID?
    }

    /// The environments open, and the process they were opened in: a child forked since opens
    /// its own (LMDB handles are not used across `fork()`; see ``Environment/owner``).
    private static let opened = Locked<(process: pid_t, table: [FileID: Entry])>((getpid(), [:]))

    /// Calls `body` with this process's table, emptied first in a child forked since.
    private static func withTable<T>(_ body: (inout [FileID: Entry]) throws -> T) rethrows -> T {
        try opened.withLock { state in
            if state.process != getpid() { state = (getpid(), [:]) }
            return try body(&state.table)
        }
    }

    /// The shared read-only environment of the file at `path`, opened if no one holds it.
    ///
    /// A new environment is opened only once the previous one of the same file has finished
    /// closing, since its close drops every lock this process holds on the lock file.
    static func readOnly(path: String) throws -> Environment {
        let deadline = ContinuousClock.now + .seconds(2)
        while true {
            // Again on each attempt: a compaction may have renamed a new file over the path.
            guard let id = FileID(path: path) else { throw StoreError.notFound(path: path) }
            let env: Environment? = try withTable { table in
                let entry = table[id] ?? Entry()
                table[id] = entry
                if let env = entry.env { return env }
                guard !entry.open else { return nil }
                guard let (env, lock) = try openMatchingLock(path: path, id: id, table: table) else {
                    table[id] = nil
                    return nil
                }
                entry.env = env
                entry.open = true
                entry.lock = lock
                return env
            }
            if let env { return env }
            guard ContinuousClock.now < deadline else {
                throw StoreError.inconsistent("the lock file '\(storeFilePath(path))-lock' belongs to a file this store replaced; " +
                                              "remove it once no process has the store open")
            }
            usleep(200)
        }
    }

    /// Whether this process has a read-only environment of the file at `path` open.
    static func isOpen(path: String) -> Bool {
        guard let id = FileID(path: path) else { return false }
        return withTable { $0[id]?.open ?? false }
    }

    /// Called by a shared environment's deinit once `mdb_env_close` has returned.
    static func didClose(_ id: FileID) {
        withTable { table in
            guard let entry = table[id] else { return }
            entry.open = false
            if entry.env == nil { table[id] = nil }
        }
    }

    /// Opens `path` with its lock file, or returns nil to be retried when that lock file may
    /// belong to the file a compaction just replaced (the compactor removes it right after the
    /// rename, so a retry finds a fresh one):
    /// - when another environment of this process uses that lock file, nothing is opened: this
    ///   environment's close would drop the other's locks;
    /// - when the path named another file by the time it was opened, or the lock file changed
    ///   while opening, or its last transaction id selects no meta page of this file (a reader
    ///   would see the wrong snapshot), the environment is closed.
    private static func openMatchingLock(path: String, id: FileID, table: [FileID: Entry]) throws -> (Environment, FileID?)? {
        let lockPath = storeFilePath(path) + "-lock"
        let lock = FileID(path: lockPath)
        if let lock, table.contains(where: { $0.key != id && $0.value.open && $0.value.lock == lock }) { return nil }
        // Not while a writer of this process has the file: a second environment breaks its locks.
        let env = try PathClaim.whileNotWritten(path) { try Environment(path: path, readOnly: true) }
        let opened = FileID(path: lockPath)
        guard FileID(env) == id, lock == nil || opened == lock, try env.snapshotMatchesMetaPages() else { return nil }
        env.sharedAs = id
        return (env, opened)
    }
}

extension Environment {
    /// Whether a fresh read snapshot has the transaction id of one of the meta pages of the
    /// file this environment maps.
    func snapshotMatchesMetaPages() throws -> Bool {
        guard let fd = descriptor else { return true }
        for _ in 0..<3 {
            let snapshot = try read { txn in UInt64(mdb_txn_id(txn.handle)) }
            guard let ids = MetaPages.transactionIDs(fd: fd) else { return true }
            if ids.contains(snapshot) { return true }
            // A writer may have committed twice in between; a stale lock file stays wrong.
            usleep(5_000)
        }
        return false
    }
}
