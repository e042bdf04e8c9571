import DropModelBase
public import BundleFormat
import Foundation
import HDF5Layer

/// Writes a bundle's deterministic network as a Keras model in the layouts Keras 3 writes with
/// `model.save("m.h5")` and `model.save("m.keras")` and reads with `keras.models.load_model`
/// (Specs/interop.md §6): a `Sequential` config of `InputLayer`, a dropout layer
/// (`Dropout`, `SpatialDropout2D` or `GaussianDropout`, rate `1 − p`) where a layer's inputs were
/// dropped, and `Conv2D`, pooling, `Flatten` and `Dense` layers; kernels in Keras's layout.
public enum KerasExport {
    /// The Keras release whose legacy HDF5 layout the file follows.
    public static let layoutVersion = "3.0.0"

    /// Keras layer names for the bundle's layers: the bundle's names where Keras accepts them
    /// (letters, digits, `_`, `-`, `.`), else `<kind>_<i>` (`dense_<i>` for a dense layer); unique,
    /// with a dropout layer name per layer.
    static func kerasNames(_ layers: [LayerInfo]) -> (layer: [String], dropout: [String]) {
        var used: Set<String> = ["input"]
        func unique(_ s: String) -> String {
            var name = s, k = 1
            while used.contains(name) { name = "\(s)_\(k)"; k += 1 }
            used.insert(name)
            return name
        }
        let ok = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")
        var names: [String] = []
        for (i, l) in layers.enumerated() {
            let valid =
                !l.name.isEmpty && l.name.count <= 200 && l.name.allSatisfy { ok.contains($0) } && l.name.first != "."
            names.append(unique(valid ? l.name : "\(l.kind.rawValue)_\(i)"))
        }
        let dropout = names.map { unique("\($0)_dropout") }
        return (names, dropout)
    }

    /// The rate Keras's Dropout takes: `1 − p`, rounded to 15 significant digits so that
    /// `1 − rate` gives back the same binary64 keep probability for the usual values (0.8, 0.5).
    static func rate(keep p: Double) -> Double {
        Double(String(format: "%.15g", 1 - p)) ?? (1 - p)
    }

    static func kerasActivation(_ a: Activation) -> String {
        switch a {
        case .relu: return "relu"
        case .logistic: return "sigmoid"
        case .tanh: return "tanh"
        case .linear: return "linear"
        case .softmax: return "softmax"
        }
    }

    /// One layer of the exported Sequential model.
    struct KerasLayer {
        var className: String
        var name: String
        /// The layer's `config` (without the common `name`, `trainable`, `dtype`; Keras 3's
        /// `SpatialDropout2D` takes no `trainable`).
        var config: [String: JSONValue]
        /// Its weights in Keras's names, shapes and layout, in `weight_names` order.
        var weights: [(name: String, shape: [Int], values: [Float])]
    }

    static func pair(_ a: Int, _ b: Int) -> JSONValue { .array([.integer(Int64(a)), .integer(Int64(b))]) }

    static func windowConfig(_ w: Window) -> [String: JSONValue] {
        [
            "strides": pair(w.strideHeight, w.strideWidth), "padding": .string(w.padding.rawValue),
            "data_format": .string("channels_last"),
        ]
    }

    /// The one place a layer kind maps to a Keras layer. A new layer kind adds its case here.
    static func kerasLayer(_ l: LayerInfo, name: String, _ p: Parameters) -> KerasLayer {
        switch l.kind {
        case .dense:
            return KerasLayer(
                className: "Dense", name: name,
                config: [
                    "units": .integer(Int64(l.outputs)), "activation": .string(kerasActivation(l.activation)),
                    "use_bias": .bool(true),
                ],
                // Keras kernels are [inputs, units]: the bundle's [outputs, inputs] transposed.
                weights: [
                    ("kernel", [l.inputs, l.outputs], transposed(p.weight, rows: l.outputs)),
                    ("bias", [l.outputs], p.bias),
                ])
        case .conv2d:
            let w = l.window!, c = l.inputShape!.channels!
            var config = windowConfig(w)
            config["filters"] = .integer(Int64(l.filters))
            config["kernel_size"] = pair(w.height, w.width)
            config["dilation_rate"] = pair(1, 1)
            config["groups"] = .integer(1)
            config["activation"] = .string(kerasActivation(l.activation))
            config["use_bias"] = .bool(true)
            // The bundle's [F, KH, KW, C] (rows of fan-in) transposed is Keras's [KH, KW, C, F].
            return KerasLayer(
                className: "Conv2D", name: name, config: config,
                weights: [
                    ("kernel", [w.height, w.width, c, l.filters], transposed(p.weight, rows: l.filters)),
                    ("bias", [l.filters], p.bias),
                ])
        case .maxPool2d, .avgPool2d:
            var config = windowConfig(l.window!)
            config["pool_size"] = pair(l.window!.height, l.window!.width)
            return KerasLayer(
                className: l.kind == .maxPool2d ? "MaxPooling2D" : "AveragePooling2D", name: name, config: config,
                weights: [])
        case .globalAvgPool2d:
            return KerasLayer(
                className: "GlobalAveragePooling2D", name: name,
                config: ["data_format": .string("channels_last"), "keepdims": .bool(false)], weights: [])
        case .flatten:
            return KerasLayer(
                className: "Flatten", name: name, config: ["data_format": .string("channels_last")], weights: [])
        }
    }

