import Foundation
import _MemorySupport

/// What keeps the writers of a store apart, and writers and an in-place compaction: `flock`,
/// exclusive, on a descriptor of the store's data file, held for a writer's whole life.
///
/// - Two writers of one store would interleave their commits: two creates or imports started
///   together each wrote the tables they found empty, and the one that finished left a store
///   with the other's keys over its own values. A writer waits until the other has finished,
///   then finds its store (finished, resumable, or of another source, which it refuses).
/// - A compaction in place holds the file from before its snapshot until its copy has replaced
///   the file and the old lock file is gone (and the copy too, for that last step), so that no
///   writer commits to a file about to be replaced (its commits would be lost with the file) or
///   pairs the new file with the old lock file. It does not wait: a store being written makes it
///   throw.
///
/// Writers take the lock before LMDB reads the file or its lock file (of a new file, once LMDB
/// has made it). Within a process the writers of one file take turns the same way, by thread:
/// a writer opened on the thread that holds the file shares its hold (one `flock`, held until
/// the last of them is gone) instead of waiting for itself. A file system without `flock`
/// leaves writers unlocked. Readers take nothing, except one that cannot open the lock file
/// (``LocklessReaderHold``).
final class WriterLock: Sendable {
    private let file: OpenEnvironments.FileID

    /// The files this process holds: the descriptor holding each one's `flock`, how many
    /// WriterLocks share it, the thread that took it, and whether a compaction holds it (then
    /// nothing shares it).
    private static let held = Locked<[OpenEnvironments.FileID: Hold]>([:])

    private struct Hold {
        var descriptor: Int32
        var count: Int
        var thread: pthread_t
        var compacting: Bool
    }

    private init(_ file: OpenEnvironments.FileID) { self.file = file }

    deinit {
        let last: Int32? = Self.held.withLock { held in
            guard var entry = held[file] else { return nil }
            if entry.count > 1 {
                entry.count -= 1
                held[file] = entry
                return nil
            }
            held[file] = nil
            return entry.descriptor
        }
        if let last { close(last) }
    }

    /// The file at `path` for a writer, waited for while another process's writer or a compaction
    /// holds it; then the file the path names by then (a compaction's copy, renamed over it
    /// meanwhile). Nil when there is no file (yet) or the file system has no `flock`.
    static func writer(_ path: String) throws -> WriterLock? {
        while true {
            guard let (fd, file) = try open(path) else { return nil }
            if let shared = try shareOrWait(file, path) {
                close(fd)
                return shared
            }
            var locked = flock(fd, LOCK_EX)
            while locked != 0 && errno == EINTR { locked = flock(fd, LOCK_EX) }
            if locked != 0 {
                close(fd)
                return nil
            }
            // Another file at the path (a compaction's copy, renamed over it while this waited): take that one.
            if OpenEnvironments.FileID(path: path) != file {
                close(fd)
                continue
            }
            return taken(fd, file, compacting: false)
        }
    }

    /// The file at `path` for an in-place compaction. Throws at once, instead of waiting, when a
    /// writer or another compaction holds it, in this process or another.
    static func exclusive(_ path: String) throws -> WriterLock {
        guard let (fd, file) = try open(path) else { throw StoreError.notFound(path: path) }
        if held.withLock({ $0[file] != nil }) || flock(fd, LOCK_EX | LOCK_NB) != 0 && errno == EWOULDBLOCK {
            defer { close(fd) }
            if LocklessReaderHold.isHeld(file) || holder(fd) == .locklessReader {
                throw StoreError.invalidArgument("'\(path)' is being read by a process that cannot open its lock file (another user's, without write access to '\(path)-lock'); compacting it in place now could change pages that reader reads: run compact again once it has closed the store")
            }
            throw StoreError.invalidArgument("'\(path)' is being written (an import or create, a layer being added or removed, or another in-place compaction, in this process or another); compacting it in place now would lose that writer's commits: run compact again once it has finished")
        }
        return taken(fd, file, compacting: true)
    }

