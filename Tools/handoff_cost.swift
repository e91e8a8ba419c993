// What handing a block of work to the second thread costs here, for three sizes of work (p50 of
// 400 calls each): one block alone; two blocks through DispatchQueue.concurrentPerform, as
// ProductKeyIndex.forEachBlock splits a batch; and, after those, two blocks with one of them
// handed to a worker thread that waits by spinning (started only then: a spinner occupies a core).
//     swiftc -O Tools/handoff_cost.swift -o /tmp/handoff_cost && /tmp/handoff_cost
// With ideal threads two blocks take as long as one alone.
import Dispatch
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

let buffer = UnsafeMutablePointer<UInt64>.allocate(capacity: 1 << 16)
for i in 0..<(1 << 16) { buffer[i] = UInt64(i) &* 0x9E3779B97F4A7C15 }

/// A block of `n` dependent steps over `buffer` (not foldable by the optimiser).
@inline(never) func block(_ n: Int, _ seed: UInt64) -> UInt64 {
    var x = seed
    for i in 0..<n { x = (x ^ buffer[i & 0xFFFF]) &* 0x100000001B3 }
    return x
}

/// One thread spinning on `posted` for the next block (its size in `size`), which it runs before
/// publishing the block's number in `done`.
final class SpinningWorker: @unchecked Sendable {
    private let posted = Atomic<Int>(0), done = Atomic<Int>(0), size = Atomic<Int>(0), stop = Atomic<Bool>(false)
    private var thread = pthread_t()
    private var sink: UInt64 = 0

    init() {
        pthread_create(&thread, nil, { argument in
            let worker = Unmanaged<SpinningWorker>.fromOpaque(argument!).takeUnretainedValue()
            var seen = 0
            while !worker.stop.load(ordering: .relaxed) {
                let job = worker.posted.load(ordering: .acquiring)
                guard job != seen else { continue }
                seen = job
                worker.sink &+= block(worker.size.load(ordering: .relaxed), UInt64(job))
                worker.done.store(job, ordering: .releasing)
            }
            return nil
        }, Unmanaged.passUnretained(self).toOpaque())
    }

    /// Runs two blocks of `n`: one here, one on the worker.
    func pair(_ n: Int, job: Int) -> UInt64 {
        size.store(n, ordering: .relaxed)
        posted.store(job, ordering: .releasing)
        let mine = block(n, UInt64(job) &+ 7)
        while done.load(ordering: .acquiring) != job {}
        return mine
    }

    /// Stops the thread and waits for it; the worker must not be used after.
    func join() {
        stop.store(true, ordering: .relaxed)
        pthread_join(thread, nil)
    }
}

func microseconds(_ body: () -> Void) -> Double {
    let start = DispatchTime.now().uptimeNanoseconds
    body()
    return Double(DispatchTime.now().uptimeNanoseconds - start) / 1000
}

func p50(_ xs: [Double]) -> String { "\((xs.sorted()[xs.count / 2] * 10).rounded() / 10) us" }

var sink: UInt64 = 0
let sizes = [20_000, 100_000, 400_000]
var rows: [(alone: [Double], dispatch: [Double], spinning: [Double])] = sizes.map { _ in ([], [], []) }
for (s, n) in sizes.enumerated() {
    for r in 0..<400 {
        rows[s].alone.append(microseconds { sink &+= block(n, UInt64(r)) })
        rows[s].dispatch.append(microseconds {
            DispatchQueue.concurrentPerform(iterations: 2) { i in if block(n, UInt64(i + r)) == 42 { print("") } }
        })
    }
}
let worker = SpinningWorker()
var job = 0
for (s, n) in sizes.enumerated() {
    for _ in 0..<400 {
        job += 1
        rows[s].spinning.append(microseconds { sink &+= worker.pair(n, job: job) })
    }
}
worker.join()
for (s, n) in sizes.enumerated() {
    print("block of \(n) steps: alone \(p50(rows[s].alone)); two through concurrentPerform \(p50(rows[s].dispatch)); two with a spinning worker \(p50(rows[s].spinning))")
}
if sink == 1 { print(sink) }
