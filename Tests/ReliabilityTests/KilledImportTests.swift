import Foundation
import MemoryBenchmarks
import Testing
import TestSupport
@testable import MemoryStore

@Suite struct KilledImportTests {
    /// `memtool create` killed with SIGKILL mid-import leaves a store that opens, reports itself
    /// incomplete with a whole-shard prefix that reads back exactly, and that the same command finishes.
    @Test func killedCreateResumes() throws {
        let scratch = ScratchDirectory()
        let rows = 400_000, dim = 64
        var killedIncomplete = 0
        let delays: [useconds_t] = [2_000, 10_000, 30_000, 80_000, 150_000, 300_000, 500_000, 900_000]
        for (trial, delay) in delays.enumerated() {
            let path = scratch.file("k\(trial).pkm")
            let args = ["create", path, "--synthetic", "--seed", "5", "--rows", String(rows), "--dim", String(dim), "--dtype", "bf16"]
            // Kill at a different moment each trial: while the file is being created, mid-import, later.
            _ = try Tools.memtoolKilled(args, after: delay)
            guard FileManager.default.fileExists(atPath: path) else { continue }

            let generator = SyntheticRows(seed: 5, dim: dim)
            if let store = try? Store.open(at: path) {
                if !store.isComplete {
                    killedIncomplete += 1
                    #expect(store.state.rowsCommitted % store.layout.rowsPerShard == 0)
                    #expect(try store.verify().isSound)
                    if store.state.rowsCommitted > 0 {
                        let last = store.state.rowsCommitted - 1
                        let expected = generator.bytes(last..<(last + 1), as: .bf16)
                        #expect(try store.row(last) == floatsFromBF16(expected))
                    }
                }
            }
            // Running the same command again finishes (or restarts) the import cleanly.
            let rerun = try Tools.run(Tools.memtool, args)
            #expect(rerun.status == 0, "\(rerun.stderr)")
            let done = try Store.open(at: path)
            #expect(done.isComplete)
            #expect(try done.verify().isSound)
            for r in [0, rows / 3, rows - 1] {
                #expect(try done.row(r) == floatsFromBF16(generator.bytes(r..<(r + 1), as: .bf16)))
            }
        }
        #expect(killedIncomplete >= 1, "no trial killed the import while it was incomplete")
    }
}
