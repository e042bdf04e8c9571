public import BundleFormat
import DropoutRandom
public import DropModelBase

/// Everything that determines a training run besides the data: stored as JSON in a bundle's
/// `/training@recipe` (keys: `Specs/bundle-format.md` §Recipe).
public struct Recipe: Equatable, Sendable {
    /// Layer widths, input first, of a dense network: `[784, 1024, 1024, 10]`. Empty when
    /// ``architecture`` holds a network with convolutional layers.
    public var layers: [Int]
    /// A network with convolutional layers (`--layers 28x28x1,conv3x3x16,maxpool2,128,10`);
    /// nil for a dense network, which ``layers`` describes. Stored in the JSON as its canonical
    /// text under `layers` (a dense network's `layers` stays a list of widths, as always).
    public var architecture: LayerGrammar.Network?
    /// Keep probability of each weighted layer's inputs, input first (a dense network:
    /// `layers.count - 1` values).
    public var keep: [Double]
    /// The dropout mode of each weighted layer's inputs (JSON `dropout_modes`, written only when
    /// one is not `element`); empty means element everywhere.
    public var dropoutModes: [DropoutMode] = []
    /// Activation of the hidden layers; the output layer is softmax.
    public var activation: Activation
    public var convention: DropoutConvention
    public var epochs: Int
    public var batchSize: Int
    /// Learning rate at epoch 1 (epoch e uses `learningRate * lrDecay^(e-1)`, times
    /// `1 - momentum(e)` with ``lrMomentumScaling``).
    public var learningRate: Double
    public var lrDecay: Double
    /// Scale each epoch's learning rate by (1 − that epoch's momentum), as Hinton et al. (2012)
    /// did, so the size of a step stays steady while momentum rises (JSON `lr_momentum_scaling`,
    /// written only when true).
    public var lrMomentumScaling = false
    /// Momentum at epoch 1, rising linearly to `momentumFinal` at `momentumRampEpochs`.
    public var momentum: Double
    public var momentumFinal: Double
    public var momentumRampEpochs: Int
    /// Max-norm radius c for each hidden unit's incoming weights (nil: no constraint).
    public var maxNorm: Double?
    /// L2 weight decay coefficient (0: none).
    public var l2: Double
    /// The data set name or path, as given to `--data`.
    public var data: String
    /// Use only the first `limit` training examples (nil: all).
    public var limit: Int?
    /// Use only the first `testLimit` test examples for the per-epoch test error (nil: all).
    public var testLimit: Int?
    /// Weight initialisation scheme (`Specs/random-streams.md` §6).
    public var initialization: String
    /// Hold out the last `validation` training examples (after ``limit``) to measure the
    /// validation error after every epoch (0: none; JSON `validation`, written only when > 0).
    public var validation: Int = 0
    /// Which epoch's weights the bundle keeps (JSON `keep_best`, written only when set): nil
    /// for the last epoch's.
    public var keepBest: KeepBest?
    /// Split every minibatch into this many contiguous shards whose gradients are summed in a
    /// fixed tree (Specs/determinism.md §4.7): the bits depend on `shards`, never on how many
    /// processes (MPI ranks) or threads compute them. 1 (JSON `shards`, written only when not 1)
    /// is the unsharded arithmetic of every earlier version.
    public var shards: Int = 1

    /// What `--keep-best` selects on.
    public enum KeepBest: String, CaseIterable, Sendable {
        /// The epoch with the lowest validation error (ties: the earliest).
        case validation
    }

    enum CodingKeys: String {
        case layers, keep, activation, convention, epochs
        case dropoutModes = "dropout_modes"
        case batchSize = "batch_size"
        case learningRate = "learning_rate"
        case lrDecay = "lr_decay"
        case lrMomentumScaling = "lr_momentum_scaling"
        case momentum
        case momentumFinal = "momentum_final"
        case momentumRampEpochs = "momentum_ramp_epochs"
        case maxNorm = "max_norm"
        case l2, data, limit
        case testLimit = "test_limit"
        case initialization = "init"
        case validation
        case keepBest = "keep_best"
        case shards
    }

