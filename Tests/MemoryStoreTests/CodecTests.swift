import Testing
import _MemorySupport
@testable import MemoryStore

@Suite struct ChecksumTests {
    // Reference digests from the xxhash package (Python), not from this code.
    @Test(arguments: [
        (0, 0xEF46_DB37_51D8_E999 as UInt64), (1, 0xD24E_C4F1_A98C_6E5B), (3, 0x44BC_2CF5_AD77_0999),
    ])
    func shortInputs(length: Int, digest: UInt64) {
        let input = Array("abc".utf8.prefix(length))
        let bytes = length == 1 ? [UInt8(ascii: "a")] : input
        #expect(bytes.withUnsafeBytes { XXH64.hash($0) } == digest)
    }

    @Test func longInputs() {
        let a = Array((0..<3).flatMap { _ in (0..<256).map { UInt8($0) } }) + Array("xyz".utf8)
        #expect(a.withUnsafeBytes { XXH64.hash($0) } == 0xE921_A1B4_5BD7_79F8)
        let b = (0..<37).map { UInt8($0 * 7 % 251) }
        #expect(b.withUnsafeBytes { XXH64.hash($0) } == 0x4788_90C6_0739_0313)
    }
}

@Suite struct BytePlaneTests {
    @Test(arguments: [2, 4], [1, 7, 64, 1000])
    func roundTrip(elementSize: Int, count: Int) {
        var rng = SeededGenerator(seed: UInt64(elementSize * 1000 + count))
        let input = (0..<(count * elementSize)).map { _ in UInt8.random(in: 0...255, using: &rng) }
        var planes = [UInt8](repeating: 0, count: input.count)
        var output = [UInt8](repeating: 0, count: input.count)
        input.withUnsafeBytes { i in planes.withUnsafeMutableBytes { BytePlanes.split(i.baseAddress!, count: count, elementSize: elementSize, into: $0.baseAddress!) } }
        planes.withUnsafeBytes { p in output.withUnsafeMutableBytes { BytePlanes.join(p.baseAddress!, count: count, elementSize: elementSize, into: $0.baseAddress!) } }
        #expect(output == input)
    }

    @Test func exponentLandsInPlaneZero() {
        // bf16 1.0 = 0x3F80: sign 0, exponent 0x7F, mantissa 0. Negative: 0xBF80.
        let values: [UInt16] = [0x3F80, 0xBF80]
        var planes = [UInt8](repeating: 0, count: 4)
        values.withUnsafeBytes { v in planes.withUnsafeMutableBytes { BytePlanes.split(v.baseAddress!, count: 2, elementSize: 2, into: $0.baseAddress!) } }
        #expect(planes == [0x7F, 0x7F, 0x00, 0x01])
    }
}
