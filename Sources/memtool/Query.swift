import ArgumentParser
import Foundation
import MemoryLayer
import MemoryStore
import TensorFiles
import _MemorySupport

struct Query: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run lookups for queries from a .npy file and write the outputs (and optionally slots and weights).",
        discussion: "Q is float32 [B, H, 2, d] (float16 and bfloat16 are converted). OUT is float32 [B, d_out]; IDX int64 [B, H, k] virtual slot ids; W float32 [B, H, k, c]. Results follow Spec/RETRIEVAL.md exactly.")

    @Argument(help: "Path of the store.")
    var store: String

    @Option(help: "Queries, a .npy of shape [B, H, 2, d]: float32, or float16 / bfloat16 (converted).")
    var queries: String

    @Option(help: "A gated layer's gate inputs, a .npy of shape [B, g] (Spec/RETRIEVAL.md, \"Gates\"); float32, or float16 / bfloat16 (converted).")
    var gateInputs: String?

    @Option(help: "Where to write the outputs (.npy, float32 [B, d_out]).")
    var output: String

    @Option(help: "Where to write the selected slots (.npy, int64 [B, H, k]).")
    var indices: String?

    @Option(help: "Where to write the weights (.npy, float32 [B, H, k, c]).")
    var weights: String?

    @Option(help: "Where to write each slot's (physical row, projector) (.npy, int64 [B, H, k, 2]).")
    var addresses: String?

    @Option(help: "Queries per batch.")
    var batch: Int = 256

    @Option(help: "The layer to query (default: the store's only layer).")
    var layer: String?

    /// The files the command writes.
    private var outputs: [String] { [output, indices, weights, addresses].compactMap { $0 } }

    func validate() throws {
        guard batch >= 1 else { throw ValidationError("--batch must be at least 1") }
        guard Set(outputs.map(storeFilePath)).count == outputs.count else {
            throw ValidationError("--output, --indices, --weights and --addresses must name different files (got \(outputs.joined(separator: ", ")))")
        }
    }

    func run() throws {
        try runReportingErrors {
            for path in outputs { try OutputFile.check(path) }  // before the work
            let layer = try MemoryLayer(store: Store.open(at: store), name: self.layer)
            let c = layer.config
            let entry = try NPYFile.entry(path: queries, name: "queries")
            guard [.f32, .f16, .bf16].contains(entry.dtype), entry.shape.count == 4, entry.shape[1] == c.heads,
                  entry.shape[2] == 2, entry.shape[3] == c.keyDim else {
                throw TensorFileError(queries, "queries have shape \(entry.shape) and dtype \(entry.dtype.safetensorsName), the store needs " +
                                      "[B, \(c.heads), 2, \(c.keyDim)] of float32 (or float16 / bfloat16, converted to float32)")
            }
            let q = try entry.load().floats()
            let total = entry.shape[0], width = c.heads * 2 * c.keyDim
            if c.gateDim > 0 && gateInputs == nil {
                throw StoreError.invalidArgument("layer '\(layer.name)' is gated by \(c.gateDim) columns: a lookup needs gate inputs [batch, \(c.gateDim)]; " +
                                                 "give them with --gate-inputs U.npy (float32 [B, \(c.gateDim)])")
            }
            if c.gateDim == 0, let gateInputs {
                throw TensorFileError(gateInputs, "layer '\(layer.name)' has no gate: --gate-inputs applies to gated layers only")
            }
            let gates = try gateInputs.map { path in
                let g = try NPYFile.entry(path: path, name: "gate_inputs")
                guard [.f32, .f16, .bf16].contains(g.dtype), g.shape == [total, c.gateDim] else {
                    throw TensorFileError(path, "gate inputs have shape \(g.shape) and dtype \(g.dtype.safetensorsName), the layer needs " +
                                          "[\(total), \(c.gateDim)] of float32 (one gate input per query)")
                }
                return try g.load().floats()
            }
            var out = [Float](), idx = [Int64](), w = [Float](), addr = [Int64]()
            out.reserveCapacity(total * c.outputDim)
            var start = 0
            while start < total {
                let n = min(batch, total - start)
                let (o, found) = try layer.lookup(queries: Array(q[(start * width)..<((start + n) * width)]), batch: n,
                                                  gateInputs: gates.map { Array($0[(start * c.gateDim)..<((start + n) * c.gateDim)]) })
                out += o
                if indices != nil { idx += found.indices.map(Int64.init) }
                if weights != nil { w += found.weights }
                if addresses != nil {
                    for vid in found.indices {
                        let a = layer.index.address.address(of: vid)
                        addr += [Int64(a.row), Int64(a.projector)]
                    }
                }
                start += n
            }
            try out.withUnsafeBytes { try NPYFile.write(path: output, dtype: .f32, shape: [total, c.outputDim], bytes: $0) }
            if let indices { try idx.withUnsafeBytes { try NPYFile.write(path: indices, dtype: .i64, shape: [total, c.heads, c.topK], bytes: $0) } }
            if let addresses {
                try addr.withUnsafeBytes { try NPYFile.write(path: addresses, dtype: .i64, shape: [total, c.heads, c.topK, 2], bytes: $0) }
            }
            if let weights { try w.withUnsafeBytes { try NPYFile.write(path: weights, dtype: .f32, shape: [total, c.heads, c.topK, c.cores], bytes: $0) } }
            print("\(total) queries -> \(output) [\(total), \(c.outputDim)]")
        }
    }
}
