import Foundation

/// Whether pages of a mapping are in memory (`mincore`), remembering the answers for the last
/// pages asked about: a caller walking neighbouring spans asks once a page, or once for all the
/// pages of a span it is about to walk (``learn(_:)``).
package struct PageResidency {
    private static let pageSize = max(4096, Int(sysconf(Int32(_SC_PAGESIZE))))
    /// The first page known and, from it, whether each page is in memory.
    private var first = -1
    private var known: [UInt8] = []

    package init() {}

    /// Learns, with one `mincore` call, which pages `span` touches are in memory (forgetting any
    /// other page); where the kernel cannot say, none of them.
    package mutating func learn(_ span: UnsafeRawBufferPointer) {
        guard let base = span.baseAddress else { return }
        let size = Self.pageSize, start = Int(bitPattern: base)
        first = start - start % size
        let pages = (start + max(span.count, 1) - first + size - 1) / size
        known = [UInt8](repeating: 0, count: pages)
        if mincore(UnsafeMutableRawPointer(bitPattern: first), pages * size, &known) != 0 {
            for i in known.indices { known[i] = 0 }
        }
    }

    /// Whether every page `span` touches is in memory; false where the kernel cannot say.
    package mutating func contains(_ span: UnsafeRawBufferPointer) -> Bool {
        guard let base = span.baseAddress else { return true }
        let size = Self.pageSize, start = Int(bitPattern: base)
        var p = start - start % size
        while p < start + span.count {
            let i = (p - first) / size
            if first < 0 || p < first || i >= known.count { learn(UnsafeRawBufferPointer(start: UnsafeRawPointer(bitPattern: p), count: 1)) }
            guard known[(p - first) / size] & 1 != 0 else { return false }
            p += size
        }
        return true
    }
}