    public init(
        layers: [Int], keep: [Double], activation: Activation = .relu, convention: DropoutConvention = .classic,
        epochs: Int = 10, batchSize: Int = 100, learningRate: Double = 0.1, lrDecay: Double = 1,
        momentum: Double = 0.5, momentumFinal: Double = 0.99, momentumRampEpochs: Int = 500,
        maxNorm: Double? = nil, l2: Double = 0, data: String = "fashion-mnist", limit: Int? = nil,
        testLimit: Int? = nil, initialization: String = "glorot-uniform"
    ) {
        self.layers = layers
        self.keep = keep
        self.activation = activation
        self.convention = convention
        self.epochs = epochs
        self.batchSize = batchSize
        self.learningRate = learningRate
        self.lrDecay = lrDecay
        self.momentum = momentum
        self.momentumFinal = momentumFinal
        self.momentumRampEpochs = momentumRampEpochs
        self.maxNorm = maxNorm
        self.l2 = l2
        self.data = data
        self.limit = limit
        self.testLimit = testLimit
        self.initialization = initialization
    }

    /// A recipe for a network written in the `--layers` grammar (dense or convolutional):
    /// a dense network is stored as widths, exactly as ``init(layers:keep:...)`` would.
    public init(network: LayerGrammar.Network, keep: [Double], dropoutModes: [DropoutMode] = []) {
        self.init(layers: network.denseWidths ?? [], keep: keep)
        if network.denseWidths == nil { architecture = network }
        self.dropoutModes = dropoutModes.allSatisfy { $0 == .element } ? [] : dropoutModes
    }

    /// The network, whichever way it is stored.
    public var network: LayerGrammar.Network { architecture ?? .dense(layers) }

    /// The network as a short text: `784-1024-10` for a dense one, the grammar otherwise.
    public var networkText: String {
        architecture?.text ?? layers.map(String.init).joined(separator: "-")
    }

    /// The number of weighted layers (keep probabilities and dropout modes one each).
    public var weightedLayerCount: Int { architecture?.weightedCount ?? max(0, layers.count - 1) }

    /// Features per input example.
    public var inputCount: Int { architecture?.input.count ?? layers.first ?? 0 }
    /// Classes (the last layer's width).
    public var outputCount: Int { architecture?.layers.last?.output.count ?? layers.last ?? 0 }

    /// What is wrong with the recipe, if anything (each a full sentence).
    public func problems() -> [String] {
        var out: [String] = []
        if architecture == nil {
            if layers.count < 2 {
                out.append("--layers needs at least two sizes (inputs and outputs), e.g. 784,1024,10")
            }
            if layers.contains(where: { $0 < 1 || $0 > 1 << 24 }) {
                out.append("every layer size must be in 1...16777216")
            }
        }
        let layerCount = architecture?.layers.count ?? (layers.count - 1)
        if layerCount > StreamLayout.layerLimit { out.append("at most \(StreamLayout.layerLimit) layers") }
        let weighted = weightedLayerCount
        if keep.count != weighted {
            out.append(
                "--keep needs one keep probability per weighted layer (\(weighted)), input first, got \(keep.count)")
        }
        if !dropoutModes.isEmpty && dropoutModes.count != weighted {
            out.append(
                "--dropout-mode needs one mode per weighted layer (\(weighted)) or one for all, got \(dropoutModes.count)"
            )
        }
        if architecture != nil || !dropoutModes.isEmpty, keep.count == weighted,
            dropoutModes.isEmpty || dropoutModes.count == weighted
        {
            // The layer rules of the format (channel dropout needs an image, shapes chain, ...).
            let info = ModelInfo(convention: convention, layers: layerInfos)
            out += info.problems(file: "").map { "layer \($0.object): \($0.message)" }
        }
        if let bad = keep.first(where: { !Schema.isValidKeepProb($0) }) {
            out.append("keep probability \(bad) is outside (0, 1]")
        }
        if epochs < 0 || epochs >= StreamLayout.epochLimit {
            out.append("--epochs must be in 0..<\(StreamLayout.epochLimit)")
        }
        if batchSize < 1 || batchSize >= StreamLayout.exampleInBatchLimit {
            out.append("--batch-size must be at least 1")
        }
        if !(learningRate.isFinite && learningRate > 0) { out.append("--learning-rate must be positive") }
        if !(lrDecay.isFinite && lrDecay > 0 && lrDecay <= 1) { out.append("--lr-decay must be in (0, 1]") }
        if !(0...1).contains(momentum) || !(0...1).contains(momentumFinal) { out.append("momentum must be in [0, 1]") }
        if momentumRampEpochs < 0 { out.append("--momentum-ramp-epochs must be 0 or more") }
        if lrMomentumScaling && max(momentum, momentumFinal) >= 1 {
            out.append("with --lr-momentum-scaling, momentum must stay below 1 (a momentum of 1 makes the step 0)")
        }
        if let c = maxNorm, !(c.isFinite && c > 0) { out.append("--max-norm must be positive") }
        if !(l2.isFinite && l2 >= 0) { out.append("--l2 must be 0 or more") }
        if let l = limit, l < 1 { out.append("--limit must be at least 1") }
        if let l = testLimit, l < 1 { out.append("--test-limit must be at least 1") }
        if validation < 0 { out.append("--validation must be 0 or more (0: no validation set)") }
        if let l = limit, validation > 0, validation >= l {
            out.append("--validation \(validation) holds out every training example: --limit is \(l)")
        }
        if keepBest == .validation && validation <= 0 {
            out.append("--keep-best validation needs a validation set: add --validation N (N examples held out)")
        }
        // (A batch size below 1 is reported on its own; the shards' bound is only checked against a valid one.)
        if shards < 1 || (batchSize >= 1 && shards > batchSize) {
            out.append("--shards must be in 1...\(batchSize) (the batch size): every shard needs examples")
        }
        if initialization != "glorot-uniform" { out.append("init '\(initialization)' is not known (glorot-uniform)") }
        return out
    }

