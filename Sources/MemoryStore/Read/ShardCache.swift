import _MemorySupport
import Synchronization

/// The bytes of one shard (decoded rows in the stored element type, or a blob as stored), in
/// 64-byte aligned memory this object owns and frees in `deinit`.
///
/// Pointers into it are handed out only inside ``withBytes(_:)``, which keeps the object alive
/// for the closure: a cached shard may be evicted by another thread at any moment, and an
/// optimised build releases a local reference right after its last use.
final class ShardBuffer: @unchecked Sendable {
    // Invariant: a cached buffer is written once by the decoding thread before it is shared,
    // read-only afterwards; a scratch buffer is used by one reader context at a time.
    private let bytes: UnsafeMutableRawBufferPointer

    init(byteCount: Int) {
        bytes = UnsafeMutableRawBufferPointer.allocate(byteCount: max(byteCount, 1), alignment: 64)
    }

    deinit { bytes.deallocate() }

    var byteCount: Int { bytes.count }

    /// Calls `body` with the buffer's bytes. The pointer must not escape `body`.
    func withBytes<T>(_ body: (UnsafeMutableRawBufferPointer) throws -> T) rethrows -> T {
        try withExtendedLifetime(self) { try body(bytes) }
    }
}

/// A byte-budgeted cache of decoded shards, split into stripes with a lock each so that
/// readers of different shards do not contend. Each stripe evicts with CLOCK (second chance):
/// a shard read since the hand last passed survives one more round, which keeps hot shards
/// under skewed access at the cost of one bit per entry.
final class ShardCache: Sendable {
    private struct Slot {
        var shard: Int
        var entry: ShardBuffer
        var referenced: Bool
    }

    private struct Stripe {
        var slots: [Slot] = []
        var position: [Int: Int] = [:]
        var hand = 0
        var bytes = 0
    }

    private let stripes: [Locked<Stripe>]
    private let stripeBudget: Int
    let budget: Int
    private let hits = Atomic<Int>(0)
    private let misses = Atomic<Int>(0)

    /// - Parameters:
    ///   - budget: the most bytes of decoded shards kept; 0 disables the cache.
    ///   - shardBytes: the size of a decoded shard: each stripe gets room for at least 8, up to 16 stripes.
    init(budget: Int, shardBytes: Int) {
        self.budget = max(0, budget)
        let count = min(16, max(1, self.budget / max(1, 8 * shardBytes)))
        stripes = (0..<count).map { _ in Locked(Stripe()) }
        stripeBudget = self.budget / count
    }

    /// The cached shard, marking it recently used.
    func lookup(_ shard: Int) -> ShardBuffer? {
        guard budget > 0 else { return nil }
        let found = stripes[shard % stripes.count].withLock { s -> ShardBuffer? in
            guard let i = s.position[shard] else { return nil }
            s.slots[i].referenced = true
            return s.slots[i].entry
        }
        return found
    }

    /// Whether a shard is cached, without marking it used.
    func contains(_ shard: Int) -> Bool {
        guard budget > 0 else { return false }
        return stripes[shard % stripes.count].withLock { $0.position[shard] != nil }
    }

    /// Inserts a decoded shard, evicting cold ones to stay within the budget.
    func insert(_ shard: Int, _ entry: ShardBuffer) {
        let size = entry.byteCount
        guard budget > 0, size <= stripeBudget else { return }
        stripes[shard % stripes.count].withLock { s in
            if s.position[shard] != nil { return }
            while s.bytes + size > stripeBudget && !s.slots.isEmpty {
                if s.hand >= s.slots.count { s.hand = 0 }
                if s.slots[s.hand].referenced {
                    s.slots[s.hand].referenced = false
                    s.hand += 1
                } else {
                    let victim = s.slots[s.hand]
                    s.bytes -= victim.entry.byteCount
                    s.position[victim.shard] = nil
                    let last = s.slots.count - 1
                    if s.hand != last {
                        s.slots[s.hand] = s.slots[last]
                        s.position[s.slots[s.hand].shard] = s.hand
                    }
                    s.slots.removeLast()
                }
            }
            s.position[shard] = s.slots.count
            s.slots.append(Slot(shard: shard, entry: entry, referenced: false))
            s.bytes += size
        }
    }

    /// Counts a hit or a miss for the statistics.
    func record(hits: Int, misses: Int) {
        if hits > 0 { self.hits.wrappingAdd(hits, ordering: .relaxed) }
        if misses > 0 { self.misses.wrappingAdd(misses, ordering: .relaxed) }
    }

    /// Hits, misses and bytes held.
    var statistics: (hits: Int, misses: Int, bytes: Int) {
        let bytes = stripes.reduce(0) { acc, s in acc + s.withLock { $0.bytes } }
        return (hits.load(ordering: .relaxed), misses.load(ordering: .relaxed), bytes)
    }
}
