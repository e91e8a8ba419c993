import MemoryFormat

/// A tensor inside a file: its type, shape and where its bytes are.
public struct TensorEntry: Sendable, Equatable {
    public var name: String
    public var dtype: ElementType
    public var shape: [Int]
    /// Absolute offset of the first byte in the file.
    public var offset: Int
    public var byteCount: Int
    /// The file that holds the bytes.
    public var path: String

    public var elementCount: Int { shape.reduce(1, *) }

    /// Loads the whole tensor; callers stream large ones with `RandomAccessFile` instead.
    public func load() throws -> Tensor {
        let file = try RandomAccessFile(path: path)
        return try Tensor(dtype: dtype, shape: shape, bytes: file.read(at: offset, count: byteCount))
    }
}
