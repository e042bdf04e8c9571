import DropModelBase
public import BundleFormat
import Foundation
import HDF5Layer

/// Reads a Keras full-model HDF5 file (`model.save("m.h5")`, Keras 2 or Keras 3's legacy
/// layout) into a bundle ``Model``: the mapping is normative in `Specs/interop.md` §2.
///
/// Nothing from the file is executed: the `model_config` JSON is read as data, and only the
/// layer classes of Specs/interop.md §2.3 and "Convolutional models" (`InputLayer`, `Conv2D`,
/// the pooling layers, `Flatten`, `Dense`, the dropout layers, `Activation`) in a linear chain are
/// accepted (``ChainWalker``). Anything else is refused, naming the layer.
///
/// ```swift
/// let model = try KerasImport.read(path: "model.h5")   // convention inverted, p = 1 - rate
/// try BundleWriter.write(model, to: "bundle.h5")
/// ```
public enum KerasImport {
    /// The largest `model_config` (and `training_config`) text read, in bytes.
    public static let maxConfigBytes = 4 << 20
    /// Bundle bounds (Specs/bundle-format.md §10) apply to the imported layers.
    static let maxUnits = 1 << 24
    static let maxLayers = Schema.maxLayers

    /// Activation names of Keras and their bundle equivalents.
    static let activations: [String: Activation] = [
        "relu": .relu, "sigmoid": .logistic, "tanh": .tanh, "linear": .linear, "softmax": .softmax,
    ]

    /// What the importer kept of one Keras dropout layer (`Dropout`, `SpatialDropout2D`,
    /// `GaussianDropout`).
    struct DropoutRecord {
        var name: String
        var rate: Double
        var seed: Int64?
        /// The Conv2D or Dense layer that receives the dropped units.
        var receiver: String
        var mode: DropoutMode
        var className: String
    }

    /// The model a Keras config describes, before any weights are read.
    struct ParsedConfig {
        var modelClass: String
        var modelName: String?
        var layerNames: [String]
        var layerClasses: [String]
        /// The bundle layers, in order.
        var layers: [LayerSpec]
        var dropouts: [DropoutRecord]
    }

    /// Reads a Keras full-model HDF5 file, or a Keras 3 `.keras` archive (a ZIP file, by its
    /// signature): Specs/interop.md §2.
    public static func read(path: String) throws -> Model {
        if let head = FileHandle(forReadingAtPath: path).flatMap({ h in
            defer { try? h.close() }; return try? h.read(upToCount: 4)
        }),
            [UInt8](head) == [0x50, 0x4B, 0x03, 0x04]
        {
            return try readArchive(path: path)
        }
        let file = try hdf5 { try File.open(path) }
        let root = try hdf5 { try file.root() }
        if try hdf5({ try root.hasAttribute("dropmodel_format") }) {
            throw failure(
                .notApplicable, path, "/@dropmodel_format", "this is already a dropmodel bundle",
                hint: "use it as it is, or 'dropmodel export' it")
        }
        guard try hdf5({ try root.hasAttribute("model_config") }) else {
            if try hdf5({ try root.contains("layers") && !root.contains("model_weights") }) {
                throw failure(
                    .unsupported, path, "/@model_config",
                    """
                    this looks like a Keras weights-only file (model.save_weights): it has no model_config, so no \
                    layer types, activations or dropout rates
                    """,
                    hint: "save the whole model with model.save(\"model.h5\") and import that")
            }
            throw failure(
                path, "/@model_config", "the attribute is missing: this is not a Keras full-model HDF5 file",
                hint: """
                    save the model with model.save(\"model.h5\") (Keras 2 or 3), or import a safetensors \
                    file
                    """)
        }
        let configText = try readText(root, "model_config", path: path)
        let config = try parseJSON(configText, path: path, object: "/@model_config")
        let parsed = try parseConfig(config, path: path, object: "/@model_config")
        var source: [String: JSONValue] = ["format": .string("keras-hdf5")]
        if let v = try? hdf5({ try root.readString("keras_version") }) { source["keras_version"] = .string(v) }
        if let v = try? hdf5({ try root.readString("backend") }) { source["backend"] = .string(v) }
        if try hdf5({ try root.hasAttribute("training_config") }) {
            if let text = try? readText(root, "training_config", path: path),
                let v = try? JSONValue.parse(text)
            {
                source["training_config"] = v
            }
        }

        // Weights: model_weights/<layer>/<weight_names[i]>, kernel [inputs, units].
        guard try hdf5({ try root.contains("model_weights") }) else {
            throw failure(
                path, "/model_weights", "the group is missing: the file holds a config but no weights",
                hint: "save the model with model.save(\"model.h5\"), which includes the weights")
        }
        let weightsGroup = try hdf5 { try root.group("model_weights") }
        let (layers, parameters) = try readLayers(parsed, path: path) { d in
            try legacyWeights(d, from: weightsGroup, path: path)
        }
        return assemble(parsed, layers: layers, parameters: parameters, source: source, path: path)
    }

