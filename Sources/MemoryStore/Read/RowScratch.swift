import _MemorySupport

/// Per-call working memory of a batched read: a row pointer and a position per row, and room for
/// rows decoded on the way (a nibble table's). Kept in a
/// pool between calls: a fresh buffer of this size would come from mmap and cost the kernel a
/// page-zeroing pass on every batch.
final class RowScratch: @unchecked Sendable {
    // Invariant: used by one call at a time; handed between threads only through the pool's lock.
    let pointers: UnsafeMutableBufferPointer<UnsafeRawPointer?>
    let positions: UnsafeMutableBufferPointer<Int>
    private var decoded: UnsafeMutableRawBufferPointer?

    init(capacity: Int) {
        pointers = .allocate(capacity: capacity)
        positions = .allocate(capacity: capacity)
    }

    deinit {
        pointers.deallocate()
        positions.deallocate()
        decoded?.deallocate()
    }

    /// At least `bytes` bytes for decoded rows, 64-byte aligned (kept for the next call).
    func decodedRows(bytes: Int) -> UnsafeMutableRawPointer {
        if let decoded, decoded.count >= bytes { return decoded.baseAddress! }
        decoded?.deallocate()
        decoded = .allocate(byteCount: bytes, alignment: 64)
        return decoded!.baseAddress!
    }
}

/// A pool of ``RowScratch``, which keeps at most a few and lets larger ones replace smaller.
final class RowScratchPool: Sendable {
    private let idle = Locked<[RowScratch]>([])

    /// Scratch for at least `count` rows.
    func take(count: Int) -> RowScratch {
        idle.withLock { pool in
            if let i = pool.firstIndex(where: { $0.pointers.count >= count }) { return pool.remove(at: i) }
            return nil
        } ?? RowScratch(capacity: max(count, 1024))
    }

    func give(_ scratch: RowScratch) {
        idle.withLock { pool in
            pool.append(scratch)
            if pool.count > 8, let smallest = pool.indices.min(by: { pool[$0].pointers.count < pool[$1].pointers.count }) {
                pool.remove(at: smallest)
            }
        }
    }
}
