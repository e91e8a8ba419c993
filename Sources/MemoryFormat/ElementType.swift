import _MemorySupport

/// The element type of a tensor or of the value table, the one dtype of the package. Its raw
/// value is the manifest's spelling (`bf16`); ``safetensorsName`` is the tensor files' (`BF16`).
/// A value table holds only the floating types (``isFloatingPoint``), stored losslessly.
public enum ElementType: String, Codable, Sendable, CaseIterable {
    case f32, f16, bf16, i64, i32, u8, i8

    /// Bytes per element.
    public var size: Int {
        switch self {
        case .f32, .i32: 4
        case .f16, .bf16: 2
        case .i64: 8
        case .u8, .i8: 1
        }
    }

    /// The types a value table can hold.
    public static let valueTypes: [ElementType] = [.f32, .f16, .bf16]

    /// Whether values of this type can be read as Float (f32, f16, bf16): the ``valueTypes``.
    public var isFloatingPoint: Bool { self == .f32 || self == .f16 || self == .bf16 }

    /// The name safetensors headers, tensor records' descriptions and memtool's output use.
    public var safetensorsName: String { rawValue.uppercased() }

    /// The type a safetensors header names (`F32`, `BF16`, ...), or nil.
    public init?(safetensorsName name: String) {
        guard let type = Self.allCases.first(where: { $0.safetensorsName == name }) else { return nil }
        self = type
    }

    /// The code in shard headers and tensor records (Spec/FORMAT.md).
    package var code: UInt8 {
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

    package init?(code: UInt8) {
        guard let type = Self.allCases.first(where: { $0.code == code }) else { return nil }
        self = type
    }

    /// Little-endian elements of this floating type from Float (bf16 and f16 rounded to nearest even).
    public func encode(_ values: [Float]) -> [UInt8] {
        precondition(isFloatingPoint, "encode is for floating types")
        return switch self {
        case .f16: values.map { Float16($0).bitPattern.littleEndian }.withUnsafeBytes { Array($0) }
        case .bf16: values.map { HalfPrecision.bfloat16Bits($0).littleEndian }.withUnsafeBytes { Array($0) }
        default: values.withUnsafeBytes { Array($0) }
        }
    }

    /// Float values of little-endian elements of this floating type.
    public func decode(_ bytes: [UInt8]) -> [Float] {
        var out = [Float](repeating: 0, count: bytes.count / size)
        bytes.withUnsafeBytes { src in
            out.withUnsafeMutableBufferPointer { convert(src.baseAddress!, count: $0.count, into: $0.baseAddress!) }
        }
        return out
    }

    /// Converts `count` elements of this floating type at `source` to Float.
    package func convert(_ source: UnsafeRawPointer, count: Int, into out: UnsafeMutablePointer<Float>) {
        switch self {
        case .f32: out.update(from: source.assumingMemoryBound(to: Float.self), count: count)
        case .bf16: HalfPrecision.widenBFloat16(source.assumingMemoryBound(to: UInt16.self), count: count, into: out)
        case .f16: HalfPrecision.widenFloat16(source.assumingMemoryBound(to: UInt16.self), count: count, into: out)
        default: preconditionFailure("convert is for floating types")
        }
    }
}
