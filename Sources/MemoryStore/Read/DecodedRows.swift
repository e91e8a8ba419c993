import Synchronization
import _MemorySupport

/// A nibble table's rows decoded once into memory, when they fit the store's cache budget: the
/// background check decodes them after it has checked every group, and from then on reads sum
/// them as a flat table of raw rows in huge pages (as a resident table's), at the memory
/// system's rate, instead of decoding each slot as they sum it (BENCHMARKS.md, "Decoded nibble
/// rows"). The nibble kernel sums them exactly as it sums the slots, escaped rows apart as
/// escaped slots are, so that a reduce gives the same bits before and after (the reads need not
/// agree on when they switched). Costs as much memory as the raw rows, which the cache budget
/// bounds, and a bit a row.
final class DecodedRows: @unchecked Sendable {
    // Invariant: `escaped` is written only by `fill`, before `published` is set; read-only after.
    let rowCount: Int
    let rowBytes: Int
    private let buffer = Locked<HugePageBuffer?>(nil)
    /// Bit r set when row r's slot is escaped.
    let escaped: UnsafeMutablePointer<UInt64>
    /// The buffer's base once filled, 0 before.
    private let published = Atomic<Int>(0)

    init(rows: Int, rowBytes: Int) {
        rowCount = rows
        self.rowBytes = rowBytes
        escaped = .allocate(capacity: rows / 64 + 1)
        escaped.initialize(repeating: 0, count: rows / 64 + 1)
    }

    deinit { escaped.deallocate() }

    /// The rows, back to back, once decoded; nil before. Valid for the life of this object.
    var base: UnsafeRawPointer? { UnsafeRawPointer(bitPattern: published.load(ordering: .acquiring)) }

    var bytes: Int { rowCount * rowBytes }

    /// Decodes every row of `index`, whose groups have all been checked, and publishes them;
    /// does nothing when `stop` answers true on the way, or the memory is not there (at most a
    /// quarter of what the system has available).
    func fill(from index: RawRowIndex, until stop: () -> Bool) {
        guard base == nil, bytes <= HugePageBuffer.availableBytes / 4, let rows = HugePageBuffer(count: bytes) else { return }
        guard (try? index.decodeAll(into: rows.base, escaped: escaped, until: stop)) == true else { return }
        buffer.withLock { $0 = rows }
        published.store(Int(bitPattern: rows.base), ordering: .releasing)
    }
}
