import ArgumentParser
import Foundation
import MemoryRetrieval
import MemoryStore

/// memtool's version, written into the manifests of the stores it creates.
let memtoolVersion = "0.1.0"

@main
struct Memtool: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "memtool",
        abstract: "Create, import, inspect, check, compact, query, export and benchmark product-key memory stores.",
        version: memtoolVersion,
        subcommands: [Create.self, Import.self, Inspect.self, Verify.self, Compact.self, Query.self, Export.self, Bench.self, StorageBench.self,
                      RemoveLayer.self, Split.self]
    )

    /// Parses and runs; usage errors exit 2 (the documented contract) instead of ArgumentParser's 64.
    static func main() {
        useFastBLASKernels()
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

/// Starts memtool again with `OPENBLAS_CORETYPE` set where OpenBLAS fell back to its SSE3
/// kernels on a CPU that runs faster ones (``BLASKernels``); carries on as it is if that fails.
private func useFastBLASKernels() {
    guard let core = BLASKernels.restartWith else { return }
    setenv("OPENBLAS_CORETYPE", core, 1)
    execv("/proc/self/exe", CommandLine.unsafeArgv)
}

/// Turns errors from the libraries into a message on stderr and exit code 1; ArgumentParser's
/// own errors (usage, help, exit codes) pass through.
func runReportingErrors(_ body: () throws -> Void) throws {
    do {
        try body()
    } catch let error as ExitCode {
        throw error
    } catch let error as ValidationError {
        throw error
    } catch {
        printError("error: \(error is LMDBError ? "LMDB: " : "")\(error)")
        throw ExitCode.failure
    }
}