    /// The layer metadata this recipe describes.
    public var layerInfos: [LayerInfo] {
        if let architecture {
            return architecture.layerInfos(keep: keep, modes: dropoutModes, activation: activation)
        }
        return (0..<(layers.count - 1)).map { i in
            let last = i == layers.count - 2
            return LayerInfo(
                name: last ? "output" : "hidden\(i + 1)", inputs: layers[i], outputs: layers[i + 1],
                activation: last ? .softmax : activation, keepProb: keep[i],
                dropoutMode: i < dropoutModes.count ? dropoutModes[i] : .element)
        }
    }

    /// The recipe as JSON (keys: ``CodingKeys``): absent optionals are left out.
    public var jsonValue: JSONValue {
        // A number with an integral value is written as an integer (`"lr_decay":1`), as
        // recipes have always been written; the bytes of existing bundles do not change.
        func number(_ d: Double) -> JSONValue {
            d.rounded() == d && abs(d) < 9.0e15 ? .integer(Int64(d)) : .number(d)
        }
        var o: JSONObject = [
            CodingKeys.layers.rawValue: architecture.map { .string($0.text) } ?? .array(layers.map { .int($0) }),
            CodingKeys.keep.rawValue: .array(keep.map(number)),
            CodingKeys.activation.rawValue: .string(activation.rawValue),
            CodingKeys.convention.rawValue: .string(convention.rawValue),
            CodingKeys.epochs.rawValue: .int(epochs),
            CodingKeys.batchSize.rawValue: .int(batchSize),
            CodingKeys.learningRate.rawValue: number(learningRate),
            CodingKeys.lrDecay.rawValue: number(lrDecay),
            CodingKeys.momentum.rawValue: number(momentum),
            CodingKeys.momentumFinal.rawValue: number(momentumFinal),
            CodingKeys.momentumRampEpochs.rawValue: .int(momentumRampEpochs),
            CodingKeys.l2.rawValue: number(l2),
            CodingKeys.data.rawValue: .string(data),
            CodingKeys.initialization.rawValue: .string(initialization),
        ]
        if !dropoutModes.isEmpty {
            o[CodingKeys.dropoutModes.rawValue] = .array(dropoutModes.map { .string($0.rawValue) })
        }
        if let maxNorm { o[CodingKeys.maxNorm.rawValue] = number(maxNorm) }
        if let limit { o[CodingKeys.limit.rawValue] = .int(limit) }
        if let testLimit { o[CodingKeys.testLimit.rawValue] = .int(testLimit) }
        if validation != 0 { o[CodingKeys.validation.rawValue] = .int(validation) }
        if let keepBest { o[CodingKeys.keepBest.rawValue] = .string(keepBest.rawValue) }
        if lrMomentumScaling { o[CodingKeys.lrMomentumScaling.rawValue] = .bool(true) }
        if shards != 1 { o[CodingKeys.shards.rawValue] = .int(shards) }
        return .object(o)
    }