    /// Parses a Keras model config (the same JSON in `model_config` and in a `.keras`
    /// archive's `config.json`): the linear chain and the layer mapping of Specs/interop.md §2.2–2.3.
    static func parseConfig(_ config: JSONValue, path: String, object configObject: String) throws -> ParsedConfig {
        // 1. The layer list and, for a functional model, proof that it is a linear chain.
        guard let modelClass = config["class_name"]?.string else {
            throw failure(path, configObject, "the config has no class_name: it is not a Keras model config")
        }
        guard ["Sequential", "Functional", "Model"].contains(modelClass) else {
            throw failure(
                .unsupported, path, configObject,
                "the model is a '\(modelClass)'; dropmodel imports Sequential models and linear Functional models",
                hint:
                    "a subclassed or custom model has no portable config; rebuild it as keras.Sequential and save that")
        }
        let body = config["config"]
        let layerList: [JSONValue]
        if let list = body?["layers"]?.array {
            layerList = list
        } else if let list = body?.array {
            layerList = list
        } else {
            throw failure(path, configObject, "the config of the \(modelClass) model has no 'layers' list")
        }
        guard layerList.count <= maxLayers else {
            throw failure(.invalid, path, configObject, "\(layerList.count) layers are more than dropmodel reads")
        }
        var names: [String] = []
        for (i, l) in layerList.enumerated() {
            guard let name = l["config"]?["name"]?.string ?? l["name"]?.string, !name.isEmpty else {
                throw failure(path, configObject, "layer #\(i) of the config has no name")
            }
            guard !name.contains("/"), name != ".", name != ".." else {
                throw failure(path, configObject, "layer name '\(name)' is not a valid HDF5 group name")
            }
            guard !names.contains(name) else {
                throw failure(path, configObject, "two layers are named '\(name)'")
            }
            names.append(name)
        }
        if modelClass != "Sequential" {
            try checkLinearChain(layerList, names: names, body: body, path: path, configObject: configObject)
        }
        // 2. Walk the chain: Conv2D, Dense and the weightless layers become bundle layers; dropout
        //    rates become the keep probability (and mode) of the weighted layer receiving the units.
        var walker = ChainWalker(path: path, configObject: configObject)
        for (i, l) in layerList.enumerated() { try walker.visit(l, name: names[i]) }
        try walker.finish()
        return ParsedConfig(
            modelClass: modelClass, modelName: body?["name"]?.string, layerNames: names,
            layerClasses: layerList.map { $0["class_name"]?.string ?? "?" }, layers: walker.layers,
            dropouts: walker.dropouts)
    }

