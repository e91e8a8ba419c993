import Foundation
import Synchronization

/// A file written for a user (query outputs, an export, a JSON report), so that only the file
/// named changes and a failed write is never reported as a success:
/// - where the path names a regular file or nothing (through any symbolic links), the bytes go
///   to `NAME.partial.PID.N` beside it, which is synced and renamed over it once complete: a
///   reader never sees part of it, two writers never mix their bytes, and a link stays a link
///   (the next writer removes such a file left by a killed process);
/// - a device, pipe or terminal is written as it is (it cannot be renamed over); a pipe with no
///   reader left is an error, not the end of the process; the process's standard output or
///   error (`/dev/stdout`), whatever it is, is written through its descriptor, after what was
///   printed there before;
/// - an LMDB file (a store or its lock file) is never replaced: a mistyped output path must not
///   destroy a store;
/// - every write is checked, so a full disk or `/dev/full` is an error naming the path.
package final class OutputFile {
    // Invariant: `fd` is open until finish() or deinit closes it; `temporary` (when not nil) is
    // removed by deinit unless finish() renamed it into place.
    private let path: String
    private let destination: String
    private let temporary: String?
    private var fd: Int32
    private var finished = false
    private let durable: Bool
    /// Numbers the temporary files of this process.
    private static let serial = Atomic<Int>(0)

    /// Throws what opening an output at `path` would refuse (a directory, a store, a missing
    /// directory), without writing anything: for a command to check its outputs before its work.
    package static func check(_ path: String) throws(OutputFileError) {
        var st = stat()
        guard stat(path, &st) == 0 else {  // through any links
            let directory = (path as NSString).deletingLastPathComponent
            if !directory.isEmpty, fileKind(atPath: directory) != S_IFDIR {
                throw OutputFileError(path, "cannot write: the directory '\(directory)' does not exist")
            }
            return
        }
        if st.st_mode & S_IFMT == S_IFDIR { throw OutputFileError(path, "is a directory", refused: true) }
        if st.st_mode & S_IFMT == S_IFREG && isLMDBFile(path) {
            throw OutputFileError(path, "holds an LMDB database or lock file (a store?); not replacing it: name another output", refused: true)
        }
    }

    /// Opens the output at `path` for writing (see the type's description). A scratch file that
    /// need not survive a power cut (`durable` false) is renamed into place without a flush.
    package init(path: String, durable: Bool = true) throws(OutputFileError) {
        self.path = path
        self.durable = durable
        try Self.check(path)
        var st = stat()
        let exists = stat(path, &st) == 0
        // The process's own standard output or error (`/dev/stdout`, even when it is a file) is
        // written through that descriptor, after what was printed before.
        if exists, let standard = [STDOUT_FILENO, STDERR_FILENO].first(where: { Self.isFile(st, open: $0) }) {
            fflush(nil)
            destination = path
            temporary = nil
            fd = dup(standard)
            guard fd >= 0 else { throw OutputFileError(path, "cannot write: \(Self.reason())") }
            return
        }
        let regular = exists && st.st_mode & S_IFMT == S_IFREG
        if regular {
            guard let resolved = realpath(path, nil) else { throw OutputFileError(path, "cannot write: \(Self.reason())") }
            destination = String(cString: resolved)
            free(resolved)
        } else {
            destination = path  // nothing there yet, or a device, pipe, socket or terminal
        }
        if !exists || regular { Self.removeLeftovers(of: destination) }
        // A name of this writer's own: two writing the same output must not mix their bytes.
        temporary = exists && !regular ? nil : "\(destination).partial.\(getpid()).\(Self.serial.add(1, ordering: .relaxed).newValue)"
        fd = Foundation.open(temporary ?? destination, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | (temporary == nil ? 0 : O_EXCL), 0o644)
        guard fd >= 0 else { throw OutputFileError(path, "cannot write: \(Self.reason())") }
        if regular { _ = fchmod(fd, st.st_mode & 0o7777) }  // a replaced file keeps its mode
    }

    /// Appends `bytes`.
    package func write(_ bytes: UnsafeRawBufferPointer) throws(OutputFileError) {
        // A pipe whose reader has gone raises SIGPIPE, which would end the process: the signal
        // is held off while writing to one, and a pending one taken, so that it is an error.
        var held = sigset_t(), previous = sigset_t()
        if temporary == nil {
            sigemptyset(&held)
            sigaddset(&held, SIGPIPE)
            pthread_sigmask(SIG_BLOCK, &held, &previous)
        }
        defer {
            if temporary == nil {
                var zero = timespec()
                while sigtimedwait(&held, nil, &zero) == SIGPIPE {}
                pthread_sigmask(SIG_SETMASK, &previous, nil)
            }
        }
        var done = 0
        while done < bytes.count {
            let n = Foundation.write(fd, bytes.baseAddress! + done, bytes.count - done)
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw OutputFileError(path, "cannot write: \(Self.reason())") }
            done += n
        }
    }

    /// Appends the bytes of `data`.
    package func write(_ data: Data) throws(OutputFileError) {
        var failure: OutputFileError?
        data.withUnsafeBytes { bytes in
            do throws(OutputFileError) { try write(bytes) } catch { failure = error }
        }
        if let failure { throw failure }
    }

    /// Makes the file complete: synced and, when written beside its place, renamed over it.
    package func finish() throws(OutputFileError) {
        guard !finished else { return }
        if let temporary {
            guard !durable || fsync(fd) == 0 else { throw OutputFileError(path, "cannot write: \(Self.reason())") }
            guard close(fd) == 0 else { fd = -1; throw OutputFileError(path, "cannot write: \(Self.reason())") }
            fd = -1
            guard rename(temporary, destination) == 0 else { throw OutputFileError(path, "cannot move into place: \(Self.reason())") }
            if durable { syncDirectory(holding: destination) }
        } else {
            let closed = close(fd)
            fd = -1
            guard closed == 0 else { throw OutputFileError(path, "cannot write: \(Self.reason())") }
        }
        finished = true
    }

    /// Writes `data` to the output at `path` in one go.
    package static func write(_ data: Data, to path: String, durable: Bool = true) throws(OutputFileError) {
        let file = try OutputFile(path: path, durable: durable)
        try file.write(data)
        try file.finish()
    }

    deinit {
        if fd >= 0 { close(fd) }
        if !finished, let temporary { unlink(temporary) }
    }

    /// Removes the temporary files of writers of `destination` whose process is gone (killed
    /// while writing), which nothing else would remove.
    private static func removeLeftovers(of destination: String) {
        let directory = (destination as NSString).deletingLastPathComponent, prefix = (destination as NSString).lastPathComponent + ".partial."
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: directory.isEmpty ? "." : directory) else { return }
        for name in names where name.hasPrefix(prefix) {
            guard let pid = name.dropFirst(prefix.count).split(separator: ".").first.flatMap({ pid_t($0) }), pid > 0,
                  kill(pid, 0) != 0 && errno == ESRCH else { continue }
            unlink((directory as NSString).appendingPathComponent(name))
        }
    }

    /// Whether the regular file at `path` begins as an LMDB data file does (the meta page's magic
    /// after its 16-byte page header) or as a lock file does (the magic first).
    private static func isLMDBFile(_ path: String) -> Bool {
        let fd = Foundation.open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var head = [UInt8](repeating: 0, count: 20)
        guard readFully(fd, into: &head, count: head.count, at: 0) == head.count else { return false }
        let magic: [UInt8] = [0xDE, 0xC0, 0xEF, 0xBE]  // 0xBEEFC0DE, little-endian
        return Array(head[0..<4]) == magic || Array(head[16..<20]) == magic
    }

    /// Whether `st` is the file open as descriptor `fd`.
    private static func isFile(_ st: stat, open fd: Int32) -> Bool {
        var other = stat()
        return fstat(fd, &other) == 0 && other.st_dev == st.st_dev && other.st_ino == st.st_ino
    }

    private static func reason() -> String { String(cString: strerror(errno)) }
}

/// An output that could not be written, naming it.
package struct OutputFileError: Error, CustomStringConvertible {
    package let path: String
    package let reason: String
    /// Whether the path was refused (a directory, a store) rather than the write failing.
    package let refused: Bool
    init(_ path: String, _ reason: String, refused: Bool = false) {
        self.path = path
        self.reason = reason
        self.refused = refused
    }
    package var description: String { "\(path): \(reason)" }
}
