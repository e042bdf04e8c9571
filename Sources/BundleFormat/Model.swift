public import DropoutRandom

/// A dropout network as a bundle holds it: metadata (``ModelInfo``) and one ``Parameters``
/// value per layer.
///
/// The layout on disk is normative in `Specs/bundle-format.md`; the Swift names follow it.
public struct Model: Equatable, Sendable {
    public var info: ModelInfo
    /// One per layer, in order; `parameters[i]` belongs to `info.layers[i]`.
    public var parameters: [Parameters]

    public init(info: ModelInfo, parameters: [Parameters]) {
        self.info = info
        self.parameters = parameters
    }
}

/// The weights of one dense layer.
public struct Parameters: Equatable, Sendable {
    /// `outputs x inputs`, row-major: row `u` holds unit `u`'s incoming weights.
    public var weight: [Float]
    /// `outputs` values.
    public var bias: [Float]

    public init(weight: [Float], bias: [Float]) {
        self.weight = weight
        self.bias = bias
    }
}

/// Which dropout convention produced the weights (see `Specs/bundle-format.md`).
public enum DropoutConvention: String, Sendable, CaseIterable, Codable {
    /// The paper's scheme: no scaling while training; weights must be scaled by the keep
    /// probability of their inputs at test time (baking does this once).
    case classic
    /// Kept activations were multiplied by 1/p while training; inference uses the weights as
    /// they are and must never scale them again.
    case inverted
}

public enum Activation: String, Sendable, CaseIterable, Codable {
    case relu, logistic, tanh, linear, softmax
}

/// The kinds of layer a bundle holds. Each has its rules in `LayerKinds/` (registry:
/// `LayerKind.rules`); `docs/adding-a-layer-kind.md` lists what a new one touches.
///
/// Format 1.0 defines `dense`; format 1.1 adds the convolutional kinds (Specs/bundle-format.md
/// §4.7). A model that uses only 1.0's features is written as 1.0, byte for byte as before.
public enum LayerKind: String, Sendable, CaseIterable, Codable {
    case dense
    case conv2d
    case maxPool2d = "max_pool2d"
    case avgPool2d = "avg_pool2d"
    case globalAvgPool2d = "global_avg_pool2d"
    case flatten

    /// The format version that introduced the kind.
    public var introduced: FormatVersion { self == .dense ? FormatVersion(1, 0) : FormatVersion(1, 1) }
}

/// How the dropout of a layer's inputs draws its noise (format 1.1; 1.0 files are `element`).
public enum DropoutMode: String, Sendable, CaseIterable, Codable {
    /// Each input unit kept alone with probability p (the paper's Bernoulli dropout).
    case element
    /// Whole feature maps: one draw per (example, channel) of an image input (Keras
    /// `SpatialDropout2D`).
    case channel
    /// Multiplicative Gaussian noise N(1, (1-p)/p) on each unit (JMLR Sec. 10; Keras
    /// `GaussianDropout`): its mean is 1, so nothing is scaled at test time in either convention.
    case gaussian
}

/// How windows meet the border (TensorFlow's and Keras's rule, Specs/determinism.md §8).
public enum Padding: String, Sendable, CaseIterable, Codable {
    case valid, same
}

/// A convolution kernel's or a pooling window's size, strides and padding.
public struct Window: Equatable, Hashable, Sendable {
    public var height: Int
    public var width: Int
    public var strideHeight: Int
    public var strideWidth: Int
    public var padding: Padding

    public init(height: Int, width: Int, strideHeight: Int = 1, strideWidth: Int = 1, padding: Padding = .valid) {
        self.height = height
        self.width = width
        self.strideHeight = strideHeight
        self.strideWidth = strideWidth
        self.padding = padding
    }
}

/// The element type of a layer's weight and bias datasets.
public enum WeightType: String, Sendable, CaseIterable, Codable {
    case float16, float32, float64

    public var bytes: Int {
        switch self {
        case .float16: return 2
        case .float32: return 4
        case .float64: return 8
        }
    }
}

/// `major.minor`. A reader accepts its own major version and any minor version of it.
public struct FormatVersion: Comparable, Sendable, CustomStringConvertible, Codable {
    public var major: Int
    public var minor: Int
    public init(_ major: Int, _ minor: Int) {
        self.major = major
        self.minor = minor
    }
    /// The newest version this build writes and reads. A model is written as the oldest
    /// version that holds it (``ModelInfo/requiredFormatVersion``): dense-only bundles stay 1.0.
    public static let current = FormatVersion(1, 1)
    public var description: String { "\(major).\(minor)" }
    public static func < (a: FormatVersion, b: FormatVersion) -> Bool {
        (a.major, a.minor) < (b.major, b.minor)
    }
}

