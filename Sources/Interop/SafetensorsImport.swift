import DropModelBase
public import BundleFormat
import Foundation

/// Reads a safetensors file of dense layers into a bundle ``Model`` (Specs/interop.md §3).
///
/// Tensors are `<prefix>.weight` `[outputs, inputs]` (PyTorch `nn.Linear`) and optionally
/// `<prefix>.bias` `[outputs]`. The format has no place for keep probabilities, the dropout
/// convention or activations: they come from the caller's options or from dropmodel's
/// `__metadata__` keys, and are never guessed.
public enum SafetensorsImport {
    public struct Options: Sendable {
        /// One keep probability per layer (of its inputs), input layer first.
        public var keep: [Double]?
        public var convention: DropoutConvention?
        /// Activation of the hidden layers (the last layer's is `outputActivation`).
        public var activation: Activation?
        public var outputActivation: Activation?
        public init(
            keep: [Double]? = nil, convention: DropoutConvention? = nil, activation: Activation? = nil,
            outputActivation: Activation? = nil
        ) {
            self.keep = keep
            self.convention = convention
            self.activation = activation
            self.outputActivation = outputActivation
        }
    }

    /// `a` < `b` comparing digit runs as numbers: `layers.2` before `layers.10`.
    public static func naturalLess(_ a: String, _ b: String) -> Bool {
        func parts(_ s: String) -> [Either] {
            var out: [Either] = []
            var digits = "", text = ""
            for ch in s {
                if ch.isASCII && ch.isNumber {
                    if !text.isEmpty { out.append(.text(text)); text = "" }
                    digits.append(ch)
                } else {
                    if !digits.isEmpty { out.append(.number(digits)); digits = "" }
                    text.append(ch)
                }
            }
            if !text.isEmpty { out.append(.text(text)) }
            if !digits.isEmpty { out.append(.number(digits)) }
            return out
        }
        let pa = parts(a), pb = parts(b)
        for (x, y) in zip(pa, pb) where x != y {
            switch (x, y) {
            case let (.number(m), .number(n)):
                let m = m.drop { $0 == "0" }, n = n.drop { $0 == "0" }
                return m.count != n.count ? m.count < n.count : m < n
            case let (.text(s), .text(t)): return s < t
            case (.number, .text): return true
            case (.text, .number): return false
            }
        }
        return pa.count < pb.count
    }

    enum Either: Equatable { case text(String), number(String) }

