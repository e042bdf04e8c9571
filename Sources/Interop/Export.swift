public import DropModelBase
public import BundleFormat
public import Foundation

/// Exporting a bundle to the formats runtimes and frameworks read (Specs/interop.md §4–§7).
///
/// Only a bundle whose stored weights are its inference weights is exported: an inverted
/// bundle, or a classic bundle after `dropmodel bake`. None of these formats can say "scale the
/// weights by p first", so exporting an unbaked classic bundle would hand a runtime silently
/// wrong weights; it is refused with the command that fixes it.
public enum Export {
    public enum Format: String, Sendable, CaseIterable {
        case onnx, keras, safetensors, npz
    }

    /// Reads `bundle`'s weights if they are the inference weights, or refuses; `progress` hears
    /// the bytes read, layer by layer.
    public static func deployableModel(_ bundle: BundleReader, progress: ProgressObserver? = nil) throws -> Model {
        let info = bundle.info
        if info.convention == .classic && !info.baked {
            throw DropModelError(
                code: .notApplicable, file: bundle.path, object: "/@baked",
                message: """
                    the bundle uses the classic dropout convention and is not baked: its weights must still be scaled \
                    by the keep probabilities before inference, and \(formatNames) cannot record that
                    """,
                hint: "bake it first: dropmodel bake \(bundle.path) -o baked.h5, then export baked.h5")
        }
        let counter = ProgressCounter(total: info.dataBytes, progress)
        let parameters = try info.layers.indices.map { l in
            defer { counter.add(info.layers[l].dataBytes) }
            return try bundle.parameters(l)
        }
        counter.finish()
        return Model(info: info, parameters: parameters)
    }

    static let formatNames = "ONNX, Keras, safetensors and NumPy files"

    /// The metadata every export carries (ONNX `metadata_props`, safetensors `__metadata__`,
    /// Keras root attributes), all strings: Specs/interop.md §4.1.
    public static func metadata(_ model: Model) -> [(String, String)] {
        let info = model.info
        var m: [(String, String)] = [
            (MetadataKey.convention, info.convention.rawValue),
            (MetadataKey.baked, info.baked ? "1" : "0"),
            (MetadataKey.keepProb, JSONValue.array(info.layers.map { .number($0.keepProb) }).text),
            (MetadataKey.activations, JSONValue.array(info.layers.map { .string($0.activation.rawValue) }).text),
            (MetadataKey.layerNames, JSONValue.array(info.layers.map { .string($0.name) }).text),
            (MetadataKey.weightsSHA256, hex(WeightDigest.sha256(model.parameters))),
            (MetadataKey.creator, "dropmodel \(DropModelVersion.string)"),
        ]
        if let d = info.unbakedWeightsSHA256 { m.append((MetadataKey.unbakedWeightsSHA256, hex(d))) }
        if info.requiredFormatVersion > FormatVersion(1, 0) {
            // Format 1.1 facts, only for models that have them (a dense export stays as it was).
            m.append((MetadataKey.layerKinds, JSONValue.array(info.layers.map { .string($0.kind.rawValue) }).text))
            m.append(
                (MetadataKey.dropoutModes, JSONValue.array(info.layers.map { .string($0.dropoutMode.rawValue) }).text))
            m.append((MetadataKey.inputShape, JSONValue.array(info.inputShape.dimensions.map { .int($0) }).text))
        }
        return m
    }

    static func hex(_ bytes: [UInt8]) -> String { Hex.encode(bytes) }
}

/// Metadata keys shared by the exports and read back by the safetensors importer.
public enum MetadataKey {
    public static let convention = "dropmodel.convention"
    public static let baked = "dropmodel.baked"
    public static let keepProb = "dropmodel.keep_prob"
    public static let activations = "dropmodel.activations"
    public static let layerNames = "dropmodel.layer_names"
    public static let weightsSHA256 = "dropmodel.weights_sha256"
    public static let unbakedWeightsSHA256 = "dropmodel.unbaked_weights_sha256"
    public static let creator = "dropmodel.creator"
    /// Format 1.1 bundles only: each layer's kind, each layer's dropout mode, the input shape.
    public static let layerKinds = "dropmodel.layer_kinds"
    public static let dropoutModes = "dropmodel.dropout_modes"
    public static let inputShape = "dropmodel.input_shape"
}

// MARK: safetensors

extension Export {
    /// safetensors: `layers.<i>.weight` F32 [outputs, inputs] (PyTorch `nn.Linear` layout),
    /// `layers.<i>.bias` F32 [outputs], metadata as above.
    public static func safetensors(_ model: Model) -> Data {
        var tensors: [(name: String, shape: [Int], values: [Float])] = []
        // The bundle's own layout (rows of fan-in), whatever the kind; no tensors for a kind
        // without weights.
        for (i, (l, p)) in zip(model.info.layers, model.parameters).enumerated() {
            guard let shapes = l.parameterShapes else { continue }
            tensors.append(("layers.\(i).weight", shapes.weight, p.weight))
            tensors.append(("layers.\(i).bias", shapes.bias, p.bias))
        }
        return SafetensorsFile.encode(tensors, metadata: Dictionary(uniqueKeysWithValues: metadata(model)))
    }
}
