import Foundation
import Testing
@testable import MemoryRetrieval

/// One golden case from Spec/golden, written by Tools/reference_retrieval.py.
struct GoldenCase: CustomTestStringConvertible {
    let name: String
    let config: RetrievalConfig
    let tensors: RetrievalTensors
    /// The value table's rows: the values, then (a gated layer) the gate vector.
    let values: [Float]
    let gateInputs: [Float]?
    let queries: [Float]
    let batch: Int
    let indices: [Int]
    let weights: [Float]
    let output: [Float]

    var testDescription: String { name }

    static let directory = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Spec/golden")

    static func all() -> [GoldenCase] {
        let files = (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []
        return files.filter { $0.hasSuffix(".json") }.sorted().map { load(directory.appendingPathComponent($0)) }
    }

    private struct Document: Decodable {
        struct Ints: Decodable { var shape: [Int]; var ints: [Int] }
        struct Expected: Decodable { var indices: [Int]; var weights: [Double]; var output: [Double] }
        var name: String
        var config: RetrievalConfig
        var scale: Double
        var tensors: [String: Ints]
        var queries: Ints
        var expected: Expected
        var virtual_map: [Int64]?
        var gate_inputs: Ints?
    }

    static func load(_ url: URL) -> GoldenCase {
        let doc = try! JSONDecoder().decode(Document.self, from: Data(contentsOf: url))
        func floats(_ name: String) -> [Float]? { doc.tensors[name].map { $0.ints.map { Float(Double($0) / doc.scale) } } }
        let tensors = RetrievalTensors(rowKeys: floats("row_keys")!, colKeys: floats("col_keys")!, cores: floats("cores"),
                                       projectors: floats("projectors"), virtualMap: doc.virtual_map,
                                       rowProj: floats("row_proj"), colProj: floats("col_proj"))
        var rows = floats("values")!
        if let gates = floats("gates") {
            let (v, g) = (doc.config.valueDim, doc.config.gateDim)
            var joined: [Float] = []
            for r in 0..<(gates.count / g) {
                joined += rows[(r * v)..<((r + 1) * v)]
                joined += gates[(r * g)..<((r + 1) * g)]
            }
            rows = joined
        }
        return GoldenCase(name: doc.name, config: doc.config, tensors: tensors, values: rows,
                          gateInputs: doc.gate_inputs.map { $0.ints.map { Float(Double($0) / doc.scale) } },
                          queries: doc.queries.ints.map { Float(Double($0) / doc.scale) }, batch: doc.queries.shape[0],
                          indices: doc.expected.indices, weights: doc.expected.weights.map(Float.init),
                          output: doc.expected.output.map(Float.init))
    }
}

/// Relative closeness with an absolute floor for values near zero.
func close(_ a: Float, _ b: Float, relative: Float = 1e-4) -> Bool {
    abs(a - b) <= relative * max(abs(a), abs(b), 1e-2)
}

@Suite struct GoldenTests {
    @Test func goldenCasesArePresent() {
        #expect(GoldenCase.all().count >= 13)
        #expect(GoldenCase.all().contains { $0.config.gateDim > 0 && $0.config.gateActivation == .gelu })
    }

    @Test(arguments: GoldenCase.all())
    func matchesTheNumpyReference(_ golden: GoldenCase) throws {
        let index = try ProductKeyIndex(config: golden.config, tensors: golden.tensors)
        let values = DenseValueRows(values: golden.values, dim: golden.config.tableDim)
        let (output, found) = try index.lookup(queries: golden.queries, batch: golden.batch, values: values, gateInputs: golden.gateInputs)
        #expect(found.indices == golden.indices)
        #expect(found.weights.count == golden.weights.count)
        let badWeights = zip(found.weights, golden.weights).enumerated().filter { !close($1.0, $1.1) }
        #expect(badWeights.isEmpty, "weights differ at \(badWeights.prefix(5).map { "\($0.offset): \($0.element)" })")
        let badOutputs = zip(output, golden.output).enumerated().filter { !close($1.0, $1.1) }
        #expect(output.count == golden.output.count)
        #expect(badOutputs.isEmpty, "outputs differ at \(badOutputs.prefix(5).map { "\($0.offset): \($0.element)" })")
    }
}
