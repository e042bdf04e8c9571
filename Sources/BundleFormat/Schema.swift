public import DropModelBase
import Foundation

/// The names and rules of bundle format version 1 (normative text: `Specs/bundle-format.md`).
public enum Schema {
    /// Root attribute that marks a file as a dropmodel bundle, and its value.
    public static let formatMarkerAttribute = "dropmodel_format"
    public static let formatMarker = "dropmodel.bundle"
    public static let formatVersionAttribute = "format_version"
    public static let conventionAttribute = "convention"
    public static let bakedAttribute = "baked"
    public static let creatorAttribute = "creator"
    /// Root attribute of a baked bundle: the weight digest before baking (provenance).
    public static let unbakedDigestAttribute = "unbaked_weights_sha256"

    /// Root attribute of a 1.1 bundle: the shape of one input example ([n] or [H, W, C]).
    public static let inputShapeAttribute = "input_shape"
    /// Layer attribute of a 1.1 bundle: the dropout mode of the layer's inputs.
    public static let dropoutModeAttribute = "dropout_mode"

    public static let layersGroup = "layers"
    public static let layerCountAttribute = "count"
    public static let weightDataset = "weight"
    public static let biasDataset = "bias"

    public static let rngGroup = "rng"
    public static let trainingGroup = "training"
    public static let historyGroup = "history"

    /// Bounds a reader applies before allocating (a model beyond them is not a model).
    public static let maxLayers = 100_000
    /// Most units in one layer (2^24: a row of 64 MiB of float32, streamed as one block).
    public static let maxUnits = 1 << 24
    /// Most weights in one layer, and in a whole model (2^40: 4 TiB of float32).
    public static let maxParameters = 1 << 40
    public static let maxEpochs = 10_000_000
    public static let digestBytes = 32

    /// The keep-probability rule: finite and in (0, 1].
    public static func isValidKeepProb(_ p: Double) -> Bool { p.isFinite && p > 0 && p <= 1 }

    /// "sha256:" + 64 lowercase hex digits.
    public static func isValidFingerprint(_ s: String) -> Bool {
        guard s.hasPrefix("sha256:") else { return false }
        let hex = s.dropFirst(7)
        return hex.count == 64 && hex.allSatisfy { ("0"..."9").contains($0) || ("a"..."f").contains($0) }
    }

    /// Whether `text` is a JSON object.
    public static func isJSONObject(_ text: String) -> Bool {
        guard let value = try? JSONValue.parse(text) else { return false }
        return value.object != nil
    }

    static let specHint = "see Specs/bundle-format.md"

