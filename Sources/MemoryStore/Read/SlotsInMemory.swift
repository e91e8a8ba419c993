import Synchronization
import _MemorySupport

/// A nibble table's slots copied into memory, back to back in huge pages, when they fit the
/// store's cache budget: the background check copies them once it has checked every group, and
/// from then on the nibble kernel locates each row's slot there as in a flat table instead of in
/// its shard in the map. The kernel and its order of summation are the same, so sums keep their
/// bits; escaped rows are still read from their shards. The gain is the locating and the pages:
/// no shard to find a row in, and 2 MiB pages where the map has 4 KiB ones (BENCHMARKS.md,
/// "Nibble slots in memory"). Costs the slots' bytes (0.75 of the raw rows for bf16).
final class SlotsInMemory: Sendable {
    let rowCount: Int
    let slotBytes: Int
    private let buffer = Locked<HugePageBuffer?>(nil)
    /// The buffer's base once filled, 0 before.
    private let published = Atomic<Int>(0)

    init(rows: Int, slotBytes: Int) {
        rowCount = rows
        self.slotBytes = slotBytes
    }

    /// The slots, row r's at `base + r × slotBytes`, once copied; nil before. Valid for the life of this object.
    var base: UnsafeRawPointer? { UnsafeRawPointer(bitPattern: published.load(ordering: .acquiring)) }

    var bytes: Int { rowCount * slotBytes }

    /// Whether the memory is there for the copy: at most a quarter of what the system has available.
    var fits: Bool { bytes <= HugePageBuffer.availableBytes / 4 }

    /// Copies every slot of `index`, whose groups have all been checked, and publishes them; does
    /// nothing when `stop` answers true on the way, or the memory is not there (``fits``).
    func fill(from index: RawRowIndex, until stop: () -> Bool) {
        guard base == nil, fits, let slots = HugePageBuffer(count: bytes) else { return }
        guard index.copySlots(into: slots.base, until: stop) else { return }
        buffer.withLock { $0 = slots }
        published.store(Int(bitPattern: slots.base), ordering: .releasing)
    }
}
