import Foundation
import Testing
import _MemorySupport
import TestSupport
import MemoryStore
import TensorFiles

/// Seeded mutations of valid safetensors and .npy files through the hostile-input readers:
/// each must either read or throw, never crash or hang.
@Suite struct FileFuzzTests {
    @Test func readersSurviveMutatedFiles() throws {
        let scratch = ScratchDirectory()
        let made = try Tools.python(["-c", """
            import numpy as np, sys
            np.save(sys.argv[1], np.arange(24, dtype=np.float32).reshape(2, 3, 4))
            """, scratch.file("a.npy")])
        try #require(made.status == 0, "\\(made.stderr)")
        let header = #"{"__metadata__":{"topk":"4"},"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},"m":{"dtype":"I64","shape":[2],"data_offsets":[24,40]}}"#
        var st = [UInt8]()
        withUnsafeBytes(of: UInt64(header.utf8.count).littleEndian) { st += $0 }
        st += Array(header.utf8) + [UInt8](repeating: 1, count: 40)
        let npy = try [UInt8](Data(contentsOf: URL(fileURLWithPath: scratch.file("a.npy"))))
        var rng = SeededGenerator(seed: 31)
        func next() -> UInt64 { rng.next() }
        for i in 0..<1500 {
            for (name, valid) in [("f.safetensors", st), ("f.npy", npy)] {
                var b = valid
                switch next() % 3 {
                case 0: for _ in 0..<Int(1 + next() % 4) { b[Int(next() % UInt64(b.count))] = UInt8(truncatingIfNeeded: next()) }
                case 1: b = Array(b.prefix(Int(next() % UInt64(b.count + 1))))
                default: b[Int(next() % UInt64(min(b.count, 12)))] = UInt8(truncatingIfNeeded: next())
                }
                let path = scratch.file("\(i)-\(name)")
                #expect(FileManager.default.createFile(atPath: path, contents: Data(b)))
                if name.hasSuffix(".npy") {
                    if let e = try? NPYFile.entry(path: path, name: "x") { _ = try? e.load() }
                } else if let f = try? SafetensorsFile(path: path) {
                    for e in f.entries { _ = try? e.load() }
                }
                try? FileManager.default.removeItem(atPath: path)
            }
        }
    }
}
