import Foundation

/// Reads a file into the page cache in 2 MiB folios, where the file system keeps large folios
/// (ext4 and XFS on recent Linux): through a map of its own advised `MADV_HUGEPAGE`, whose
/// faults read a whole aligned 2 MiB at a time (and the next ones ahead, as a sequential read).
/// How a file's pages entered the page cache decides the page size of *every* map of them: pages
/// in 2 MiB folios are mapped with 2 MiB entries even by a map advised `MADV_RANDOM`, while pages
/// faulted in one at a time, or asked for with `MADV_WILLNEED`, stay 4 KiB, which costs a random
/// reader of the file in memory up to half its rate in TLB misses (BENCHMARKS.md, "Page-cache
/// state"). A 2 MiB span some of whose pages are already cached keeps their size.
package struct LargeFolioReader {
    private static let folioBytes = 2 << 20
    /// The bytes mapped at a time.
    private static let windowBytes = 64 << 20
    // Linux's advice values, which Glibc's module does not export.
    private static let hugePageAdvice: Int32 = 14  // MADV_HUGEPAGE
    private static let populateRead: Int32 = 22  // MADV_POPULATE_READ (Linux 5.14)

    private let descriptor: Int32
    /// The bytes read last, as one span: a caller reading the file in order extends it.
    private var readFrom = 0, readThrough = 0

    /// A reader of the file open as `descriptor` (which must stay open while it is used).
    package init(descriptor: Int32) { self.descriptor = descriptor }

    /// Reads the 2 MiB spans of the file that bytes `offset ..< offset + count` touch, unless
    /// they were the last read: a span less than a window past the last read extends it, gap
    /// included, by at least a window, so that a caller asking in file order reads the file whole
    /// and in order; stops at the file's end. Returns false when the file could not be mapped.
    @discardableResult
    package mutating func read(_ offset: Int, count: Int) -> Bool {
        let size = fileSize(descriptor: descriptor)
        let first = offset - offset % Self.folioBytes, end = min(size, offset + count)
        guard first < end, first < readFrom || end > readThrough else { return true }
        let extending = first >= readFrom && first <= readThrough + Self.windowBytes
        let from = extending ? readThrough : first
        let through = min(size, Self.roundedUp(max(end, from + Self.windowBytes)))
        if !extending { readFrom = first }
        var start = from
        while start < through {
            let length = min(Self.windowBytes, through - start)
            guard let map = mmap(nil, length, PROT_READ, MAP_SHARED, descriptor, off_t(start)), map != MAP_FAILED else { return false }
            _ = madvise(map, length, Self.hugePageAdvice)
            // Faults the window in, as reading a byte of each page would.
            let populated = madvise(map, length, Self.populateRead) == 0
            munmap(map, length)
            guard populated else { return false }
            start += length
            readThrough = start
        }
        return true
    }

    /// Advises the map of a file at `start` (2 MiB aligned) `MADV_HUGEPAGE` for its first `bytes`,
    /// rounded up to whole 2 MiB: a fault there reads the aligned 2 MiB around it in one folio.
    package static func adviseFolios(_ start: UnsafeRawPointer, bytes: Int) {
        _ = madvise(UnsafeMutableRawPointer(mutating: start), roundedUp(bytes), hugePageAdvice)
    }

    private static func roundedUp(_ offset: Int) -> Int { (offset + folioBytes - 1) / folioBytes * folioBytes }
}