    /// Semantic rules over parsed metadata. `layers` entries are nil where a layer could not be
    /// parsed (its own problems are reported elsewhere); rules that need it are skipped.
    static func problems(
        file: String, convention: DropoutConvention?, baked: Bool?, layers: [LayerInfo?],
        rng: RNGInfo?, training: TrainingInfo?, history: History?, hasLayerCountProblem: Bool = false
    ) -> [Problem] {
        var out: [Problem] = []
        func add(_ object: String, _ message: String, _ hint: String? = nil) {
            out.append(Problem(file: file, object: object, message: message, hint: hint))
        }
        if layers.isEmpty && !hasLayerCountProblem { add("/layers", "the model has no layers", specHint) }
        if baked == true && convention == .inverted {
            add(
                "/@baked",
                "the bundle is marked baked but its convention is 'inverted'; only classic weights are ever baked",
                "an inverted bundle needs no baking: set baked to 0")
        }
        var names: [String: Int] = [:]
        var totalParameters = 0
        // The previous layer's output shape, when known: the next layer's input.
        var flowing: TensorShape?
        for (i, layer) in layers.enumerated() {
            guard let layer else {
                flowing = nil
                continue
            }
            let obj = "/layers/\(i)"
            if layer.name.isEmpty {
                add(obj + "@name", "the layer name is empty", "give every layer a non-empty, unique name")
            }
            if let j = names[layer.name] {
                add(
                    obj + "@name", "the layer name '\(layer.name)' is also used by layer \(j)",
                    "give every layer a unique name")
            } else {
                names[layer.name] = i
            }
            if !isValidKeepProb(layer.keepProb) {
                add(
                    obj + "@keep_prob",
                    "keep probability \(layer.keepProb) is outside (0, 1]",
                    """
                    keep_prob is the probability that each input unit of this layer is kept in training (1 = no \
                    dropout); 
                    """
                        + "a Keras dropout rate r corresponds to keep_prob = 1 - r")
            }
            if !layer.hasWeights && (layer.keepProb != 1 || layer.dropoutMode != .element) {
                add(
                    obj + "@keep_prob",
                    """
                    a '\(layer.kind.rawValue)' layer has no weights, yet it records dropout (keep_prob \(layer.keepProb), \
                    mode \(layer.dropoutMode.rawValue))
                    """,
                    "dropout is recorded on the weighted layer that reads the dropped tensor; set keep_prob 1, element")
            }
            if layer.dropoutMode == .channel {
                // Channels are the image's last axis: the layer must read an image, or a
                // flatten of one (features in H, W, C order, channel = index mod C).
                let input = layer.declaredInputShape
                let fromFlatten = i > 0 && layers[i - 1]?.kind == .flatten
                if input?.channels == nil && !fromFlatten {
                    add(
                        obj + "@dropout_mode",
                        "channel dropout needs an image input, but layer \(i) ('\(layer.name)') reads \(input.map(\.description) ?? "?") features",
                        "use element or gaussian dropout on flat inputs")
                }
            }
            // The kind's own rules (LayerKinds/), then the rules every kind shares.
            let kindProblems = layer.kind.rules.problems(layer, object: obj)
            for p in kindProblems { add(p.object, p.message, p.hint) }
            if kindProblems.isEmpty, let shapes = layer.parameterShapes {
                totalParameters += shapes.count
            }
            let declared = layer.declaredInputShape
            if i > 0, let prev = layers[i - 1], let declared, let output = flowing, output != declared {
                add(
                    obj,
                    """
                    layer \(i) ('\(layer.name)') has \(declared) inputs but layer \(i - 1) ('\(prev.name)') has \
                    \(output) outputs; the shapes do not chain
                    """,
                    "each layer's inputs must equal the previous layer's outputs")
            }
            flowing = (declared ?? flowing).map { layer.outputShape(input: $0) }
        }
        if totalParameters > maxParameters {
            add(
                "/layers",
                "the model declares \(totalParameters) parameters, more than the \(maxParameters) any model may have")
        }
        if let rng {
            if rng.algorithm.isEmpty { add("/rng@algorithm", "the random-number algorithm name is empty") }
            if let seed = rng.seed, seed < 0 { add("/rng@seed", "the seed is \(seed); seeds are in 0 ..< 2^63") }
            if rng.streamLayout < 1 {
                add("/rng@stream_layout", "stream layout \(rng.streamLayout) is not a version (1 or more)")
            }
        }
        if let training {
            if !isJSONObject(training.recipe) {
                add("/training@recipe", "the recipe is not a JSON object", specHint)
            }
            if let fp = training.dataFingerprint, !isValidFingerprint(fp) {
                add(
                    "/training@data_fingerprint",
                    "data fingerprint '\(fp)' is not 'sha256:' followed by 64 lowercase hex digits")
            }
        }
        if let k = training?.keptEpoch, k < 1 || k > (history?.epochs.count ?? 0) {
            add(
                "/training@kept_epoch",
                "kept_epoch is \(k) but the history records \(history?.epochs.count ?? 0) epochs; "
                    + "it must be one of them"
            )
        }
        if let history {
            if let d = history.initialWeightsSHA256, d.count != digestBytes {
                add("/history@initial_weights_sha256", "the initial digest has \(d.count) bytes, not \(digestBytes)")
            }
            for e in history.epochs
            where !(0...1).contains(e.trainError) || !(e.testError.isNaN || (0...1).contains(e.testError)) {
                add(
                    "/history",
                    "epoch \(e.epoch) records train error \(e.trainError) and test error \(e.testError); "
                        + "errors are fractions in [0, 1] (test error NaN when not measured)")
                break
            }
            for e in history.epochs {
                guard let v = e.validationError, !(0...1).contains(v) else { continue }
                add(
                    "/history/validation_error",
                    "epoch \(e.epoch) records validation error \(v); errors are fractions in [0, 1]")
                break
            }
            for (k, e) in history.epochs.enumerated() where e.epoch != k + 1 {
                add("/history/epoch", "row \(k) records epoch \(e.epoch); epochs must be 1, 2, 3, ... in order")
                break
            }
        }
        return out
    }
}

extension ModelInfo {
    /// Every rule of Specs/bundle-format.md that metadata alone can break.
    public func problems(file: String) -> [Problem] {
        Schema.problems(
            file: file, convention: convention, baked: baked, layers: layers, rng: rng, training: training,
            history: history)
    }
}
