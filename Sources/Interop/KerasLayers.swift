import DropModelBase
import BundleFormat

extension KerasImport {
    /// One bundle layer read from a Keras config, before its weights are read: a `Dense` or
    /// `Conv2D` (weighted) or a pooling or flatten step (weightless).
    struct LayerSpec {
        var name: String
        var className: String
        var kind: LayerKind
        /// Dense: units; Conv2D: filters; 0 for the weightless kinds.
        var units: Int
        var activation: Activation
        var useBias: Bool
        var keep: Double
        var mode: DropoutMode
        /// The image a spatial kind reads; for a Dense the features it reads when the config says
        /// (nil for an old config without an input shape: the kernel then says).
        var input: TensorShape?
        var window: Window?

        var weighted: Bool { kind == .dense || kind == .conv2d }
    }

    /// Walks a linear chain of Keras layers (Specs/interop.md §2.3 and "Convolutional models"):
    /// tracks the tensor shape from the input, collects bundle layers and attaches each dropout
    /// layer's keep probability and mode to the weighted layer that receives its units.
    struct ChainWalker {
        /// The largest height, width or channel count, and kernel or pool side and stride
        /// (Specs/bundle-format.md §4.7).
        static let maxSide = 1 << 24
        static let maxWindow = 4096
        let path: String
        let configObject: String
        var layers: [LayerSpec] = []
        var dropouts: [DropoutRecord] = []
        /// The shape of one example of the current tensor (without the batch axis), if known.
        var shape: [Int]?
        /// The dropout layers not yet attached, their combined keep probability and mode.
        var pending: [DropoutRecord] = []
        var pendingKeep = 1.0
        var pendingMode: DropoutMode?
        /// Whether an Activation layer may still set the last weighted layer's activation.
        var activationOpen = false
        /// The last layer that closed it, for the message.
        var between: (name: String, cls: String)?
        var sawLayer = false

        init(path: String, configObject: String) {
            self.path = path
            self.configObject = configObject
        }

        static let dropoutClasses: Set<String> = ["Dropout", "SpatialDropout2D", "GaussianDropout"]
        static let poolClasses: [String: LayerKind] = ["MaxPooling2D": .maxPool2d, "AveragePooling2D": .avgPool2d]

        func refuse(_ code: ErrorCode, _ object: String, _ message: String, hint: String? = nil) -> DropModelError {
            failure(code, path, object, message, hint: hint)
        }

        /// An ``ErrorCode/unsupported`` refusal.
        func refuse(_ object: String, _ message: String, hint: String? = nil) -> DropModelError {
            failure(.unsupported, path, object, message, hint: hint)
        }

        /// The shape `[batch, ...]` a config gives (`batch_shape` in Keras 3, `batch_input_shape` in
        /// Keras 2), without the batch axis; nil if absent or not all sizes are known.
        static func inputShape(_ c: JSONValue) -> [Int]? {
            guard let dims = (c["batch_shape"] ?? c["batch_input_shape"])?.array, dims.count >= 2 else { return nil }
            let sizes = dims.dropFirst().map { $0.int.map(Int.init) }
            guard sizes.allSatisfy({ $0 != nil && $0! >= 1 && $0! <= Self.maxSide }) else { return nil }
            return sizes.map { $0! }
        }

        /// An integer or a pair of integers (`kernel_size`, `pool_size`, `strides`).
        func pair(_ v: JSONValue?, _ key: String, object: String, default d: (Int, Int)? = nil) throws -> (Int, Int) {
            if let v, !v.isNull {
                if let i = v.int, i >= 1, i <= Self.maxWindow { return (Int(i), Int(i)) }
                if let a = v.array, a.count == 2, let x = a[0].int, let y = a[1].int, x >= 1, y >= 1,
                    x <= Self.maxWindow, y <= Self.maxWindow
                {
                    return (Int(x), Int(y))
                }
            } else if let d {
                return d
            }
            throw refuse(
                .invalid, object, "\(key) is \(v?.text ?? "missing"); it must be one or two integers in 1...4096")
        }

        func padding(_ c: JSONValue, object: String) throws -> Padding {
            let text = c["padding"]?.string ?? "valid"
            guard let p = Padding(rawValue: text.lowercased()) else {
                throw refuse(
                    object, "padding '\(text)' is not supported; dropmodel supports 'valid' and 'same'",
                    hint: "use padding=\"valid\" or \"same\"")
            }
            return p
        }

        func channelsLast(_ c: JSONValue, object: String) throws {
            if let f = c["data_format"], !f.isNull, f.string != "channels_last" {
                throw refuse(
                    object,
                    "data_format \(f.text) is not supported: bundle activations are NHWC (channels_last)",
                    hint: "rebuild the model with data_format=\"channels_last\" (Keras's default) and retrain")
            }
        }

