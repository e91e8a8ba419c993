/// Dot products of query vectors with a table of key rows, the scoring half of retrieval.
///
/// Keys are visited in blocks and each block is scored against every query of the batch
/// before the next block is read, so a key table larger than the cache is streamed from
/// memory once per batch rather than once per query.
enum KeyScoring {
    /// `out[b * n + i] = keys[i] · queries[b]` for `n` keys of `d` floats and `batch` queries
    /// whose starts are `queryStride` floats apart.
    static func score(keys: UnsafePointer<Float>, count n: Int, dim d: Int,
                      queries: UnsafePointer<Float>, queryStride: Int, batch: Int,
                      into out: UnsafeMutablePointer<Float>) {
        let block = 64
        var i0 = 0
        while i0 < n {
            let i1 = min(n, i0 + block)
            for b in 0..<batch {
                let q = queries + b * queryStride
                let row = out + b * n
                var i = i0
                while i + 4 <= i1 {
                    dot4(keys + i * d, d, q, into: row + i)
                    i += 4
                }
                while i < i1 {
                    row[i] = dot(keys + i * d, q, d)
                    i += 1
                }
            }
            i0 = i1
        }
    }

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

    /// Four consecutive key rows against one query: the query is loaded once per step.
    @inline(__always)
    static func dot4(_ keys: UnsafePointer<Float>, _ d: Int, _ q: UnsafePointer<Float>, into out: UnsafeMutablePointer<Float>) {
        var a0 = SIMD8<Float>(), a1 = SIMD8<Float>(), a2 = SIMD8<Float>(), a3 = SIMD8<Float>()
        let rk = UnsafeRawPointer(keys), rq = UnsafeRawPointer(q)
        var j = 0
        while j + 8 <= d {
            let x = rq.loadUnaligned(fromByteOffset: 4 * j, as: SIMD8<Float>.self)
            a0 += rk.loadUnaligned(fromByteOffset: 4 * j, as: SIMD8<Float>.self) * x
            a1 += rk.loadUnaligned(fromByteOffset: 4 * (j + d), as: SIMD8<Float>.self) * x
            a2 += rk.loadUnaligned(fromByteOffset: 4 * (j + 2 * d), as: SIMD8<Float>.self) * x
            a3 += rk.loadUnaligned(fromByteOffset: 4 * (j + 3 * d), as: SIMD8<Float>.self) * x
            j += 8
        }
        var s0 = a0.sum(), s1 = a1.sum(), s2 = a2.sum(), s3 = a3.sum()
        while j < d {
            let x = q[j]
            s0 += keys[j] * x
            s1 += keys[d + j] * x
            s2 += keys[2 * d + j] * x
            s3 += keys[3 * d + j] * x
            j += 1
        }
        out[0] = s0; out[1] = s1; out[2] = s2; out[3] = s3
    }
}
