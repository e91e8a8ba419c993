import Foundation

/// Whether pages of a mapping are in memory (`mincore`), remembering the answer for the last
/// page asked about: a caller walking neighbouring spans asks once a page.
package struct PageResidency {
    private static let pageSize = max(4096, Int(sysconf(Int32(_SC_PAGESIZE))))
    private var page = -1, resident = false

    package init() {}

    /// Whether every page `span` touches is in memory; false where the kernel cannot say.
    package mutating func contains(_ span: UnsafeRawBufferPointer) -> Bool {
        guard let base = span.baseAddress else { return true }
        let size = Self.pageSize, start = Int(bitPattern: base)
        var p = start - start % size
        while p < start + span.count {
            if p != page {
                var vec: UInt8 = 0
                page = p
                resident = mincore(UnsafeMutableRawPointer(bitPattern: p), size, &vec) == 0 && vec & 1 != 0
            }
            guard resident else { return false }
            p += size
        }
        return true
    }
}