        /// The current tensor as an image, or a refusal saying what the layer needs.
        func image(_ cls: String, object: String) throws -> TensorShape {
            guard let s = shape else {
                throw refuse(
                    .invalid, object,
                    "the config does not say the shape of the tensor this \(cls) reads",
                    hint: "save the model with an Input layer of a known shape, e.g. keras.Input((28, 28, 1))")
            }
            guard s.count == 3 else {
                throw refuse(
                    object, "\(cls) reads a \(s.count + 1)-D tensor; it needs an image (batch, height, width, channels)"
                )
            }
            return .image(height: s[0], width: s[1], channels: s[2])
        }

        /// Refuses a pooling layer between a dropout layer and the weighted layer receiving its units.
        func notAcrossDropout(object: String) throws {
            if let d = pending.last {
                throw refuse(
                    object,
                    """
                    it lies between the dropout layer '\(d.name)' and the weighted layer receiving its units: a \
                    bundle records dropout on a Conv2D's or Dense's inputs, not on a pooling layer's
                    """,
                    hint: "move the dropout after the pooling layer (directly before the Conv2D or Dense) and retrain")
            }
        }

        /// The pending dropout, handed to a weighted layer.
        mutating func takeDropout(receiver: String) -> (Double, DropoutMode) {
            let out = (pendingKeep, pendingMode ?? .element)
            for k in pending.indices { pending[k].receiver = receiver }
            dropouts += pending
            pending = []
            pendingKeep = 1
            pendingMode = nil
            return out
        }

        mutating func visit(_ l: JSONValue, name: String) throws {
            let cls = l["class_name"]?.string ?? "?"
            let c = l["config"] ?? .object([:])
            let object = "\(configObject): layer '\(name)' (\(cls))"
            if !sawLayer, shape == nil { shape = Self.inputShape(c) }
            sawLayer = true
            if cls != "Activation" && cls != "InputLayer" {
                activationOpen = cls == "Dense" || cls == "Conv2D"
                if !activationOpen { between = (name, cls) }
            }
            switch cls {
            case "InputLayer":
                if let s = Self.inputShape(c) { shape = s }
            case "Flatten":
                try channelsLast(c, object: object)
                var count = 1
                for n in shape ?? [] {
                    let (p, overflow) = count.multipliedReportingOverflow(by: n)
                    guard !overflow, p <= maxUnits else {
                        throw refuse(
                            .invalid, object,
                            "it flattens \(shape!) into more than the \(maxUnits) features a layer reads")
                    }
                    count = p
                }
                if let s = shape, s.count == 3 {
                    // A bundle flatten layer after a spatial layer (or for channel dropout, which
                    // needs one); a Flatten of the input alone is the dense models' reshape.
                    if !layers.isEmpty || pendingMode == .channel {
                        layers.append(
                            LayerSpec(
                                name: name, className: cls, kind: .flatten, units: 0, activation: .linear,
                                useBias: false, keep: 1, mode: .element,
                                input: .image(height: s[0], width: s[1], channels: s[2]), window: nil))
                    }
                }
                if shape != nil { shape = [count] }
            case "Dropout", "SpatialDropout2D", "GaussianDropout":
                try dropout(c, cls: cls, name: name, object: object)
            case "MaxPooling2D", "AveragePooling2D":
                try channelsLast(c, object: object)
                try notAcrossDropout(object: object)
                let input = try image(cls, object: object)
                let (kh, kw) = try pair(c["pool_size"], "pool_size", object: object, default: (2, 2))
                let (sh, sw) = try pair(c["strides"], "strides", object: object, default: (kh, kw))
                let window = Window(
                    height: kh, width: kw, strideHeight: sh, strideWidth: sw, padding: try padding(c, object: object))
                let info = LayerInfo.weightless(Self.poolClasses[cls]!, name: name, input: input, window: window)
                try advance(info, input: input, object: object)
                layers.append(
                    LayerSpec(
                        name: name, className: cls, kind: info.kind, units: 0, activation: .linear, useBias: false,
                        keep: 1, mode: .element, input: input, window: window))
            case "GlobalAveragePooling2D":
                try channelsLast(c, object: object)
                try notAcrossDropout(object: object)
                if c["keepdims"]?.bool == true {
                    throw refuse(
                        object, "keepdims true keeps a 1x1 image; dropmodel's global average pooling gives a vector",
                        hint: "use keepdims=False (the default)")
                }
                let input = try image(cls, object: object)
                layers.append(
                    LayerSpec(
                        name: name, className: cls, kind: .globalAvgPool2d, units: 0, activation: .linear,
                        useBias: false, keep: 1, mode: .element, input: input, window: nil))
                shape = [input.channels!]
            case "Conv2D":
                try conv2d(c, cls: cls, name: name, object: object)
            case "Dense":
                try dense(c, cls: cls, name: name, object: object)
            case "Activation":
                let act = try activation(c["activation"], path: path, object: object)
                if act == .linear { return }
                guard activationOpen, let last = layers.last, last.weighted, last.activation == .linear else {
                    let why =
                        !layers.contains(where: \.weighted)
                        ? "it comes before any Conv2D or Dense layer"
                        : !activationOpen
                            ? "a \(between?.cls ?? "") layer stands between it and its layer ('\(between?.name ?? "")')"
                            : "layer '\(layers.last!.name)' already applies \(layers.last!.activation.rawValue)"
                    throw refuse(
                        object,
                        "\(why); dropmodel supports one activation per Conv2D or Dense layer, applied to its output",
                        hint: "move the activation directly after its layer (or into Dense(activation=...))")
                }
                if act == .softmax && last.kind == .conv2d {
                    throw refuse(
                        object, "softmax after a Conv2D is not supported: a bundle applies softmax to Dense layers",
                        hint: "apply softmax after the Dense output layer")
                }
                layers[layers.count - 1].activation = act
                activationOpen = false
            default:
                throw refuse(
                    object,
                    """
                    layer class \(cls) is not supported: dropmodel imports chains of Conv2D, MaxPooling2D, \
                    AveragePooling2D, GlobalAveragePooling2D, Flatten, Dense, Dropout, SpatialDropout2D, \
                    GaussianDropout and Activation layers; nothing from the file is executed
                    """,
                    hint: """
                        normalization, recurrent, attention, custom and nested-model layers have no bundle \
                        equivalent; export such a model from Keras directly (e.g. with tf2onnx)
                        """)
            }
        }

