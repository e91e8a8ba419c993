import CSpinWait
import Foundation
import Synchronization

/// Threads that run the parts of a parallel loop and stay between loops, waiting by spinning for
/// a while before they sleep: handing a part to a spinning thread costs about nothing, where
/// `DispatchQueue.concurrentPerform` adds 25-140 us a loop here (`Tools/handoff_cost.swift`,
/// BENCHMARKS.md), as long as a batch of 256 lookups in cache takes. OpenMP's workers, which
/// PyTorch's kernels run on, wait the same way.
///
/// One pool serves the process (``shared``), as one OpenMP team does, so that the spinning
/// threads of one caller never compete for cores with another's. A loop that finds the pool
/// busy (another thread's loop, or a loop inside one of its parts) runs its parts itself, in order.
package final class WorkerPool: Sendable {
    package static let shared = WorkerPool()

    private let crew: Crew

    /// - Parameter spin: how long an idle thread waits by spinning before it sleeps.
    package init(spin: Duration = .milliseconds(1)) {
        let (seconds, attoseconds) = spin.components
        crew = Crew(spinNanoseconds: UInt64(seconds) * 1_000_000_000 + UInt64(attoseconds / 1_000_000_000))
    }

    deinit { crew.stop() }

    /// The most helper threads a loop gets: one fewer than the processors this process may run on.
    package static let maxHelpers = min(Crew.maxSeats, max(0, ProcessInfo.processInfo.activeProcessorCount - 1))

    /// Calls `body(i)` for every `i` in `0 ..< tasks`, on this thread and up to `helpers` of the
    /// pool's (at most ``maxHelpers``), each `i` once, and returns when every call has returned.
    /// The threads are started on first need.
    package func run(tasks: Int, helpers: Int, _ body: @Sendable (Int) -> Void) {
        let helpers = min(helpers, tasks - 1, Self.maxHelpers)
        guard helpers > 0, crew.busy.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged else {
            for i in 0..<max(0, tasks) { body(i) }
            return
        }
        defer { crew.busy.store(false, ordering: .releasing) }
        crew.hire(helpers)
        var start = 0
        while start < tasks {
            let count = min(tasks - start, Crew.maxTasks), first = start
            crew.runJob(count: count, seats: helpers) { body(first + $0) }
            start += count
        }
    }
}

/// The threads of a ``WorkerPool`` and the job they share, which each thread keeps alive.
///
/// A job is one 64-bit word: its generation (20 bits), the helper seats left (8), its task count
/// (18) and the next task to claim (18). A helper takes a seat, then tasks, each with one
/// compare-and-exchange on the word, so a thread that arrives late for a job (the word has moved
/// on) can take neither.
final class Crew: @unchecked Sendable {
    // Invariant: `task` is written only by the thread holding `busy`, before it publishes a job
    // (a release store of `job`) and after every task of the job has finished (`done` read with
    // acquire); between those it is read only by threads that claimed a task of the job.
    private nonisolated(unsafe) var task: ((Int) -> Void)?
    private let job = Atomic<UInt64>(0)
    private let done = Atomic<Int>(0)
    let busy = Atomic<Bool>(false)
    private let sleepers = Atomic<Int>(0)
    private let stopping = Atomic<Bool>(false)
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let wake = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private let threads = Locked<[pthread_t]>([])
    private let spinNanoseconds: UInt64

    static let maxSeats = 255
    static let maxTasks = (1 << 18) - 1

    init(spinNanoseconds: UInt64) {
        self.spinNanoseconds = spinNanoseconds
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(wake, nil)
    }

    deinit {
        pthread_cond_destroy(wake)
        pthread_mutex_destroy(mutex)
        wake.deallocate()
        mutex.deallocate()
    }

    private static func generation(_ word: UInt64) -> UInt64 { word >> 44 }
    private static func seats(_ word: UInt64) -> UInt64 { (word >> 36) & 0xFF }
    private static func count(_ word: UInt64) -> UInt64 { (word >> 18) & 0x3FFFF }
    private static func next(_ word: UInt64) -> UInt64 { word & 0x3FFFF }
    private static let seat: UInt64 = 1 << 36