/// Everything about one layer except its weights.
public struct LayerInfo: Equatable, Sendable {
    public var name: String
    /// What the layer computes; its rules (`LayerKinds/`) define its own attributes, shapes and
    /// datasets.
    public var kind: LayerKind
    /// A dense layer's attributes: input and output units. Code that is not the dense kind's
    /// own goes through ``parameterShapes`` and the shapes (``declaredInputShape``,
    /// ``outputShape(input:)``) instead.
    public var inputs: Int
    public var outputs: Int
    public var activation: Activation
    /// The probability that each of this layer's INPUT units is kept during training
    /// (for layer 0: the input features).
    public var keepProb: Double
    /// How the dropout of the layer's inputs draws its noise (1.0 files: element).
    public var dropoutMode: DropoutMode
    public var dtype: WeightType
    /// The image a convolutional kind reads (`conv2d`, the pools, `flatten`): declared like a
    /// dense layer's `inputs`, so the chain of shapes is checked layer by layer. Nil for dense.
    public var inputShape: TensorShape?
    /// A `conv2d` kernel's or a pool's window; nil for the other kinds.
    public var window: Window?
    /// A `conv2d` layer's filters (output channels); 0 for the other kinds.
    public var filters: Int

    public init(
        name: String, kind: LayerKind = .dense, inputs: Int, outputs: Int, activation: Activation,
        keepProb: Double, dtype: WeightType = .float32, dropoutMode: DropoutMode = .element
    ) {
        self.name = name
        self.kind = kind
        self.inputs = inputs
        self.outputs = outputs
        self.activation = activation
        self.keepProb = keepProb
        self.dropoutMode = dropoutMode
        self.dtype = dtype
        self.inputShape = nil
        self.window = nil
        self.filters = 0
    }

    /// A `conv2d` layer reading `input` (an image) with `filters` kernels of `window`.
    public static func conv2d(
        name: String, input: TensorShape, window: Window, filters: Int, activation: Activation, keepProb: Double,
        dropoutMode: DropoutMode = .element, dtype: WeightType = .float32
    ) -> LayerInfo {
        var l = LayerInfo(
            name: name, kind: .conv2d, inputs: 0, outputs: 0, activation: activation, keepProb: keepProb,
            dtype: dtype, dropoutMode: dropoutMode)
        l.inputShape = input
        l.window = window
        l.filters = filters
        return l
    }

    /// A weightless layer (`max_pool2d`, `avg_pool2d` with a window; `global_avg_pool2d`,
    /// `flatten` without) reading `input`. Its keep probability is 1: dropout is recorded on
    /// the weighted layer that reads the dropped tensor.
    public static func weightless(
        _ kind: LayerKind, name: String, input: TensorShape, window: Window? = nil
    ) -> LayerInfo {
        var l = LayerInfo(name: name, kind: kind, inputs: 0, outputs: 0, activation: .linear, keepProb: 1)
        l.inputShape = input
        l.window = window
        return l
    }

    /// Weights plus biases (0 for a kind without weights).
    public var parameterCount: Int { parameterShapes?.count ?? 0 }

    /// The factor the weight-scaling rule multiplies this layer's weights by (Specs/bake.md):
    /// the keep probability of its inputs for element and channel dropout; 1 for gaussian
    /// dropout (the noise has mean 1: nothing to scale) and for a kind without weights.
    public var bakeScale: Double {
        guard parameterShapes != nil, dropoutMode != .gaussian else { return 1 }
        return keepProb
    }
}

/// The random-number section: enough to recompute every random draw of training.
public struct RNGInfo: Equatable, Sendable {
    /// "philox4x32-10" for bundles dropmodel trains.
    public var algorithm: String
    /// The run's seed, if known (0 ..< 2^63).
    public var seed: Int64?
    /// The version of `Specs/random-streams.md` the draws follow.
    public var streamLayout: Int

    public init(algorithm: String = StreamLayout.algorithm, seed: Int64?, streamLayout: Int = StreamLayout.version) {
        self.algorithm = algorithm
        self.seed = seed
        self.streamLayout = streamLayout
    }
}

/// The training section.
public struct TrainingInfo: Equatable, Sendable {
    /// The recipe as a JSON object (UTF-8 text). Keys: `Specs/bundle-format.md` §Recipe.
    public var recipe: String
    /// "sha256:" and 64 lowercase hex digits: the fingerprint of the decoded training data.
    public var dataFingerprint: String?
    /// Free text naming the data, e.g. "fashion-mnist: train 60000, test 10000".
    public var dataDescription: String?
    /// The number of training examples (after any limit): with the recipe's batch size it
    /// fixes the steps of an epoch, so masks can be recomputed without the data.
    public var examples: Int?
    /// The epoch whose weights the bundle holds when it is not the last (`train --keep-best`):
    /// 1 ... the history's epochs. Nil: the last epoch's.
    public var keptEpoch: Int?

    public init(
        recipe: String, dataFingerprint: String? = nil, dataDescription: String? = nil, examples: Int? = nil,
        keptEpoch: Int? = nil
    ) {
        self.keptEpoch = keptEpoch
        self.recipe = recipe
        self.dataFingerprint = dataFingerprint
        self.dataDescription = dataDescription
        self.examples = examples
    }
}

