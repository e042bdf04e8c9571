public import ArgumentParser
import BundleFormat
import DropModelBase
import Foundation
import Interop
import Training

// Choice options are enums: argument-parser lists their values in help and shell completion and
// rejects anything else with the subcommand's usage (exit 64).
extension DropoutConvention: ExpressibleByArgument {}
extension Activation: ExpressibleByArgument {}
extension Export.Format: ExpressibleByArgument {}
extension Recipe.KeepBest: ExpressibleByArgument {}

/// The activations a hidden layer may have (the output layer is softmax).
enum HiddenActivation: String, CaseIterable, ExpressibleByArgument {
    case relu, logistic, tanh, linear
    var activation: Activation { Activation(rawValue: rawValue)! }
}

/// The element types `bake` writes.
enum BakedType: String, CaseIterable, ExpressibleByArgument {
    case float32, float16
    var weightType: WeightType { WeightType(rawValue: rawValue)! }
}

/// A comma-separated list option's values, or a validation error naming the option.
func parseList<T: LosslessStringConvertible>(_ s: String, _ flag: String, _ what: String) throws -> [T] {
    try s.split(separator: ",", omittingEmptySubsequences: false).map {
        guard let v = T($0.trimmingCharacters(in: .whitespaces)) else {
            throw ValidationError("\(flag): '\($0)' is not \(what)")
        }
        return v
    }
}

/// The keep probabilities that `--keep` gives, or `--dropout-rate` as their complements
/// (keep = 1 − rate: Keras's `Dropout(rate)`, PyTorch's `nn.Dropout(p)`); nil when neither is
/// given. The two are exclusive; a rate must be in [0, 1). Shared by `train`, `init` and `import`.
func keepProbabilities(keep: String?, dropoutRate: String?) throws -> [Double]? {
    if keep != nil && dropoutRate != nil {
        throw ValidationError(
            "give either --keep (probabilities of keeping) or --dropout-rate (probabilities of dropping), not both")
    }
    if let keep { return try parseList(keep, "--keep", "a number") }
    guard let dropoutRate else { return nil }
    let rates: [Double] = try parseList(dropoutRate, "--dropout-rate", "a number")
    if let bad = rates.first(where: { !($0 >= 0 && $0 < 1) }) {
        throw ValidationError("--dropout-rate: \(bad) is not a drop rate in [0, 1)")
    }
    return rates.map { 1 - $0 }
}

/// The recipe options `init` and `train` share. Every option is optional: an option given
/// overrides the base recipe (a `--from` bundle's, or the defaults shown).
struct RecipeOptions: ParsableArguments {
    @Option(
        help: ArgumentHelp(
            """
            The network, input first (default 784,1024,1024,10). Plain numbers are dense widths. An image input is \
            HxWxC (28x28x1 for Fashion-MNIST); then convKHxKWxF (F filters; add /sS or /sSHxSW for a stride, /same \
            for same padding; default stride 1, valid), maxpoolK or maxpoolKHxKW, avgpoolK (stride = pool unless \
            /sS; /same), gap (global average pooling), flatten (implied before the first dense width). Example: \
            28x28x1,conv3x3x16,maxpool2,conv3x3x32,maxpool2,128,10.
            """,
            valueName: "spec"))
    var layers: String?

    @Option(
        help: ArgumentHelp(
            """
            Keep probability of each weighted layer's inputs (conv and dense layers), input layer first (default 0.8 \
            for the inputs and 0.5 for hidden layers of a dense network; 0.9, 0.75 for conv layers and 0.5 for dense \
            layers of a convolutional one). The probability of KEEPING a unit: Keras's Dropout(rate) and PyTorch's \
            nn.Dropout(p) are drop rates; for those use --dropout-rate.
            """,
            valueName: "p,p,..."))
    var keep: String?

    @Option(
        name: .customLong("dropout-rate"),
        help: ArgumentHelp(
            """
            Drop rate of each weighted layer's inputs (Keras Dropout(rate), PyTorch nn.Dropout(p)): keep p = 1 - rate. \
            Exclusive with --keep.
            """,
            valueName: "r,r,..."))
    var dropoutRate: String?