    /// A `[rows, n]` row-major matrix transposed to `[n, rows]`.
    static func transposed(_ m: [Float], rows: Int) -> [Float] {
        guard rows > 0 else { return m }
        let n = m.count / rows
        var out = [Float](repeating: 0, count: m.count)
        for r in 0..<rows { for j in 0..<n { out[j * rows + r] = m[r * n + j] } }
        return out
    }

    /// The dropout layer that says how a weighted layer's inputs were dropped: `Dropout`
    /// (element), `SpatialDropout2D` (channel) or `GaussianDropout` (gaussian), rate `1 − p`.
    static func dropoutLayer(_ l: LayerInfo, name: String) -> KerasLayer {
        let r = JSONValue.number(rate(keep: l.keepProb))
        switch l.dropoutMode {
        case .element:
            return KerasLayer(
                className: "Dropout", name: name, config: ["rate": r, "seed": .null, "noise_shape": .null],
                weights: [])
        case .channel:
            return KerasLayer(
                className: "SpatialDropout2D", name: name,
                config: ["rate": r, "seed": .null, "data_format": .string("channels_last")], weights: [])
        case .gaussian:
            return KerasLayer(
                className: "GaussianDropout", name: name, config: ["rate": r, "seed": .null], weights: [])
        }
    }

    /// The Sequential model's layers after its InputLayer, in order. A weighted layer whose
    /// inputs were dropped is preceded by its dropout layer; channel dropout on a Dense layer
    /// after a flatten is a `SpatialDropout2D` before the `Flatten` (it needs the image).
    static func kerasLayers(_ model: Model) -> [KerasLayer] {
        let layers = model.info.layers
        let names = kerasNames(layers)
        var out: [KerasLayer] = []
        func dropped(_ i: Int) -> Bool { i < layers.count && layers[i].hasWeights && layers[i].keepProb < 1 }
        for (i, l) in layers.enumerated() {
            let beforeFlatten = l.kind == .flatten && dropped(i + 1) && layers[i + 1].dropoutMode == .channel
            if beforeFlatten { out.append(dropoutLayer(layers[i + 1], name: names.dropout[i + 1])) }
            let afterFlatten = i > 0 && layers[i - 1].kind == .flatten && l.dropoutMode == .channel
            if dropped(i) && !afterFlatten { out.append(dropoutLayer(l, name: names.dropout[i])) }
            out.append(kerasLayer(l, name: names.layer[i], model.parameters[i]))
        }
        return out
    }

    /// `[null, features]` or `[null, H, W, C]`.
    static func batchShape(_ s: TensorShape) -> JSONValue { .array([.null] + s.dimensions.map { .integer(Int64($0)) }) }

    /// The `model_config` JSON (legacy HDF5).
    static func modelConfig(_ model: Model) -> String {
        var layers: [JSONValue] = [
            .object([
                "class_name": .string("InputLayer"),
                "config": .object([
                    "batch_shape": batchShape(model.info.inputShape), "dtype": .string("float32"),
                    "name": .string("input"),
                ]),
            ])
        ]
        for k in kerasLayers(model) {
            var c = k.config
            c["name"] = .string(k.name)
            if k.className != "SpatialDropout2D" { c["trainable"] = .bool(true) }
            c["dtype"] = .string("float32")
            layers.append(.object(["class_name": .string(k.className), "config": .object(JSONObject(sorting: c))]))
        }
        return JSONValue.object([
            "class_name": .string("Sequential"),
            "config": .object(["name": .string("dropmodel"), "layers": .array(layers)]),
        ]).text
    }

    /// Writes `model` to `path` atomically (a temporary file renamed into place): Keras's legacy
    /// HDF5 layout (`*.h5`, `*.hdf5`) or, for `*.keras`, the Keras 3 archive.
    public static func write(_ model: Model, to path: String) throws {
        if path.lowercased().hasSuffix(".keras") { return try writeArchive(model, to: path) }
        do {
            try File.writeAtomically(to: path) { file in
                let root = try file.root()
                try root.write("model_config", string: modelConfig(model))
                try root.write("keras_version", string: layoutVersion)
                for (k, v) in Export.metadata(model) { try root.write(k, string: v) }
                let mw = try root.createGroup("model_weights")
                try mw.write("keras_version", string: layoutVersion)
                var layerNames: [String] = []
                for k in kerasLayers(model) {
                    layerNames.append(k.name)
                    let g = try mw.createGroup(k.name)
                    if k.weights.isEmpty {
                        try g.write("weight_names", double: [], shape: [0])
                        continue
                    }
                    try g.write("weight_names", strings: k.weights.map { "\(k.name)/\($0.name)" })
                    let inner = try g.createGroup(k.name)
                    for w in k.weights {
                        let d = try inner.createDataset(w.name, type: .float32, shape: w.shape)
                        try d.write(floats: w.values)
                        d.close()
                    }
                }
                try mw.write("layer_names", strings: layerNames)
            }
        } catch let e as HDF5Error {
            throw DropModelError(e)
        }
    }
}
