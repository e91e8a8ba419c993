import Testing
import MemoryBenchmarks
@testable import MemoryRetrieval

/// `memtool create --core-decay D`: each head's cores sum to a matrix of singular values 1 and D.
@Suite struct SyntheticCoreTests {
    @Test(arguments: [1.0, 0.5, 0.05, 0])
    func coresSumToTheChosenSpectrum(decay: Double) {
        let c = RetrievalConfig(scoring: .tucker, heads: 3, keyDim: 8, gridRows: 16, gridCols: 16, rank: 2, cores: 3,
                                physicalRows: 256, valueDim: 4, topK: 4, topM: 8)
        let cores = SyntheticMemory.tensors(for: c, seed: 9, coreDecay: decay).cores!
        for h in 0..<c.heads {
            var m = [Double](repeating: 0, count: 4)
            for t in 0..<c.cores { for e in 0..<4 { m[e] += Double(cores[(h * c.cores + t) * 4 + e]) } }
            // For 2 x 2: σ1² + σ2² = ‖M‖², σ1 σ2 = |det M|.
            let frobenius = m.map { $0 * $0 }.reduce(0, +), det = abs(m[0] * m[3] - m[1] * m[2])
            let disc = (frobenius * frobenius - 4 * det * det).squareRoot()
            let s1 = ((frobenius + disc) / 2).squareRoot(), s2 = ((frobenius - disc) / 2).squareRoot()
            #expect(abs(s1 - 1) < 1e-5 && abs(s2 - decay) < 1e-5, "head \(h): \(s1), \(s2)")
        }
    }
}
