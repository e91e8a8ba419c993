import MemoryFormat

// Conversions of stored bytes to Float by paths independent of the store's kernels.

/// Little-endian bfloat16 bytes as Float, by bit shifting (independent of the store's kernels).
package func floatsFromBF16(_ bytes: [UInt8]) -> [Float] {
    stride(from: 0, to: bytes.count, by: 2).map { Float(bitPattern: (UInt32(bytes[$0]) | UInt32(bytes[$0 + 1]) << 8) << 16) }
}

/// Row `i` of stored bytes converted to Float by an independent path (Foundation/Swift conversions).
package func referenceRow(_ bytes: [UInt8], _ i: Int, dim: Int, type: ElementType) -> [Float] {
    (0..<dim).map { j in
        let k = i * dim + j
        switch type {
        case .f32:
            return Float(bitPattern: UInt32(bytes[4 * k]) | UInt32(bytes[4 * k + 1]) << 8 | UInt32(bytes[4 * k + 2]) << 16 | UInt32(bytes[4 * k + 3]) << 24)
        case .f16:
            return Float(Float16(bitPattern: UInt16(bytes[2 * k]) | UInt16(bytes[2 * k + 1]) << 8))
        case .bf16:
            return Float(bitPattern: (UInt32(bytes[2 * k]) | UInt32(bytes[2 * k + 1]) << 8) << 16)
        default:
            preconditionFailure("\(type) is not a value type")
        }
    }
}