    /// The bundle model: layers, weights, and what Keras said as provenance (Specs/interop.md §2.5).
    static func assemble(
        _ parsed: ParsedConfig, layers: [LayerInfo], parameters: [Parameters], source extra: [String: JSONValue],
        path: String
    ) -> Model {
        var source = extra
        source["file"] = .string(URL(fileURLWithPath: path).lastPathComponent)
        source["model_class"] = .string(parsed.modelClass)
        if let name = parsed.modelName { source["model_name"] = .string(name) }
        source["keras_layers"] = .array(
            zip(parsed.layerNames, parsed.layerClasses).map { n, c in
                .object(["name": .string(n), "class_name": .string(c)])
            })
        source["dropout"] = .array(
            parsed.dropouts.map { r in
                .object([
                    "name": .string(r.name), "rate": .number(r.rate),
                    "seed": r.seed.map { .integer($0) } ?? .null, "keep_prob_of": .string(r.receiver),
                    "class_name": .string(r.className), "mode": .string(r.mode.rawValue),
                ])
            })
        let shapes = ModelInfo(convention: .inverted, layers: layers).layerShapes
        let recipe = JSONValue.object([
            "convention": .string(DropoutConvention.inverted.rawValue),
            "layers": .array(([shapes[0].input.count] + shapes.map(\.output.count)).map { .integer(Int64($0)) }),
            "keep": .array(layers.map { .number($0.keepProb) }),
            "imported_from": .object(JSONObject(sorting: source)),
        ])
        let info = ModelInfo(
            convention: .inverted, baked: false, layers: layers, training: TrainingInfo(recipe: recipe.text))
        return Model(info: info, parameters: parameters)
    }

    // MARK: Pieces

    static func readText(_ root: Group, _ name: String, path: String) throws -> String {
        let text = try hdf5 { try root.readString(name) }
        guard text.utf8.count <= maxConfigBytes else {
            throw failure(
                .invalid, path, "/@\(name)",
                "the text is \(text.utf8.count) bytes, more than the \(maxConfigBytes) bytes dropmodel reads",
                hint: "a Keras config of a dense network is a few KB; the file is likely corrupt or hostile")
        }
        return text
    }

    static func parseJSON(_ text: String, path: String, object: String) throws -> JSONValue {
        do { return try JSONValue.parse(text) } catch {
            throw failure(path, object, "the model config cannot be read: \(error)")
        }
    }

    static func activation(_ value: JSONValue?, path: String, object: String) throws -> Activation {
        guard let value, !value.isNull else { return .linear }
        guard let name = value.string else {
            throw failure(
                .unsupported, path, object,
                "the activation is \(value.text.prefix(120)), not a built-in activation name",
                hint: "dropmodel supports relu, sigmoid, tanh, linear and softmax")
        }
        guard let a = activations[name] else {
            throw failure(
                .unsupported, path, object, "activation '\(name)' is not supported",
                hint: "dropmodel supports relu, sigmoid, tanh, linear and softmax")
        }
        return a
    }

    /// The names of the layers a functional layer's inbound node reads, Keras 2
    /// (`[[["dense", 0, 0, {}]]]`) or Keras 3 (`[{"args": [{"class_name": "__keras_tensor__",
    /// "config": {"keras_history": ["dense", 0, 0]}}], "kwargs": {}}]`) form.
    static func sources(of node: JSONValue) -> [String] {
        var out: [String] = []
        func walk(_ v: JSONValue) {
            switch v {
            case let .object(o):
                if o["class_name"]?.string == "__keras_tensor__", let h = o["config"]?["keras_history"]?.array,
                    let name = h.first?.string
                {
                    out.append(name)
                    return
                }
                for key in o.keys.sorted() { walk(o[key]!) }
            case let .array(a):
                // Keras 2: [name, node_index, tensor_index, kwargs]
                if a.count >= 3, let name = a[0].string, a[1].int != nil, a[2].int != nil {
                    out.append(name)
                    if a.count > 3 { walk(a[3]) }
                    return
                }
                for x in a { walk(x) }
            default: break
            }
        }
        walk(node)
        return out
    }

