// What handing a block of work to a second thread costs here: one iteration of a memory-bound
// loop alone, then two through DispatchQueue.concurrentPerform (as ProductKeyIndex.forEachBlock
// splits a batch), p50 and p90 of 400 calls each, for three sizes of work.
//     swiftc -O Tools/handoff_cost.swift -o /tmp/handoff_cost && /tmp/handoff_cost
// With ideal threads the pair takes as long as one iteration alone.
import Dispatch

let buffer = UnsafeMutablePointer<UInt64>.allocate(capacity: 1 << 16)
for i in 0..<(1 << 16) { buffer[i] = UInt64(i) &* 0x9E3779B97F4A7C15 }
@inline(never) func work(_ n: Int, _ seed: UInt64) -> UInt64 {
    var x = seed
    for i in 0..<n { x = (x ^ buffer[i & 0xFFFF]) &* 0x100000001B3 }
    return x
}
var sink: UInt64 = 0
for n in [20_000, 100_000, 400_000] {
    var alone: [Double] = [], pair: [Double] = []
    for r in 0..<400 {
        var t0 = DispatchTime.now().uptimeNanoseconds
        sink &+= work(n, UInt64(r))
        alone.append(Double(DispatchTime.now().uptimeNanoseconds - t0) / 1000)
        t0 = DispatchTime.now().uptimeNanoseconds
        DispatchQueue.concurrentPerform(iterations: 2) { i in if work(n, UInt64(i + r)) == 42 { print("!") } }
        pair.append(Double(DispatchTime.now().uptimeNanoseconds - t0) / 1000)
    }
    alone.sort(); pair.sort()
    print("work \(n): one iteration alone p50 \(alone[200]) us; two iterations through concurrentPerform p50 \(pair[200]) us, p90 \(pair[360]) us")
}
if sink == 1 { print(sink) }
