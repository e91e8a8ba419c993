import Foundation
import Synchronization
import Testing
import _MemorySupport

/// The worker pool that splits a batch across cores (``WorkerPool``): every task runs exactly
/// once and `run` returns only after all have, whatever the helpers are doing (spinning,
/// asleep, busy with another caller's loop).
@Suite struct WorkerPoolTests {
    /// Counts the calls of each task of one loop (behind `Locked`, which ThreadSanitizer sees).
    final class Tally: Sendable {
        let count: Int
        private let counts: Locked<[Int]>
        init(_ n: Int) { count = n; counts = Locked([Int](repeating: 0, count: n)) }
        func hit(_ i: Int) { counts.withLock { $0[i] += 1 } }
        var all: [Int] { counts.withLock { $0 } }
    }

    @Test(arguments: [0, 1, 2, 3, 17, 1000])
    func everyTaskRunsOnce(tasks: Int) {
        let pool = WorkerPool(spin: .microseconds(200))
        for helpers in [0, 1, 4] {
            let tally = Tally(tasks)
            pool.run(tasks: tasks, helpers: helpers) { tally.hit($0) }
            #expect(tally.all == [Int](repeating: 1, count: tasks), "helpers \(helpers)")
        }
    }

    /// Thousands of short loops back to back, as lookups of small batches come: a helper that
    /// arrives late for one loop must take nothing of it, nor of the next.
    @Test func shortLoopsBackToBack() {
        let pool = WorkerPool(spin: .milliseconds(1))
        let total = Atomic<Int>(0)
        for round in 0..<5000 {
            let tally = Tally(2 + round % 3)
            pool.run(tasks: tally.count, helpers: 1) { i in
                tally.hit(i)
                total.add(1, ordering: .relaxed)
            }
            guard tally.all.allSatisfy({ $0 == 1 }) else {
                Issue.record("round \(round): \(tally.all)")
                return
            }
        }
        #expect(total.load(ordering: .relaxed) == (0..<5000).reduce(0) { $0 + 2 + $1 % 3 })
    }

    /// Helpers that have gone to sleep (no loop for longer than their spin) are woken by the next loop.
    @Test func sleepingHelpersWake() throws {
        let pool = WorkerPool(spin: .microseconds(50))
        for _ in 0..<20 {
            Thread.sleep(forTimeInterval: 0.002)
            let tally = Tally(8)
            pool.run(tasks: 8, helpers: 1) { i in
                tally.hit(i)
                if i == 0 { Thread.sleep(forTimeInterval: 0.0005) }  // leaves tasks to a woken helper
            }
            #expect(tally.all == [Int](repeating: 1, count: 8))
        }
    }

    /// A loop inside a task, and loops from several threads at once, run their tasks on their
    /// own threads (the pool serves one loop at a time), each task once.
    @Test func nestedAndConcurrentLoops() {
        let pool = WorkerPool(spin: .microseconds(200))
        let outer = Tally(4), inner = Tally(4 * 16)
        pool.run(tasks: 4, helpers: 1) { i in
            outer.hit(i)
            pool.run(tasks: 16, helpers: 1) { j in inner.hit(i * 16 + j) }
        }
        #expect(outer.all == [Int](repeating: 1, count: 4))
        #expect(inner.all == [Int](repeating: 1, count: 64))
        let callers = Tally(6 * 200)
        DispatchQueue.concurrentPerform(iterations: 6) { c in
            for round in 0..<20 {
                pool.run(tasks: 10, helpers: 1) { j in callers.hit(c * 200 + round * 10 + j) }
            }
        }
        #expect(callers.all == [Int](repeating: 1, count: 1200))
    }

    /// A pool released with its threads spinning or asleep stops them (its deinit joins them).
    @Test func releasedPoolStops() {
        for _ in 0..<10 {
            let pool = WorkerPool(spin: .microseconds(100))
            let tally = Tally(4)
            pool.run(tasks: 4, helpers: 1) { tally.hit($0) }
            #expect(tally.all == [1, 1, 1, 1])
        }
    }
}
