import DropModelBase
public import HDF5Layer

/// How weight datasets are stored.
public struct WriteOptions: Sendable {
    /// Target bytes per chunk of a weight matrix; chunks hold whole rows.
    public var chunkBytes: Int = 1 << 20
    /// Fletcher32 checksums on every chunk (default on: a flipped byte becomes a read error).
    public var fletcher32: Bool = true
    /// Written to the root `creator` attribute.
    public var creator: String? = "dropmodel \(DropModelVersion.string)"
    public init() {}
}

/// Writes bundles, always atomically: a temporary file renamed into place.
public enum BundleWriter {
    /// Validates `model` and writes it to `path` atomically.
    public static func write(_ model: Model, to path: String, options: WriteOptions = WriteOptions()) throws {
        try write(model, to: path, options: options) { _ in }
    }

    /// Validates `model` and writes it to `path` atomically, calling `extra` to add more before
    /// the file is closed (the checkpoint section).
    static func write(
        _ model: Model, to path: String, options: WriteOptions, extra: (File) throws -> Void
    ) throws {
        try validate(model, file: path)
        do {
            try File.writeAtomically(to: path) { file in
                let layers = try writeMetadata(model.info, to: file, options: options)
                for (i, p) in model.parameters.enumerated() {
                    guard let (w, b) = try createLayerDatasets(layers[i], model.info.layers[i], options: options) else {
                        continue
                    }
                    try w.write(floats: p.weight)
                    try b.write(floats: p.bias)
                    w.close()
                    b.close()
                }
                try extra(file)
            }
        } catch let e as HDF5Error {
            throw DropModelError(e)
        }
    }

    /// Throws ``DropModelError`` listing every rule `model` breaks.
    public static func validate(_ model: Model, file: String) throws {
        var problems = model.info.problems(file: file)
        if model.parameters.count != model.info.layers.count {
            problems.append(
                Problem(
                    file: file, object: "/layers",
                    message: "\(model.parameters.count) parameter sets for \(model.info.layers.count) layers"))
        }
        for (i, (layer, p)) in zip(model.info.layers, model.parameters).enumerated() {
            // A kind without weights holds empty parameter arrays.
            let shapes = layer.parameterShapes ?? ParameterShapes(weight: [0, 0], bias: [0])
            if p.weight.count != shapes.rows * shapes.rowLength {
                problems.append(
                    Problem(
                        file: file, object: "/layers/\(i)/weight",
                        message: """
                            \(p.weight.count) weights for a \(shapes.weight.map(String.init).joined(separator: " x ")) \
                            layer
                            """))
            }
            if p.bias.count != shapes.bias.reduce(1, *) {
                problems.append(
                    Problem(
                        file: file, object: "/layers/\(i)/bias",
                        message: "\(p.bias.count) biases for \(shapes.rows) outputs"))
            }
        }
        if !problems.isEmpty { throw DropModelError(code: .invalid, problems: problems) }
    }

