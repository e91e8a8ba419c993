import Dispatch
import Foundation
import _MemorySupport
import Synchronization

/// What one reading thread needs: a reusable read transaction, a zstd context and scratch space.
final class ReaderContext: @unchecked Sendable {
    // Invariant: used by one thread at a time; handed between threads only through ReaderContextPool's locks.
    let transaction: ReadTransaction
    let decompressor = ZstdDecompressor()
    var planes: [UInt8] = []
    /// A compressed blob copied from the file (``BlobReader``).
    private var blob: ShardBuffer?
    private var shard: ShardBuffer?

    init(env: Environment) throws {
        transaction = try ReadTransaction(env: env)
        transaction.reset()
    }

    /// A scratch buffer for a decoded shard of at least `byteCount` bytes, reused across calls.
    func scratchShard(byteCount: Int) -> ShardBuffer { Self.reuse(&shard, byteCount) }

    /// A scratch buffer for a blob read from the file, of at least `byteCount` bytes.
    func scratchBlob(byteCount: Int) -> ShardBuffer { Self.reuse(&blob, byteCount) }

    private static func reuse(_ slot: inout ShardBuffer?, _ byteCount: Int) -> ShardBuffer {
        if let slot, slot.byteCount >= byteCount { return slot }
        let fresh = ShardBuffer(byteCount: byteCount)
        slot = fresh
        return fresh
    }
}

/// Reader contexts kept per stripe, picked by the calling thread, so concurrent readers
/// rarely touch the same lock. A context holds an LMDB reader slot while pooled (reset, not
/// aborted), so the slots a store uses are its peak number of concurrent readers, and that
/// peak is capped: beyond ``maxConcurrent`` readers, a reader waits for another to finish
/// rather than exhaust the environment's slots (shared by every process).
final class ReaderContextPool: Sendable {
    private final class Stripe: Sendable {
        let contexts = Locked<[ReaderContext]>([])
    }

    private let stripes: [Stripe]
    private let env: Environment
    private let admission: DispatchSemaphore
    let maxConcurrent: Int

    init(env: Environment, stripes count: Int = 8) {
        self.env = env
        stripes = (0..<count).map { _ in Stripe() }
        maxConcurrent = min(env.maxReaders / 2, max(16, 2 * ProcessInfo.processInfo.activeProcessorCount))
        admission = DispatchSemaphore(value: maxConcurrent)
    }

    /// A context whose transaction sees the latest committed snapshot; give it back with `release`.
    func acquire() throws -> ReaderContext {
        admission.wait()
        let context: ReaderContext
        do {
            context = try idleContext() ?? ReaderContext(env: env)
        } catch {
            admission.signal()
            throw error
        }
        do {
            try context.transaction.renew()
        } catch {
            release(context)
            throw error
        }
        return context
    }

    /// An idle context from the caller's stripe, else from another one, so the slots held stay
    /// at the peak number of concurrent readers. Contexts of the process this one was forked from
    /// are dropped, not used: their reader slots are the parent's (``ReadTransaction``).
    private func idleContext() -> ReaderContext? {
        let own = stripe
        if let context = idleContext(in: own) { return context }
        for other in stripes where other !== own {
            if let context = idleContext(in: other) { return context }
        }
        return nil
    }

    /// An idle context of `stripe` that this process began, dropping the others it finds.
    private func idleContext(in stripe: Stripe) -> ReaderContext? {
        while let context = stripe.contexts.withLock({ $0.popLast() }) {
            if context.transaction.owner == getpid() { return context }
        }
        return nil
    }

    /// Ends the context's snapshot and returns it to the pool.
    func release(_ context: ReaderContext) {
        context.transaction.reset()
        stripe.contexts.withLock { $0.append(context) }
        admission.signal()
    }

    /// The stripe of the calling thread.
    private var stripe: Stripe {
        stripes[Int(UInt(bitPattern: pthread_self().hashValue) % UInt(stripes.count))]
    }
}

/// A set of indices (shard or row numbers) with lock-free membership, for "checked once per open".
final class AtomicBitmap: @unchecked Sendable {
    // Invariant: `words` is allocated in init, only touched through atomics, freed in deinit.
    private let words: UnsafeMutablePointer<Atomic<UInt64>>
    private let wordCount: Int

    init(count: Int) {
        wordCount = max(1, (count + 63) / 64)
        words = .allocate(capacity: wordCount)
        for i in 0..<wordCount { (words + i).initialize(to: Atomic(0)) }
    }

    deinit {
        words.deinitialize(count: wordCount)
        words.deallocate()
    }

    func contains(_ i: Int) -> Bool {
        words[i >> 6].load(ordering: .acquiring) & (1 << UInt64(i & 63)) != 0
    }

    /// Adds `i`; returns whether it was not yet in the set.
    @discardableResult
    func insert(_ i: Int) -> Bool {
        let bit: UInt64 = 1 << UInt64(i & 63)
        return words[i >> 6].bitwiseOr(bit, ordering: .releasing).oldValue & bit == 0
    }

    /// The words, bit `i` of the set in bit `i % 64` of word `i / 64`, for C code that reads
    /// them with atomic loads.
    var words64: UnsafePointer<UInt64> { UnsafePointer(mutableWords64) }

    /// The words, for C code that sets bits with atomic stores.
    var mutableWords64: UnsafeMutablePointer<UInt64> { UnsafeMutableRawPointer(words).assumingMemoryBound(to: UInt64.self) }
}
