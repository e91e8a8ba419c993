import MemoryStore
import TensorFiles

/// The decoders a fuzzer drives, by corpus name.
package let fuzzTargets: [String: @Sendable (UnsafeRawBufferPointer) -> Void] = [
    "shard": DecoderFuzzing.shard,
    "manifest": DecoderFuzzing.manifest,
    "tensor": DecoderFuzzing.tensorRecord,
    "safetensors": TensorFileFuzzing.safetensors,
    "npy": TensorFileFuzzing.npy,
]

/// One valid input per target (`shard` has one per codec).
package func seedInputs() throws -> [String: [UInt8]] {
    try DecoderFuzzing.seeds().merging(TensorFileFuzzing.seeds()) { a, _ in a }
}