    /// Writes every attribute and group of `info` (no weight data) and returns the layer groups.
    /// Streaming writers (bake) use this, then ``createLayerDatasets(_:_:options:)``.
    public static func writeMetadata(_ info: ModelInfo, to file: File, options: WriteOptions) throws -> [Group] {
        let root = try file.root()
        try root.write(Schema.formatMarkerAttribute, string: Schema.formatMarker)
        // The oldest version that holds the model: a dense-only bundle is 1.0, byte for byte.
        let version = info.requiredFormatVersion
        try root.write(
            Schema.formatVersionAttribute, int64: [Int64(version.major), Int64(version.minor)], shape: [2])
        try root.write(Schema.conventionAttribute, string: info.convention.rawValue)
        try root.write(Schema.bakedAttribute, uint8: info.baked ? 1 : 0)
        if let creator = options.creator { try root.write(Schema.creatorAttribute, string: creator) }
        if let d = info.unbakedWeightsSHA256 { try root.write(Schema.unbakedDigestAttribute, uint8s: d) }
        let v11 = version >= FormatVersion(1, 1)
        if v11 {
            let dims = info.inputShape.dimensions
            try root.write(Schema.inputShapeAttribute, int64: dims.map { Int64($0) }, shape: [dims.count])
        }

        let lg = try root.createGroup(Schema.layersGroup)
        try lg.write(Schema.layerCountAttribute, int64: Int64(info.layers.count))
        var groups: [Group] = []
        for (i, layer) in info.layers.enumerated() {
            let g = try lg.createGroup(String(i))
            try g.write("name", string: layer.name)
            try g.write("kind", string: layer.kind.rawValue)
            try layer.kind.rules.writeAttributes(layer, to: g)
            try g.write("activation", string: layer.activation.rawValue)
            try g.write("keep_prob", double: layer.keepProb)
            if v11 { try g.write(Schema.dropoutModeAttribute, string: layer.dropoutMode.rawValue) }
            groups.append(g)
        }
        if let rng = info.rng {
            let g = try root.createGroup(Schema.rngGroup)
            try g.write("algorithm", string: rng.algorithm)
            if let seed = rng.seed { try g.write("seed", int64: seed) }
            try g.write("stream_layout", int64: Int64(rng.streamLayout))
        }
        if let t = info.training {
            let g = try root.createGroup(Schema.trainingGroup)
            try g.write("recipe", string: t.recipe)
            if let fp = t.dataFingerprint { try g.write("data_fingerprint", string: fp) }
            if let d = t.dataDescription { try g.write("data_description", string: d) }
            if let n = t.examples { try g.write("examples", int64: Int64(n)) }
            if let k = t.keptEpoch { try g.write("kept_epoch", int64: Int64(k)) }
        }
        if let h = info.history {
            let g = try root.createGroup(Schema.historyGroup)
            if let d = h.initialWeightsSHA256 {
                try g.write("initial_weights_sha256", uint8s: d)
            }
            let n = h.epochs.count
            // Chunked with Fletcher32 like the weights: contiguous data has no checksum, and a
            // flipped bit in a loss or digest must be an error, not a different number.
            func column(_ name: String, _ type: StorageType, _ shape: [Int], _ write: (Dataset) throws -> Void) throws {
                let chunked = shape.allSatisfy { $0 > 0 }
                let d = try g.createDataset(
                    name, type: type, shape: shape, chunk: chunked ? shape : nil,
                    fletcher32: chunked && options.fletcher32)
                try write(d)
                d.close()
            }
            try column("epoch", .int64, [n]) { try $0.write(int64s: h.epochs.map { Int64($0.epoch) }) }
            try column("loss", .float64, [n]) { try $0.write(doubles: h.epochs.map(\.loss)) }
            try column("train_error", .float64, [n]) { try $0.write(doubles: h.epochs.map(\.trainError)) }
            try column("test_error", .float64, [n]) { try $0.write(doubles: h.epochs.map(\.testError)) }
            try column("weights_sha256", .uint8, [n, Schema.digestBytes]) {
                try $0.write(uint8s: h.epochs.flatMap(\.weightsSHA256))
            }
            // Validation errors: only when every epoch has one (a run with a validation set).
            if n > 0, h.epochs.allSatisfy({ $0.validationError != nil }) {
                try column("validation_error", .float64, [n]) {
                    try $0.write(doubles: h.epochs.map { $0.validationError! })
                }
            }
            // Per-layer digests: only when every epoch has them, one per layer.
            if n > 0, h.epochs.allSatisfy({ $0.layerSHA256?.count == info.layers.count }) {
                try column("layer_weights_sha256", .uint8, [n, info.layers.count, Schema.digestBytes]) {
                    try $0.write(uint8s: h.epochs.flatMap { $0.layerSHA256!.flatMap { $0 } })
                }
            }
        }
        return groups
    }

    /// Creates layer `layer`'s weight and bias datasets in `group`, shaped by its kind
    /// (``LayerInfo/parameterShapes``): chunked by whole rows of about `options.chunkBytes`,
    /// Fletcher32 if enabled, element type `layer.dtype`. Nil for a kind without weights.
    public static func createLayerDatasets(
        _ group: Group, _ layer: LayerInfo, options: WriteOptions
    ) throws -> (weight: Dataset, bias: Dataset)? {
        guard let shapes = layer.parameterShapes else { return nil }
        let type: StorageType
        switch layer.dtype {
        case .float16: type = .float16
        case .float32: type = .float32
        case .float64: type = .float64
        }
        let rowBytes = max(1, shapes.rowLength * layer.dtype.bytes)
        let rows = min(shapes.rows, max(1, options.chunkBytes / rowBytes))
        let w = try group.createDataset(
            Schema.weightDataset, type: type, shape: shapes.weight,
            chunk: [rows] + shapes.weight.dropFirst(), fletcher32: options.fletcher32)
        let b = try group.createDataset(
            Schema.biasDataset, type: type, shape: shapes.bias,
            chunk: shapes.bias, fletcher32: options.fletcher32)
        return (w, b)
    }
}
