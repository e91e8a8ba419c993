import Foundation
import MemoryFormat
import _MemorySupport

/// A safetensors file: an 8-byte little-endian header length, a JSON header
/// `{name: {dtype, shape, data_offsets: [begin, end)}, "__metadata__": {string: string}}`,
/// then the data. Every field is checked against the file before anything it sizes is allocated.
public struct SafetensorsFile: Sendable {
    /// The largest header accepted (the reference implementation's limit).
    public static let maxHeader = 100 << 20

    public let path: String
    /// Tensors in header order.
    public let entries: [TensorEntry]
    public let metadata: [String: String]

    public init(path: String) throws {
        let file = try RandomAccessFile(path: path)
        func bad(_ why: String) -> TensorFileError { TensorFileError(path, why) }
        guard file.size >= 8 else { throw bad("too short to be a safetensors file (\(file.size) bytes)") }
        let lengthBytes = try file.read(at: 0, count: 8)
        let length = lengthBytes.enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }
        guard length >= 2 else { throw bad("header length \(length) is too small") }
        guard length <= UInt64(Self.maxHeader) else { throw bad("header length \(length) exceeds the \(Self.maxHeader)-byte limit") }
        guard length <= UInt64(file.size - 8) else { throw bad("header length \(length) runs past the end of the file (\(file.size) bytes)") }
        let header = try file.read(at: 8, count: Int(length))
        guard header.first == UInt8(ascii: "{") else { throw bad("header does not start with '{'") }
        guard let object = try? JSONSerialization.jsonObject(with: Data(header)) as? [String: Any] else {
            throw bad("header is not a JSON object")
        }
        let dataStart = 8 + Int(length)
        let dataLength = file.size - dataStart
        var metadata: [String: String] = [:]
        var entries: [TensorEntry] = []
        for (name, value) in object {
            if name == "__metadata__" {
                guard let m = value as? [String: Any] else { throw bad("__metadata__ is not an object") }
                for (k, v) in m {
                    guard let s = v as? String else { throw bad("__metadata__['\(k)'] is not a string") }
                    metadata[k] = s
                }
                continue
            }
            guard let info = value as? [String: Any] else { throw bad("tensor '\(name)' is not an object") }
            guard let dtypeName = info["dtype"] as? String else { throw bad("tensor '\(name)' has no dtype") }
            guard let dtype = ElementType(safetensorsName: dtypeName) else {
                throw bad("tensor '\(name)' has unsupported dtype \(dtypeName) (supported: F32, F16, BF16, I64, I32, U8, I8)")
            }
            guard let rawShape = info["shape"] as? [Any], rawShape.count <= 8,
                  let shape = rawShape.map({ ($0 as? NSNumber).flatMap { n -> Int? in
                      let d = n.int64Value
                      return Double(d) == n.doubleValue && d >= 0 && d <= Int64(Int32.max) ? Int(d) : nil
                  } }) as [Int?]?, shape.allSatisfy({ $0 != nil }) else {
                throw bad("tensor '\(name)' has an invalid shape")
            }
            let dims = shape.map { $0! }
            guard let offsets = info["data_offsets"] as? [NSNumber], offsets.count == 2,
                  offsets.allSatisfy({ $0.int64Value >= 0 && Double($0.int64Value) == $0.doubleValue }) else {
                throw bad("tensor '\(name)' has invalid data_offsets")
            }
            let begin = Int(offsets[0].int64Value), end = Int(offsets[1].int64Value)
            guard begin <= end, end <= dataLength else {
                throw bad("tensor '\(name)' data_offsets [\(begin), \(end)) lie outside the \(dataLength) data bytes")
            }
            guard let need = checkedProduct(dims + [dtype.size]), need == end - begin else {
                throw bad("tensor '\(name)' of shape \(dims) and dtype \(dtypeName) needs \(checkedProduct(dims + [dtype.size]).map(String.init) ?? "too many") bytes, data_offsets give \(end - begin)")
            }
            entries.append(TensorEntry(name: name, dtype: dtype, shape: dims, offset: dataStart + begin, byteCount: need, path: path))
        }
        let sorted = entries.sorted { $0.offset < $1.offset }
        for (a, b) in zip(sorted, sorted.dropFirst()) where a.offset + a.byteCount > b.offset {
            throw bad("tensors '\(a.name)' and '\(b.name)' overlap")
        }
        self.path = path
        self.entries = sorted
        self.metadata = metadata
    }

    public func entry(_ name: String) -> TensorEntry? { entries.first { $0.name == name } }
}

/// Writes a safetensors file in one pass: the header first, then each tensor's bytes in the
/// declared order, streamed, as an ``OutputFile``: it appears at its path only when `finish()`
/// succeeds, and never replaces a store.
public final class SafetensorsWriter {
    public struct Declaration {
        public var name: String
        public var dtype: ElementType
        public var shape: [Int]
        public init(name: String, dtype: ElementType, shape: [Int]) {
            self.name = name
            self.dtype = dtype
            self.shape = shape
        }
    }

    private let path: String
    private let file: OutputFile
    private var expected: Int
    private var written = 0

    public init(path: String, tensors: [Declaration], metadata: [String: String]) throws {
        self.path = path
        var header: [String: Any] = [:]
        if !metadata.isEmpty { header["__metadata__"] = metadata }
        var offset = 0
        for t in tensors {
            guard let n = checkedProduct(t.shape + [t.dtype.size]) else { throw TensorFileError(path, "tensor '\(t.name)' is too large") }
            header[t.name] = ["dtype": t.dtype.safetensorsName, "shape": t.shape, "data_offsets": [offset, offset + n]] as [String: Any]
            offset += n
        }
        expected = offset
        var json = try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])
        json.append(contentsOf: [UInt8](repeating: UInt8(ascii: " "), count: (8 - json.count % 8) % 8))  // align data to 8 bytes
        file = try OutputFile(path: path)
        var length = UInt64(json.count).littleEndian
        try file.write(Data(bytes: &length, count: 8))
        try file.write(json)
    }

    /// Appends the next bytes of tensor data, in declaration order.
    public func write(_ bytes: UnsafeRawBufferPointer) throws {
        guard written + bytes.count <= expected else { throw TensorFileError(path, "more tensor bytes than declared") }
        try file.write(bytes)
        written += bytes.count
    }

    /// Checks that every declared byte was written, then completes the file (``OutputFile``);
    /// a writer not finished leaves nothing at the path.
    public func finish() throws {
        guard written == expected else { throw TensorFileError(path, "wrote \(written) of \(expected) declared tensor bytes") }
        try file.finish()
    }
}
