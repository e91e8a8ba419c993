import ArgumentParser
import MemoryStore

@main
struct Memtool: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "memtool",
        abstract: "Create, inspect, check and query product-key memory stores.",
        version: memtoolVersion,
        subcommands: []
    )
}
