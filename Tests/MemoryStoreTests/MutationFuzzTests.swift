import Foundation
import MemoryBenchmarks
import Testing
import _MemorySupport
@testable import MemoryStore

/// Seeded mutation fuzzing of the decoders that see bytes from disk: each valid input is
/// mutated (bit flips, byte overwrites, truncation, extension, length-field poking) and decoded;
/// any result but a crash or a hang is acceptable, and a decode that succeeds must not have
/// accepted a different checksum-covered payload. Every failure replays from its seed.
@Suite struct MutationFuzzTests {
    static func mutate(_ input: [UInt8], _ rng: inout SeededGenerator) -> [UInt8] {
        var b = input
        switch rng.next() % 5 {
        case 0: for _ in 0..<Int(1 + rng.next() % 4) where !b.isEmpty { b[Int(rng.next() % UInt64(b.count))] ^= UInt8(1) << UInt8(rng.next() % 8) }
        case 1: for _ in 0..<Int(1 + rng.next() % 8) where !b.isEmpty { b[Int(rng.next() % UInt64(b.count))] = UInt8(truncatingIfNeeded: rng.next()) }
        case 2: b = Array(b.prefix(Int(rng.next() % UInt64(b.count + 1))))
        case 3: b += (0..<Int(rng.next() % 64)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
        default:
            // Overwrite an aligned 4- or 8-byte field with an extreme value.
            let width = rng.next() % 2 == 0 ? 4 : 8
            guard b.count >= width else { break }
            let at = Int(rng.next() % UInt64(b.count - width + 1)) & ~(width - 1)
            let value: UInt64 = [0, 1, UInt64(UInt32.max), UInt64.max, 1 << 40, 0x7FFF_FFFF][Int(rng.next() % 6)]
            for i in 0..<width { b[at + i] = UInt8(truncatingIfNeeded: value >> (8 * UInt64(i))) }
        }
        return b
    }

    @Test(arguments: [CodecKind.raw, .zstd])
    func shardDecoderSurvivesMutations(codec: CodecKind) throws {
        let layout = TableLayout(elementType: .bf16, rows: 300, dim: 12, rowsPerShard: 100, codec: codec)
        let rows = SyntheticRows(seed: 4, dim: 12).bytes(100..<200, as: .bf16)
        var scratch: [UInt8] = []
        let compressor = codec == .zstd ? ZstdCompressor(level: 3, dictionary: nil) : nil
        let blob = rows.withUnsafeBytes { ShardCodec.encode($0, shard: 1, layout: layout, compressor: compressor, scratch: &scratch) }
        let decompressor = ZstdDecompressor()
        var rng = SeededGenerator(seed: codec == .raw ? 11 : 12)
        var accepted = 0
        for _ in 0..<3000 {
            let mutated = Self.mutate(blob, &rng)
            var out = [UInt8](repeating: 0, count: rows.count)
            let ok: Bool = mutated.withUnsafeBytes { m in
                guard let header = try? ShardCodec.header(of: m, shard: 1, layout: layout, version: Manifest.currentVersion) else { return false }
                return out.withUnsafeMutableBytes { o in
                    (try? ShardCodec.decode(m, header: header, layout: layout, into: o, scratch: &scratch,
                                            decompressor: decompressor, dictionary: nil)) != nil
                }
            }
            if ok {
                accepted += 1
                #expect(out == rows, "a mutated shard decoded to different rows without an error")
            }
        }
        #expect(accepted < 3000)
    }

    @Test func manifestAndTensorDecodersSurviveMutations() throws {
        let manifest = try Manifest(table: TableLayout(elementType: .f16, rows: 1000, dim: 8), createdBy: "tests").encoded()
        let record = try Tensor(shape: [3, 4], floats: (0..<12).map(Float.init)).record(name: "t")
        var rng = SeededGenerator(seed: 21)
        for _ in 0..<3000 {
            let m = Self.mutate(Array(manifest), &rng)
            _ = try? m.withUnsafeBytes { try Manifest.decode($0) }
            let r = Self.mutate(record, &rng)
            if let t = try? r.withUnsafeBytes({ try Tensor.decode(record: $0, name: "t", version: Manifest.currentVersion) }) {
                #expect(t.bytes.count == t.elementCount * t.dtype.size)
            }
        }
    }
}
