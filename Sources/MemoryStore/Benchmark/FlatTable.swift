import Foundation

/// A value table as one uncompressed, memory-mapped file of rows: the baseline that store
/// reads are measured against.
public final class FlatTable: @unchecked Sendable {
    // Invariant: the mapping is read-only and lives until deinit.
    public let rows: Int
    public let dim: Int
    public let elementType: ElementType
    private let base: UnsafeRawPointer
    private let length: Int

    /// Writes `bytes` (rows of `elementType`) to `path` and maps it.
    public init(path: String, bytes: [UInt8], dim: Int, elementType: ElementType) throws {
        guard FileManager.default.createFile(atPath: path, contents: Data(bytes)) else {
            throw StoreError.invalidArgument("cannot write '\(path)'")
        }
        let fd = Foundation.open(path, O_RDONLY)
        guard fd >= 0 else { throw StoreError.invalidArgument("cannot open '\(path)'") }
        defer { close(fd) }
        guard let p = mmap(nil, bytes.count, PROT_READ, MAP_SHARED, fd, 0), p != MAP_FAILED else {
            throw StoreError.invalidArgument("cannot map '\(path)'")
        }
        base = UnsafeRawPointer(p)
        length = bytes.count
        self.dim = dim
        self.elementType = elementType
        rows = bytes.count / (dim * elementType.size)
    }

    deinit { munmap(UnsafeMutableRawPointer(mutating: base), length) }

    /// Row `index` converted to Float, with the same kernel the store uses.
    public func row(_ index: Int, into out: UnsafeMutablePointer<Float>) {
        RowKernels.convert(base + index * dim * elementType.size, type: elementType, count: dim, into: out)
    }

    /// The weighted sum of rows, with the same kernel as `Store.gatherReduce`.
    public func gatherReduce(indices: UnsafeBufferPointer<Int>, weights: UnsafeBufferPointer<Float>, chunks: Int,
                             into out: UnsafeMutablePointer<Float>) {
        let rowBytes = dim * elementType.size
        for (i, r) in indices.enumerated() {
            RowKernels.accumulate(base + r * rowBytes, type: elementType, dim: dim, chunks: chunks,
                                  weights: weights.baseAddress! + i * chunks, into: out)
        }
    }
}