    /// Canonical JSON: sorted keys, so the same recipe is always the same bytes.
    public func json() -> String { jsonValue.text }

    /// A recipe from JSON text (a bundle's `/training@recipe`: untrusted), through the one
    /// bounded parser. Every key but the optional ones must be present with the right type.
    public static func decode(json: String) throws -> Recipe {
        let value: JSONValue
        do { value = try JSONValue.parse(json, limits: JSONValue.Limits(maxDepth: 8, maxBytes: 1 << 20)) } catch {
            throw RecipeError(message: "the recipe is not JSON: \(error)")
        }
        guard case .object(let o) = value else { throw RecipeError(message: "the recipe is not a JSON object") }
        func get(_ key: CodingKeys) throws -> JSONValue {
            guard let v = o[key.rawValue] else { throw RecipeError(message: "the recipe has no '\(key.rawValue)'") }
            return v
        }
        func int(_ key: CodingKeys) throws -> Int {
            guard let i = try get(key).int, let n = Int(exactly: i) else {
                throw RecipeError(message: "'\(key.rawValue)' is not an integer")
            }
            return n
        }
        func double(_ key: CodingKeys) throws -> Double {
            guard let d = try get(key).double else { throw RecipeError(message: "'\(key.rawValue)' is not a number") }
            return d
        }
        func string(_ key: CodingKeys) throws -> String {
            guard let s = try get(key).string else { throw RecipeError(message: "'\(key.rawValue)' is not a string") }
            return s
        }
        func optional<T>(_ key: CodingKeys, _ read: (CodingKeys) throws -> T) throws -> T? {
            guard let v = o[key.rawValue], !v.isNull else { return nil }
            return try read(key)
        }
        // `layers`: a dense network's widths, or a network in the --layers grammar.
        var architecture: LayerGrammar.Network?
        var widths: [Int] = []
        if let text = try get(.layers).string {
            do { architecture = try LayerGrammar.parse(text) } catch {
                throw RecipeError(message: "'layers' is not a network: \(error)")
            }
            if let w = architecture?.denseWidths {
                widths = w
                architecture = nil
            }
        } else {
            guard let layers = try get(.layers).array?.map({ $0.int.flatMap { Int(exactly: $0) } }),
                !layers.contains(nil)
            else {
                throw RecipeError(message: "'layers' is not a list of integers or a --layers text")
            }
            widths = layers.map { $0! }
        }
        var modes: [DropoutMode] = []
        if let m = o[CodingKeys.dropoutModes.rawValue], !m.isNull {
            guard let list = m.array?.map({ $0.string.flatMap(DropoutMode.init(rawValue:)) }), !list.contains(nil)
            else {
                throw RecipeError(
                    message:
                        "'dropout_modes' is not a list of \(DropoutMode.allCases.map(\.rawValue).joined(separator: ", "))"
                )
            }
            modes = list.map { $0! }
        }
        guard let keep = try get(.keep).array?.map(\.double), !keep.contains(nil) else {
            throw RecipeError(message: "'keep' is not a list of numbers")
        }
        guard let activation = Activation(rawValue: try string(.activation)) else {
            throw RecipeError(message: "'activation' is not one of \(Activation.allCases.map(\.rawValue))")
        }
        guard let convention = DropoutConvention(rawValue: try string(.convention)) else {
            throw RecipeError(message: "'convention' is not one of \(DropoutConvention.allCases.map(\.rawValue))")
        }
        var r = Recipe(
            layers: widths, keep: keep.map { $0! }, activation: activation, convention: convention,
            epochs: try int(.epochs), batchSize: try int(.batchSize), learningRate: try double(.learningRate),
            lrDecay: try double(.lrDecay), momentum: try double(.momentum), momentumFinal: try double(.momentumFinal),
            momentumRampEpochs: try int(.momentumRampEpochs), maxNorm: try optional(.maxNorm, double),
            l2: try double(.l2),
            data: try string(.data), limit: try optional(.limit, int), testLimit: try optional(.testLimit, int),
            initialization: try string(.initialization))
        r.architecture = architecture
        r.dropoutModes = modes
        r.validation = try optional(.validation, int) ?? 0
        r.lrMomentumScaling =
            try optional(.lrMomentumScaling) { key in
                guard let b = try get(key).bool else {
                    throw RecipeError(message: "'\(key.rawValue)' is not true or false")
                }
                return b
            } ?? false
        if let mode = try optional(.keepBest, string) {
            guard let k = KeepBest(rawValue: mode) else {
                throw RecipeError(message: "'keep_best' is not one of \(KeepBest.allCases.map(\.rawValue))")
            }
            r.keepBest = k
        }
        r.shards = try optional(.shards, int) ?? 1
        return r
    }

