import Testing
import _MemorySupport
@testable import MemoryStore

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
