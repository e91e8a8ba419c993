/// The element type of the value table. Values are stored losslessly in this type.
public enum ElementType: String, Codable, Sendable, CaseIterable {
    case f32, f16, bf16

    /// Bytes per element.
    public var size: Int { self == .f32 ? 4 : 2 }

    /// The code in shard headers (Spec/FORMAT.md).
    var code: UInt8 {
        switch self {
        case .f32: 1
        case .f16: 2
        case .bf16: 3
        }
    }

    /// Little-endian elements of this type from Float (bf16 and f16 rounded to nearest even).
    public func encode(_ values: [Float]) -> [UInt8] {
        switch self {
        case .f32: values.withUnsafeBytes { Array($0) }
        case .f16: values.map { Float16($0).bitPattern.littleEndian }.withUnsafeBytes { Array($0) }
        case .bf16: values.map { bfloat16Bits($0).littleEndian }.withUnsafeBytes { Array($0) }
        }
    }

    /// Float values of little-endian elements of this type.
    public func decode(_ bytes: [UInt8]) -> [Float] {
        var out = [Float](repeating: 0, count: bytes.count / size)
        bytes.withUnsafeBytes { src in
            out.withUnsafeMutableBufferPointer { RowKernels.convert(src.baseAddress!, type: self, count: $0.count, into: $0.baseAddress!) }
        }
        return out
    }

    init?(code: UInt8) {
        switch code {
        case 1: self = .f32
        case 2: self = .f16
        case 3: self = .bf16
        default: return nil
        }
    }
}

/// The element type of a named tensor.
public enum TensorDType: String, Codable, Sendable, CaseIterable {
    case f32 = "F32", f16 = "F16", bf16 = "BF16", i64 = "I64", i32 = "I32", u8 = "U8", i8 = "I8"

    public var size: Int {
        switch self {
        case .f32, .i32: 4
        case .f16, .bf16: 2
        case .i64: 8
        case .u8, .i8: 1
        }
    }

    var code: UInt8 {
        switch self {
        case .f32: 1
        case .f16: 2
        case .bf16: 3
        case .i64: 4
        case .i32: 5
        case .u8: 6
        case .i8: 7
        }
    }

    init?(code: UInt8) {
        guard let t = Self.allCases.first(where: { $0.code == code }) else { return nil }
        self = t
    }
}
