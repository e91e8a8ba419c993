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