/// Metrics and a weight digest after one epoch.
public struct EpochRecord: Equatable, Sendable {
    public var epoch: Int
    public var loss: Double
    public var trainError: Double
    /// NaN when not measured.
    public var testError: Double
    /// SHA-256 of all weights after this epoch (``WeightDigest``); 32 bytes.
    public var weightsSHA256: [UInt8]
    /// SHA-256 of each layer's weights after this epoch (one 32-byte digest per layer), if
    /// recorded: lets `replay` name the layer where a run diverged.
    public var layerSHA256: [[UInt8]]?
    /// Fraction of the held-out validation examples misclassified after this epoch (recipe
    /// `validation` > 0); nil when the run had no validation set.
    public var validationError: Double?

    public init(
        epoch: Int, loss: Double, trainError: Double, testError: Double, weightsSHA256: [UInt8],
        layerSHA256: [[UInt8]]? = nil, validationError: Double? = nil
    ) {
        self.validationError = validationError
        self.epoch = epoch
        self.loss = loss
        self.trainError = trainError
        self.testError = testError
        self.weightsSHA256 = weightsSHA256
        self.layerSHA256 = layerSHA256
    }

    public static func == (a: EpochRecord, b: EpochRecord) -> Bool {
        // NaN test errors compare equal to each other: "not measured" on both sides.
        a.epoch == b.epoch && a.loss.bitPattern == b.loss.bitPattern
            && a.trainError.bitPattern == b.trainError.bitPattern
            && a.testError.bitPattern == b.testError.bitPattern && a.weightsSHA256 == b.weightsSHA256
            && a.layerSHA256 == b.layerSHA256
            && a.validationError?.bitPattern == b.validationError?.bitPattern
    }
}

extension ModelInfo {
    /// The history row whose digest the stored weights must have: the kept epoch's
    /// (`/training@kept_epoch`) if recorded, otherwise the last. Nil without history rows or
    /// with a kept epoch outside them.
    public var weightsRecord: EpochRecord? {
        guard let epochs = history?.epochs else { return nil }
        guard let k = training?.keptEpoch else { return epochs.last }
        return epochs.indices.contains(k - 1) ? epochs[k - 1] : nil
    }
}

/// The history section.
public struct History: Equatable, Sendable {
    /// SHA-256 of the initial weights (epoch 0), if recorded.
    public var initialWeightsSHA256: [UInt8]?
    public var epochs: [EpochRecord]

    public init(initialWeightsSHA256: [UInt8]? = nil, epochs: [EpochRecord]) {
        self.initialWeightsSHA256 = initialWeightsSHA256
        self.epochs = epochs
    }
}

/// All metadata of a bundle: what `inspect` shows without reading weights.
public struct ModelInfo: Equatable, Sendable {
    /// The version the file was read as (for a model built in memory: what it will be written
    /// as is ``requiredFormatVersion``, whatever this says).
    public var formatVersion: FormatVersion
    public var convention: DropoutConvention
    /// Whether the weight-scaling rule has been folded into the weights (classic only).
    public var baked: Bool
    public var layers: [LayerInfo]
    public var rng: RNGInfo?
    public var training: TrainingInfo?
    public var history: History?
    /// Informational: the program that wrote the file.
    public var creator: String?
    /// For a baked bundle: the weight digest of the weights before baking, so the history's
    /// last digest can still be checked against the model's provenance.
    public var unbakedWeightsSHA256: [UInt8]?

    public init(
        formatVersion: FormatVersion? = nil, convention: DropoutConvention, baked: Bool = false,
        layers: [LayerInfo], rng: RNGInfo? = nil, training: TrainingInfo? = nil, history: History? = nil,
        creator: String? = nil
    ) {
        self.convention = convention
        self.baked = baked
        self.layers = layers
        self.rng = rng
        self.training = training
        self.history = history
        self.creator = creator
        self.formatVersion = FormatVersion(1, 0)
        self.formatVersion = formatVersion ?? requiredFormatVersion
    }

    public var parameterCount: Int { layers.reduce(0) { $0 + $1.parameterCount } }

    /// The shape of one example the model reads: the root `input_shape` of a 1.1 file, the
    /// first layer's declared input otherwise (a 1.0 file: its `inputs` features).
    public var inputShape: TensorShape { layers.first?.declaredInputShape ?? .flat(0) }

    /// The oldest format version that holds this model: 1.0 for dense layers with element
    /// dropout (their bytes are those of every earlier dropmodel), 1.1 otherwise.
    public var requiredFormatVersion: FormatVersion {
        let dense10 = layers.allSatisfy { $0.kind == .dense && $0.dropoutMode == .element }
        return dense10 ? FormatVersion(1, 0) : FormatVersion(1, 1)
    }
}
