import CGatherKernel
import _MemorySupport

/// The fused gather-reduce behind `Store.gatherReduce`
/// (the C kernel of `CGatherKernel`). Accumulation is always in Float.
package enum RowKernels {
    /// Rows ahead of the one being summed whose cache lines are prefetched: enough misses in
    /// flight to cover memory latency (BENCHMARKS.md, "Prefetch distance").
    package static let prefetchDistance = 32

    /// The fused gather-reduce over stored rows: for each k, with `i = positions?[k] ?? k`,
    /// output row `targets?[i] ?? 0` (chunk t) += `weights[i * chunks + t]` x `rows[k]` (chunk t).
    /// Runs of consecutive rows with the same target are summed in registers; Float accumulation.
    /// - Parameter level: the most capable code path to use (`PKM_KERNEL_*`); by default the processor's best.
    @inline(__always)
    package static func gatherReduce(_ rows: UnsafeBufferPointer<UnsafeRawPointer?>, positions: UnsafeBufferPointer<Int>?,
                             type: ElementType, dim: Int, chunks: Int, weights: UnsafePointer<Float>,
                             targets: UnsafePointer<Int>?, into out: UnsafeMutablePointer<Float>,
                             level: Int32 = Int32(PKM_KERNEL_AVX512)) {
        HalfPrecision.f16Table.withUnsafeBufferPointer { half in
            pkm_gather_reduce_at(level, Int32(type.code), rows.baseAddress, positions?.baseAddress, rows.count, dim, chunks,
                                 weights, targets, out, prefetchDistance, half.baseAddress)
        }
    }

    /// `gatherReduce` over rows `indices` of the table `map` describes, each row located by the
    /// kernel as it prefetches it (`pkm_gather_reduce_rows`): `rows` receives their addresses, and
    /// `unchecked` the positions of rows whose group is not yet checked (both hold
    /// `indices.count`), which are summed with the rest; returns how many there are, or nil when
    /// an index was not below `map.rows` or a target not below `outputs` (the kernel checks them
    /// as it reads them; the sums are then not to be used).
    @inline(__always)
    package static func gatherReduce(_ indices: UnsafeBufferPointer<Int>, map: pkm_row_map, type: ElementType, dim: Int, chunks: Int,
                                     weights: UnsafePointer<Float>, targets: UnsafePointer<Int>?, into out: UnsafeMutablePointer<Float>,
                                     outputs: Int, rows: UnsafeMutablePointer<UnsafeRawPointer?>, unchecked: UnsafeMutablePointer<Int>,
                                     level: Int32 = Int32(PKM_KERNEL_AVX512)) -> Int? {
        var map = map
        let n = HalfPrecision.f16Table.withUnsafeBufferPointer { half in
            pkm_gather_reduce_rows_at(level, Int32(type.code), &map, indices.baseAddress, indices.count, dim, chunks, weights, targets, out,
                                      outputs, prefetchDistance, half.baseAddress, rows, unchecked)
        }
        return n < 0 ? nil : n  // SIZE_MAX, as Int
    }

    /// The row map of a flat table of `rows` rows: row `r` at `base + r × rowBytes`.
    package static func flatMap(base: UnsafeRawPointer, rowBytes: Int, rows: Int) -> pkm_row_map {
        pkm_row_map(base: base.assumingMemoryBound(to: CChar.self), row_bytes: rowBytes, shard_rows: nil, rows_per_shard: 0,
                    shard_multiplier: 0, row_offsets: nil, checked: nil, checked_shift: 0, group_shift: 0, rows: rows,
                    escape_rows: nil, escapes_checked: nil)
    }

    /// The per-slot gate dots behind `Store.gatherDots`: for each k, with `i = positions?[k] ?? k`,
    /// `out[i]` = Σ_j `inputs[queries[i] * width + j]` x `rows[k][column + j]`, in Float; whole
    /// rows of `rowBytes` are prefetched ahead, for the reduce that reads them next.
    @inline(__always)
    package static func gatherDots(_ rows: UnsafeBufferPointer<UnsafeRawPointer?>, positions: UnsafeBufferPointer<Int>?,
                                   type: ElementType, column: Int, width: Int, rowBytes: Int, inputs: UnsafePointer<Float>,
                                   queries: UnsafePointer<Int>, into out: UnsafeMutablePointer<Float>,
                                   level: Int32 = Int32(PKM_KERNEL_AVX512)) {
        HalfPrecision.f16Table.withUnsafeBufferPointer { half in
            pkm_gather_dot_at(level, Int32(type.code), rows.baseAddress, positions?.baseAddress, rows.count, column, width, inputs,
                              queries, out, prefetchDistance, rowBytes, half.baseAddress)
        }
    }
}
