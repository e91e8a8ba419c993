import Foundation
import MemoryBenchmarks
import Testing
import TestSupport
@testable import MemoryStore

@Suite struct KillHarnessTests {
    /// Tools/kill_harness.py: SIGKILL at random moments of create, import, compact and adding
    /// and removing a layer, each followed by verify, an independent read of the content and a
    /// re-run (200+ trials on demand).
    /// Zstd stores compacted into raw, and nibble stores (written by create, import and compact).
    @Test(arguments: [("zstd", "raw", 42), ("nibble", "nibble", 36)])
    func writersKilledAtRandomMomentsLoseNothing(codec: String, compactCodec: String, trials: Int) throws {
        let scratch = ScratchDirectory()
        let report = scratch.file("kill.json")
        let result = try Tools.python([Tools.root.appendingPathComponent("Tools/kill_harness.py").path,
                                       "--memtool", Tools.memtool.path, "--trials", "\(trials)", "--seed", "1",
                                       "--codec", codec, "--compact-codec", compactCodec, "--json", report])
        #expect(result.status == 0, "\(result.stdout)\(result.stderr)")
        let summary = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: report))) as? [String: Any])
        let outcomes = try #require(summary["outcomes"] as? [String: [String: Int]])
        #expect((summary["failures"] as? [Any])?.isEmpty == true)
        // The kills must land mid-write, not only before or after it.
        #expect((outcomes["create"]?["incomplete prefix"] ?? 0) + (outcomes["import"]?["incomplete prefix"] ?? 0) >= 2, "\(outcomes)")
        #expect((outcomes["compact"]?["original intact"] ?? 0) + (outcomes["compact-copy"]?["original intact"] ?? 0) >= 2, "\(outcomes)")
        #expect((outcomes["add-layer"]?["without the layer"] ?? 0) >= 1, "\(outcomes)")
    }
}
