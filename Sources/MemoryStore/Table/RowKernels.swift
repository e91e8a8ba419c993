import CGatherKernel

/// Conversions of stored rows to Float, and the fused gather-reduce behind `Store.gatherReduce`
/// (the C kernel of `CGatherKernel`). Accumulation is always in Float.
enum RowKernels {
    /// f16 bit pattern to Float, for all 65,536 patterns (256 KiB, stays in cache).
    static let halfTable: [Float] = (0..<65536).map { Float(Float16(bitPattern: UInt16($0))) }

    /// Converts `count` elements of `type` at `source` to Float.
    static func convert(_ source: UnsafeRawPointer, type: ElementType, count: Int, into out: UnsafeMutablePointer<Float>) {
        switch type {
        case .f32:
            out.update(from: source.assumingMemoryBound(to: Float.self), count: count)
        case .bf16:
            let s = source.assumingMemoryBound(to: UInt16.self)
            for i in 0..<count { out[i] = Float(bitPattern: UInt32(s[i]) << 16) }
        case .f16:
            let s = source.assumingMemoryBound(to: UInt16.self)
            halfTable.withUnsafeBufferPointer { t in
                for i in 0..<count { out[i] = t[Int(s[i])] }
            }
        }
    }

    /// Rows ahead of the one being summed whose cache lines are prefetched: enough misses in
    /// flight to cover memory latency (BENCHMARKS.md, "Prefetch distance").
    static let prefetchDistance = 32

    /// The fused gather-reduce over stored rows: for each k, with `i = positions?[k] ?? k`,
    /// output row `targets?[i] ?? 0` (chunk t) += `weights[i * chunks + t]` x `rows[k]` (chunk t).
    /// Runs of consecutive rows with the same target are summed in registers; Float accumulation.
    @inline(__always)
    static func gatherReduce(_ rows: UnsafeBufferPointer<UnsafeRawPointer?>, positions: UnsafeBufferPointer<Int>?,
                             type: ElementType, dim: Int, chunks: Int, weights: UnsafePointer<Float>,
                             targets: UnsafePointer<Int>?, into out: UnsafeMutablePointer<Float>) {
        halfTable.withUnsafeBufferPointer { half in
            pkm_gather_reduce(Int32(type.code), rows.baseAddress, positions?.baseAddress, rows.count, dim, chunks,
                              weights, targets, out, prefetchDistance, half.baseAddress)
        }
    }
}
