import CLMDB
import Foundation
import _MemorySupport

/// One LMDB environment in a single file (`MDB_NOSUBDIR`), with the named databases of a store.
///
/// LMDB environments are thread-safe; with `MDB_NOTLS` read transactions are not tied to a
/// thread, so a reset transaction can be renewed on any thread. Write transactions are
/// serialised by LMDB itself.
final class Environment: @unchecked Sendable {
    // Invariant: `handle` and the dbi values are fixed after init and freed only in deinit.
    let handle: OpaquePointer
    let readOnly: Bool
    let path: String
    /// Reader slots of the environment, shared by every process that opens it.
    let maxReaders: Int
    private(set) var meta: MDB_dbi = 0
    private(set) var tensors: MDB_dbi = 0
    private(set) var shards: MDB_dbi = 0

    static let metaName = "meta"
    static let tensorsName = "tensors"
    static let shardsName = "shards"

    /// The address space a reader reserves: LMDB may only remap when no transaction of the
    /// process is active, so readers map far beyond the file once instead of remapping later.
    static let readerMapSize = 1 << 36

    /// Opens (and with `create`, makes) the environment at `path`.
    /// - Parameter mapSize: the map of a writer; readers map `max(readerMapSize, 4 x file size)`.
    init(path: String, readOnly: Bool, create: Bool = false, mapSize: Int = 1 << 30, maxReaders: Int = 126) throws {
        if !create && !FileManager.default.fileExists(atPath: path) { throw StoreError.notFound(path: path) }
        if FileManager.default.fileExists(atPath: path) { try MetaPages.check(path: path) }
        var flags = UInt32(MDB_NOSUBDIR | MDB_NOTLS)
        if readOnly { flags |= UInt32(MDB_RDONLY | MDB_NORDAHEAD) }
        let size: Int
        if readOnly {
            size = max(Self.readerMapSize, 4 * fileSize(atPath: path))
        } else {
            size = mapSize
        }
        var opened = Self.open(path, flags: flags, mapSize: size, maxReaders: maxReaders)
        // A read-only medium or directory has no room for the lock file; nothing can write the
        // store there, so readers need no reader table (Spec/FORMAT.md, "Opening without a lock file").
        if readOnly, case .failure(let error) = opened, error.rawValue == EACCES || error.rawValue == EROFS {
            opened = Self.open(path, flags: flags | UInt32(MDB_NOLOCK), mapSize: size, maxReaders: maxReaders)
        }
        // A writer waits for its share of the file, and opens the path again when a compaction
        // renamed its copy over it meanwhile.
        while !readOnly, case .success(let env) = opened, !Self.takeWriterShare(env, path: path) {
            mdb_env_close(env)
            opened = Self.open(path, flags: flags, mapSize: size, maxReaders: maxReaders)
        }
        let env: OpaquePointer
        switch opened {
        case .success(let handle): env = handle
        case .failure(let error):
            if error == .invalid || error == .versionMismatch { throw StoreError.notAStore(path: path, reason: error.description) }
            throw error
        }
        self.handle = env
        self.readOnly = readOnly
        self.path = path
        self.maxReaders = maxReaders
        do {
            try BTreePages.check(self)
            // Clear reader slots left by processes that died holding a read transaction.
            var dead: Int32 = 0
            _ = mdb_reader_check(env, &dead)
            try openDatabases(create: create)
        } catch {
            // All stored properties are set, so deinit closes the environment.
            if let error = error as? LMDBError, error == .invalid || error == .versionMismatch {
                throw StoreError.notAStore(path: path, reason: error.description)
            }
            throw error
        }
    }

    /// An opened environment handle, or LMDB's error (the handle then closed, as LMDB requires).
    private static func open(_ path: String, flags: UInt32, mapSize: Int, maxReaders: Int) -> Result<OpaquePointer, LMDBError> {
        var env: OpaquePointer?
        let created = mdb_env_create(&env)
        guard created == 0, let env else { return .failure(LMDBError(rawValue: created == 0 ? EINVAL : created)) }
        for rc in [mdb_env_set_maxdbs(env, 4), mdb_env_set_maxreaders(env, UInt32(maxReaders)),
                   mdb_env_set_mapsize(env, mapSize), mdb_env_open(env, path, flags, 0o644)] where rc != 0 {
            mdb_env_close(env)
            return .failure(LMDBError(rawValue: rc))
        }
        return .success(env)
    }

    /// Takes a writer's share of the data file, `flock(LOCK_SH)` on LMDB's own descriptor, held
    /// until the environment closes: an in-place compaction holds the file exclusively
    /// (``excludeWriters(_:)``) from before its snapshot until its copy has replaced the file, so
    /// no writer commits to a file that is about to be replaced (its commits would be lost with
    /// it). Waits while a compaction holds it. Returns false when the file at `path` is no longer
    /// the one opened (a compaction replaced it while this writer waited). A file system without
    /// `flock` leaves writers unlocked, as before.
    private static func takeWriterShare(_ env: OpaquePointer, path: String) -> Bool {
        var fd: Int32 = -1
        guard mdb_env_get_fd(env, &fd) == 0, fd >= 0 else { return true }
        while flock(fd, LOCK_SH) != 0 { if errno != EINTR { return true } }
        var opened = Glibc.stat()
        guard fstat(fd, &opened) == 0, let named = try? FileManager.default.attributesOfItem(atPath: path),
              let device = named[.systemNumber] as? Int, let inode = named[.systemFileNumber] as? Int else { return true }
        return Int(opened.st_dev) == device && Int(opened.st_ino) == inode
    }

