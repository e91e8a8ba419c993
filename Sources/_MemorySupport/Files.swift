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
