import Foundation
import FuzzTargets

#if FUZZING
/// libFuzzer's entry (built by Tools/fuzz.sh with -sanitize=fuzzer); the target is named by
/// the environment variable PKM_FUZZ_TARGET.
let selectedTarget: @Sendable (UnsafeRawBufferPointer) -> Void = {
    let name = ProcessInfo.processInfo.environment["PKM_FUZZ_TARGET"] ?? ""
    guard let target = fuzzTargets[name] else {
        fatalError("set PKM_FUZZ_TARGET to one of \(fuzzTargets.keys.sorted())")
    }
    return target
}()

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    selectedTarget(UnsafeRawBufferPointer(start: data, count: size))
    return 0
}

@_silgen_name("LLVMFuzzerRunDriver")
func runFuzzerDriver(_ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
                     _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt) -> CInt

/// SwiftPM links an executable's `main` to `<module>_main`; hand it to libFuzzer's driver.
@_cdecl("pkm_fuzz_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    var argc = argc
    var argv = argv
    return runFuzzerDriver(&argc, &argv, fuzzOne)
}
#else
/// Without libFuzzer: `pkm-fuzz replay CORPUS_DIR` runs every file of CORPUS_DIR/TARGET/
/// through TARGET, and `pkm-fuzz seeds CORPUS_DIR` writes the seed inputs there.
@main struct FuzzCorpusTool {
    static func main() throws {
        let args = CommandLine.arguments.dropFirst()
        guard args.count == 2, let corpus = args.last else {
            print("usage: pkm-fuzz replay|seeds CORPUS_DIR")
            exit(2)
        }
        let fm = FileManager.default
        switch args.first {
        case "seeds":
            for (name, bytes) in try seedInputs() {
                let target = name.split(separator: "-")[0]
                let dir = "\(corpus)/\(target)"
                try fm.createDirectory(atPath: dir, withIntermediateDirectories: true)
                guard fm.createFile(atPath: "\(dir)/seed-\(name)", contents: Data(bytes)) else { throw CocoaError(.fileWriteUnknown) }
            }
        case "replay":
            var count = 0
            for name in fuzzTargets.keys.sorted() {
                let dir = "\(corpus)/\(name)"
                for file in ((try? fm.contentsOfDirectory(atPath: dir)) ?? []).sorted() {
                    let bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: "\(dir)/\(file)")))
                    bytes.withUnsafeBytes { fuzzTargets[name]!($0) }
                    count += 1
                }
            }
            print("replayed \(count) inputs without a crash")
        default:
            print("usage: pkm-fuzz replay|seeds CORPUS_DIR")
            exit(2)
        }
    }
}
#endif