    /// Holds writers of the store at `path` off, `flock(LOCK_EX)` on a new descriptor of its data
    /// file (see ``takeWriterShare(_:path:)``), until the descriptor returned is closed. Throws at
    /// once, instead of waiting, when a writer has the file open.
    static func excludeWriters(_ path: String) throws -> Int32 {
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            if errno == ENOENT { throw StoreError.notFound(path: path) }
            throw StoreError.invalidArgument("cannot open '\(path)': \(String(cString: strerror(errno)))")
        }
        if flock(fd, LOCK_EX | LOCK_NB) != 0 && errno == EWOULDBLOCK {
            close(fd)
            throw StoreError.invalidArgument("'\(path)' is open for writing (an import, or a layer being added or removed, in this process or another); compacting it in place now would lose that writer's commits: run compact again once it has finished")
        }
        return fd
    }

    /// Set when this is the process's shared read-only environment of a file (``OpenEnvironments``).
    nonisolated(unsafe) var sharedAs: OpenEnvironments.FileID?

    deinit {
        mdb_env_close(handle)
        if let sharedAs { OpenEnvironments.didClose(sharedAs) }
    }

    private func openDatabases(create: Bool) throws {
        var txn: OpaquePointer?
        try check(mdb_txn_begin(handle, nil, readOnly ? UInt32(MDB_RDONLY) : 0, &txn))
        do {
            let flags = create ? UInt32(MDB_CREATE) : 0
            for (name, slot) in [(Self.metaName, 0), (Self.tensorsName, 1), (Self.shardsName, 2)] {
                var dbi: MDB_dbi = 0
                let rc = mdb_dbi_open(txn, name, flags, &dbi)
                if rc == MDB_NOTFOUND {
                    throw StoreError.notAStore(path: path, reason: "database '\(name)' is missing (was its creation interrupted?)")
                }
                try check(rc)
                switch slot {
                case 0: meta = dbi
                case 1: tensors = dbi
                default: shards = dbi
                }
            }
            try check(mdb_txn_commit(txn))
        } catch {
            mdb_txn_abort(txn)
            throw error
        }
    }

    /// The descriptor of the file this environment maps. Checks read that file through it, never
    /// through `path`: a compaction in another process may have renamed a new file over the path.
    var descriptor: Int32? {
        var fd: Int32 = -1
        return mdb_env_get_fd(handle, &fd) == 0 && fd >= 0 ? fd : nil
    }

    /// The size in bytes of the file this environment maps, or 0 when it cannot be read.
    var fileBytes: Int { descriptor.map { fileSize(descriptor: $0) } ?? 0 }

    /// Page size, map size and the last page in use, as LMDB reports them.
    var info: (pageSize: Int, mapSize: Int, lastPage: Int, readersUsed: Int, maxReaders: Int) {
        var stat = MDB_stat()
        mdb_env_stat(handle, &stat)
        var info = MDB_envinfo()
        mdb_env_info(handle, &info)
        return (Int(stat.ms_psize), info.me_mapsize, info.me_last_pgno, Int(info.me_numreaders), Int(info.me_maxreaders))
    }

    /// Whether `path` is an LMDB environment that holds none of a store's databases: a creation
    /// killed before its first commit. Such a file can be taken over; anything else cannot.
    static func isEmptyEnvironment(at path: String) -> Bool {
        var env: OpaquePointer?
        guard mdb_env_create(&env) == 0, let env else { return false }
        defer { mdb_env_close(env) }
        mdb_env_set_maxdbs(env, 4)
        guard mdb_env_open(env, path, UInt32(MDB_NOSUBDIR | MDB_RDONLY | MDB_NOTLS), 0o644) == 0 else { return false }
        var txn: OpaquePointer?
        guard mdb_txn_begin(env, nil, UInt32(MDB_RDONLY), &txn) == 0 else { return false }
        defer { mdb_txn_abort(txn) }
        var dbi: MDB_dbi = 0
        return mdb_dbi_open(txn, nil, 0, &dbi) == 0 && {
            var s = MDB_stat()
            return mdb_stat(txn, dbi, &s) == 0 && s.ms_entries == 0
        }()
    }

    /// Grows the map. Only valid when this process has no transaction open.
    func setMapSize(_ bytes: Int) throws {
        try check(mdb_env_set_mapsize(handle, bytes))
    }

    /// Writes a compacted copy of the environment to `path` (`MDB_CP_COMPACT`).
    func copyCompacted(to path: String) throws {
        try check(mdb_env_copy2(handle, path, UInt32(MDB_CP_COMPACT)))
    }

    /// Runs `body` in a write transaction: committed when it returns, aborted when it throws.
    func write<T>(_ body: (WriteTransaction) throws -> T) throws -> T {
        var txn: OpaquePointer?
        try check(mdb_txn_begin(handle, nil, 0, &txn))
        let transaction = WriteTransaction(handle: txn!)
        let result: T
        do {
            result = try body(transaction)
        } catch {
            mdb_txn_abort(txn)
            throw error
        }
        try check(mdb_txn_commit(txn))
        return result
    }

    /// Runs `body` in a short read transaction.
    func read<T>(_ body: (ReadTransaction) throws -> T) throws -> T {
        let txn = try ReadTransaction(env: self)
        return try body(txn)
    }

    /// Statistics of one database: depth and page counts.
    func stat(_ dbi: MDB_dbi, in txn: ReadTransaction) -> MDB_stat {
        var s = MDB_stat()
        mdb_stat(txn.handle, dbi, &s)
        return s
    }
}
