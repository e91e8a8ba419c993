/// Where the lookup-reduce reads value rows from: the store in production, an array in tests.
public protocol ValueRows: Sendable {
    /// Row dimension.
    var dim: Int { get }
    /// Number of rows.
    var rows: Int { get }
    /// For every i: output row `targets[i]` (chunk t) += `weights[i*chunks + t]` x row `indices[i]`
    /// (chunk t), over the first `width` elements of each row (output rows of `width`).
    func gatherReduce(indices: UnsafeBufferPointer<Int>, weights: UnsafeBufferPointer<Float>, chunks: Int, width: Int,
                      targets: UnsafeBufferPointer<Int>, into output: UnsafeMutableBufferPointer<Float>) throws
    /// For every i: `scores[i]` = Σ_j `inputs[queries[i] * width + j]` x row `indices[i]` `[column + j]`
    /// (a gated layer's gate dots, Spec/RETRIEVAL.md, "Gates").
    func gatherDots(indices: UnsafeBufferPointer<Int>, column: Int, width: Int, inputs: UnsafeBufferPointer<Float>,
                    queries: UnsafeBufferPointer<Int>, into scores: UnsafeMutableBufferPointer<Float>) throws
}

/// A value table held in memory as Float, row-major.
public struct DenseValueRows: ValueRows {
    public let values: [Float]
    public let dim: Int
    public var rows: Int { values.count / dim }

    public init(values: [Float], dim: Int) {
        self.values = values
        self.dim = dim
    }

    public func gatherReduce(indices: UnsafeBufferPointer<Int>, weights: UnsafeBufferPointer<Float>, chunks: Int, width: Int,
                             targets: UnsafeBufferPointer<Int>, into output: UnsafeMutableBufferPointer<Float>) throws {
        let chunk = width / chunks
        values.withUnsafeBufferPointer { v in
            for (i, row) in indices.enumerated() {
                let out = output.baseAddress! + targets[i] * width
                for t in 0..<chunks {
                    let w = weights[i * chunks + t]
                    let src = v.baseAddress! + row * dim + t * chunk
                    for j in 0..<chunk { out[t * chunk + j] += w * src[j] }
                }
            }
        }
    }

    public func gatherDots(indices: UnsafeBufferPointer<Int>, column: Int, width: Int, inputs: UnsafeBufferPointer<Float>,
                           queries: UnsafeBufferPointer<Int>, into scores: UnsafeMutableBufferPointer<Float>) throws {
        for (i, row) in indices.enumerated() {
            var sum: Float = 0
            for j in 0..<width { sum += inputs[queries[i] * width + j] * values[row * dim + column + j] }
            scores[i] = sum
        }
    }
}
