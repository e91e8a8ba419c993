// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "ProductKeyMemoryStore",
    products: [
        .library(name: "MemoryStore", targets: ["MemoryStore"]),
        .library(name: "MemoryRetrieval", targets: ["MemoryRetrieval"]),
        .library(name: "MemoryLayer", targets: ["MemoryLayer"]),
        .library(name: "TensorFiles", targets: ["TensorFiles"]),
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
        .target(name: "CGatherKernel"),
        // Internal support shared by the libraries (package access only).
        .target(name: "_MemorySupport"),
        .target(
            name: "MemoryStore",
            dependencies: ["CLMDB", "CZstd", "CGatherKernel", "_MemorySupport"]
        ),
        .target(name: "MemoryRetrieval", dependencies: ["COpenBLAS", "_MemorySupport"]),
        .target(name: "TensorFiles", dependencies: ["MemoryStore", "_MemorySupport"]),
        .target(name: "MemoryLayer", dependencies: ["MemoryStore", "MemoryRetrieval", "TensorFiles"]),
        .executableTarget(
            name: "memtool",
            dependencies: [
                "MemoryStore",
                "MemoryRetrieval",
                "MemoryLayer",
                "TensorFiles",
                "_MemorySupport",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        // Decoder fuzzing: replays the corpus normally, drives libFuzzer when built by Tools/fuzz.sh.
        .executableTarget(name: "pkm-fuzz", dependencies: ["MemoryStore", "TensorFiles"]),
        .testTarget(name: "MemoryStoreTests", dependencies: ["MemoryStore", "CLMDB"]),
        .testTarget(name: "MemoryRetrievalTests", dependencies: ["MemoryRetrieval", "MemoryLayer", "MemoryStore", "COpenBLAS", "_MemorySupport"]),
        .testTarget(name: "MemtoolTests", dependencies: ["MemoryStore", "MemoryRetrieval", "MemoryLayer", "TensorFiles", "memtool"]),
    ],
    swiftLanguageModes: [.v6]
)
