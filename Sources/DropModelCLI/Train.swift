import ArgumentParser
import BundleFormat
import DropModelBase
import Foundation
import Training

/// `dropmodel train`: parses, calls ``Training/TrainingRun/train(_:observer:)``, prints.
struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Train a dropout MLP and write a bundle with its recipe, seed, data fingerprint and history.",
        discussion: """
            Every random draw is a function of the seed (Specs/random-streams.md) and every \
            reduction has a fixed order (Specs/determinism.md), so 'dropmodel replay' can retrain \
            the bundle bit for bit, with any --threads. Prints a line per epoch; on a terminal, \
            a progress bar with rate and ETA. The output's folder is checked before anything \
            is read or trained.

            Example: dropmodel train --data fashion-mnist --layers 784,1024,1024,10 \
            --keep 0.8,0.5,0.5 --epochs 10 --seed 1 -o model.h5
            """)

    @OptionGroup var recipeOptions: RecipeOptions
    @OptionGroup var seedOption: SeedOption
    @OptionGroup var threadsOption: ThreadsOption

    @Option(
        help: """
            Start from this bundle's weights, recipe and seed (e.g. one written by 'dropmodel init'); options given \
            override its recipe.
            """)
    var from: String?

    @Option(name: .shortAndLong, help: "The bundle to write (atomically, when training ends).")
    var output: String

    @OptionGroup var jsonOption: JSONOption

    func run() throws {
        // The library checks the output first too; with --from, check it before reading that bundle.
        if let from { try OutputCheck.verify(output, inputs: [from]) }
        let start = try from.map { try TrainingRun.startingPoint(from: $0) }
        let recipe = try recipeOptions.recipe(base: start?.recipe)
        if let start, recipe.network != start.recipe.network {
            throw DropModelError(
                code: .usage, file: from ?? "",
                message: "--layers cannot change the shape of the --from bundle (\(start.recipe.networkText))")
        }
        for p in recipeOptions.rateLikeKeeps(recipe) {
            FileHandle.standardError.write(
                Data(
                    """
                    dropmodel: warning: --keep \(Format.short(p)) keeps only \(Format.short(p * 100)) % of the units; \
                    if you meant a drop rate (Keras Dropout(rate), PyTorch nn.Dropout(p)), use --dropout-rate\n
                    """.utf8))
        }
        let seed = seedOption.seed ?? start?.seed ?? SeedOption.fresh()
        let threads = threadsOption.resolved
        let json = jsonOption.json
        if !json {
            print(
                "training \(recipe.networkText) \(recipe.activation.rawValue), "
                    + """
                    \(recipe.convention.rawValue) dropout keep \
                    \(recipe.keep.map { Format.short($0) }.joined(separator: ",")), 
                    """
                    + "seed \(seed), \(threads) thread\(threads == 1 ? "" : "s"), on \(recipe.data)")
        }
        let printer = RunPrinter(json: json, command: .train)
        let report = try TrainingRun.train(
            TrainingRun.Request(
                recipe: recipe, seed: seed, initial: start?.parameters, threads: threads, output: output),
            observer: printer.observe)
        if json {
            JSONOutput.print(
                "train",
                [
                    ("file", from.map { .string($0) } ?? .null), ("output", .string(report.output)),
                ] + JSONOutput.seed(report.seed) + [
                    ("threads", .int(threads)), ("epochs", .int(report.epochs.count)), ("data", .string(report.data)),
                    ("data_fingerprint", .string(report.dataFingerprint)),
                    ("initial_weights_sha256", JSONOutput.sha256(report.initialWeightsSHA256)),
                    ("weights_sha256", JSONOutput.sha256(report.weightsSHA256)),
                    ("test_error", .finite(report.epochs.last?.testError)), ("seconds", .finite(report.seconds)),
                ], lines: true)
        } else {
            print(
                String(
                    format: "wrote %@ (%d epochs, %.1f s); digest sha256:%@", output, report.epochs.count,
                    report.seconds, Hex.encode(report.weightsSHA256)))
        }
    }
}
