import Foundation
import Testing
import TestSupport
import FuzzTargets
import TensorFiles

/// The safetensors and .npy parts of the committed libFuzzer corpus (see MemoryStoreTests' FuzzCorpusTests).
@Suite struct FuzzCorpusReplayTests {
    @Test func fileReadersReplayTheCorpus() throws {
        for (target, read) in [("safetensors", TensorFileFuzzing.safetensors), ("npy", TensorFileFuzzing.npy)]
            as [(String, (UnsafeRawBufferPointer) -> Void)] {
            let dir = Tools.root.appendingPathComponent("Tests/FuzzCorpus/\(target)")
            let files = try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted()
            #expect(!files.isEmpty, "no corpus for \(target)")
            for file in files {
                try [UInt8](Data(contentsOf: dir.appendingPathComponent(file))).withUnsafeBytes(read)
            }
        }
    }
}
