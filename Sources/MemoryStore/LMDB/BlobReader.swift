import CLMDB
import Foundation
import _MemorySupport

/// Reads values of an environment with `pread` at their offset in the file instead of through
/// LMDB's map. A compressed shard is decoded once from a reader's own buffer, so its pages are
/// never mapped into the process: mapped pages count towards its resident set and, by the
/// kernel's fault-around, bring up to 15 neighbouring pages with each fault.
///
/// LMDB hands out values as pointers into its map and does not say where the map starts
/// (`me_mapaddr` is only set with `MDB_FIXEDMAP`), so the base is found from a value on overflow
/// pages (``Environment/mapStart(holding:)``).
struct BlobReader: Sendable {
    private let fd: Int32
    private let path: String
    /// The address at which file offset 0 is mapped.
    private let mapBase: Int

    /// The reader for the map that holds `value`, or nil when it cannot be located (callers
    /// then read through the map).
    init?(env: Environment, locating value: UnsafeRawBufferPointer) {
        guard let base = value.baseAddress.flatMap(env.mapStart(holding:)).map({ Int(bitPattern: $0) }) else { return nil }
        guard let fd = env.descriptor else { return nil }
        self.fd = fd
        path = env.path
        mapBase = base
    }

    /// Copies the value at `mapped` (a pointer LMDB returned) from the file into `buffer` and
    /// calls `body` with the copy, which must not escape it. Throws, naming `what`, when the
    /// file is short.
    func read<T>(_ mapped: UnsafeRawBufferPointer, into buffer: ShardBuffer, what: @autoclosure () -> String,
                 _ body: (UnsafeRawBufferPointer) throws -> T) throws -> T {
        let n = mapped.count
        precondition(buffer.byteCount >= n, "the caller sizes the buffer")
        let offset = offset(of: mapped)
        return try buffer.withBytes { out in
            let got = readFully(fd, into: out.baseAddress!, count: n, at: offset)
            guard got == n else {
                let why = got < 0 ? String(cString: strerror(Int32(-got))) : "the file ends after \(got) of its \(n) bytes"
                throw StoreError.inconsistent("reading \(what()) from '\(path)': \(why)")
            }
            return try body(UnsafeRawBufferPointer(rebasing: out[0..<n]))
        }
    }

    /// Asks the kernel to start reading the value at `mapped` into the page cache, without
    /// mapping it (`POSIX_FADV_WILLNEED`).
    func willNeed(_ mapped: UnsafeRawBufferPointer) {
        _ = posix_fadvise(fd, off_t(offset(of: mapped)), off_t(mapped.count), POSIX_FADV_WILLNEED)
    }

    private func offset(of mapped: UnsafeRawBufferPointer) -> Int {
        Int(bitPattern: mapped.baseAddress!) - mapBase
    }
}