    @Option(
        name: .customLong("dropout-mode"),
        help: ArgumentHelp(
            """
            How each weighted layer's inputs are dropped, one per weighted layer (input first) or one for all: \
            element (each unit alone, the paper's; default), channel (whole feature maps of an image input, Keras \
            SpatialDropout2D; also a dense layer right after a flatten), gaussian (multiply by N(1, (1-p)/p) noise, \
            Keras GaussianDropout; nothing is scaled at test time).
            """,
            valueName: "mode,..."))
    var dropoutMode: String?

    @Option(help: "Hidden activation; the output layer is softmax (default relu).")
    var activation: HiddenActivation?

    @Option(
        help: """
            classic (the paper's: weights scaled by p at test time) or inverted (scaled by 1/p while training) \
            (default \
            classic).
            """)
    var convention: DropoutConvention?

    @Option(help: "Number of epochs (default 10).")
    var epochs: Int?

    @Option(name: .customLong("batch-size"), help: "Minibatch size (default 100).")
    var batchSize: Int?

    @Option(name: .customLong("learning-rate"), help: "Learning rate at epoch 1 (default 0.1).")
    var learningRate: Double?

    @Option(name: .customLong("lr-decay"), help: "Multiply the learning rate by this after every epoch (default 1).")
    var lrDecay: Double?

    @Flag(
        name: .customLong("lr-momentum-scaling"), inversion: .prefixedNo,
        help: """
            Scale each epoch's learning rate by (1 - that epoch's momentum), as Hinton et al. (2012) \
            did, so a step's size stays steady while momentum rises (default: off).
            """)
    var lrMomentumScaling: Bool?

    @Option(help: "Momentum at epoch 1 (default 0.5).")
    var momentum: Double?

    @Option(
        name: .customLong("momentum-final"),
        help: "Momentum reached at --momentum-ramp-epochs, linearly (default 0.99).")
    var momentumFinal: Double?

    @Option(name: .customLong("momentum-ramp-epochs"), help: "Epochs over which momentum rises linearly (default 500).")
    var momentumRampEpochs: Int?

    @Option(
        name: .customLong("max-norm"),
        help: "Max-norm radius c of every hidden unit's incoming weights (default: none).")
    var maxNorm: Double?

    @Option(help: "L2 weight decay coefficient (default 0).")
    var l2: Double?

    @Option(
        help: "Training data: fashion-mnist, mnist, a directory of IDX files, or an HDF5 file (default fashion-mnist).")
    var data: String?

    @Option(help: "Use only the first N training examples.")
    var limit: Int?

    @Option(name: .customLong("test-limit"), help: "Measure test error on the first N test examples only.")
    var testLimit: Int?

    @Option(
        help: """
            Hold out the last N training examples (after --limit) and report their error after every epoch \
            (default 0: none). Recorded in the recipe and the data fingerprint.
            """)
    var validation: Int?

    @Option(
        name: .customLong("keep-best"),
        help: """
            Write the weights of the epoch with the lowest validation error (ties: the earliest) instead of the \
            last epoch's; needs --validation. Every epoch is still recorded, and replayed.
            """)
    var keepBest: Recipe.KeepBest?

    @Option(
        help: """
            Split every minibatch into S contiguous shards whose gradients are summed in a fixed tree (default 1: \
            unsharded). The bits depend on S, never on the number of MPI ranks (mpirun -np R, R dividing S) or \
            threads. Recorded in the recipe.
            """)
    var shards: Int?

    func validate() throws {
        if let validation, validation < 0 {
            throw ValidationError("--validation must be 0 or more: the number of training examples to hold out")
        }
        if let layers {
            // A usage error: exit 64 with the subcommand's usage, naming the item.
            do { _ = try LayerGrammar.parse(layers) } catch let e as DropModelError {
                throw ValidationError(
                    e.problems.map { $0.message + ($0.hint.map { "\nhint: " + $0 } ?? "") }.joined(separator: "\n"))
            }
        }
        _ = try keepProbabilities(keep: keep, dropoutRate: dropoutRate)
        _ = try dropoutModes()
    }

