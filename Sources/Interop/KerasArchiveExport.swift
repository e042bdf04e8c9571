import DropModelBase
import BundleFormat
import Foundation
import HDF5Layer

extension KerasExport {
    /// Keras's name for a layer class in `model.weights.h5` (`naming.to_snake_case` of the class).
    static let snakeCase: [String: String] = [
        "Dense": "dense", "Conv2D": "conv2d", "MaxPooling2D": "max_pooling2d",
        "AveragePooling2D": "average_pooling2d", "GlobalAveragePooling2D": "global_average_pooling2d",
        "Flatten": "flatten", "Dropout": "dropout", "SpatialDropout2D": "spatial_dropout2d",
        "GaussianDropout": "gaussian_dropout",
    ]

    /// The `config.json` of the Keras 3 archive: the same layers as `model_config`, in the form
    /// Keras 3 serializes (`module`, `class_name`, `config`, `registered_name`).
    static func archiveConfig(_ model: Model) -> String {
        func layer(_ cls: String, _ config: [String: JSONValue]) -> JSONValue {
            .object([
                "module": .string("keras.layers"), "class_name": .string(cls),
                "config": .object(JSONObject(sorting: config)), "registered_name": .null,
            ])
        }
        var layers: [JSONValue] = [
            layer(
                "InputLayer",
                [
                    "batch_shape": batchShape(model.info.inputShape), "dtype": .string("float32"),
                    "sparse": .bool(false), "name": .string("input"),
                ])
        ]
        for k in kerasLayers(model) {
            var c = k.config
            c["name"] = .string(k.name)
            if k.className != "SpatialDropout2D" { c["trainable"] = .bool(true) }
            c["dtype"] = .string("float32")
            layers.append(layer(k.className, c))
        }
        return JSONValue.object([
            "module": .string("keras"), "class_name": .string("Sequential"),
            "config": .object([
                "name": .string("dropmodel"), "trainable": .bool(true), "dtype": .string("float32"),
                "layers": .array(layers),
            ]),
            "registered_name": .null,
            "build_config": .object(["input_shape": batchShape(model.info.inputShape)]),
            "compile_config": .null,
        ]).text
    }

    /// `model.weights.h5`: `/layers/<snake_case class>[_N]/vars` per layer (InputLayer excluded),
    /// with the layer's name in the attribute `name` and its variables as datasets `0`, `1`
    /// (kernel, bias); a root `vars` group for the model's own (no) variables.
    static func archiveWeights(_ model: Model, to path: String) throws {
        try File.writeAtomically(to: path) { file in
            let root = try file.root()
            let layersGroup = try root.createGroup("layers")
            var used: [String: Int] = [:]
            for k in kerasLayers(model) {
                let base = snakeCase[k.className]!
                let n = used[base, default: 0]
                used[base] = n + 1
                let vars = try layersGroup.createGroup(n == 0 ? base : "\(base)_\(n)").createGroup("vars")
                try vars.write("name", string: k.name)
                for (i, w) in k.weights.enumerated() {
                    let d = try vars.createDataset(String(i), type: .float32, shape: w.shape)
                    try d.write(floats: w.values)
                    d.close()
                }
            }
            try root.createGroup("vars").write("name", string: "dropmodel")
        }
    }

    /// Writes the Keras 3 archive (`model.save("m.keras")`'s layout): a stored ZIP of
    /// `metadata.json`, `config.json` and `model.weights.h5` (Specs/interop.md §6).
    static func writeArchive(_ model: Model, to path: String) throws {
        let tmp = FileManager.default.temporaryDirectory.path + "/dropmodel-\(getpid())-\(UUID().uuidString).weights.h5"
        defer { unlink(tmp) }
        let weights: Data
        do {
            try archiveWeights(model, to: tmp)
            weights = try Data(contentsOf: URL(fileURLWithPath: tmp))
        } catch let e as HDF5Error {
            throw DropModelError(e)
        }
        var metadata: [(String, JSONValue)] = [("keras_version", .string(layoutVersion))]
        for (k, v) in Export.metadata(model) { metadata.append((k, .string(v))) }
        let members: [(name: String, data: Data)] = [
            ("metadata.json", Data(JSONValue.object(JSONObject(metadata)).text.utf8)),
            ("config.json", Data(archiveConfig(model).utf8)),
            ("model.weights.h5", weights),
        ]
        guard let zip = StoredZipWriter.archive(members) else {
            throw DropModelError(
                code: .tooLarge, file: path, message: "the weights are too large for a .keras archive (4 GiB)",
                hint: "export to safetensors instead")
        }
        try zip.withUnsafeBytes { try AtomicFile.write($0, to: path, what: "Keras archive") }
    }
}