    /// Starts threads until there are `count`.
    func hire(_ count: Int) {
        threads.withLock { threads in
            while threads.count < count {
                var thread = pthread_t()
                let crew = Unmanaged.passRetained(self).toOpaque()
                guard pthread_create(&thread, nil, { crew in
                    let crew = Unmanaged<Crew>.fromOpaque(crew!).takeRetainedValue()
                    crew.work()
                    return nil
                }, crew) == 0 else {
                    Unmanaged<Crew>.fromOpaque(crew).release()  // no thread: the loop runs on fewer
                    return
                }
                threads.append(thread)
            }
        }
    }

    /// Publishes a job of `count` tasks with `seats` helper seats, runs tasks of it until none
    /// is left, and waits for the helpers' tasks to finish.
    func runJob(count: Int, seats: Int, _ body: (Int) -> Void) {
        withoutActuallyEscaping(body) { body in
            task = body
            done.store(0, ordering: .relaxed)
            let generation = (Self.generation(job.load(ordering: .relaxed)) + 1) & 0xFFFFF
            // Sequentially consistent with the sleepers count, against a helper going to sleep
            // (`sleep(after:)`): either it sees this job, or this thread sees it sleeping.
            job.store(generation << 44 | UInt64(seats) << 36 | UInt64(count) << 18, ordering: .sequentiallyConsistent)
            if sleepers.load(ordering: .sequentiallyConsistent) > 0 {
                pthread_mutex_lock(mutex)
                pthread_cond_broadcast(wake)
                pthread_mutex_unlock(mutex)
            }
            runTasks(of: generation)
            while done.load(ordering: .acquiring) < count { pkm_spin_pause() }
            task = nil
        }
    }

    /// Claims and runs tasks of job `generation` until none is left.
    private func runTasks(of generation: UInt64) {
        var word = job.load(ordering: .acquiring)
        while Self.generation(word) == generation && Self.next(word) < Self.count(word) {
            let (claimed, current) = job.compareExchange(expected: word, desired: word + 1, ordering: .acquiring)
            guard claimed else { word = current; continue }
            task!(Int(Self.next(word)))
            done.add(1, ordering: .releasing)
            word = job.load(ordering: .acquiring)
        }
    }

    /// Takes a helper seat in the job of `word`, if it has one left and tasks to claim.
    private func takeSeat(_ word: UInt64) -> Bool {
        var current = word
        while Self.generation(current) == Self.generation(word) && Self.seats(current) > 0 && Self.next(current) < Self.count(current) {
            let (taken, now) = job.compareExchange(expected: current, desired: current - Self.seat, ordering: .acquiring)
            if taken { return true }
            current = now
        }
        return false
    }

    /// A helper's life: each new job joined while there are seats; between jobs, spinning, then sleeping.
    private func work() {
        var seen = Self.generation(job.load(ordering: .acquiring))
        var idleSince = DispatchTime.now().uptimeNanoseconds
        var spins = 0
        while !stopping.load(ordering: .relaxed) {
            let word = job.load(ordering: .acquiring)
            if Self.generation(word) != seen {
                seen = Self.generation(word)
                if takeSeat(word) { runTasks(of: seen) }
                idleSince = DispatchTime.now().uptimeNanoseconds
                continue
            }
            pkm_spin_pause()
            spins &+= 1
            if spins & 63 == 0 && DispatchTime.now().uptimeNanoseconds - idleSince > spinNanoseconds {
                sleep(after: seen)
                idleSince = DispatchTime.now().uptimeNanoseconds
            }
        }
    }

    /// Sleeps until a job after generation `seen` is published, or the crew stops.
    private func sleep(after seen: UInt64) {
        pthread_mutex_lock(mutex)
        sleepers.add(1, ordering: .sequentiallyConsistent)
        while Self.generation(job.load(ordering: .sequentiallyConsistent)) == seen && !stopping.load(ordering: .sequentiallyConsistent) {
            pthread_cond_wait(wake, mutex)
        }
        sleepers.subtract(1, ordering: .sequentiallyConsistent)
        pthread_mutex_unlock(mutex)
    }

    /// Stops every thread and waits for it to end.
    func stop() {
        stopping.store(true, ordering: .sequentiallyConsistent)
        pthread_mutex_lock(mutex)
        pthread_cond_broadcast(wake)
        pthread_mutex_unlock(mutex)
        for thread in threads.withLock({ $0 }) { pthread_join(thread, nil) }
    }
}