    /// Refuses any functional graph that is not a single chain through the layers in order.
    static func checkLinearChain(
        _ layers: [JSONValue], names: [String], body: JSONValue?, path: String, configObject: String
    ) throws {
        for (i, l) in layers.enumerated() {
            let cls = l["class_name"]?.string ?? "?"
            let object = "\(configObject): layer '\(names[i])' (\(cls))"
            let nodes = l["inbound_nodes"]?.array ?? []
            if cls == "InputLayer" {
                guard i == 0 else {
                    throw failure(
                        .unsupported, path, object,
                        "the model has more than one input; dropmodel imports single-input chains")
                }
                continue
            }
            guard i > 0 else {
                throw failure(.unsupported, path, object, "the model does not start with an InputLayer")
            }
            guard nodes.count == 1 else {
                throw failure(
                    .unsupported, path, object,
                    nodes.isEmpty
                        ? "the layer is not connected to anything"
                        : "the layer is called \(nodes.count) times (a shared layer); dropmodel imports linear chains")
            }
            let from = sources(of: nodes[0])
            guard from == [names[i - 1]] else {
                let what =
                    from.count == 1
                    ? "takes its input from '\(from[0])', not from the layer before it ('\(names[i - 1])')"
                    : "takes \(from.count) inputs (\(from.map { "'\($0)'" }.joined(separator: ", ")))"
                throw failure(
                    .unsupported, path, object,
                    """
                    the layer \(what): the model branches or merges, and dropmodel imports only linear chains of \
                    layers
                    """,
                    hint: "a bundle holds one chain of layers; residual and multi-branch models have no equivalent")
            }
        }
        if let outputs = body?["output_layers"] {
            let out = sources(of: outputs)
            guard out == [names.last!] else {
                throw failure(
                    .unsupported, path, configObject,
                    """
                    the model's outputs are \(out.map { "'\($0)'" }.joined(separator: ", ")); dropmodel imports \
                    models whose one output is the last layer
                    """)
            }
        }
    }

    /// Reads a list attribute that Keras may have split into `name0`, `name1`, ... (lists
    /// longer than 64 KB). An empty list may be stored as a zero-length float array.
    static func nameList(_ g: Group, _ name: String) throws -> [String]? {
        func read(_ n: String) throws -> [String] {
            let (type, shape) = try g.attributeInfo(n)
            if shape.reduce(1, *) == 0 { return [] }
            guard case .string = type else {
                throw g.attributeError(n, .typeMismatch, "expected a list of names, found \(type)")
            }
            return try g.readStrings(n)
        }
        if try g.hasAttribute(name) { return try read(name) }
        var out: [String] = []
        var k = 0
        while try g.hasAttribute("\(name)\(k)") {
            out += try read("\(name)\(k)")
            k += 1
            if k > 65_536 { throw g.attributeError(name, .tooLarge, "the list is split into more than 65,536 parts") }
        }
        return k == 0 ? nil : out
    }

    /// Refuses a dataset whose stored bytes are far fewer than its declared size: a small
    /// hostile file could otherwise declare gigabytes of unallocated (fill-value) or extremely
    /// compressed weights and make the reader allocate them. Keras writes weights uncompressed.
    static func checkStored(_ ds: Dataset, elements: Int, object: String, path: String) throws {
        let type = try hdf5 { try ds.elementType() }
        guard case let .float(size) = type else { return }
        let logical = elements * size
        guard logical > 1 << 20 else { return }
        let stored = try hdf5 { try ds.storageInfo() }.storedBytes
        if stored.multipliedReportingOverflow(by: 64).partialValue < UInt64(logical) {
            throw failure(
                path, object,
                "the dataset declares \(logical) bytes of weights but the file stores only \(stored) bytes of them",
                hint: "Keras writes weights uncompressed; the file is corrupt or hostile")
        }
    }

    /// A Dense layer's datasets and where they are, for error messages.
    struct DenseWeights {
        var kernel: Dataset?
        var kernelPath: String
        var bias: Dataset?
        var biasPath: String
        /// Where to look, for the "no kernel" message.
        var group: String
    }

