import ArgumentParser
import Foundation
import MemoryBenchmarks
import MemoryLayer
import MemoryRetrieval
import MemoryStore
import _MemorySupport

struct Create: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create a store holding a synthetic memory layer.",
        discussion: """
            Values are drawn from N(0, 0.02), keys from N(0, 1/sqrt(d)), cores and projectors at random, all \
            deterministic per seed. The grid must hold expansion x rows virtual slots; give either --grid or \
            --rows and the other is derived (a square grid when possible). An interrupted run leaves a store \
            marked incomplete; running the same command again resumes it.
            """)

    @Argument(help: "Path of the store file to create.")
    var store: String

    @Flag(help: "Fill the memory with synthetic values (create supports no other source; see import).")
    var synthetic = false

    @Option(help: "Seed of the synthetic memory.")
    var seed: UInt64 = 0

    @Option(help: "Physical rows N_p of the value table (default: grid slots / expansion).")
    var rows: Int?

    @Option(help: "Row dimension v of the value table.")
    var dim: Int = 64

    @Option(help: "Element type of stored values: f32, f16 or bf16.")
    var dtype: ElementType = .bf16

    @Option(help: "Heads H.")
    var heads: Int = 4

    @Option(help: "Key dimension d per side.")
    var keyDim: Int = 128

    @Option(help: "Grid of virtual slots as ROWSxCOLS (default: square, from rows x expansion).")
    var grid: String?

    @Option(help: "Scoring: pkm, tucker or tucker-exact.")
    var scoring: Scoring = .pkm

    @Option(help: "Tucker rank r (PKM: 1).")
    var rank: Int?

    @Option(help: "Scoring cores c (multi-core scoring; PKM: 1).")
    var cores: Int?

    @Option(help: "Implicit value expansion E: virtual slots per physical row.")
    var expansion: Int = 1

    @Option(name: .customLong("topk"), help: "Slots selected per head k.")
    var topK: Int = 32

    @Option(name: .customLong("top-m"), help: "Rows and columns kept by Tucker's pre-selection m.")
    var topM: Int = 64

    @Option(help: "Tucker cores whose sum per head has singular values 1, D, D², ... (D in 0...1; trained cores have D near 0). Default: N(0, 1) cores.")
    var coreDecay: Double?

    @Option(help: "Activation of the selected scores: softmax, none, relu or sigmoid.")
    var activation: Activation = .softmax

    @Option(help: "Output dimension d_out (default: v without projectors when E = 1).")
    var outDim: Int?

    @Option(help: "Virtual slot addressing: identity, table (a stored permutation) or keyed (computed, no table). Default: keyed when E > 1.")
    var addressing: Addressing?

    @Option(help: "Gate each slot by the last N elements of its row (Spec/RETRIEVAL.md, \"Gates\"); rows are then --dim + N wide. Default 0: no gate.")
    var gateDim: Int = 0

    @Option(help: "The gate's activation: none or gelu.")
    var gateActivation: GateActivation = .none

    @Option(help: "Memory layers reading the one value table, each with its own keys (seeds SEED, SEED+1, ...): one is named 'default', several 'layer0', 'layer1', ...")
    var layers: Int = 1

    @OptionGroup var storage: StorageOptions

    /// The names of the layers to create.
    var layerNames: [String] { layers == 1 ? [LayerKeys.defaultName] : (0..<layers).map { "layer\($0)" } }

    func validate() throws {
        guard layers >= 1, layers <= 1024 else { throw ValidationError("--layers must be in 1...1024 (got \(layers))") }
        guard synthetic else { throw ValidationError("create needs --synthetic (use import for trained memories)") }
        let config = try retrievalConfig()
        if let coreDecay {
            guard coreDecay >= 0 && coreDecay <= 1 else { throw ValidationError("--core-decay must be in 0...1 (got \(coreDecay))") }
            guard config.scoring != .pkm else { throw ValidationError("--core-decay shapes Tucker cores; PKM scoring has none") }
        }
        let layout = try storage.layout(elementType: dtype, rows: config.physicalRows, dim: config.tableDim)
        // The tensors are generated in memory; the values must fit on disk: exactly, raw, and at
        // no less than an eighth of their raw size compressed (at most 13/16 and a checksum, nibble-coded).
        try MachineLimits.requireMemory(config.residentTensorBytes.map { $0 * 2 }, for: "the synthetic keys, cores, projectors and map of a layer")
        let stored = switch layout.codec {
        case .raw: checkedProduct(layout.rows, layout.rowBytes + 8)
        case .nibble: checkedProduct(layout.rows, layout.rowBytes * 13 / 16 + 4)
        case .zstd: layout.rawBytes / 8
        }
        try MachineLimits.requireDisk(stored, at: store, for: "\(layout.rows) rows of \(layout.rowBytes) bytes (\(layout.codec.rawValue))")
    }

    /// The retrieval parameters the flags describe.
    func retrievalConfig() throws -> RetrievalConfig {
        var gridRows: Int, gridCols: Int
        if let grid {
            let parts = grid.lowercased().split(separator: "x").compactMap { Int($0) }
            guard parts.count == 2, parts[0] > 0, parts[1] > 0 else { throw ValidationError("--grid must look like 1024x1024 (got '\(grid)')") }
            (gridRows, gridCols) = (parts[0], parts[1])
        } else {
            guard (rows ?? 1) >= 1, expansion >= 1 else { throw ValidationError("--rows and --expansion must be at least 1") }
            let (slots, overflow) = (rows ?? 65536).multipliedReportingOverflow(by: expansion)
            guard !overflow, slots <= 1 << 40 else {
                throw ValidationError("--rows \(rows ?? 65536) x --expansion \(expansion) is more than the 2^40 virtual slots a store allows")
            }
            gridRows = Int(Double(slots).squareRoot())
            while gridRows > 1 && slots % gridRows != 0 { gridRows -= 1 }
            gridCols = slots / gridRows
        }
        let (slots, overflow) = gridRows.multipliedReportingOverflow(by: gridCols)
        guard !overflow, slots <= 1 << 40 else { throw ValidationError("--grid \(gridRows)x\(gridCols) is more than the 2^40 virtual slots a store allows") }
        let physical = rows ?? (slots / max(1, expansion))
        let isPKM = scoring == .pkm
        let resolvedAddressing = addressing ?? (expansion > 1 ? .keyed : .identity)
        let config = RetrievalConfig(
            scoring: scoring, heads: heads, keyDim: keyDim, gridRows: gridRows, gridCols: gridCols,
            rank: rank ?? (isPKM ? 1 : 2), cores: cores ?? (isPKM ? 1 : 2), expansion: expansion,
            physicalRows: physical, valueDim: dim, outputDim: outDim ?? dim,
            topK: topK, topM: isPKM ? 0 : topM, activation: activation,
            addressing: resolvedAddressing, addressKey: resolvedAddressing == .keyed ? seed ^ 0x5EED_ADD2 : 0,
            gateDim: gateDim, gateActivation: gateActivation)
        do { try config.validate() } catch { throw ValidationError("\(error)") }
        return config
    }

    func run() throws {
        let config = try retrievalConfig()
        if let coreDecay {
            guard coreDecay >= 0 && coreDecay <= 1 else { throw ValidationError("--core-decay must be in 0...1 (got \(coreDecay))") }
            guard config.scoring != .pkm else { throw ValidationError("--core-decay shapes Tucker cores; PKM scoring has none") }
        }
        let layout = try storage.layout(elementType: dtype, rows: config.physicalRows, dim: config.tableDim)
        try runReportingErrors {
            let progress = ProgressReporter("create", unit: "rows")
            progress.begin()
            noteWriterWait(store)
            try SyntheticMemory.create(at: store, config: config, layout: layout, seed: seed, coreDecay: coreDecay,
                                       layers: layerNames, options: storage.writerOptions(progress))
            let opened = try Store.open(at: store, cacheBytes: 0)
            let stats = try opened.storageStatistics()
            print("created \(store): \(config.scoring.rawValue) memory, \(config.heads) heads, grid \(config.gridRows)x\(config.gridCols) " +
                  "= \(config.virtualSlots) virtual slots over \(config.physicalRows) rows x \(config.tableDim) \(dtype.rawValue) (E = \(config.expansion)), " +
                  "\(stats.shards) shards, \(humanBytes(stats.fileBytes)) on disk for \(humanBytes(layout.rawBytes)) of raw values" +
                  (layers > 1 ? "; \(layers) layers (\(layerNames.joined(separator: ", "))) read it" : ""))
        }
    }
}

extension Scoring: ExpressibleByArgument {}
extension Activation: ExpressibleByArgument {}
extension Addressing: ExpressibleByArgument {}
