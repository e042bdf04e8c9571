import ArgumentParser
import BundleFormat
import Foundation
import Training
import TrainingData

/// `dropmodel train`.
struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Train a dropout MLP and write a bundle with its recipe, seed, data fingerprint and history.",
        discussion: """
            Every random draw is a function of the seed (Specs/random-streams.md) and every \
            reduction has a fixed order (Specs/determinism.md), so 'dropmodel replay' can retrain \
            the bundle bit for bit, with any --threads. Prints a line per epoch; on a terminal, \
            a progress bar with rate and ETA.

            Example: dropmodel train --data fashion-mnist --layers 784,1024,1024,10 \
            --keep 0.8,0.5,0.5 --epochs 10 --seed 1 -o model.h5
            """)

    @OptionGroup var recipeOptions: RecipeOptions
    @OptionGroup var seedOption: SeedOption
    @OptionGroup var threadsOption: ThreadsOption

    @Option(help: "Start from this bundle's weights, recipe and seed (e.g. one written by 'dropmodel init'); options given override its recipe.")
    var from: String?

    @Option(name: .shortAndLong, help: "The bundle to write (atomically, when training ends).")
    var output: String

    func run() throws {
        var recipe: Recipe
        var seed: Int64
        var initial: [Parameters]
        if let from {
            let bundle = try BundleReader(path: from)
            guard let t = bundle.info.training, let base = try? Recipe.decode(json: t.recipe) else {
                throw CommandFailure(message: "\(from): /training@recipe: the bundle has no dropmodel recipe to continue from")
            }
            guard (bundle.info.history?.epochs.count ?? 0) == 0 else {
                throw CommandFailure(
                    message: "\(from): /history: the bundle was already trained for \(bundle.info.history!.epochs.count) epochs; --from takes an epoch-0 bundle from 'dropmodel init'")
            }
            recipe = try recipeOptions.recipe(base: base)
            guard recipe.layers == base.layers else {
                throw ValidationError("--layers cannot change the shape of the --from bundle (\(base.layers))")
            }
            seed = try seedOption.seed.map { _ in try seedOption.resolve() } ?? bundle.info.rng?.seed ?? seedOption.resolve()
            initial = try bundle.readModel().parameters
        } else {
            recipe = try recipeOptions.recipe()
            seed = try seedOption.resolve()
            initial = recipe.initialParameters(seed: UInt64(seed))
        }
        let threads = try threadsOption.resolve()
        let data = try TrainingRun.loadData(recipe)
        print("training \(recipe.layers.map(String.init).joined(separator: "-")) \(recipe.activation.rawValue), "
              + "\(recipe.convention.rawValue) dropout keep \(recipe.keep.map { Format.short($0) }.joined(separator: ",")), "
              + "seed \(seed), \(threads) thread\(threads == 1 ? "" : "s"), on \(data.description)")
        let initialDigest = WeightDigest.sha256(initial)
        let trainer = Trainer(recipe: recipe, seed: UInt64(seed), data: data, initial: initial, threads: threads)
        let started = Date()
        var records: [EpochRecord] = []
        _ = TrainingRun.run(trainer, epochs: recipe.epochs) { m in
            records.append(TrainingRun.record(m, trainer))
            return true
        }
        let info = TrainingRun.info(recipe: recipe, seed: seed, data: data, initialDigest: initialDigest, records: records)
        try BundleWriter.write(Model(info: info, parameters: trainer.network.parameters), to: output)
        print(String(format: "wrote %@ (%d epochs, %.1f s); digest sha256:%@", output, records.count,
                     Date().timeIntervalSince(started), WeightDigest.hex(records.last?.weightsSHA256 ?? initialDigest)))
    }
}
