import ArgumentParser
import Foundation
import MemoryImport
import MemoryLayer
import MemoryRetrieval
import MemoryStore
import TensorFiles

struct Import: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "import",
        abstract: "Turn a trained memory layer (safetensors, or a directory of .npy files) into a store.",
        discussion: """
            Tensors are found by the names of Spec/RETRIEVAL.md (values, row_keys, col_keys, cores, projectors, \
            virtual_map, row_proj, col_proj); --rename maps others. Hyper-parameters come from the safetensors \
            __metadata__ (scoring, topk, top_m, activation, addressing, address_key) unless flags give them. \
            Addressing defaults to table when the file holds a virtual_map and to identity otherwise; keyed \
            addressing is asked for by name (--addressing keyed, or metadata addressing=keyed with address_key). Every header and shape is checked before the store is created; the parameters \
            the store will answer with are printed at the end. An interrupted import leaves the store marked \
            incomplete; running the same command again resumes it. With --layer NAME on a complete store that has \
            no layer NAME, the checkpoint's layer is added to it, in one transaction, reading the store's value \
            table: the checkpoint's values must equal the rows it would read, byte for byte, unless \
            --values-from-store.
            """)

    @Argument(help: "Path of the store file to create (or, with --layer, a complete store to add the layer to).")
    var store: String

    @Option(help: "Name of the layer in the store (default: 'default'); adds it to a complete store that lacks it.")
    var layer: String?

    @Flag(help: "Adding a layer: read the store's value table without comparing it with the checkpoint's values (which may be absent).")
    var valuesFromStore = false

    @Option(help: "The rows of the table the layer reads: adding a layer, of the store's table (default: the checkpoint's values' rows, else all); creating a store, of the checkpoint's values, which all become the table (default: all).")
    var window: Int?

    @Option(help: "The first row of the layer's window (rows wrap past the table's last row).")
    var poolOffset: Int = 0

    @Option(help: "Adding a gated layer with --values-from-store: the last N elements of each of the store's rows are its gate vectors (Spec/RETRIEVAL.md, \"Gates\"). Creating a store, a 'gates' tensor [N_p, g] in the checkpoint gives them.")
    var gateDim: Int?

    @Option(help: "The gate's activation: none or gelu (default: metadata gate_activation, else none).")
    var gateActivation: GateActivation?

    @Option(name: .customLong("from"), help: "A .safetensors file or a directory of .npy files.")
    var source: String

    @Option(help: "Map a tensor name: CANONICAL=NAME_IN_FILE (repeatable).")
    var rename: [String] = []

    @Option(help: "Scoring: pkm, tucker or tucker-exact (default: metadata, else tucker when cores are present).")
    var scoring: Scoring?

    @Option(name: .customLong("topk"), help: "Slots selected per head (default: metadata, else 32).")
    var topK: Int?

    @Option(name: .customLong("top-m"), help: "Tucker pre-selection size (default: metadata, else 64).")
    var topM: Int?

    @Option(help: "Activation: softmax, none, relu or sigmoid (default: metadata, else softmax).")
    var activation: Activation?

    @Option(help: "Virtual slot to row mapping: identity, table (the file's virtual_map) or keyed (default: metadata, else table with a map, identity without).")
    var addressing: Addressing?

    @Option(help: "Key of the computed virtual-slot bijection (keyed addressing).")
    var addressKey: UInt64?

    @Option(help: "Store values as f32, f16 or bf16 (default: the file's type).")
    var dtype: ElementType?

    @Option(help: "How the checkpoint holds the layer: store (the names of Spec/RETRIEVAL.md), pkm-pytorch (the product-key-memory package's keys [H, n, 2, d] and values.weight), meta-memory (Meta's HashingMemory: keys [2·H·n, k_dim/2], values.weight; its PEER variant's values_v.weight and values_u.weight as a gated layer) or ultramem (UltraMemLayerV1's or V2's state dict: keys [H, 2, n, d, r] and their LayerNorm, tucker_core.i, values_for_look_up, values_proj.weight, shuffle_index, and V2's pre_values_for_look_up as the gate; k from metadata knn or --topk with --top-m; V2's window of the pool with --window and --pool-offset).")
    var layout: CheckpointLayout = .store

    @OptionGroup var storage: StorageOptions

    func validate() throws {
        for r in rename where r.split(separator: "=").count != 2 {
            throw ValidationError("--rename takes CANONICAL=NAME_IN_FILE (got '\(r)')")
        }
    }

    func run() throws {
        try runReportingErrors {
            var options = MemoryImport.Options()
            for r in rename {
                let parts = r.split(separator: "=", maxSplits: 1).map(String.init)
                options.renames[parts[0]] = parts[1]
            }
            options.scoring = scoring; options.topK = topK; options.topM = topM; options.activation = activation
            options.addressing = addressing; options.addressKey = addressKey; options.elementType = dtype
            options.rowsPerShard = storage.rowsPerShard; options.codec = storage.codec; options.level = storage.level
            options.dictionary = storage.trainDictionary
            let progress = ProgressReporter("import", unit: "rows")
            options.writer = storage.writerOptions(progress)
            progress.begin()
            options.layout = layout
            options.layer = layer; options.valuesFromStore = valuesFromStore; options.window = window; options.poolOffset = poolOffset
            options.gateDim = gateDim; options.gateActivation = gateActivation
            noteWriterWait(store)
            let config = try MemoryImport.run(from: TensorSource(path: source), to: store, options: options)
            let stats = try Store.open(at: store, cacheBytes: 0).storageStatistics()
            print("imported \(source) into \(store): \(stats.shards) shards, \(humanBytes(stats.fileBytes)) on disk")
            print("layer        \(layer ?? LayerKeys.defaultName): \(config.summary)")
        }
    }
}

extension CheckpointLayout: ExpressibleByArgument {}
extension GateActivation: ExpressibleByArgument {}
