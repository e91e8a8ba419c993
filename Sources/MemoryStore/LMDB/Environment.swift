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
        let file = storeFilePath(path), kind = fileKind(atPath: file)
        if let kind, kind != S_IFREG {  // opening a pipe would wait for a writer
            throw StoreError.notAStore(path: path, reason: kind == S_IFDIR ? "it is a directory" : "it is not a regular file (a device, pipe or socket)")
        }
        let creating = create && kind == nil
        // A writer claims the path in this process, then takes its lock before the file is read,
        // or LMDB opens it or its lock file; of a new file, once LMDB has made it (before any
        // commit: LMDB serialises opens that make it).
        let claim = readOnly ? nil : PathClaim(file)
        let share = readOnly ? nil : try WriterLock.writer(file)
        if !creating { try MetaPages.check(path: file) }
        var flags = UInt32(MDB_NOSUBDIR | MDB_NOTLS)
        if readOnly { flags |= UInt32(MDB_RDONLY | MDB_NORDAHEAD) }
        let size: Int
        if readOnly {
            size = max(Self.readerMapSize, 4 * fileSize(atPath: file))
        } else {
            size = mapSize
        }
        var opened = Self.open(file, flags: flags, mapSize: size, maxReaders: maxReaders)
        // Without room for the lock file, readers open without a reader table (Spec/FORMAT.md,
        // "Opening without a lock file"): on a read-only medium nothing can write the store; where
        // only this user cannot (EACCES), writers are held off by a shared flock instead.
        var locklessHold: LocklessReaderHold?
        if readOnly, case .failure(let error) = opened, error.rawValue == EACCES || error.rawValue == EROFS {
            if error.rawValue == EACCES { locklessHold = try LocklessReaderHold(file) }
            opened = Self.open(file, flags: flags | UInt32(MDB_NOLOCK), mapSize: size, maxReaders: maxReaders)
        }
        let env: OpaquePointer
        switch opened {
        case .success(let handle):
            env = handle
            // LMDB syncs each commit to the file, not the file's name to its directory.
            if creating { syncDirectory(holding: file) }
        case .failure(let error):
            if error == .invalid || error == .versionMismatch { throw StoreError.notAStore(path: path, reason: error.description) }
            // The file system's refusals, with the path they concern.
            if [ENOENT, ENOTDIR, EACCES, EPERM, EROFS, ENAMETOOLONG, ELOOP].contains(error.rawValue) {
                let what = creating ? "create" : readOnly ? "open" : "open for writing"
                throw StoreError.invalidArgument("cannot \(what) '\(path)': \(error.description)")
            }
            throw error
        }
        let lock: WriterLock?
        do {
            lock = readOnly ? nil : try share ?? WriterLock.writer(file)
        } catch {
            mdb_env_close(env)
            throw error
        }
        self.handle = env
        writerLock = lock
        pathClaim = claim
        self.locklessHold = locklessHold
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

    /// A writer's hold of the file (``WriterLock``), released after the environment closes.
    private let writerLock: WriterLock?
    /// A writer's claim on the path in this process (``PathClaim``), released after the environment closes.
    private let pathClaim: PathClaim?
    /// A reader's hold of the file when it has no lock file (``LocklessReaderHold``), released after the environment closes.
    private let locklessHold: LocklessReaderHold?

    /// Set when this is the process's shared read-only environment of a file (``OpenEnvironments``).
    nonisolated(unsafe) var sharedAs: OpenEnvironments.FileID?

    /// The process that opened the environment. LMDB handles must not be used or released
    /// after `fork()` in the child: a child's `mdb_env_close` would close the lock file under the
    /// environment it opened itself (dropping that one's locks), so there it is left open.
    let owner = getpid()

    deinit {
        guard getpid() == owner else { return }
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

    /// Where the map of the file begins (its byte 0), found from `value`, a value a read
    /// transaction returned: one on overflow pages begins 16 bytes into its first page, whose
    /// header begins with the page's number, from which LMDB itself found the page in the map
    /// (LMDB gives the map's address only for fixed maps). The start found must hold meta page 0
    /// (page number 0, LMDB's magic at byte 16), so that a damaged page number finds none rather
    /// than a wrong one. Nil for a value inside a page, or when the check fails.
    func mapStart(holding value: UnsafeRawPointer) -> UnsafeRawPointer? {
        let page = value - 16, pageSize = info.pageSize
        guard Int(bitPattern: page) % pageSize == 0 else { return nil }
        let number = page.load(as: UInt64.self)
        guard number > 0, number < UInt64(fileBytes / pageSize) else { return nil }
        let start = page - Int(number) * pageSize
        // Read only once the kernel says it is mapped: a wrong start may lie outside any map.
        var resident: UInt8 = 0
        guard mincore(UnsafeMutableRawPointer(mutating: start), pageSize, &resident) == 0,
              start.load(as: UInt64.self) == 0, start.load(fromByteOffset: 16, as: UInt32.self) == 0xBEEF_C0DE else { return nil }
        return start
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
        guard mdb_env_open(env, storeFilePath(path), UInt32(MDB_NOSUBDIR | MDB_RDONLY | MDB_NOTLS), 0o644) == 0 else { return false }
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
