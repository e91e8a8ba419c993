import Foundation
import Testing
import FuzzTargets
import MemoryStore

/// Replays the committed libFuzzer corpus (Tests/FuzzCorpus, grown by Tools/fuzz.sh) through
/// the store's decoders: every input that once found new code paths, and every crasher fixed
/// since, stays a regression test. The safetensors and .npy corpora replay in MemtoolTests.
@Suite struct FuzzCorpusTests {
    static let corpus = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("FuzzCorpus")

    static func inputs(_ target: String) throws -> [[UInt8]] {
        let dir = corpus.appendingPathComponent(target)
        return try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted().map {
            try [UInt8](Data(contentsOf: dir.appendingPathComponent($0)))
        }
    }

    @Test func storeDecodersReplayTheCorpus() throws {
        for (target, decode) in [("shard", DecoderFuzzing.shard), ("manifest", DecoderFuzzing.manifest),
                                 ("tensor", DecoderFuzzing.tensorRecord)] as [(String, (UnsafeRawBufferPointer) -> Void)] {
            let inputs = try Self.inputs(target)
            #expect(!inputs.isEmpty, "no corpus for \(target)")
            for input in inputs { input.withUnsafeBytes(decode) }
        }
    }
}
