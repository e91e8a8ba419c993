import Foundation

/// The size of the file at `path` in bytes, or 0 when it cannot be read.
package func fileSize(atPath path: String) -> Int {
    var st = stat()
    return stat(path, &st) == 0 ? Int(st.st_size) : 0
}

/// The size of the file open as `fd` in bytes, or 0 when it cannot be read.
package func fileSize(descriptor fd: Int32) -> Int {
    var st = stat()
    return fstat(fd, &st) == 0 ? Int(st.st_size) : 0
}

/// Calls `body` with the UTF-8 bytes of `name` (an LMDB key, or a seal's seed).
package func withName<T>(_ name: String, _ body: (UnsafeRawBufferPointer) throws -> T) rethrows -> T {
    var name = name
    return try name.withUTF8 { try body(UnsafeRawBufferPointer($0)) }
}

/// The name a store's LMDB file is opened by: `path` with symbolic links resolved (as it is when
/// nothing is there yet). LMDB finds the lock file, which holds the reader table, by appending
/// "-lock" to that name, so every process must use the same one: a reader that came through a
/// link with a lock file of its own would be invisible to writers, which could then reuse the
/// pages it reads.
package func storeFilePath(_ path: String) -> String {
    guard let resolved = realpath(path, nil) else { return path }
    defer { free(resolved) }
    return String(cString: resolved)
}

/// The kind of file at `path` through any links (`S_IFREG`, `S_IFDIR`, ...), nil when there is none.
package func fileKind(atPath path: String) -> mode_t? {
    var st = stat()
    return stat(path, &st) == 0 ? st.st_mode & S_IFMT : nil
}

/// Flushes the file at `path` to storage (`fsync`); the error, when it fails, as `strerror` says it.
package func syncFile(atPath path: String) -> String? {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return String(cString: strerror(errno)) }
    defer { close(fd) }
    return fsync(fd) == 0 ? nil : String(cString: strerror(errno))
}

/// Flushes the directory holding `path` (best effort), so that a rename into it survives a
/// power cut.
package func syncDirectory(holding path: String) {
    let directory = (path as NSString).deletingLastPathComponent
    let fd = open(directory.isEmpty ? "." : directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    guard fd >= 0 else { return }
    fsync(fd)
    close(fd)
}

/// The whole text of a file the kernel generates as it is read (`/proc/self/maps`), read to
/// its end: such files report no size, and readers that trust the size stop after a page.
package func kernelFileText(_ path: String) -> String? {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var bytes: [UInt8] = [], chunk = [UInt8](repeating: 0, count: 64 << 10)
    while true {
        let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n < 0 && errno == EINTR { continue }
        guard n > 0 else { return n == 0 ? String(decoding: bytes, as: UTF8.self) : nil }
        bytes += chunk[0..<n]
    }
}
