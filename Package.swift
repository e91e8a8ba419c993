// swift-tools-version:6.2
import PackageDescription

let package = Package(
    name: "ProductKeyMemoryStore",
    products: [
        .library(name: "MemoryStore", targets: ["MemoryStore"]),
        .library(name: "MemoryRetrieval", targets: ["MemoryRetrieval"]),
        .library(name: "MemoryLayer", targets: ["MemoryLayer"]),
        .library(name: "MemoryImport", targets: ["MemoryImport"]),
        .library(name: "MemoryFormat", targets: ["MemoryFormat"]),
        .library(name: "TensorFiles", targets: ["TensorFiles"]),
        // The C API (Sources/CPKMStore/include/pkmstore.h) as libpkmstore.so, for Python and C callers.
        .library(name: "pkmstore", type: .dynamic, targets: ["PKMStore"]),
        .executable(name: "memtool", targets: ["memtool"]),
    ],
    dependencies: [
        // The CLI's parsing, help and validation; a well-kept library beats hand-rolled argv code.
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        .systemLibrary(
            name: "CLMDB",
            pkgConfig: "lmdb",
            providers: [.apt(["liblmdb-dev"])]
        ),
        .systemLibrary(
            name: "CZstd",
            pkgConfig: "libzstd",
            providers: [.apt(["libzstd-dev"])]
        ),
        .systemLibrary(
            name: "COpenBLAS",
            pkgConfig: "openblas",
            providers: [.apt(["libopenblas-dev"])]
        ),
        // The gather-reduce kernel: prefetching and AVX2/FMA/F16C chosen at run time, which
        // Swift compiled for baseline x86-64 cannot express (Sources/CGatherKernel/include).
        // Compiled without the frame pointer SwiftPM asks for with `-fno-omit-frame-pointer`, which
        // it places after our flags, so that a `-fomit-frame-pointer` of ours would lose; the
        // compiler's own setting, passed with -Xclang, comes after it. With the frame pointer the
        // loops that locate rows in a sharded table ran 6-23% slower, the flat ones 2-3%
        // (`Tools/kernel_ab.sh WORKDIR --frame-pointer`, BENCHMARKS.md "eleventh session"). Since tools version 6.2
        // a package may depend on a target with unsafe flags.
        .target(name: "CGatherKernel", cSettings: [.unsafeFlags(["-Xclang", "-mframe-pointer=none"])]),
        // Key scores from bfloat16 copies of the keys for small batches, AVX2/FMA chosen at run time.
        .target(name: "CKeyScoring"),
        // The processor's spin-wait hint, for the worker pool's waiting threads.
        .target(name: "CSpinWait"),
        // Internal support shared by the package's targets (package access only): hashing,
        // seeded generators, 16-bit float conversion, the lock, the worker pool, checked sizes,
        // file reads.
        .target(name: "_MemorySupport", dependencies: ["CSpinWait", "CGatherKernel"]),
        // What a store holds, as values: element types, tensors, the manifest and table layout,
        // meta records and the store's errors. Shared by the store and the tensor-file readers.
        .target(name: "MemoryFormat", dependencies: ["_MemorySupport"]),
        .target(
            name: "MemoryStore",
            dependencies: ["CLMDB", "CZstd", "CGatherKernel", "MemoryFormat", "_MemorySupport"]
        ),
        .target(name: "MemoryRetrieval", dependencies: ["COpenBLAS", "CKeyScoring", "_MemorySupport"]),
        .target(name: "TensorFiles", dependencies: ["MemoryFormat", "_MemorySupport"]),
        .target(name: "MemoryLayer", dependencies: ["MemoryStore", "MemoryRetrieval"]),
        .target(name: "MemoryImport", dependencies: ["MemoryLayer", "MemoryStore", "MemoryRetrieval", "TensorFiles"]),
        // Not a product: the lookup and storage benchmarks, synthetic memories and the flat
        // baselines behind `memtool bench`, `storage-bench` and `create --synthetic`.
        .target(
            name: "MemoryBenchmarks",
            dependencies: ["MemoryLayer", "MemoryStore", "MemoryRetrieval", "TensorFiles", "_MemorySupport"]
        ),
        .executableTarget(
            name: "memtool",
            dependencies: [
                "MemoryStore",
                "MemoryRetrieval",
                "MemoryLayer",
                "MemoryImport",
                "MemoryBenchmarks",
                "TensorFiles",
                "_MemorySupport",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        // The header of the C API; its functions are PKMStore's @_cdecl Swift functions.
        .target(name: "CPKMStore"),
        .target(
            name: "PKMStore",
            dependencies: ["CPKMStore", "MemoryStore", "MemoryRetrieval", "MemoryLayer", "MemoryImport", "TensorFiles", "_MemorySupport"]
        ),
        // Not a product: the decoders' fuzzing entry points, for pkm-fuzz and the corpus tests.
        .target(name: "FuzzTargets", dependencies: ["MemoryStore", "TensorFiles", "MemoryBenchmarks", "_MemorySupport"]),
        // Decoder fuzzing: replays the corpus normally, drives libFuzzer when built by Tools/fuzz.sh.
        .executableTarget(name: "pkm-fuzz", dependencies: ["FuzzTargets"]),
        // Scratch directories, the child-process runner and reference conversions for every test target.
        .target(name: "TestSupport", dependencies: ["MemoryFormat", "TensorFiles"], path: "Tests/TestSupport"),
        .testTarget(name: "MemoryStoreTests", dependencies: ["MemoryStore", "MemoryBenchmarks", "FuzzTargets", "TestSupport", "CLMDB", "_MemorySupport"]),
        .testTarget(name: "MemoryRetrievalTests", dependencies: ["MemoryRetrieval", "MemoryLayer", "MemoryBenchmarks", "MemoryStore", "TestSupport", "COpenBLAS", "CKeyScoring", "_MemorySupport"]),
        .testTarget(name: "MemtoolTests", dependencies: ["MemoryStore", "MemoryRetrieval", "MemoryLayer", "MemoryImport", "MemoryBenchmarks", "TensorFiles", "FuzzTargets", "TestSupport", "_MemorySupport", "memtool"]),
        // The slow suites: killed and resumed writers, corrupted and full disks, other processes,
        // earlier format versions, mutated files and the option sweep (`swift test --skip ReliabilityTests`
        // runs the others in seconds).
        .testTarget(name: "ReliabilityTests", dependencies: ["MemoryStore", "MemoryBenchmarks", "TensorFiles", "TestSupport", "_MemorySupport", "memtool"]),
    ],
    swiftLanguageModes: [.v6]
)