    /// Who holds the file at `path` now, in any process, that a writer would wait for: nil when
    /// nothing does.
    static func holder(_ path: String) -> Holder? {
        guard let (fd, _) = try? open(path) else { return nil }
        defer { close(fd) }
        return holder(fd)
    }

    enum Holder {
        /// A writer or an in-place compaction (an exclusive `flock`).
        case writer
        /// A reader without the lock file (``LocklessReaderHold``, a shared `flock`).
        case locklessReader
    }

    private static func holder(_ fd: Int32) -> Holder? {
        if flock(fd, LOCK_EX | LOCK_NB) == 0 {
            flock(fd, LOCK_UN)
            return nil
        }
        guard errno == EWOULDBLOCK else { return nil }
        guard flock(fd, LOCK_SH | LOCK_NB) == 0 else { return .writer }
        flock(fd, LOCK_UN)  // only shared holds: lockless readers
        return .locklessReader
    }

    /// A share of this process's hold of `file` when this thread's writer has it; nil, once no
    /// other thread of this process holds it, to take it. Throws when this thread's compaction
    /// holds it (waiting would never end).
    private static func shareOrWait(_ file: OpenEnvironments.FileID, _ path: String) throws -> WriterLock? {
        while true {
            let outcome: WriterLock?? = try held.withLock { held in
                if LocklessReaderHold.isHeld(file) {
                    throw StoreError.invalidArgument("'\(path)' is read by this process without its lock file (this user cannot open '\(path)-lock'), so it cannot be written here until that reader is closed")
                }
                guard var entry = held[file] else { return .some(nil) }
                guard pthread_equal(entry.thread, pthread_self()) != 0 else { return nil }  // another thread's: wait
                if entry.compacting {
                    throw StoreError.invalidArgument("'\(path)' is being compacted in place by this thread: write it once that has finished")
                }
                entry.count += 1
                held[file] = entry
                return .some(WriterLock(file))
            }
            if let outcome { return outcome }
            usleep(1000)
        }
    }

    private static func taken(_ fd: Int32, _ file: OpenEnvironments.FileID, compacting: Bool) -> WriterLock {
        held.withLock { $0[file] = Hold(descriptor: fd, count: 1, thread: pthread_self(), compacting: compacting) }
        return WriterLock(file)
    }

    /// A descriptor of the file at `path` and the file's identity, nil when there is none.
    fileprivate static func open(_ path: String) throws -> (Int32, OpenEnvironments.FileID)? {
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            if errno == ENOENT { return nil }
            throw StoreError.invalidArgument("cannot open '\(path)': \(String(cString: strerror(errno)))")
        }
        guard let file = OpenEnvironments.FileID(descriptor: fd) else {
            close(fd)
            throw StoreError.invalidArgument("cannot read '\(path)': \(String(cString: strerror(errno)))")
        }
        return (fd, file)
    }
}

/// The hold of a reader that opens a store without its lock file on a writable medium (this
/// user cannot open or create the lock file, `EACCES`): LMDB's reader table cannot show writers
/// such a reader, so it takes a shared `flock` on the data file for its life, which a writer's
/// exclusive one waits for (and an in-place compaction refuses). It refuses to begin while a
/// writer holds the file. A file system without `flock` leaves it unguarded.
final class LocklessReaderHold: Sendable {
    private let descriptor: Int32
    private let file: OpenEnvironments.FileID

    /// The files this process reads without a lock file, and how many holds each has.
    private static let held = Locked<[OpenEnvironments.FileID: Int]>([:])

