import Foundation

/// What keeps the writers of a store and an in-place compaction of it apart: `flock` on a
/// descriptor of the store's data file, shared by writers, exclusive for a compaction, held until
/// the lock is released. A compaction in place holds the file exclusively from before its
/// snapshot until its copy has replaced the file and the old lock file is gone (and the copy too,
/// for that last step), so that no writer commits to a file about to be replaced (its commits
/// would be lost with the file) or pairs the new file with the old lock file. Writers take their
/// share before LMDB opens the file or its lock file. A file system without `flock` leaves
/// writers unlocked, as before. Readers take nothing.
final class WriterLock: Sendable {
    private let descriptor: Int32

    private init(_ descriptor: Int32) { self.descriptor = descriptor }

    deinit { close(descriptor) }

    /// A writer's share of the file at `path`, waited for while a compaction holds it; then of
    /// the file the path names by then, a compaction's copy renamed over it meanwhile. Nil when
    /// there is no file (yet) or the file system has no `flock`.
    static func shared(_ path: String) throws -> WriterLock? {
        while true {
            guard let fd = try open(path) else { return nil }
            var locked = flock(fd, LOCK_SH)
            while locked != 0 && errno == EINTR { locked = flock(fd, LOCK_SH) }
            if locked != 0 {
                close(fd)
                return nil
            }
            // Another file at the path (a compaction's copy, renamed over it while this waited): take that one.
            var held = stat()
            guard fstat(fd, &held) == 0, let named = try? FileManager.default.attributesOfItem(atPath: path),
                  let device = named[.systemNumber] as? Int, let inode = named[.systemFileNumber] as? Int,
                  device != Int(held.st_dev) || inode != Int(held.st_ino)
            else { return WriterLock(fd) }
            close(fd)
        }
    }

    /// The file at `path` held against writers. Throws at once, instead of waiting, when a writer
    /// has it open or another compaction holds it, saying which.
    static func exclusive(_ path: String) throws -> WriterLock {
        guard let fd = try open(path) else { throw StoreError.notFound(path: path) }
        if flock(fd, LOCK_EX | LOCK_NB) != 0 && errno == EWOULDBLOCK {
            defer { close(fd) }
            // Held exclusively: another compaction; shared: writers.
            if flock(fd, LOCK_SH | LOCK_NB) != 0 && errno == EWOULDBLOCK {
                throw StoreError.invalidArgument("'\(path)' is being compacted in place by another process (or this one): run compact again once that has finished")
            }
            throw StoreError.invalidArgument("'\(path)' is open for writing (an import, or a layer being added or removed, in this process or another); compacting it in place now would lose that writer's commits: run compact again once it has finished")
        }
        return WriterLock(fd)
    }

    /// Whether an in-place compaction holds the file at `path` now (a writer would wait).
    static func isHeldExclusively(_ path: String) -> Bool {
        guard let fd = try? open(path) else { return false }
        defer { close(fd) }
        if flock(fd, LOCK_SH | LOCK_NB) == 0 {
            flock(fd, LOCK_UN)
            return false
        }
        return errno == EWOULDBLOCK
    }

    /// A descriptor of the file at `path`, nil when there is none.
    private static func open(_ path: String) throws -> Int32? {
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            if errno == ENOENT { return nil }
            throw StoreError.invalidArgument("cannot open '\(path)': \(String(cString: strerror(errno)))")
        }
        return fd
    }
}
