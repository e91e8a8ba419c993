import ArgumentParser
import Foundation
import MemoryRetrieval
import MemoryStore
import TensorFiles

@main
struct Memtool: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "memtool",
        abstract: "Create, import, inspect, check, compact, query, export and benchmark product-key memory stores.",
        version: memtoolVersion,
        subcommands: [Create.self, Import.self, Inspect.self, Verify.self, Compact.self, Query.self, Export.self, Bench.self, StorageBench.self]
    )

    /// Parses and runs; usage errors exit 2 (the documented contract) instead of ArgumentParser's 64.
    static func main() {
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch {
            if exitCode(for: error) == .validationFailure {
                printError(fullMessage(for: error))
                Foundation.exit(2)
            }
            exit(withError: error)
        }
    }
}

/// Turns library errors into a message and exit code 1; ArgumentParser keeps 2 for usage errors.
func runReportingErrors(_ body: () throws -> Void) throws {
    do {
        try body()
    } catch let error as StoreError {
        printError("error: \(error)")
        throw ExitCode.failure
    } catch let error as LMDBError {
        printError("error: LMDB: \(error)")
        throw ExitCode.failure
    } catch let error as TensorFileError {
        printError("error: \(error)")
        throw ExitCode.failure
    } catch let error as RetrievalError {
        printError("error: \(error)")
        throw ExitCode.failure
    }
}
