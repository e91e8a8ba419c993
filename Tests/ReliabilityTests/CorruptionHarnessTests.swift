import Foundation
import MemoryBenchmarks
import Testing
import TestSupport
@testable import MemoryStore

@Suite struct CorruptionHarnessTests {
    /// Tools/corrupt_harness.py: bit flips anywhere in the file and in LMDB's own pages, and
    /// truncations; on each copy, queries (rows read in place) and export either give exactly the
    /// undamaged store's results or fail with a message (3,100 copies on demand).
    /// The nibble store gets fewer copies (its read path shares raw's), to keep the suite's time.
    @Test(arguments: [("zstd", 100, 200, 20), ("raw", 100, 200, 20), ("nibble", 60, 100, 10)])
    func damagedFilesReadCorrectlyOrFailByName(codec: String, flips: Int, structural: Int, truncations: Int) throws {
        let scratch = ScratchDirectory()
        let report = scratch.file("corrupt.json")
        let result = try Tools.python([Tools.root.appendingPathComponent("Tools/corrupt_harness.py").path,
                                       "--memtool", Tools.memtool.path, "--codec", codec, "--flips", "\(flips)",
                                       "--structural", "\(structural)", "--truncations", "\(truncations)", "--seed", "1", "--json", report])
        #expect(result.status == 0, "\(result.stdout)\(result.stderr)")
        let summary = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: report))) as? [String: Any])
        let outcomes = try #require(summary["outcomes"] as? [String: Int])
        #expect((summary["failures"] as? [Any])?.isEmpty == true)
        #expect(outcomes.keys.allSatisfy { $0.hasSuffix("error named") || $0.hasSuffix("read correctly") }, "\(outcomes)")
        // Flips inside LMDB's pages must reach LMDB's structures sometimes, not only unused space.
        #expect((outcomes["flip in LMDB pages: error named"] ?? 0) > 0, "\(outcomes)")
    }
}
