import CGatherKernel
import Testing
import _MemorySupport
@testable import MemoryStore

/// The gather-reduce kernel against a Double reference computed from the definition.
@Suite struct GatherKernelTests {
    /// Every element type, on every code path this processor has (AVX-512 for chunks of
    /// multiples of 16, AVX2 for multiples of 8, with and without a tail below 64 columns, and
    /// the portable one), MCS chunks, runs of equal targets broken by positions (odd and even
    /// run lengths, for the AVX-512 path's pairs of rows), and rows at any byte offset. The
    /// bound is float summation's: |result − exact| ≤ (n + 1) · 2^-24 · Σ|w · x| per output
    /// element, n rows summed (in any order and grouping).
    @Test(arguments: ElementType.valueTypes, [(8, 1), (64, 1), (64, 2), (72, 1), (128, 4), (200, 1), (60, 1), (6, 3), (1, 1),
                                               (48, 1), (96, 1), (160, 2)])
    func kernelMatchesTheDefinition(type: ElementType, shape: (dim: Int, chunks: Int)) {
        for level in Int32(PKM_KERNEL_PORTABLE)...pkm_gather_reduce_level() { check(type: type, shape: shape, level: level) }
    }

    func check(type: ElementType, shape: (dim: Int, chunks: Int), level: Int32) {
        let (dim, chunks) = shape
        var rng = SeededGenerator(seed: UInt64(dim * 31 + chunks) ^ UInt64(type.code))
        let tableRows = 300, count = 500, outputs = 7
        let values = (0..<(tableRows * dim)).map { _ in rng.normal() }
        // Rows stored at an odd stride and offset, as raw rows with their checksums are.
        let stride = dim * type.size + 8, offset = 8
        var table = [UInt8](repeating: 0, count: offset + tableRows * stride)
        let encoded = type.encode(values)
        for r in 0..<tableRows {
            for b in 0..<(dim * type.size) { table[offset + r * stride + b] = encoded[r * dim * type.size + b] }
        }
        let stored = type.decode(encoded)  // the values as stored (rounded to the type)
        let picks = (0..<count).map { _ in Int(rng.next() % UInt64(tableRows)) }
        let positions = (0..<count).map { $0 }.shuffled(using: &rng)
        // Targets in runs, as a batch of bags is, then visited through the shuffled positions.
        let targets = (0..<count).map { $0 * outputs / count }
        let weights = (0..<(count * chunks)).map { _ in rng.normal() }
        var out = [Float](repeating: 0, count: outputs * dim)
        table.withUnsafeBytes { t in
            let rows = positions.map { UnsafeRawPointer?(t.baseAddress! + offset + picks[$0] * stride) }
            rows.withUnsafeBufferPointer { r in
                positions.withUnsafeBufferPointer { p in
                    RowKernels.gatherReduce(r, positions: p, type: type, dim: dim, chunks: chunks, weights: weights,
                                            targets: targets, into: &out, level: level)
                }
            }
        }
        let width = dim / chunks
        var exact = [Double](repeating: 0, count: outputs * dim), magnitude = exact, terms = [Int](repeating: 0, count: outputs)
        for i in 0..<count {
            terms[targets[i]] += 1
            for j in 0..<dim {
                let term = Double(weights[i * chunks + j / width]) * Double(stored[picks[i] * dim + j])
                exact[targets[i] * dim + j] += term
                magnitude[targets[i] * dim + j] += abs(term)
            }
        }
        for e in 0..<(outputs * dim) {
            let bound = Double(terms[e / dim] + 1) * 0x1p-24 * magnitude[e] + 1e-30
            #expect(abs(Double(out[e]) - exact[e]) <= bound, "level \(level), element \(e): \(out[e]) vs \(exact[e]) (bound \(bound))")
        }
    }

    /// The gate dots (Spec/RETRIEVAL.md, "Gates") of every element type on both code paths,
    /// widths below, at and past the vector lengths, rows at any offset visited through shuffled
    /// positions: |result − exact| ≤ (g + 1) · 2^-24 · Σ|u · x|.
    @Test(arguments: ElementType.valueTypes, [(1, 0), (3, 5), (8, 0), (16, 4), (19, 1), (64, 8), (100, 3)])
    func gateDotsMatchTheDefinition(type: ElementType, shape: (width: Int, column: Int)) {
        let (width, column) = shape, dim = column + width + 2
        for level in [Int32(PKM_KERNEL_PORTABLE), pkm_gather_reduce_level()] {
            var rng = SeededGenerator(seed: UInt64(width * 131 + column) ^ UInt64(type.code))
            let tableRows = 50, count = 120, queries = 5
            let stored = type.decode(type.encode((0..<(tableRows * dim)).map { _ in rng.normal() }))
            let encoded = type.encode(stored), stride = dim * type.size + 8, offset = 8
            var table = [UInt8](repeating: 0, count: offset + tableRows * stride)
            for r in 0..<tableRows {
                for b in 0..<(dim * type.size) { table[offset + r * stride + b] = encoded[r * dim * type.size + b] }
            }
            let inputs = (0..<(queries * width)).map { _ in rng.normal() }
            let picks = (0..<count).map { _ in Int(rng.next() % UInt64(tableRows)) }
            let slotQueries = (0..<count).map { $0 * queries / count }
            let positions = (0..<count).map { $0 }.shuffled(using: &rng)
            var out = [Float](repeating: .nan, count: count)
            table.withUnsafeBytes { t in
                let rows = positions.map { UnsafeRawPointer?(t.baseAddress! + offset + picks[$0] * stride) }
                rows.withUnsafeBufferPointer { r in
                    positions.withUnsafeBufferPointer { p in
                        RowKernels.gatherDots(r, positions: p, type: type, column: column, width: width, rowBytes: dim * type.size,
                                              inputs: inputs, queries: slotQueries, into: &out, level: level)
                    }
                }
            }
            for i in 0..<count {
                var exact = 0.0, magnitude = 0.0
                for j in 0..<width {
                    let term = Double(inputs[slotQueries[i] * width + j]) * Double(stored[picks[i] * dim + column + j])
                    exact += term
                    magnitude += abs(term)
                }
                let bound = Double(width + 1) * 0x1p-24 * magnitude + 1e-30
                #expect(abs(Double(out[i]) - exact) <= bound, "level \(level), slot \(i): \(out[i]) vs \(exact)")
            }
        }
    }
}
