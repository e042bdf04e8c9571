// swift-tools-version:6.1
// The GEMM micro-benchmark of scripts/benchmark: times dropmodel's `Gemm.multiply` on the
// matrix products of one training step. A separate package (not part of dropmodel's own
// sources) that depends on the repository by path and uses its `Kernels` library product.
import Foundation
import PackageDescription

// The repository is two folders up; a path dependency's identity is its folder's name, which
// depends on where the repository was cloned, so compute it rather than hard-coding it.
let repository = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    .standardizedFileURL

let package = Package(
    name: "GemmBench",
    dependencies: [
        .package(path: repository.path)
    ],
    targets: [
        .executableTarget(
            name: "GemmBench",
            dependencies: [.product(name: "Kernels", package: repository.lastPathComponent)],
            path: "Sources/GemmBench"
        )
    ]
)