    /// Keras 2/3 legacy layout: `model_weights/<name>@weight_names`.
    static func legacyWeights(_ d: LayerSpec, from weights: Group, path: String) throws -> DenseWeights {
        let object = "/model_weights/\(d.name)"
        guard try hdf5({ try weights.contains(d.name) }) else {
            throw failure(
                path, object,
                "the group of \(d.className) layer '\(d.name)' is missing: the weights do not match the config")
        }
        let g = try hdf5 { try weights.group(d.name) }
        guard let weightNames = try hdf5({ try nameList(g, "weight_names") }) else {
            throw failure(path, object + "@weight_names", "the attribute is missing")
        }
        var out = DenseWeights(kernel: nil, kernelPath: "", bias: nil, biasPath: "", group: object)
        for w in weightNames {
            let parts = w.split(separator: "/", omittingEmptySubsequences: true).map(String.init)
            guard let last = parts.last, parts.count <= 16, !parts.contains(where: { $0 == "." || $0 == ".." }) else {
                throw failure(path, object + "@weight_names", "'\(w)' is not a weight path")
            }
            let base = last.hasSuffix(":0") ? String(last.dropLast(2)) : last
            let ds: Dataset = try hdf5 {
                var group = g
                for c in parts.dropLast() { group = try group.group(c) }
                return try group.dataset(last)
            }
            switch base {
            case "kernel": out.kernel = ds; out.kernelPath = object + "/" + w
            case "bias": out.bias = ds; out.biasPath = object + "/" + w
            default:
                throw failure(
                    .unsupported, path, object + "/" + w,
                    """
                    \(d.className) layer '\(d.name)' has a weight named '\(base)'; a plain \(d.className) layer \
                    has only kernel and bias
                    """)
            }
        }
        return out
    }

    /// The bundle layers and their weights, in order: each weighted layer's datasets from
    /// `weights`, its input from the layer before (a Dense of an old config: from its kernel).
    static func readLayers(
        _ parsed: ParsedConfig, path: String, weights: (LayerSpec) throws -> DenseWeights
    ) throws -> ([LayerInfo], [Parameters]) {
        var layers: [LayerInfo] = []
        var parameters: [Parameters] = []
        var flowing: TensorShape?
        for spec in parsed.layers {
            let info: LayerInfo
            var p = Parameters(weight: [], bias: [])
            switch spec.kind {
            case .dense:
                let expected = (spec.input ?? flowing).map(\.count)
                let (inputs, params) = try readDense(
                    spec, try weights(spec), expectedInputs: expected, previousIsDense: layers.last?.kind == .dense,
                    path: path)
                info = LayerInfo(
                    name: spec.name, inputs: inputs, outputs: spec.units, activation: spec.activation,
                    keepProb: spec.keep, dropoutMode: spec.mode)
                p = params
            case .conv2d:
                let input = spec.input!, window = spec.window!
                info = .conv2d(
                    name: spec.name, input: input, window: window, filters: spec.units, activation: spec.activation,
                    keepProb: spec.keep, dropoutMode: spec.mode)
                let found = try weights(spec)
                p = try readKernel(
                    spec, found, shape: [window.height, window.width, input.channels!, spec.units],
                    what: "[kernel_h, kernel_w, channels, filters]", path: path)
            default:
                info = .weightless(spec.kind, name: spec.name, input: spec.input!, window: spec.window)
            }
            flowing = info.outputShape(input: info.declaredInputShape ?? flowing ?? .flat(0))
            layers.append(info)
            parameters.append(p)
        }
        return (layers, parameters)
    }

