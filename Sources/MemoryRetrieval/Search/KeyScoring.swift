import COpenBLAS

/// Dot products of query vectors with a table of key rows, the scoring half of retrieval.
///
/// A batch of queries against a key table is one matrix product, done by OpenBLAS's sgemm:
/// it picks AVX2/FMA or AVX-512 kernels at run time, which Swift code compiled for baseline
/// x86-64 cannot use (measured here: 52 GFLOP/s on one core against about 9 for a SIMD8 loop).
enum KeyScoring {
    /// `out[b * n + i] = keys[i] · queries[b]` for `n` keys of `d` floats and `batch` queries
    /// whose starts are `queryStride` floats apart.
    static func score(keys: UnsafePointer<Float>, count n: Int, dim d: Int,
                      queries: UnsafePointer<Float>, queryStride: Int, batch: Int,
                      into out: UnsafeMutablePointer<Float>) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(batch), Int32(n), Int32(d),
                    1, queries, Int32(queryStride), keys, Int32(d), 0, out, Int32(n))
    }

    /// Keeps OpenBLAS to the calling thread: the index already runs one block of queries per core.
    /// Process-wide; see `ProductKeyIndex.init(config:tensors:threads:limitsBLASThreads:)`.
    static let singleThreaded: Void = openblas_set_num_threads(1)

    /// One dot product of `d` floats.
    @inline(__always)
    static func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ d: Int) -> Float {
        var acc0 = SIMD8<Float>(), acc1 = SIMD8<Float>()
        var j = 0
        let ra = UnsafeRawPointer(a), rb = UnsafeRawPointer(b)
        while j + 16 <= d {
            acc0 += ra.loadUnaligned(fromByteOffset: 4 * j, as: SIMD8<Float>.self) * rb.loadUnaligned(fromByteOffset: 4 * j, as: SIMD8<Float>.self)
            acc1 += ra.loadUnaligned(fromByteOffset: 4 * j + 32, as: SIMD8<Float>.self) * rb.loadUnaligned(fromByteOffset: 4 * j + 32, as: SIMD8<Float>.self)
            j += 16
        }
        var sum = (acc0 + acc1).sum()
        while j < d {
            sum += a[j] * b[j]
            j += 1
        }
        return sum
    }
}
