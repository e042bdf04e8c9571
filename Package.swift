// swift-tools-version:6.1
import PackageDescription

// One set of settings for every Swift target (swift-nio style).
let swiftSettings: [SwiftSetting] = [
    .swiftLanguageMode(.v6),
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("InternalImportsByDefault"),
]

// The layers, bottom to top; arrows point one way:
//   DropModelBase (errors, JSON, hex, atomic writes, output checks, version)
//   CHDF5 (C shim over libhdf5), CProbe (isolated pre-read, shared bounds), CFletcher
//     -> HDF5Layer (safe handles, typed errors, Fletcher-32) -> BundleFormat (spec, check, bake)
//   CZlib -> ZlibCodec (gzip, deflate, CRC-32) -> Charts (PNG, SVG)
//   DropoutRandom (Philox streams); CKernels -> Kernels (deterministic GEMM, threads)
//   TrainingData (IDX, HDF5 data, fingerprint)
//   -> Training (recipe, engine, train/replay/masks/eval/predict verbs)
//   BundleFormat -> Interop (Keras/safetensors import; ONNX, Keras, safetensors, NumPy export)
//   all of the above -> DropModelCLI (parses, calls one verb, prints) -> dropmodel (executable)
let package = Package(
    name: "dropmodel",
    products: [
        .executable(name: "dropmodel", targets: ["dropmodel"]),
        .library(name: "BundleFormat", targets: ["BundleFormat"]),
        .library(name: "HDF5Layer", targets: ["HDF5Layer"]),
        .library(name: "DropoutRandom", targets: ["DropoutRandom"]),
        .library(name: "Kernels", targets: ["Kernels"]),
        .library(name: "Interop", targets: ["Interop"]),
        .library(name: "Training", targets: ["Training"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
        .package(url: "https://github.com/apple/swift-system", from: "1.8.1"),
    ],
    targets: [
        // The headers come from Debian's hdf5/serial folder (shim.h), the library from the
        // archive that HDF5Layer links; no pkg-config, whose flags would link the shared library.
        .systemLibrary(
            name: "CHDF5",
            path: "Sources/CHDF5",
            providers: [.apt(["libhdf5-dev"])]
        ),
        .target(
            name: "DropModelBase",
            dependencies: [.product(name: "SystemPackage", package: "swift-system")],
            swiftSettings: swiftSettings
        ),
        .systemLibrary(name: "CZlib", path: "Sources/CZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"])]),
        // The isolated pre-read of untrusted files (a forked child; C, so the child runs no Swift).
        .target(name: "CProbe", dependencies: ["CHDF5"]),
        // Fletcher-32 as libhdf5's filter computes it (vectorised; always optimised).
        .target(name: "CFletcher", cSettings: [.unsafeFlags(["-O2"])]),
        .target(
            name: "HDF5Layer",
            dependencies: [
                "CHDF5", "CProbe", "CFletcher", "CZlib", "DropModelBase",
                .product(name: "SystemPackage", package: "swift-system"),
            ],
            swiftSettings: swiftSettings,
            // libhdf5 linked statically from Debian's libhdf5-dev archive: the shared library loads
            // 35 more (curl, GnuTLS, Kerberos, LDAP, for a network driver dropmodel never uses),
            // and resolving them was a third of every command's start (docs/benchmarks.md).
            linkerSettings: [
                .unsafeFlags(["-L/usr/lib/x86_64-linux-gnu/hdf5/serial", "-Xlinker", "-l:libhdf5.a"]),
                .linkedLibrary("sz"), .linkedLibrary("z"), .linkedLibrary("dl"), .linkedLibrary("m"),
            ]
        ),
        .target(
            name: "BundleFormat",
            dependencies: [
                "HDF5Layer", "DropModelBase", "DropoutRandom", "Kernels",
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(name: "ZlibCodec", dependencies: ["CZlib"], swiftSettings: swiftSettings),
        .target(name: "Charts", dependencies: ["ZlibCodec"], swiftSettings: swiftSettings),
        .target(name: "DropoutRandom", swiftSettings: swiftSettings),
        // Deterministic matrix kernels (Specs/determinism.md): C for explicit FMA intrinsics with
        // function multiversioning; always optimised, so debug and release run the same code.
        .target(
            name: "CKernels",
            cSettings: [.unsafeFlags(["-O2"])]
        ),
        .target(name: "Kernels", dependencies: ["CKernels"], swiftSettings: swiftSettings),
        .target(
            name: "TrainingData",
            dependencies: [
                "ZlibCodec", "HDF5Layer", "DropModelBase", .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "SystemPackage", package: "swift-system"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "Training",
            dependencies: ["BundleFormat", "DropoutRandom", "Kernels", "TrainingData", "DropModelBase", "Charts"],
            swiftSettings: swiftSettings),
        // Open MPI at run time (dlopen of libmpi.so.40, never linked) for data-parallel training
        // under mpirun (issue 16): CMPI resolves the few MPI calls, MPIRanks is the TrainingGroup.
        .target(name: "CMPI", linkerSettings: [.linkedLibrary("dl")]),
        .target(
            name: "MPIRanks", dependencies: ["CMPI", "Training", "DropModelBase"], swiftSettings: swiftSettings),
        .target(
            name: "Interop",
            dependencies: ["BundleFormat", "HDF5Layer", "ZlibCodec", "DropModelBase"],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "DropModelCLI",
            dependencies: [
                "BundleFormat", "HDF5Layer", "DropoutRandom", "Training", "TrainingData", "Interop", "Charts",
                "DropModelBase", "MPIRanks",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: swiftSettings
        ),
        .executableTarget(name: "dropmodel", dependencies: ["DropModelCLI"], swiftSettings: swiftSettings),
        // SplitMix64 for test data, with no dependencies (kernel and random-stream tests use it too).
        .target(name: "TestRandom", path: "Tests/TestRandom", swiftSettings: swiftSettings),
        .target(
            name: "TestSupport",
            dependencies: ["BundleFormat", "HDF5Layer", "DropModelBase"],
            path: "Tests/TestSupport",
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "HDF5LayerTests",
            dependencies: [
                "HDF5Layer", "DropModelBase", "TestSupport", .product(name: "SystemPackage", package: "swift-system"),
            ], swiftSettings: swiftSettings),
        .testTarget(
            name: "BundleFormatTests",
            dependencies: ["DropModelBase", "BundleFormat", "HDF5Layer", "TestSupport"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "DropModelBaseTests",
            dependencies: ["DropModelBase", "TestSupport", .product(name: "SystemPackage", package: "swift-system")],
            swiftSettings: swiftSettings),
        .testTarget(
            name: "DropoutRandomTests", dependencies: ["DropoutRandom", "TestRandom"], swiftSettings: swiftSettings),
        .testTarget(name: "KernelsTests", dependencies: ["Kernels", "TestRandom"], swiftSettings: swiftSettings),
        .testTarget(
            name: "HostileInputTests",
            dependencies: ["DropModelBase", "BundleFormat", "HDF5Layer", "TestSupport", "dropmodel"],
            swiftSettings: swiftSettings),
        .testTarget(
            name: "TrainingTests",
            dependencies: [
                "DropModelBase", "Training", "TrainingData", "BundleFormat", "DropoutRandom", "TestSupport",
                "TestRandom", "Charts",
            ],
            swiftSettings: swiftSettings),
        .testTarget(
            name: "TrainingDataTests",
            dependencies: ["DropModelBase", "TrainingData", "HDF5Layer", "TestSupport", "ZlibCodec"],
            swiftSettings: swiftSettings),
        .testTarget(
            name: "InteropTests",
            dependencies: ["DropModelBase", "Interop", "BundleFormat", "HDF5Layer", "TestSupport", "dropmodel"],
            swiftSettings: swiftSettings),
        .testTarget(
            name: "CLITests",
            dependencies: [
                "DropModelBase",
                "BundleFormat", "HDF5Layer", "TestSupport", "dropmodel",
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: swiftSettings
        ),
    ]
)
