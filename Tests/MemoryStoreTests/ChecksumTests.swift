import CGatherKernel
import Foundation
import Testing
import TestSupport
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

    /// XXH64 (`pkm_xxh64`, also behind `XXH64.hash`): reference digests with seeds from the
    /// xxhash package, then every length from 0 to 300, each of the code's tails and the 32-byte
    /// stripes after them, against `Tests/Fixtures/xxh64-lengths.txt` (the xxhash package's).
    @Test func cHashMatches() throws {
        let a = Array((0..<3).flatMap { _ in (0..<256).map { UInt8($0) } }) + Array("xyz".utf8)
        #expect(a.withUnsafeBytes { pkm_xxh64($0.baseAddress, $0.count, 12345) } == 0x6B1B_5D67_1FB9_3B43)
        let b = (0..<37).map { UInt8($0 * 7 % 251) }
        #expect(b.withUnsafeBytes { pkm_xxh64($0.baseAddress, $0.count, 1 << 40 + 3) } == 0xC149_E53C_C101_F67C)
        let row = (0..<128).map { UInt8($0 * 5 % 253) }
        #expect(row.withUnsafeBytes { pkm_xxh64($0.baseAddress, $0.count, 67_108_863) } == 0xC4BB_A4C5_3090_570E)
        let reference = try String(contentsOf: Tools.root.appendingPathComponent("Tests/Fixtures/xxh64-lengths.txt"), encoding: .utf8)
            .split(separator: "\n").filter { !$0.hasPrefix("#") }.map { $0.split(separator: " ") }
        try #require(reference.count == 301)
        let bytes = (0..<300).map { UInt8(truncatingIfNeeded: $0 &* 131 &+ 17) }
        bytes.withUnsafeBytes { all in
            for line in reference {
                let n = Int(line[0])!, seed = UInt64(n) &* 0x9E37_79B9
                #expect(XXH64.hash(UnsafeRawBufferPointer(rebasing: all[0..<n]), seed: seed) == UInt64(line[1], radix: 16), "\(n) bytes")
            }
        }
    }
}
