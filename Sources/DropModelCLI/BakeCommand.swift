import ArgumentParser
import BundleFormat
import DropModelBase
import Foundation

/// `dropmodel bake`: parses, calls ``BundleFormat/Bake/run(input:output:dtype:)``, prints.
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

    @Option(help: "Element type of the baked weights (default float32).")
    var dtype: BakedType?

    @OptionGroup var jsonOption: JSONOption
    @OptionGroup var quietOption: QuietOption

    func run() throws {
        let started = Date()
        let progress = VerbProgress("bake")
        let r: Bake.Report
        do {
            defer { progress.finish() }
            r = try Bake.run(input: input, output: output, dtype: dtype?.weightType, progress: progress.observe)
        }
        let seconds = Date().timeIntervalSince(started)
        if jsonOption.json {
            JSONOutput.print(
                "bake",
                [
                    ("file", .string(input)), ("output", .optional(r.output)),
                    ("outcome", .string(r.outcome == .baked ? "baked" : "not-needed")),
                    ("dtype", .string(r.dtype.rawValue)),
                    ("scales", .array(r.scales.map { .number($0) })),
                    ("unbaked_weights_sha256", JSONOutput.sha256(r.unbakedWeightsSHA256)),
                    ("seconds", .finite(seconds)),
                ])
            return
        }
        switch r.outcome {
        case .notNeeded:
            print(
                "\(input) uses the inverted convention: its weights were scaled by 1/p during training and are "
                    + "used for inference as they are. Nothing to bake; nothing written.")
        case .baked:
            let scales = r.scales.map { Format.short($0) }.joined(separator: ", ")
            print(
                String(
                    format: "baked %@ -> %@ (%@, weights scaled by %@; %.2f s)", input, output, r.dtype.rawValue,
                    scales, seconds))
        }
    }
}
