import Foundation
import Testing
import TestSupport

/// Spec/CLI.md lists every field that `inspect --json`, `verify --json` and `bench --json` write.
@Suite struct CLIDocumentTests {
    /// The backticked names in the section of Spec/CLI.md headed `heading`.
    private func documentedNames(_ heading: String) throws -> Set<String> {
        let text = try String(contentsOf: Tools.root.appendingPathComponent("Spec/CLI.md"), encoding: .utf8)
        let start = try #require(text.range(of: "## `\(heading)`"))
        let rest = text[start.upperBound...]
        let section = rest[..<(rest.range(of: "\n## ")?.lowerBound ?? rest.endIndex)]
        var names = Set<String>()
        for (i, part) in section.split(separator: "`", omittingEmptySubsequences: false).enumerated() where i % 2 == 1 {
            names.insert(String(part))
        }
        return names
    }

    /// Every key of `json`, nested objects and arrays of objects included, except free-form maps.
    private func keys(_ json: Any, skipping freeForm: Set<String> = ["metadata"]) -> Set<String> {
        var out = Set<String>()
        if let object = json as? [String: Any] {
            for (k, v) in object {
                out.insert(k)
                if !freeForm.contains(k) { out.formUnion(keys(v, skipping: freeForm)) }
            }
        } else if let array = json as? [Any] {
            for v in array { out.formUnion(keys(v, skipping: freeForm)) }
        }
        return out
    }

    @Test func everyWrittenFieldIsDocumented() throws {
        let scratch = ScratchDirectory()
        let store = scratch.file("m.pkm"), bench = scratch.file("b.json")
        try #require(try Tools.memtool("create", store, "--synthetic", "--rows", "4096", "--dim", "16", "--heads", "1",
                                       "--key-dim", "8", "--topk", "4").status == 0)
        let inspect = try Tools.memtool("inspect", store, "--json"), verify = try Tools.memtool("verify", store, "--json")
        try #require(try Tools.memtool("bench", store, "--queries", "32", "--batch", "16", "--json", bench).status == 0)
        let documents: [(String, Any)] = [
            ("inspect --json", try JSONSerialization.jsonObject(with: Data(inspect.stdout.utf8))),
            ("verify --json", try JSONSerialization.jsonObject(with: Data(verify.stdout.utf8))),
            ("bench --json FILE", try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: bench)))),
        ]
        for (heading, json) in documents {
            let missing = keys(json).subtracting(try documentedNames(heading))
            #expect(missing.isEmpty, "Spec/CLI.md, \(heading), does not list \(missing.sorted())")
        }
        // A cold run measures no memory limit: its document leaves the field out (it once wrote
        // nothing, failing to encode an infinite rate).
        let cold = scratch.file("cold.json")
        let coldRun = try Tools.memtool("bench", store, "--cold", "--queries", "32", "--batch", "16", "--json", cold)
        #expect(coldRun.status == 0, "\(coldRun.stderr)")
        let document = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: cold))) as? [String: Any])
        #expect(document["memoryLimitReduceQueriesPerSecond"] == nil && document["cold"] as? Bool == true)
    }
}