    static func readDense(
        _ d: LayerSpec, _ found: DenseWeights, expectedInputs: Int?, previousIsDense: Bool, path: String
    ) throws -> (Int, Parameters) {
        guard let kernel = found.kernel else {
            throw failure(path, found.group, "Dense layer '\(d.name)' has no kernel")
        }
        let shape = try hdf5 { try kernel.shape() }
        guard shape.count == 2, shape[1] == d.units else {
            throw failure(
                path, found.kernelPath,
                """
                the kernel has shape \(shape); Dense layer '\(d.name)' with \(d.units) units needs [inputs, \
                \(d.units)]
                """)
        }
        let inputs = shape[0]
        guard inputs >= 1, inputs <= maxUnits else {
            throw failure(path, found.kernelPath, "the kernel has \(inputs) inputs; a bundle layer has 1 ... 2^24")
        }
        if let expectedInputs, inputs != expectedInputs {
            throw failure(
                path, found.kernelPath,
                previousIsDense
                    ? "the kernel has \(inputs) inputs but the previous Dense layer has \(expectedInputs) units"
                    : "the kernel has \(inputs) inputs but the layer reads \(expectedInputs) features")
        }
        return (inputs, try readKernel(d, found, shape: shape, what: "[inputs, units]", path: path))
    }

    /// A weighted layer's kernel (of exactly `shape`, the last axis the units or filters) and bias.
    /// The kernel, read as a `[fan-in, units]` matrix, is transposed to the bundle's rows of fan-in
    /// (`[units, fan-in]`): a Dense kernel `[inputs, units]` gives `[outputs, inputs]`, a Conv2D
    /// kernel `[KH, KW, C, F]` gives `[F, KH, KW, C]` (Specs/interop.md).
    static func readKernel(
        _ d: LayerSpec, _ found: DenseWeights, shape expected: [Int], what: String, path: String
    ) throws -> Parameters {
        let object = found.group
        let (kernel, bias, kernelPath, biasPath) = (found.kernel, found.bias, found.kernelPath, found.biasPath)
        guard let kernel else { throw failure(path, object, "\(d.className) layer '\(d.name)' has no kernel") }
        if d.useBias && bias == nil {
            throw failure(path, object, "\(d.className) layer '\(d.name)' uses a bias but the file has none")
        }
        func floatType(_ ds: Dataset, _ p: String) throws {
            let t = try hdf5 { try ds.elementType() }
            guard case .float = t else {
                throw failure(path, p, "the weights are \(t); expected floating-point values")
            }
        }
        try floatType(kernel, kernelPath)
        let shape = try hdf5 { try kernel.shape() }
        guard shape == expected else {
            throw failure(
                path, kernelPath,
                "the kernel has shape \(shape); \(d.className) layer '\(d.name)' needs \(what) = \(expected)")
        }
        let units = d.units
        // Sizes from a hostile file: multiply without overflow before anything is allocated.
        var elements = 1
        for n in shape {
            let (p, overflow) = elements.multipliedReportingOverflow(by: n)
            guard !overflow, p <= 1 << 34 else {
                throw failure(
                    path, kernelPath, "the kernel of shape \(shape) has more weights than dropmodel reads (2^34)")
            }
            elements = p
        }
        let rows = units == 0 ? 0 : elements / units
        try checkStored(kernel, elements: rows * units, object: kernelPath, path: path)
        let k = try hdf5 { try kernel.readFloats() }
        var w = [Float](repeating: 0, count: rows * units)
        for i in 0..<rows { for u in 0..<units { w[u * rows + i] = k[i * units + u] } }
        var b = [Float](repeating: 0, count: units)
        if let bias {
            try floatType(bias, biasPath)
            let bs = try hdf5 { try bias.shape() }
            guard bs == [units] else {
                throw failure(
                    path, biasPath, "the bias has shape \(bs); \(d.className) layer '\(d.name)' needs [\(units)]")
            }
            try checkStored(bias, elements: units, object: biasPath, path: path)
            b = try hdf5 { try bias.readFloats() }
        }
        if let bad = (w + b).firstIndex(where: { !$0.isFinite }) {
            throw failure(path, bad < w.count ? kernelPath : biasPath, "a weight is not finite (NaN or infinity)")
        }
        return Parameters(weight: w, bias: b)
    }
}
