// swift-tools-version:6.1
// The convolution micro-benchmark: times one training step (forward, backward, update) of a
// small CNN with dropmodel's `Convolution`, `Pooling` and `Gemm` kernels. A separate package
// (not part of dropmodel's own sources) that depends on the repository by path and uses its
// `Kernels` library product.
import Foundation
import PackageDescription

// The repository is two folders up; a path dependency's identity is its folder's name, which
// depends on where the repository was cloned, so compute it rather than hard-coding it.
let repository = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    .standardizedFileURL

let package = Package(
    name: "ConvBench",
    dependencies: [
        .package(path: repository.path)
    ],
    targets: [
        .executableTarget(
            name: "ConvBench",
            dependencies: [.product(name: "Kernels", package: repository.lastPathComponent)],
            path: "Sources/ConvBench",
            // A script-style main.swift whose globals the worker closures read: Swift 5 mode, so
            // they need no actor annotations (the benchmark's threads never share writes).
            swiftSettings: [.swiftLanguageMode(.v5)]
        )
    ]
)