    func dropoutModes() throws -> [DropoutMode]? {
        guard let dropoutMode else { return nil }
        return try dropoutMode.split(separator: ",", omittingEmptySubsequences: false).map {
            guard let m = DropoutMode(rawValue: $0.trimmingCharacters(in: .whitespaces)) else {
                throw ValidationError(
                    "--dropout-mode: '\($0)' is not one of \(DropoutMode.allCases.map(\.rawValue).joined(separator: ", "))"
                )
            }
            return m
        }
    }

    /// Keep probabilities below 0.5 that look like drop rates (0.2 where 0.8 is meant).
    func rateLikeKeeps(_ recipe: Recipe) -> [Double] {
        guard keep != nil else { return [] }
        return recipe.keep.filter { $0 < 0.5 }
    }

    /// The recipe: `base` (or the defaults) with every option given applied. Throws a usage
    /// error naming the first rule the result breaks.
    func recipe(base: Recipe? = nil) throws -> Recipe {
        var r = base ?? Recipe(layers: [784, 1024, 1024, 10], keep: [0.8, 0.5, 0.5])
        if let layers {
            let network = try LayerGrammar.parse(layers)
            let shape = Recipe(network: network, keep: [])
            r.layers = shape.layers
            r.architecture = shape.architecture
            // New layers without keep probabilities: the paper's defaults for them.
            if keep == nil && dropoutRate == nil && r.keep.count != r.weightedLayerCount {
                r.keep = network.defaultKeep
            }
            if r.dropoutModes.count != r.weightedLayerCount { r.dropoutModes = [] }
        }
        if let keeps = try keepProbabilities(keep: keep, dropoutRate: dropoutRate) { r.keep = keeps }
        if let modes = try dropoutModes() {
            let all = modes.count == 1 ? Array(repeating: modes[0], count: r.weightedLayerCount) : modes
            r.dropoutModes = all.allSatisfy { $0 == .element } ? [] : all
        }
        if let activation { r.activation = activation.activation }
        if let convention { r.convention = convention }
        if let epochs { r.epochs = epochs }
        if let batchSize { r.batchSize = batchSize }
        if let learningRate { r.learningRate = learningRate }
        if let lrDecay { r.lrDecay = lrDecay }
        if let lrMomentumScaling { r.lrMomentumScaling = lrMomentumScaling }
        if let momentum { r.momentum = momentum }
        if let momentumFinal { r.momentumFinal = momentumFinal }
        if let momentumRampEpochs { r.momentumRampEpochs = momentumRampEpochs }
        if let maxNorm { r.maxNorm = maxNorm }
        if let l2 { r.l2 = l2 }
        if let data { r.data = data }
        if let limit { r.limit = limit }
        if let testLimit { r.testLimit = testLimit }
        if let validation { r.validation = validation }
        if let keepBest { r.keepBest = keepBest }
        if let shards { r.shards = shards }
        if let first = r.problems().first { throw DropModelError(code: .usage, file: "", message: first) }
        return r
    }
}

/// `--seed`, shared by the commands that draw random numbers.
struct SeedOption: ParsableArguments {
    @Option(
        help: """
            The run's seed (0 ..< 2^63); every random draw is a function of it. Default: a fresh random seed below \
            2^53 \
            (exact in JSON and JavaScript), printed and recorded.
            """)
    var seed: Int64?

    func validate() throws {
        if let seed, seed < 0 { throw ValidationError("--seed must be in 0 ..< 2^63") }
    }

    /// A fresh seed below 2^53, so that every JSON reader (jq, JavaScript) reads it exactly.
    static func fresh() -> Int64 { Int64.random(in: 0..<(1 << 53)) }
}

/// `--threads`.
struct ThreadsOption: ParsableArguments {
    @Option(help: "Worker threads for matrix products (default: all cores). Results are bit-identical for every value.")
    var threads: Int?

    func validate() throws {
        if let threads, !(1...256).contains(threads) { throw ValidationError("--threads must be in 1...256") }
    }

    var resolved: Int { threads ?? max(1, ProcessInfo.processInfo.activeProcessorCount) }
}

/// `--json`, on every command.
struct JSONOption: ParsableArguments {
    @Flag(help: "Print JSON (one object; train and replay: JSON Lines, one object per epoch, then a summary).")
    var json = false
}
