import ArgumentParser
import MemoryStore

struct RemoveLayer: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "remove-layer",
        abstract: "Remove a memory layer from a store, in one transaction; the value table stays.",
        discussion: "Killed at any moment, the store holds the layer or does not. The freed pages are reused by later writes; compact gives them back to the file system.")

    @Argument(help: "Path of the store.")
    var store: String

    @Argument(help: "Name of the layer to remove.")
    var layer: String

    func run() throws {
        try runReportingErrors {
            noteWriterWait(store)
            let writer = try StoreWriter.editing(at: store)
            try writer.removeLayer(layer)
            let left = try writer.layerNames()
            print("removed layer \(layer) from \(store); layers left: \(left.isEmpty ? "none" : left.joined(separator: ", "))")
        }
    }
}
