import ArgumentParser
import DropModelBase
import Training

/// `dropmodel init`: the seeded initial weights of a recipe, without training.
struct Init: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a bundle with a recipe's seeded initial weights (epoch 0), without training.",
        discussion: """
            The weights are a pure function of the seed and the layer sizes \
            (Specs/random-streams.md), generated and written one layer at a time, so any size \
            works in bounded extra memory. 'dropmodel train --from' continues from such a bundle.
            """)

    @OptionGroup var recipe: RecipeOptions
    @OptionGroup var seed: SeedOption

    @Option(name: .shortAndLong, help: "The bundle to write.")
    var output: String

    @OptionGroup var jsonOption: JSONOption
    @OptionGroup var quietOption: QuietOption

    func run() throws {
        let report = try InitialBundle.write(
            recipe: try recipe.recipe(), seed: seed.seed ?? SeedOption.fresh(), to: output)
        let r = report.recipe
        if jsonOption.json {
            JSONOutput.print(
                "init",
                [("output", .string(output))] + JSONOutput.seed(report.seed) + [
                    ("layers", r.jsonValue.object?["layers"] ?? .null), ("convention", .string(r.convention.rawValue)),
                    ("weights_sha256", JSONOutput.sha256(report.weightsSHA256)),
                ])
        } else {
            print(
                """
                wrote \(output): \(r.networkText) \(r.convention.rawValue), seed \
                \(report.seed), epoch 0
                """)
        }
    }
}
