import Foundation

/// Reads `count` bytes at file offset `offset` with `pread`, retrying short reads and `EINTR`.
/// - Returns: the bytes read (less than `count` only at the end of the file), or `-errno`.
package func readFully(_ fd: Int32, into buffer: UnsafeMutableRawPointer, count: Int, at offset: Int) -> Int {
    var done = 0
    while done < count {
        let n = pread(fd, buffer + done, count - done, off_t(offset + done))
        if n < 0 && errno == EINTR { continue }
        if n < 0 { return -Int(errno) }
        if n == 0 { break }
        done += n
    }
    return done
}
