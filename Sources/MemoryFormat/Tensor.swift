import _MemorySupport

/// A named dense tensor kept beside the value table: keys, cores, projectors, maps, dictionaries.
public struct Tensor: Sendable, Equatable {
    public var dtype: ElementType
    public var shape: [Int]
    /// Little-endian row-major element bytes.
    public var bytes: [UInt8]

    public init(dtype: ElementType, shape: [Int], bytes: [UInt8]) throws {
        guard shape.allSatisfy({ $0 >= 0 }) else { throw StoreError.invalidArgument("tensor shape \(shape) has a negative extent") }
        let (count, overflow) = shape.reduce((1, false)) { acc, d in
            let (p, o) = acc.0.multipliedReportingOverflow(by: d); return (p, acc.1 || o)
        }
        guard !overflow, count.multipliedReportingOverflow(by: dtype.size).overflow == false,
              count * dtype.size == bytes.count else {
            throw StoreError.invalidArgument("tensor of shape \(shape) and dtype \(dtype.safetensorsName) needs \(overflow ? "too many" : String(count * dtype.size)) bytes, got \(bytes.count)")
        }
        self.dtype = dtype
        self.shape = shape
        self.bytes = bytes
    }

    /// A float32 tensor from values.
    public init(shape: [Int], floats: [Float]) throws {
        try self.init(dtype: .f32, shape: shape, bytes: floats.withUnsafeBytes { Array($0) })
    }

    public var elementCount: Int { shape.reduce(1, *) }

    /// The elements as Float; only for floating dtypes.
    public func floats() throws -> [Float] {
        var out = [Float](repeating: 0, count: elementCount)
        try bytes.withUnsafeBytes { src in
            try out.withUnsafeMutableBufferPointer { dst in
                guard dtype.isFloatingPoint else { throw StoreError.invalidArgument("tensor dtype \(dtype.safetensorsName) is not floating point") }
                if !dst.isEmpty { dtype.convert(src.baseAddress!, count: dst.count, into: dst.baseAddress!) }
            }
        }
        return out
    }

    /// The elements as Int64; only for integer dtypes.
    public func integers() throws -> [Int64] {
        try bytes.withUnsafeBytes { src in
            switch dtype {
            case .i64: (0..<elementCount).map { Int64(littleEndian: src.loadUnaligned(fromByteOffset: 8 * $0, as: Int64.self)) }
            case .i32: (0..<elementCount).map { Int64(Int32(littleEndian: src.loadUnaligned(fromByteOffset: 4 * $0, as: Int32.self))) }
            case .u8: src.map { Int64($0) }
            case .i8: src.map { Int64(Int8(bitPattern: $0)) }
            default: throw StoreError.invalidArgument("tensor dtype \(dtype.safetensorsName) is not an integer type")
            }
        }
    }

    // MARK: Record encoding (Spec/FORMAT.md, "Tensors")

    package static let magic: UInt32 = 0x3154_4B50  // "PKT1"
    package static let maxRank = 8

    /// The stored record of this tensor under `name` (format version 3: the checksum covers
    /// the name, header and shape as well as the data).
    package func record(name: String) -> [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(16 + 8 * shape.count + bytes.count)
        func put<T: FixedWidthInteger>(_ v: T) { withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) } }
        put(Self.magic)
        out.append(dtype.code)
        out.append(UInt8(shape.count))
        put(UInt16(0))
        put(UInt64(0))
        for d in shape { put(UInt64(d)) }
        out.append(contentsOf: bytes)
        let checksum = out.withUnsafeBytes { Self.checksum(record: $0, dataStart: 16 + 8 * shape.count, name: name, version: Manifest.currentVersion) }
        withUnsafeBytes(of: checksum.littleEndian) { for i in 0..<8 { out[8 + i] = $0[i] } }
        return out
    }

    /// The checksum a record of format `version` stores at byte 8 (Spec/FORMAT.md, "Tensor records"):
    /// before version 3, XXH64 of the data; from version 3, XXH64 of the data seeded with the
    /// XXH64 of the name, the first 8 header bytes and the extents, so that a flipped name,
    /// dtype or extent fails it too.
    package static func checksum(record r: UnsafeRawBufferPointer, dataStart: Int, name: String, version: Int) -> UInt64 {
        let data = UnsafeRawBufferPointer(rebasing: r[dataStart...])
        guard version >= 3 else { return XXH64.hash(data) }
        var described = Array(name.utf8)
        described += r[0..<8]
        described += r[16..<dataStart]
        return XXH64.hash(data, seed: described.withUnsafeBytes { XXH64.hash($0) })
    }

    /// Decodes the record stored under `name` in a store of format `version`.
    package static func decode(record r: UnsafeRawBufferPointer, name: String, version: Int) throws -> Tensor {
        func corrupt(_ why: String) -> StoreError { .corruptTensor(name: name, reason: why) }
        guard r.count >= 16 else { throw corrupt("record is \(r.count) bytes, shorter than its header") }
        guard r.loadUnaligned(as: UInt32.self).littleEndian == magic else { throw corrupt("bad magic") }
        guard let dtype = ElementType(code: r[4]) else { throw corrupt("unknown dtype code \(r[4])") }
        let rank = Int(r[5])
        guard rank <= maxRank else { throw corrupt("rank \(rank) exceeds \(maxRank)") }
        guard r.count >= 16 + 8 * rank else { throw corrupt("shape is truncated") }
        let checksum = r.loadUnaligned(fromByteOffset: 8, as: UInt64.self).littleEndian
        var shape = [Int]()
        var count = 1
        for i in 0..<rank {
            let d = r.loadUnaligned(fromByteOffset: 16 + 8 * i, as: UInt64.self).littleEndian
            guard d <= UInt64(Int32.max) else { throw corrupt("extent \(d) of axis \(i) is too large") }
            shape.append(Int(d))
            let (p, o) = count.multipliedReportingOverflow(by: Int(d))
            guard !o else { throw corrupt("shape \(shape) overflows") }
            count = p
        }
        let dataStart = 16 + 8 * rank
        let (needed, overflow) = count.multipliedReportingOverflow(by: dtype.size)
        guard !overflow else { throw corrupt("shape \(shape) of \(dtype.safetensorsName) overflows") }
        guard r.count - dataStart == needed else {
            throw corrupt("holds \(r.count - dataStart) data bytes, shape \(shape) of \(dtype.safetensorsName) needs \(needed)")
        }
        guard Self.checksum(record: r, dataStart: dataStart, name: name, version: version) == checksum else {
            throw corrupt(version >= 3 ? "checksum of its name, header and data does not match" : "checksum mismatch")
        }
        return try! Tensor(dtype: dtype, shape: shape, bytes: Array(r[dataStart...]))
    }
}