        /// Checks a weightless or conv layer's geometry and moves the tracked shape to its output.
        mutating func advance(_ info: LayerInfo, input: TensorShape, object: String) throws {
            let out = info.outputShape(input: input)
            guard out.count > 0 else {
                let w = info.window.map { "\($0.height)x\($0.width) \($0.padding.rawValue)" } ?? "?"
                throw refuse(
                    .invalid, object,
                    """
                    the \(w) window on the \(input) input gives no output, or sizes beyond what a bundle layer \
                    holds
                    """)
            }
            shape = out.dimensions
        }

        mutating func dropout(_ c: JSONValue, cls: String, name: String, object: String) throws {
            guard let rate = c["rate"]?.double, rate >= 0, rate < 1, rate.isFinite else {
                throw refuse(
                    .invalid, object,
                    "the dropout rate is \(c["rate"]?.text ?? "missing"); it must be a number in [0, 1)",
                    hint: """
                        a Keras Dropout rate is the probability of dropping a unit; the file is corrupt or was \
                        edited by hand
                        """)
            }
            let mode: DropoutMode
            switch cls {
            case "GaussianDropout":
                mode = .gaussian
            case "SpatialDropout2D":
                try channelsLast(c, object: object)
                _ = try image(cls, object: object)
                mode = .channel
            default:
                if let ns = c["noise_shape"], !ns.isNull {
                    // SpatialDropout2D's pattern (batch, 1, 1, C) on an image is channel dropout.
                    let dims = ns.array ?? []
                    let channels = shape?.count == 3 ? shape![2] : nil
                    if let channels, dims.count == 4, dims[1].int == 1, dims[2].int == 1,
                        dims[3].isNull || dims[3].int == Int64(channels)
                    {
                        mode = .channel
                    } else {
                        throw refuse(
                            object,
                            """
                            noise_shape \(ns.text) is not supported: dropmodel's dropout modes are one draw per \
                            unit (noise_shape null) or per feature map ([null, 1, 1, C] on an image)
                            """,
                            hint: "retrain with Dropout(noise_shape=None) or SpatialDropout2D to use dropmodel")
                    }
                } else {
                    mode = .element
                }
            }
            if let m = pendingMode, m != mode, let before = pending.last {
                throw refuse(
                    object,
                    """
                    a \(mode.rawValue) dropout right after the \(m.rawValue) dropout '\(before.name)': a bundle \
                    records one dropout mode per layer input
                    """,
                    hint: "keep one kind of dropout before each Conv2D or Dense layer and retrain")
            }
            pending.append(
                DropoutRecord(name: name, rate: rate, seed: c["seed"]?.int, receiver: "", mode: mode, className: cls))
            // Independent masks of one mode compose to one of keep p1·p2 (Specs/interop.md).
            pendingKeep *= 1 - rate
            pendingMode = mode
        }