    /// The hold of the file at `path` (its data file); throws when a writer or an in-place
    /// compaction holds it.
    init(_ path: String) throws {
        guard let (fd, file) = try WriterLock.open(path) else { throw StoreError.notFound(path: path) }
        var locked = flock(fd, LOCK_SH | LOCK_NB)
        while locked != 0 && errno == EINTR { locked = flock(fd, LOCK_SH | LOCK_NB) }
        if locked != 0 && errno == EWOULDBLOCK {
            close(fd)
            throw StoreError.invalidArgument("cannot read '\(path)' while it is being written: this user cannot open its lock file '\(path)-lock', so the writer could not see this reader and might reuse pages it reads; read it once the writer has finished, or with write access to the lock file")
        }
        descriptor = fd
        self.file = file
        Self.held.withLock { $0[file, default: 0] += 1 }
    }

    deinit {
        Self.held.withLock { held in
            let count = held[file, default: 1] - 1
            held[file] = count > 0 ? count : nil
        }
        close(descriptor)
    }

    static func isHeld(_ file: OpenEnvironments.FileID) -> Bool { held.withLock { $0[file] != nil } }
}

/// A writer's claim, within this process, on the store file at a path, taken before it looks at
/// the file in any way: two LMDB environments of one file in a process break LMDB's locks (a
/// second open re-initialises the lock file's mutexes, since `fcntl` locks cannot tell it that
/// the first is open), so a writer must not probe a file (`isEmptyEnvironment`, `readHead`) or
/// open it while another thread's writer has it open, even before either holds the file's
/// `flock` (``WriterLock``; of a new file, not until LMDB has made it). Claims of one path are
/// shared by the writers of one thread and waited for by other threads; held by the writer's
/// environment until it has closed. Readers of this process consult the claims too
/// (``whileNotWritten(_:_:)``): a reader refuses a path another thread has claimed, and a claim
/// waits while a reader is opening.
final class PathClaim: Sendable {
    private let key: String

    /// The claims held, and the readers opening an environment, by path.
    private static let state = Locked<(held: [String: (thread: pthread_t, count: Int)], readersOpening: [String: Int])>(([:], [:]))

    /// The claim on the store file at `path`, waited for while another thread holds it or a
    /// reader of this process is opening it.
    init(_ path: String) {
        key = Self.key(path)
        while true {
            let taken: Bool = Self.state.withLock { state in
                guard state.readersOpening[key] == nil else { return false }
                guard let holder = state.held[key] else {
                    state.held[key] = (pthread_self(), 1)
                    return true
                }
                guard pthread_equal(holder.thread, pthread_self()) != 0 else { return false }
                state.held[key]!.count += 1
                return true
            }
            if taken { return }
            usleep(1000)
        }
    }

    deinit {
        Self.state.withLock { state in
            guard let holder = state.held[key] else { return }
            state.held[key] = holder.count > 1 ? (holder.thread, holder.count - 1) : nil
        }
    }

    /// Runs `open`, a reader's open of the file at `path`, unless another thread's writer has
    /// claimed the path; claims wait while it runs. (This thread's own writer is let through: its
    /// probes, and a reader of what it has committed, as before.)
    static func whileNotWritten<T>(_ path: String, _ open: () throws -> T) throws -> T {
        let key = key(path)
        try state.withLock { state in
            if let holder = state.held[key], pthread_equal(holder.thread, pthread_self()) == 0 {
                throw StoreError.invalidArgument("'\(path)' is open for writing on another thread of this process (a StoreWriter of it is alive there); open it for reading once that writer is released")
            }
            state.readersOpening[key, default: 0] += 1
        }
        defer {
            state.withLock { state in
                let count = state.readersOpening[key, default: 1] - 1
                state.readersOpening[key] = count > 0 ? count : nil
            }
        }
        return try open()
    }

    /// The path with its links resolved, of its directory when the file is not there yet.
    private static func key(_ path: String) -> String {
        if let resolved = realpath(path, nil) {
            defer { free(resolved) }
            return String(cString: resolved)
        }
        let url = URL(fileURLWithPath: path)
        return storeFilePath(url.deletingLastPathComponent().path) + "/" + url.lastPathComponent
    }
}
