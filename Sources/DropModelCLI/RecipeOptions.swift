import ArgumentParser
import BundleFormat
import Training

/// The recipe options `init` and `train` share.
struct RecipeOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Layer widths, input first.", valueName: "n,n,..."))
    var layers: String = "784,1024,1024,10"

    @Option(help: ArgumentHelp("Keep probability of each dense layer's inputs, input layer first (one per dense layer).",
                               valueName: "p,p,..."))
    var keep: String = "0.8,0.5,0.5"

    @Option(help: "Hidden activation: relu, logistic, tanh or linear (the output layer is softmax).")
    var activation: String = "relu"

    @Option(help: "Dropout convention: classic (the paper's: scale weights at test time) or inverted (scale by 1/p while training).")
    var convention: String = "classic"

    @Option(help: "Number of epochs.")
    var epochs: Int = 10

    @Option(name: .customLong("batch-size"), help: "Minibatch size.")
    var batchSize: Int = 100

    @Option(name: .customLong("learning-rate"), help: "Learning rate at epoch 1.")
    var learningRate: Double = 0.1

    @Option(name: .customLong("lr-decay"), help: "Multiply the learning rate by this after every epoch.")
    var lrDecay: Double = 1

    @Option(help: "Momentum at epoch 1.")
    var momentum: Double = 0.5

    @Option(name: .customLong("momentum-final"), help: "Momentum reached at --momentum-ramp-epochs (linear ramp).")
    var momentumFinal: Double = 0.99

    @Option(name: .customLong("momentum-ramp-epochs"), help: "Epochs over which momentum rises linearly.")
    var momentumRampEpochs: Int = 500

    @Option(name: .customLong("max-norm"), help: "Max-norm radius c of every unit's incoming weights (omit for none).")
    var maxNorm: Double?

    @Option(help: "L2 weight decay coefficient.")
    var l2: Double = 0

    @Option(help: "Training data: fashion-mnist, mnist, a directory of IDX files, or an HDF5 file.")
    var data: String = "fashion-mnist"

    @Option(help: "Use only the first N training examples.")
    var limit: Int?

    func recipe() throws -> Recipe {
        func ints(_ s: String, _ flag: String) throws -> [Int] {
            try s.split(separator: ",").map {
                guard let v = Int($0.trimmingCharacters(in: .whitespaces)) else {
                    throw ValidationError("\(flag): '\($0)' is not an integer")
                }
                return v
            }
        }
        func doubles(_ s: String, _ flag: String) throws -> [Double] {
            try s.split(separator: ",").map {
                guard let v = Double($0.trimmingCharacters(in: .whitespaces)) else {
                    throw ValidationError("\(flag): '\($0)' is not a number")
                }
                return v
            }
        }
        guard let act = Activation(rawValue: activation), act != .softmax else {
            throw ValidationError("--activation must be relu, logistic, tanh or linear")
        }
        guard let conv = DropoutConvention(rawValue: convention) else {
            throw ValidationError("--convention must be classic or inverted")
        }
        let r = Recipe(
            layers: try ints(layers, "--layers"), keep: try doubles(keep, "--keep"), activation: act, convention: conv,
            epochs: epochs, batchSize: batchSize, learningRate: learningRate, lrDecay: lrDecay, momentum: momentum,
            momentumFinal: momentumFinal, momentumRampEpochs: momentumRampEpochs, maxNorm: maxNorm, l2: l2,
            data: data, limit: limit)
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
