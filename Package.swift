// swift-tools-version:6.1
import PackageDescription

// One set of settings for every Swift target (swift-nio style).
let swiftSettings: [SwiftSetting] = [
    .swiftLanguageMode(.v6),
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("InternalImportsByDefault"),
]

// The layers, bottom to top; arrows point one way:
//   CHDF5 (C shim) -> HDF5Layer (safe handles, errors) -> BundleFormat (spec v1)
//   DropoutRandom (Philox streams) -> Training (recipe, engine)
//   BundleFormat -> Interop (Keras/safetensors import; ONNX, Keras, safetensors, NumPy export)
//   all of the above -> DropModelCLI (commands) -> dropmodel (executable)
let package = Package(
    name: "dropmodel",
    products: [
        .executable(name: "dropmodel", targets: ["dropmodel"]),
        .library(name: "BundleFormat", targets: ["BundleFormat"]),
        .library(name: "HDF5Layer", targets: ["HDF5Layer"]),
        .library(name: "DropoutRandom", targets: ["DropoutRandom"]),
        .library(name: "Kernels", targets: ["Kernels"]),
        .library(name: "Interop", targets: ["Interop"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
    ],
    targets: [
        .systemLibrary(
            name: "CHDF5",
            path: "Sources/CHDF5",
            pkgConfig: "hdf5",
            providers: [.apt(["libhdf5-dev"])]
        ),
        .systemLibrary(name: "CZlib", path: "Sources/CZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"])]),
        // The isolated pre-read of untrusted files (a forked child; C, so the child runs no Swift).
        .target(name: "CProbe", dependencies: ["CHDF5"]),
        .target(name: "HDF5Layer", dependencies: ["CHDF5", "CProbe"], swiftSettings: swiftSettings),
        .target(
            name: "BundleFormat",
            dependencies: ["HDF5Layer", "Kernels", .product(name: "Crypto", package: "swift-crypto")],
            swiftSettings: swiftSettings
        ),
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
            dependencies: ["CZlib", "HDF5Layer", .product(name: "Crypto", package: "swift-crypto")],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "Training", dependencies: ["BundleFormat", "DropoutRandom", "Kernels", "TrainingData"],
            swiftSettings: swiftSettings),
        .target(
            name: "Interop",
            dependencies: ["BundleFormat", "HDF5Layer", "CZlib"],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "DropModelCLI",
            dependencies: [
                "BundleFormat", "HDF5Layer", "DropoutRandom", "Training", "TrainingData", "Interop",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: swiftSettings
        ),
        .executableTarget(name: "dropmodel", dependencies: ["DropModelCLI"], swiftSettings: swiftSettings),
        .target(
            name: "TestSupport",
            dependencies: ["BundleFormat", "HDF5Layer"],
            path: "Tests/TestSupport",
            swiftSettings: swiftSettings
        ),
        .testTarget(name: "HDF5LayerTests", dependencies: ["HDF5Layer", "TestSupport"], swiftSettings: swiftSettings),
        .testTarget(
            name: "BundleFormatTests",
            dependencies: ["BundleFormat", "HDF5Layer", "TestSupport"],
            swiftSettings: swiftSettings
        ),
        .testTarget(name: "DropoutRandomTests", dependencies: ["DropoutRandom"], swiftSettings: swiftSettings),
        .testTarget(name: "KernelsTests", dependencies: ["Kernels"], swiftSettings: swiftSettings),
        .testTarget(
            name: "HostileInputTests",
            dependencies: ["BundleFormat", "HDF5Layer", "TestSupport", "dropmodel"],
            swiftSettings: swiftSettings),
        .testTarget(
            name: "TrainingTests", dependencies: ["Training", "TrainingData", "BundleFormat", "DropoutRandom", "TestSupport"],
            swiftSettings: swiftSettings),
        .testTarget(
            name: "TrainingDataTests", dependencies: ["TrainingData", "HDF5Layer", "TestSupport"], swiftSettings: swiftSettings),
        .testTarget(
            name: "InteropTests",
            dependencies: ["Interop", "BundleFormat", "HDF5Layer", "TestSupport", "dropmodel"],
            swiftSettings: swiftSettings),
        .testTarget(
            name: "CLITests",
            dependencies: [
                "BundleFormat", "HDF5Layer", "TestSupport", "dropmodel",
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: swiftSettings
        ),
    ]
)