    /// The seeded initial weights (epoch 0), a pure function of (seed, layer sizes):
    /// `Specs/random-streams.md` §6.
    public func initialParameters(seed: UInt64) -> [Parameters] {
        let streams = RandomStreams(seed: seed)
        return layerInfos.enumerated().map { l, layer in
            guard let (shapes, limit) = Self.initialization(layer) else { return Parameters(weight: [], bias: []) }
            var w = [Float](repeating: 0, count: shapes.rows * shapes.rowLength)
            w.withUnsafeMutableBufferPointer {
                streams.uniformInit(layer: l, outputs: shapes.rows, inputs: shapes.rowLength, limit: limit, into: $0)
            }
            return Parameters(weight: w, bias: [Float](repeating: 0, count: shapes.rows))
        }
    }

    /// A weighted layer's parameter shapes and Glorot-uniform limit (Specs/random-streams.md §6):
    /// rows of fan-in drawn row by row, the limit from the fans Keras uses: dense (inputs,
    /// outputs), conv2d (kh·kw·C, kh·kw·F). A dense layer's draws are those of every earlier
    /// version. Nil for a kind without weights.
    static func initialization(_ layer: LayerInfo) -> (ParameterShapes, Float)? {
        guard let shapes = layer.parameterShapes else { return nil }
        let fanOut = layer.kind == .conv2d ? shapes.rows * shapes.weight[1] * shapes.weight[2] : shapes.rows
        return (shapes, RandomStreams.glorotUniformLimit(fanIn: shapes.rowLength, fanOut: fanOut))
    }
}

/// A recipe that cannot be read: what is wrong with it.
public struct RecipeError: Error, CustomStringConvertible, Sendable {
    public var message: String
    public var description: String { message }
}

extension Recipe {
    /// Momentum of epoch `e` (1-based): linear from `momentum` at epoch 1 to `momentumFinal` at
    /// epoch `momentumRampEpochs`, constant after; float64, then rounded to float32
    /// (Specs/determinism.md §4.6).
    public func momentum(epoch e: Int) -> Float { Float(exactMomentum(epoch: e)) }

    /// The momentum of epoch `e` in float64, before rounding to float32.
    func exactMomentum(epoch e: Int) -> Double {
        let ramp = momentumRampEpochs
        guard ramp > 1 else { return momentumFinal }
        let t = min(1.0, Double(e - 1) / Double(ramp - 1))
        return momentum + (momentumFinal - momentum) * t
    }

    /// Learning rate of epoch `e` (1-based): `learningRate * lrDecay^(e-1)`, by repeated
    /// multiplication in float64, times `1 - momentum` of the epoch (float64, before rounding)
    /// with ``lrMomentumScaling``; then rounded to float32.
    public func learningRate(epoch e: Int) -> Float {
        var lr = learningRate
        for _ in 1..<max(1, e) { lr *= lrDecay }
        if lrMomentumScaling { lr *= 1 - exactMomentum(epoch: e) }
        return Float(lr)
    }
}
