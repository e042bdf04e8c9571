import ArgumentParser
import BundleFormat
import Foundation

/// `dropmodel bake`.
struct BakeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bake",
        abstract: "Fold the weight-scaling rule (W_test = p·W) into a classic bundle's weights, once and never twice.",
        discussion: """
            Multiplies every layer's weights by the keep probability of its inputs (biases \
            unchanged) and marks the output baked; keep probabilities, seed, recipe and history \
            stay as provenance (Specs/bake.md). Streams the weights in blocks: memory stays \
            bounded whatever the model size. The input is never modified; the output is written \
            atomically.

            An inverted bundle needs no baking: its weights are used as they are; nothing is \
            written (exit 0). An already baked bundle is refused (exit 2): baking twice is the \
            silent error this command exists to prevent.
            """)

    @Argument(help: "The classic bundle to bake.")
    var input: String

    @Option(name: .shortAndLong, help: "The baked bundle to write.")
    var output: String

    @Option(help: "Element type of the baked weights: float32 (default) or float16.")
    var dtype: String?

    func run() throws {
        var type: WeightType?
        if let dtype {
            guard let t = WeightType(rawValue: dtype), t != .float64 else {
                throw ValidationError("--dtype must be float32 or float16")
            }
            type = t
        }
        if URL(fileURLWithPath: input).standardizedFileURL == URL(fileURLWithPath: output).standardizedFileURL {
            throw ValidationError("-o must name a new file: the input is never modified")
        }
        let started = Date()
        switch try Bake.run(input: input, output: output, dtype: type) {
        case .notNeeded:
            print("\(input) uses the inverted convention: its weights were scaled by 1/p during training and are "
                  + "used for inference as they are. Nothing to bake; nothing written.")
        case .baked:
            let info = try BundleReader(path: output).info
            let scales = info.layers.map { Format.short($0.keepProb) }.joined(separator: ", ")
            print(String(format: "baked %@ -> %@ (%@, weights scaled by %@; %.2f s)", input, output,
                         info.layers.first?.dtype.rawValue ?? "", scales, Date().timeIntervalSince(started)))
        }
    }
}
