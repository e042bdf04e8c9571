import ArgumentParser
import Foundation
import BundleFormat
import Training

/// The recipe options `init` and `train` share. Every option is optional: an option given
/// overrides the base recipe (a `--from` bundle's, or the defaults shown).
struct RecipeOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Layer widths, input first (default 784,1024,1024,10).", valueName: "n,n,..."))
    var layers: String?

    @Option(help: ArgumentHelp(
        "Keep probability of each dense layer's inputs, input layer first, one per dense layer (default 0.8,0.5,0.5).",
        valueName: "p,p,..."))
    var keep: String?

    @Option(help: "Hidden activation: relu, logistic, tanh or linear; the output layer is softmax (default relu).")
    var activation: String?

    @Option(help: "classic (the paper's: weights scaled by p at test time) or inverted (scaled by 1/p while training) (default classic).")
    var convention: String?

    @Option(help: "Number of epochs (default 10).")
    var epochs: Int?

    @Option(name: .customLong("batch-size"), help: "Minibatch size (default 100).")
    var batchSize: Int?

    @Option(name: .customLong("learning-rate"), help: "Learning rate at epoch 1 (default 0.1).")
    var learningRate: Double?

    @Option(name: .customLong("lr-decay"), help: "Multiply the learning rate by this after every epoch (default 1).")
    var lrDecay: Double?

    @Option(help: "Momentum at epoch 1 (default 0.5).")
    var momentum: Double?

    @Option(name: .customLong("momentum-final"), help: "Momentum reached at --momentum-ramp-epochs, linearly (default 0.99).")
    var momentumFinal: Double?

    @Option(name: .customLong("momentum-ramp-epochs"), help: "Epochs over which momentum rises linearly (default 500).")
    var momentumRampEpochs: Int?

    @Option(name: .customLong("max-norm"), help: "Max-norm radius c of every hidden unit's incoming weights (default: none).")
    var maxNorm: Double?

    @Option(help: "L2 weight decay coefficient (default 0).")
    var l2: Double?

    @Option(help: "Training data: fashion-mnist, mnist, a directory of IDX files, or an HDF5 file (default fashion-mnist).")
    var data: String?

    @Option(help: "Use only the first N training examples.")
    var limit: Int?

    @Option(name: .customLong("test-limit"), help: "Measure test error on the first N test examples only.")
    var testLimit: Int?

    /// The recipe: `base` (or the defaults) with every option given applied.
    func recipe(base: Recipe? = nil) throws -> Recipe {
        func list<T: LosslessStringConvertible>(_ s: String, _ flag: String, _ what: String) throws -> [T] {
            try s.split(separator: ",").map {
                guard let v = T($0.trimmingCharacters(in: .whitespaces)) else {
                    throw ValidationError("\(flag): '\($0)' is not \(what)")
                }
                return v
            }
        }
        var r = base ?? Recipe(layers: [784, 1024, 1024, 10], keep: [0.8, 0.5, 0.5])
        if let layers { r.layers = try list(layers, "--layers", "an integer") }
        if let keep { r.keep = try list(keep, "--keep", "a number") }
        if let activation {
            guard let act = Activation(rawValue: activation), act != .softmax else {
                throw ValidationError("--activation must be relu, logistic, tanh or linear")
            }
            r.activation = act
        }
        if let convention {
            guard let conv = DropoutConvention(rawValue: convention) else {
                throw ValidationError("--convention must be classic or inverted")
            }
            r.convention = conv
        }
        if let epochs { r.epochs = epochs }
        if let batchSize { r.batchSize = batchSize }
        if let learningRate { r.learningRate = learningRate }
        if let lrDecay { r.lrDecay = lrDecay }
        if let momentum { r.momentum = momentum }
        if let momentumFinal { r.momentumFinal = momentumFinal }
        if let momentumRampEpochs { r.momentumRampEpochs = momentumRampEpochs }
        if let maxNorm { r.maxNorm = maxNorm }
        if let l2 { r.l2 = l2 }
        if let data { r.data = data }
        if let limit { r.limit = limit }
        if let testLimit { r.testLimit = testLimit }
        if let first = r.problems().first { throw ValidationError(first) }
        return r
    }
}

/// `--seed`, shared by the commands that draw random numbers.
struct SeedOption: ParsableArguments {
    @Option(help: "The run's seed (0 ..< 2^63); every random draw is a function of it. Default: a fresh random seed, printed and recorded.")
    var seed: Int64?

    func resolve() throws -> Int64 {
        if let seed {
            guard seed >= 0 else { throw ValidationError("--seed must be in 0 ..< 2^63") }
            return seed
        }
        return Int64.random(in: 0...Int64.max)
    }
}

/// `--threads`.
struct ThreadsOption: ParsableArguments {
    @Option(help: "Worker threads for matrix products (default: all cores). Results are bit-identical for every value.")
    var threads: Int?

    func resolve() throws -> Int {
        if let threads {
            guard (1...256).contains(threads) else { throw ValidationError("--threads must be in 1...256") }
            return threads
        }
        return max(1, ProcessInfo.processInfo.activeProcessorCount)
    }
}
