/// Where the lookup-reduce reads value rows from: the store in production, an array in tests.
public protocol ValueRows: Sendable {
    /// Row dimension.
    var dim: Int { get }
    /// Number of rows.
    var rows: Int { get }
    /// For every i: output row `targets[i]` (chunk t) += `weights[i*chunks + t]` x row `indices[i]` (chunk t).
    func gatherReduce(indices: UnsafeBufferPointer<Int>, weights: UnsafeBufferPointer<Float>, chunks: Int,
                      targets: UnsafeBufferPointer<Int>, into output: UnsafeMutableBufferPointer<Float>) throws
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

    public func gatherReduce(indices: UnsafeBufferPointer<Int>, weights: UnsafeBufferPointer<Float>, chunks: Int,
                             targets: UnsafeBufferPointer<Int>, into output: UnsafeMutableBufferPointer<Float>) throws {
        let width = dim / chunks
        values.withUnsafeBufferPointer { v in
            for (i, row) in indices.enumerated() {
                let out = output.baseAddress! + targets[i] * dim
                for t in 0..<chunks {
                    let w = weights[i * chunks + t]
                    let src = v.baseAddress! + row * dim + t * width
                    for j in 0..<width { out[t * width + j] += w * src[j] }
                }
            }
        }
    }
}
