/// The leading singular pair of a small square matrix, with the sign rule of Spec/RETRIEVAL.md:
/// both vectors flipped together so that u's entry of largest magnitude is positive.
///
/// Computed in Double from the symmetric eigenproblem of CᵀC by cyclic Jacobi rotations
/// (r is the Tucker rank, a handful at most): v is the top eigenvector, u = C v / ‖C v‖.
func leadingSingularPair(_ c: [Float], size r: Int) -> (u: [Float], v: [Float]) {
    let m = c.map(Double.init)
    var a = [Double](repeating: 0, count: r * r)  // CᵀC
    for i in 0..<r { for j in 0..<r { for k in 0..<r { a[i * r + j] += m[k * r + i] * m[k * r + j] } } }
    var vectors = [Double](repeating: 0, count: r * r)
    for i in 0..<r { vectors[i * r + i] = 1 }
    for _ in 0..<64 {
        var off = 0.0
        for p in 0..<r { for q in (p + 1)..<r { off += a[p * r + q] * a[p * r + q] } }
        if off < 1e-30 { break }
        for p in 0..<r {
            for q in (p + 1)..<r where a[p * r + q] != 0 {
                let theta = (a[q * r + q] - a[p * r + p]) / (2 * a[p * r + q])
                let t = (theta >= 0 ? 1.0 : -1.0) / (abs(theta) + (theta * theta + 1).squareRoot())
                let cs = 1 / (t * t + 1).squareRoot(), sn = t * cs
                for k in 0..<r {  // A ← JᵀAJ, columns then rows
                    let akp = a[k * r + p], akq = a[k * r + q]
                    a[k * r + p] = cs * akp - sn * akq
                    a[k * r + q] = sn * akp + cs * akq
                }
                for k in 0..<r {
                    let apk = a[p * r + k], aqk = a[q * r + k]
                    a[p * r + k] = cs * apk - sn * aqk
                    a[q * r + k] = sn * apk + cs * aqk
                }
                for k in 0..<r {
                    let vkp = vectors[k * r + p], vkq = vectors[k * r + q]
                    vectors[k * r + p] = cs * vkp - sn * vkq
                    vectors[k * r + q] = sn * vkp + cs * vkq
                }
            }
        }
    }
    var best = 0
    for i in 1..<max(1, r) where a[i * r + i] > a[best * r + best] { best = i }
    var v = (0..<r).map { vectors[$0 * r + best] }
    var u = (0..<r).map { i in (0..<r).reduce(0.0) { $0 + m[i * r + $1] * v[$1] } }
    let norm = u.reduce(0) { $0 + $1 * $1 }.squareRoot()
    if norm == 0 {
        // C = 0: every direction is singular; take the first axis.
        u = (0..<r).map { $0 == 0 ? 1 : 0 }
        v = u
    } else {
        u = u.map { $0 / norm }
    }
    var lead = 0
    for i in 1..<max(1, r) where abs(u[i]) > abs(u[lead]) { lead = i }
    if u[lead] < 0 {
        u = u.map { -$0 }
        v = v.map { -$0 }
    }
    return (u.map(Float.init), v.map(Float.init))
}
