import ArgumentParser
import MemoryImport
import MemoryLayer
import MemoryStore

struct Export: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a store's memory layer out as safetensors.",
        discussion: "Tensors keep their stored types; values (the layer's window of the value table) are written in the store's element type; the retrieval parameters go into __metadata__. The file is a single-layer checkpoint: import followed by export gives back the same bytes for values and keys.")

    @Argument(help: "Path of the store.")
    var store: String

    @Option(name: .customLong("to"), help: "Path of the .safetensors file to write.")
    var destination: String

    @Option(help: "The layer to export (default: the store's only layer).")
    var layer: String?

    func run() throws {
        try runReportingErrors {
            let s = try Store.open(at: store, cacheBytes: 0, checksInBackground: false)  // reads every row itself
            let progress = ProgressReporter("export", unit: "rows")
            progress.begin()
            try MemoryImport.export(s, layer: layer, to: destination) { progress.update($0, of: $1) }
            print("exported \(store) to \(destination)")
        }
    }
}