    public static func read(path: String, options: Options = Options()) throws -> Model {
        let st = try SafetensorsFile(path: path)
        let meta = st.metadata
        func metaList(_ key: String) throws -> [JSONValue]? {
            guard let text = meta[key] else { return nil }
            guard let v = try? JSONValue.parse(text), let a = v.array else {
                throw failure(path, "header: __metadata__[\(key)]", "'\(text.prefix(80))' is not a JSON list")
            }
            return a
        }

        // A convolutional dropmodel export (Specs/interop.md "Convolutional models: export") keeps
        // conv weights in the bundle's 4-D layout, and its layer indices skip weightless layers:
        // this importer reads dense layers only.
        if let kinds = try metaList(MetadataKey.layerKinds),
            let other = kinds.first(where: { $0.string != LayerKind.dense.rawValue })
        {
            throw failure(
                .unsupported, path, "header: __metadata__[\(MetadataKey.layerKinds)]",
                "the file is a dropmodel export of a model with \(other.text) layers; safetensors import reads dense layers",
                hint: "import the model's Keras export (dropmodel export BUNDLE -o m.keras) or use the bundle itself")
        }

        // Group tensors into layers by prefix.
        var weights: [String: SafetensorsFile.Tensor] = [:], biases: [String: SafetensorsFile.Tensor] = [:]
        for t in st.tensors {
            let object = "tensor '\(t.name)'"
            if t.name.hasSuffix(".weight") {
                weights[String(t.name.dropLast(7))] = t
            } else if t.name.hasSuffix(".bias") {
                biases[String(t.name.dropLast(5))] = t
            } else {
                throw failure(
                    .unsupported, path, object,
                    "the tensor is not a dense layer's weight or bias (names must end in .weight or .bias)",
                    hint: "dropmodel imports chains of dense (nn.Linear) layers; remove other tensors before importing")
            }
            guard t.dtype.isFloat else {
                throw failure(
                    .unsupported, path, object,
                    "dtype \(t.dtype.rawValue) is not a floating-point type (F16, BF16, F32, F64)")
            }
        }
        if let orphan = biases.keys.sorted().first(where: { weights[$0] == nil }) {
            throw failure(path, "tensor '\(orphan).bias'", "there is no \(orphan).weight for this bias")
        }
        guard !weights.isEmpty else { throw failure(.unsupported, path, "header", "the file holds no .weight tensors") }
        let prefixes = weights.keys.sorted(by: naturalLess)
        guard prefixes.count <= Schema.maxLayers else {
            throw failure(path, "header", "\(prefixes.count) layers are more than a bundle holds")
        }

        // Shapes: [outputs, inputs], chained.
        var shapes: [(inputs: Int, outputs: Int)] = []
        for (i, p) in prefixes.enumerated() {
            let w = weights[p]!
            guard w.shape.count == 2, w.shape[0] >= 1, w.shape[1] >= 1, w.shape[0] <= 1 << 24, w.shape[1] <= 1 << 24
            else {
                throw failure(
                    path, "tensor '\(w.name)'",
                    "shape \(w.shape) is not [outputs, inputs] of a dense layer (each 1 ... 2^24)")
            }
            if let b = biases[p], b.shape != [w.shape[0]] {
                throw failure(
                    path, "tensor '\(b.name)'", "shape \(b.shape) does not match \(w.name)'s \(w.shape[0]) outputs")
            }
            if let prev = shapes.last, prev.outputs != w.shape[1] {
                throw failure(
                    .unsupported, path, "tensor '\(w.name)'",
                    """
                    layer \(i) ('\(p)') has \(w.shape[1]) inputs but the layer before it ('\(prefixes[i - 1])') \
                    has \(prev.outputs) outputs; the layers, in natural name order, do not form a chain
                    """,
                    hint: """
                        name the tensors so that their natural order is the order of the layers (e.g. 0.weight, \
                        2.weight, ...)
                        """)
            }
            shapes.append((w.shape[1], w.shape[0]))
        }
        let L = prefixes.count

        // Keep probabilities, convention, activations: options first, then dropmodel metadata.
        var keep: [Double]
        var keepFrom = "--keep"
        if let k = options.keep {
            keep = k
        } else if let list = try metaList(MetadataKey.keepProb) {
            keep = try list.map { v in
                guard let d = v.double else {
                    throw failure(path, "header: __metadata__[\(MetadataKey.keepProb)]", "\(v.text) is not a number")
                }
                return d
            }
            keepFrom = "__metadata__"
        } else {
            throw failure(
                path, "header: __metadata__",
                "the file does not say the keep probabilities of the layers' inputs "
                    + "(safetensors has no place for them)",
                hint: "pass --keep p1,...,p\(L) (one per layer, input layer first; 1 = no dropout)")
        }
        guard keep.count == L else {
            throw failure(
                path, keepFrom == "--keep" ? "--keep" : "header: __metadata__[\(MetadataKey.keepProb)]",
                "\(keep.count) keep probabilities for \(L) layers", hint: "give one per layer, input layer first")
        }
        if let bad = keep.first(where: { !($0 > 0 && $0 <= 1) }) {
            throw failure(path, keepFrom, "keep probability \(bad) is not in (0, 1]")
        }
        var convention: DropoutConvention
        var conventionFrom = "--convention"
        if let c = options.convention {
            convention = c
        } else if let s = meta[MetadataKey.convention] {
            guard let c = DropoutConvention(rawValue: s) else {
                throw failure(
                    path, "header: __metadata__[\(MetadataKey.convention)]", "'\(s)' is not classic or inverted")
            }
            convention = c
            conventionFrom = "__metadata__"
        } else {
            throw failure(
                path, "header: __metadata__", "the file does not say which dropout convention produced the weights",
                hint: """
                    pass --convention inverted (PyTorch nn.Dropout, Keras) or --convention classic (weights \
                    still to be scaled by p)
                    """)
        }
        var baked = false
        if options.convention == nil, let b = meta[MetadataKey.baked] {
            guard b == "0" || b == "1" else {
                throw failure(path, "header: __metadata__[\(MetadataKey.baked)]", "'\(b)' is not 0 or 1")
            }
            baked = b == "1"
            if baked && convention == .inverted {
                throw failure(path, "header: __metadata__[\(MetadataKey.baked)]", "an inverted model cannot be baked")
            }
        }
        var activations: [Activation]
        if options.activation == nil && options.outputActivation == nil,
            let list = try metaList(MetadataKey.activations)
        {
            activations = try list.map { v in
                guard let s = v.string, let a = Activation(rawValue: s) else {
                    throw failure(
                        path, "header: __metadata__[\(MetadataKey.activations)]",
                        "\(v.text) is not relu, logistic, tanh, linear or softmax")
                }
                return a
            }
            guard activations.count == L else {
                throw failure(
                    path, "header: __metadata__[\(MetadataKey.activations)]",
                    "\(activations.count) activations for \(L) layers")
            }
        } else {
            activations =
                Array(repeating: options.activation ?? .relu, count: L - 1) + [options.outputActivation ?? .softmax]
        }
        var names = prefixes
        if let list = try metaList(MetadataKey.layerNames), list.count == L,
            list.allSatisfy({ ($0.string ?? "").isEmpty == false }),
            Set(list.compactMap(\.string)).count == L
        {
            names = list.compactMap(\.string)
        }

        var layers: [LayerInfo] = []
        var parameters: [Parameters] = []
        for (i, p) in prefixes.enumerated() {
            layers.append(
                LayerInfo(
                    name: names[i], inputs: shapes[i].inputs, outputs: shapes[i].outputs,
                    activation: activations[i], keepProb: keep[i]))
            let w = try st.readFloats(weights[p]!)
            let b = try biases[p].map { try st.readFloats($0) } ?? [Float](repeating: 0, count: shapes[i].outputs)
            if (w + b).contains(where: { !$0.isFinite }) {
                throw failure(path, "tensor '\(p).weight'", "a weight of layer '\(p)' is not finite (NaN or infinity)")
            }
            parameters.append(Parameters(weight: w, bias: b))
        }
        let source = JSONValue.object([
            "format": .string("safetensors"),
            "file": .string(URL(fileURLWithPath: path).lastPathComponent),
            "tensors": .array(prefixes.map { .string($0) }),
            "keep_from": .string(keepFrom),
            "convention_from": .string(conventionFrom),
            "metadata": .object(JSONObject(sorting: meta.mapValues { .string($0) })),
        ])
        let recipe = JSONValue.object([
            "convention": .string(convention.rawValue),
            "layers": .array(([shapes[0].inputs] + shapes.map(\.outputs)).map { .integer(Int64($0)) }),
            "keep": .array(keep.map { .number($0) }),
            "imported_from": source,
        ])
        var info = ModelInfo(
            convention: convention, baked: baked, layers: layers, training: TrainingInfo(recipe: recipe.text))
        if baked, let d = meta[MetadataKey.unbakedWeightsSHA256], let bytes = Hex.decode(d), bytes.count == 32 {
            info.unbakedWeightsSHA256 = bytes
        }
        return Model(info: info, parameters: parameters)
    }
}