        mutating func conv2d(_ c: JSONValue, cls: String, name: String, object: String) throws {
            try channelsLast(c, object: object)
            let input = try image(cls, object: object)
            if let d = c["dilation_rate"], !d.isNull, try pair(d, "dilation_rate", object: object) != (1, 1) {
                throw refuse(
                    object, "dilation_rate \(d.text) is not supported: a bundle's convolutions are not dilated",
                    hint: "use dilation_rate=1")
            }
            if let g = c["groups"], !g.isNull, g.int != 1 {
                throw refuse(
                    object, "groups \(g.text) is not supported: a bundle's convolutions read every input channel",
                    hint: "use groups=1")
            }
            try plainKernel(c, object: object)
            guard let filters = c["filters"]?.int, filters >= 1, filters <= Self.maxSide else {
                throw refuse(
                    .invalid, object,
                    "filters is \(c["filters"]?.text ?? "missing"); it must be an integer in 1 ... 2^24")
            }
            let (kh, kw) = try pair(c["kernel_size"], "kernel_size", object: object)
            let (sh, sw) = try pair(c["strides"], "strides", object: object, default: (1, 1))
            let window = Window(
                height: kh, width: kw, strideHeight: sh, strideWidth: sw, padding: try padding(c, object: object))
            let act = try activation(c["activation"], path: path, object: object)
            if act == .softmax {
                throw refuse(
                    object, "softmax on a Conv2D is not supported: a bundle applies softmax to Dense layers",
                    hint: "apply softmax after the Dense output layer")
            }
            let info = LayerInfo.conv2d(
                name: name, input: input, window: window, filters: Int(filters), activation: act, keepProb: 1)
            try advance(info, input: input, object: object)
            let (keep, mode) = takeDropout(receiver: name)
            layers.append(
                LayerSpec(
                    name: name, className: cls, kind: .conv2d, units: Int(filters), activation: act,
                    useBias: c["use_bias"]?.bool ?? true, keep: keep, mode: mode, input: input, window: window))
        }

        func plainKernel(_ c: JSONValue, object: String) throws {
            for key in ["lora_rank", "quantization_config"] {
                if let v = c[key], !v.isNull, v != .integer(0) {
                    throw refuse(
                        object, "\(key) = \(v.text): LoRA and quantized layers are not supported",
                        hint: "merge or dequantize the weights in Keras and save a plain layer")
                }
            }
        }

        mutating func dense(_ c: JSONValue, cls: String, name: String, object: String) throws {
            guard let units = c["units"]?.int, units >= 1, units <= maxUnits else {
                throw refuse(
                    .invalid, object, "units is \(c["units"]?.text ?? "missing"); it must be an integer in 1 ... 2^24")
            }
            let act = try activation(c["activation"], path: path, object: object)
            try plainKernel(c, object: object)
            if let s = shape, s.count != 1 {
                throw refuse(
                    object,
                    "Dense reads a \(s.count + 1)-D tensor; dropmodel's Dense layers read vectors (flatten it first)",
                    hint: "add a Flatten (or GlobalAveragePooling2D) layer before the Dense layer and retrain")
            }
            let (keep, mode) = takeDropout(receiver: name)
            if mode == .channel && layers.last?.kind != .flatten {
                throw refuse(
                    object, "channel dropout on a Dense layer's inputs needs a Flatten of an image directly before it")
            }
            layers.append(
                LayerSpec(
                    name: name, className: cls, kind: .dense, units: Int(units), activation: act,
                    useBias: c["use_bias"]?.bool ?? true, keep: keep, mode: mode, input: shape.map { .flat($0[0]) },
                    window: nil))
            shape = [Int(units)]
        }

        /// After the last layer: every dropout must have a receiver, and there must be a Dense.
        func finish() throws {
            if let orphan = pending.first {
                throw refuse(
                    "\(configObject): layer '\(orphan.name)' (\(orphan.className))",
                    """
                    this dropout comes after the last Dense layer, so no layer receives its units and a bundle \
                    cannot record it
                    """,
                    hint: "remove it (it is the identity at inference) and save the model again")
            }
            guard layers.contains(where: { $0.kind == .dense }) else {
                throw refuse(configObject, "the model has no Dense layer")
            }
            guard layers.count <= maxLayers else {
                throw refuse(.invalid, configObject, "\(layers.count) layers are more than a bundle holds (100,000)")
            }
        }
    }
}
