import DropModelBase
public import BundleFormat
import Foundation
import HDF5Layer

/// Writes a bundle's deterministic network as a Keras full-model HDF5 file in the layout
/// Keras 3 writes with `model.save("m.h5")` and reads with `keras.models.load_model`
/// (Specs/interop.md §6): a `Sequential` config of `InputLayer`, `Dropout(rate = 1 − p)` where a
/// layer's inputs were dropped, and `Dense` layers; kernels `[inputs, units]`.
public enum KerasExport {
    /// The Keras release whose legacy HDF5 layout the file follows.
    public static let layoutVersion = "3.0.0"

    /// Keras layer names for the bundle's layers: the bundle's names where Keras accepts them
    /// (letters, digits, `_`, `-`, `.`), else `dense_<i>`; unique, with a Dropout name per layer.
    static func kerasNames(_ layers: [LayerInfo]) -> (dense: [String], dropout: [String]) {
        var used: Set<String> = ["input"]
        func unique(_ s: String) -> String {
            var name = s, k = 1
            while used.contains(name) { name = "\(s)_\(k)"; k += 1 }
            used.insert(name)
            return name
        }
        let ok = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")
        var dense: [String] = []
        for (i, l) in layers.enumerated() {
            let valid =
                !l.name.isEmpty && l.name.count <= 200 && l.name.allSatisfy { ok.contains($0) } && l.name.first != "."
            dense.append(unique(valid ? l.name : "dense_\(i)"))
        }
        let dropout = dense.map { unique("\($0)_dropout") }
        return (dense, dropout)
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

    /// A bundle layer as Keras sees it: its entry in `model_config` (given its Keras name) and
    /// its weights in Keras's names, shapes and layout, in `weight_names` order.
    struct KerasLayer {
        var config: (_ name: String) -> JSONValue
        var weights: (Parameters) -> [(name: String, shape: [Int], values: [Float])]
    }

    /// The one place a layer kind maps to a Keras layer (the `Dropout` before it, from
    /// `keep_prob`, is every kind's). A new layer kind adds its case here.
    static func kerasLayer(_ l: LayerInfo) -> KerasLayer {
        switch l.kind {
        case .dense:
            return KerasLayer(
                config: { name in
                    .object([
                        "class_name": .string("Dense"),
                        "config": .object([
                            "name": .string(name), "units": .integer(Int64(l.outputs)),
                            "activation": .string(kerasActivation(l.activation)), "use_bias": .bool(true),
                            "trainable": .bool(true), "dtype": .string("float32"),
                        ]),
                    ])
                },
                weights: { p in
                    // Keras kernels are [inputs, units]: the bundle's [outputs, inputs] transposed.
                    var kernel = [Float](repeating: 0, count: l.inputs * l.outputs)
                    for u in 0..<l.outputs {
                        for j in 0..<l.inputs { kernel[j * l.outputs + u] = p.weight[u * l.inputs + j] }
                    }
                    return [("kernel", [l.inputs, l.outputs], kernel), ("bias", [l.outputs], p.bias)]
                })
        default: preconditionFailure("Conversion.export refuses \(l.kind.rawValue) layers (issue 12)")
        }
    }

    /// The `model_config` JSON.
    static func modelConfig(_ info: ModelInfo) -> String {
        let names = kerasNames(info.layers)
        var layers: [JSONValue] = [
            .object([
                "class_name": .string("InputLayer"),
                "config": .object([
                    "batch_shape": .array([.null, .integer(Int64(info.layerShapes[0].input.count))]),
                    "dtype": .string("float32"), "name": .string("input"),
                ]),
            ])
        ]
        for (i, l) in info.layers.enumerated() {
            if l.keepProb < 1 {
                layers.append(
                    .object([
                        "class_name": .string("Dropout"),
                        "config": .object([
                            "name": .string(names.dropout[i]), "rate": .number(rate(keep: l.keepProb)), "seed": .null,
                            "noise_shape": .null, "trainable": .bool(true), "dtype": .string("float32"),
                        ]),
                    ]))
            }
            layers.append(kerasLayer(l).config(names.dense[i]))
        }
        return JSONValue.object([
            "class_name": .string("Sequential"),
            "config": .object(["name": .string("dropmodel"), "layers": .array(layers)]),
        ]).text
    }

    /// Writes `model` to `path` atomically (a temporary file renamed into place).
    public static func write(_ model: Model, to path: String) throws {
        let info = model.info
        let names = kerasNames(info.layers)
        do {
            try File.writeAtomically(to: path) { file in
                let root = try file.root()
                try root.write("model_config", string: modelConfig(info))
                try root.write("keras_version", string: layoutVersion)
                for (k, v) in Export.metadata(model) { try root.write(k, string: v) }
                let mw = try root.createGroup("model_weights")
                try mw.write("keras_version", string: layoutVersion)
                var layerNames: [String] = []
                for (i, l) in info.layers.enumerated() {
                    if l.keepProb < 1 {
                        layerNames.append(names.dropout[i])
                        let g = try mw.createGroup(names.dropout[i])
                        try g.write("weight_names", double: [], shape: [0])
                    }
                    let name = names.dense[i]
                    layerNames.append(name)
                    let g = try mw.createGroup(name)
                    let weights = kerasLayer(l).weights(model.parameters[i])
                    try g.write("weight_names", strings: weights.map { "\(name)/\($0.name)" })
                    let inner = try g.createGroup(name)
                    for w in weights {
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
