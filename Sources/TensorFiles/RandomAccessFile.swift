import Foundation
import _MemorySupport

/// A file read with positioned reads (`pread`), so tensors can be streamed in chunks from any
/// offset without loading the file. Not thread-safe beyond what `pread` itself guarantees.
public final class RandomAccessFile: @unchecked Sendable {
    // Invariant: `fd` is open for the object's lifetime and only read with pread.
    public let path: String
    public let size: Int
    private let fd: Int32

    public init(path: String) throws {
        self.path = path
        // Without blocking: opening a pipe would wait for a writer.
        fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)
        guard fd >= 0 else { throw TensorFileError(path, "cannot open: \(String(cString: strerror(errno)))") }
        var st = stat()
        guard fstat(fd, &st) == 0 else {
            close(fd)
            throw TensorFileError(path, "cannot stat: \(String(cString: strerror(errno)))")
        }
        guard st.st_mode & S_IFMT == S_IFREG else {
            close(fd)
            throw TensorFileError(path, "is not a regular file (a device, pipe or socket): tensors are read at their offsets")
        }
        size = Int(st.st_size)
    }

    deinit { close(fd) }

    /// Reads exactly `count` bytes at `offset` into `buffer`.
    public func read(at offset: Int, count: Int, into buffer: UnsafeMutableRawPointer) throws {
        guard offset >= 0, count >= 0, offset <= size, count <= size - offset else {
            throw TensorFileError(path, "read of \(count) bytes at \(offset) runs past the end (\(size) bytes)")
        }
        let got = readFully(fd, into: buffer, count: count, at: offset)
        guard got == count else {
            throw TensorFileError(path, "read failed at \(offset + max(got, 0)): \(got < 0 ? String(cString: strerror(Int32(-got))) : "unexpected end of file")")
        }
    }

    /// Reads `count` bytes at `offset` into a new array.
    public func read(at offset: Int, count: Int) throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        try out.withUnsafeMutableBytes { try read(at: offset, count: count, into: $0.baseAddress!) }
        return out
    }
}
