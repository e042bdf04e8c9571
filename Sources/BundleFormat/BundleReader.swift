public import DropModelBase
public import HDF5Layer
import Dispatch
import Foundation

/// An open bundle: its metadata is read and validated at open; weights are read on demand.
///
/// Opening reads attributes and dataset shapes and types only, never weight data, so it answers
/// at once on a multi-GB file. Every rule broken is collected, so a ``DropModelError`` lists all
/// problems rather than the first.
///
/// ```swift
/// let bundle = try BundleReader(path: "model.h5")
/// print(bundle.info.layers.map(\.name))
/// let model = try bundle.readModel()      // all weights
/// ```
public final class BundleReader: @unchecked Sendable {
    public let path: String
    public let info: ModelInfo
    let file: File
    let layerGroups: [Group]

    /// Opens and validates `path`; throws ``DropModelError`` listing every problem found.
    public init(path: String) throws {
        self.path = path
        var parser = Parser(path: path)
        let parsed = try parser.parse()
        if !parsed.problems.isEmpty {
            throw DropModelError(code: parsed.code, problems: parsed.problems)
        }
        self.file = parsed.file!
        self.info = parsed.info!
        self.layerGroups = parsed.layerGroups
    }

    /// Opens the bundles at `paths` one after the other, in order, handing each reader (or the
    /// error its open threw) to `body`. The isolated pre-reads of the files run meanwhile on
    /// other threads, in batches of consecutive files, up to 64 files per child
    /// (``File/preRead(_:snapshotData:ready:)``), and each file is opened as soon as its own
    /// pre-read is done, while the children walk the next ones; so on a machine with cores to
    /// spare the walks and the opens overlap. From 16 files on, the batches are shared between
    /// as many lanes as there are cores (at most 4), each lane a child at a time, so the
    /// walks, the costliest part, run side by side. Only a speed-up: every open still checks and
    /// refuses exactly as it would alone.
    public static func forEach(
        _ paths: [String], _ body: (String, Result<BundleReader, any Error>) throws -> Void
    ) rethrows {
        let lanes = paths.count >= 16 ? max(1, min(4, ProcessInfo.processInfo.activeProcessorCount)) : 1
        let batch = max(1, min(64, (paths.count + lanes - 1) / lanes))
        let batches = stride(from: 0, to: paths.count, by: batch).map { $0..<min($0 + batch, paths.count) }
        let ready = paths.map { _ in DispatchSemaphore(value: 0) }
        // Batch b runs on lane b % lanes: each lane walks its batches in order, the first files first.
        let queues = (0..<lanes).map { DispatchQueue(label: "dropmodel.pre-read.\($0)") }
        let stop = Stop()
        for (b, files) in batches.enumerated() {
            queues[b % lanes].async {
                if stop.requested {
                    files.forEach { ready[$0].signal() }
                } else {
                    File.preRead(Array(paths[files]), snapshotData: Parser.snapshotData) {
                        ready[files.lowerBound + $0].signal()
                    }
                }
            }
        }
        defer {
            stop.requested = true
            queues.forEach { $0.sync {} }
        }
        for (i, path) in paths.enumerated() {
            ready[i].wait()
            try body(path, Result { try BundleReader(path: path) })
        }
    }

    private final class Stop: @unchecked Sendable {
        private let lock = NSLock()
        private var value = false
        var requested: Bool {
            get { lock.withLock { value } }
            set { lock.withLock { value = newValue } }
        }
    }

    /// What a lenient parse of `path` found: the metadata if it could be assembled, and every
    /// problem (empty for a valid bundle).
    public struct Diagnosis: Sendable {
        public var info: ModelInfo?
        public var problems: [Problem]
        /// Set when the file could not be parsed as a bundle at all; its code says why
        /// (`.notFound`, `.notHDF5`, `.system`, `.unsafeFile`, `.invalid`, ...).
        public var failure: DropModelError?
    }

    /// Parses `path` leniently, collecting every problem instead of throwing.
    public static func diagnosis(path: String) -> Diagnosis {
        do {
            var parser = Parser(path: path)
            let parsed = try parser.parse()
            return Diagnosis(info: parsed.info, problems: parsed.problems, failure: nil)
        } catch let e as DropModelError {
            return Diagnosis(info: nil, problems: e.problems, failure: e)
        } catch {
            let e = DropModelError(code: .unreadable, file: path, object: "/", message: "\(error)")
            return Diagnosis(info: nil, problems: e.problems, failure: e)
        }
    }

    /// ``diagnosis(path:)``'s metadata and problems.
    public static func diagnose(path: String) -> (info: ModelInfo?, problems: [Problem]) {
        let d = diagnosis(path: path)
        return (d.info, d.problems)
    }

    /// The weight dataset of layer `i`.
    public func weightDataset(_ i: Int) throws -> Dataset {
        try wrap { try layerGroups[i].dataset(Schema.weightDataset) }
    }

    /// The bias dataset of layer `i`.
    public func biasDataset(_ i: Int) throws -> Dataset {
        try wrap { try layerGroups[i].dataset(Schema.biasDataset) }
    }

    /// Reads layer `i`'s weights and bias (empty for a kind without weights).
    public func parameters(_ i: Int) throws -> Parameters {
        guard info.layers[i].hasWeights else { return Parameters(weight: [], bias: []) }
        return try wrap {
            Parameters(
                weight: try layerGroups[i].dataset(Schema.weightDataset).readFloats(),
                bias: try layerGroups[i].dataset(Schema.biasDataset).readFloats())
        }
    }

    /// Reads every layer's weights.
    public func readModel() throws -> Model {
        Model(info: info, parameters: try (0..<info.layers.count).map { try parameters($0) })
    }

    /// Streams layer `i`'s weight matrix in blocks of whole rows (one row = one unit's incoming
    /// weights, ``ParameterShapes/rowLength`` of them, whatever the kind), reusing one buffer of
    /// at most `maxBlockElements` floats: bounded memory whatever the layer's size. A layer
    /// without weights streams nothing.
    public func streamWeightRows(
        _ i: Int, maxBlockElements: Int = 1 << 20,
        _ body: (_ firstRow: Int, _ rows: Int, UnsafeBufferPointer<Float>) throws -> Void
    ) throws {
        guard let shapes = info.layers[i].parameterShapes else { return }
        let (rows, rowLength) = (shapes.rows, shapes.rowLength)
        let ds = try weightDataset(i)
        let rowsPerBlock = max(1, maxBlockElements / max(1, rowLength))
        let buffer = UnsafeMutableBufferPointer<Float>.allocate(capacity: rowsPerBlock * rowLength)
        defer { buffer.deallocate() }
        var row = 0
        while row < rows {
            let n = min(rowsPerBlock, rows - row)
            try wrap { try ds.readFloatRows(start: row, count: n, into: buffer) }
            try body(row, n, UnsafeBufferPointer(rebasing: buffer[0..<(n * rowLength)]))
            row += n
        }
    }

    /// Digest of all weights as they are stored now (streamed), as in the history section.
    public func weightsDigest() throws -> [UInt8] {
        var stream = WeightDigest.Stream()
        for i in info.layers.indices where info.layers[i].hasWeights {
            try streamWeightRows(i) { _, _, block in stream.update(block) }
            let bias = try wrap { try biasDataset(i).readFloats() }
            bias.withUnsafeBufferPointer { stream.update($0) }
        }
        return stream.finalize()
    }

    func wrap<T>(_ body: () throws -> T) throws -> T {
        do { return try body() } catch let e as HDF5Error { throw DropModelError(e) }
    }
}

/// Parses a bundle's metadata, collecting problems instead of stopping at the first.
struct Parser {
    let path: String
    var problems: [Problem] = []
    /// Whether any problem is a refusal of something a bundle never needs (links, external
    /// storage, unknown filters).
    var refused = false

    init(path: String) { self.path = path }

    /// The datasets the pre-read reads whole for the parse (``File/open(_:limits:snapshotData:)``):
    /// the history's columns.
    static let snapshotData = "/" + Schema.historyGroup + "/"

    struct Result {
        var file: File?
        var info: ModelInfo?
        var layerGroups: [Group]
        var problems: [Problem]
        var code: ErrorCode
    }

    private mutating func note(_ e: any Error) {
        if let h = e as? HDF5Error {
            if h.code == .refused { refused = true }
            problems.append(contentsOf: DropModelError(h).problems)
        } else if let b = e as? DropModelError {
            problems.append(contentsOf: b.problems)
        } else {
            problems.append(Problem(file: path, object: "/", message: "\(e)"))
        }
    }

    private mutating func add(_ object: String, _ message: String, _ hint: String? = nil) {
        problems.append(Problem(file: path, object: object, message: message, hint: hint))
    }

    /// Reads an attribute, recording a problem and returning nil on failure.
    private mutating func get<T>(_ body: () throws -> T) -> T? {
        do { return try body() } catch { note(error); return nil }
    }

    /// Reads an optional attribute (nil when absent, a problem when present but bad).
    private mutating func optional<T>(_ object: Object, _ name: String, _ body: () throws -> T) -> T? {
        guard let has = get({ try object.hasAttribute(name) }), has else { return nil }
        return get(body)
    }

    private mutating func enumValue<E: RawRepresentable>(
        _ object: Object, _ name: String, _ type: E.Type, what: String
    ) -> E? where E.RawValue == String, E: CaseIterable {
        guard let s = get({ try object.readString(name) }) else { return nil }
        guard let v = E(rawValue: s) else {
            let allowed = E.allCases.map { "'\($0.rawValue)'" }.joined(separator: ", ")
            add(object.path + "@" + name, "\(what) '\(s)' is not one of \(allowed)", Schema.specHint)
            return nil
        }
        return v
    }

    mutating func parse() throws -> Result {
        let file: File
        do { file = try File.open(path, snapshotData: Self.snapshotData) } catch let e as HDF5Error {
            throw DropModelError(e)
        }
        let root: Group
        do { root = try file.root() } catch let e as HDF5Error { throw DropModelError(e) }

        // Identify the file and its version first: nothing else is meaningful otherwise.
        let hasMarker = (try? root.hasAttribute(Schema.formatMarkerAttribute)) ?? false
        let marker = try? root.readString(Schema.formatMarkerAttribute)
        if marker != Schema.formatMarker {
            let what: String
            if let marker {
                what = "its dropmodel_format attribute is '\(marker)', not '\(Schema.formatMarker)'"
            } else if hasMarker {
                what = "its dropmodel_format attribute is not a string"
            } else {
                what = "the root group has no dropmodel_format attribute"
            }
            throw DropModelError(
                code: .invalid, file: path, object: "/",
                message: "not a dropmodel bundle: \(what)",
                hint: """
                    to bring in a Keras or safetensors model use 'dropmodel import'; the layout is in \
                    Specs/bundle-format.md
                    """)
        }
        var version = FormatVersion.current
        do {
            let v = try root.readInt64s(Schema.formatVersionAttribute)
            guard v.count == 2, v[0] >= 0, v[1] >= 0, v[0] < 1 << 20, v[1] < 1 << 20 else {
                throw DropModelError(
                    code: .invalid, file: path, object: "/@format_version",
                    message: "format_version is \(v); it must be two non-negative integers [major, minor]",
                    hint: Schema.specHint)
            }
            version = FormatVersion(Int(v[0]), Int(v[1]))
        } catch let e as HDF5Error {
            throw DropModelError(e).recoded(.invalid)
        }
        if version.major != FormatVersion.current.major {
            throw DropModelError(
                code: .unsupportedVersion, file: path, object: "/@format_version",
                message: """
                    format version \(version) is not readable by this dropmodel, which reads \
                    \(FormatVersion.current.major).x
                    """,
                hint: version.major > FormatVersion.current.major
                    ? "the file was written by a newer dropmodel: upgrade dropmodel to read it"
                    : "the version is not one dropmodel ever wrote; the file is corrupt")
        }

        let convention = enumValue(root, Schema.conventionAttribute, DropoutConvention.self, what: "convention")
        var baked: Bool?
        if let b = get({ try root.readInt64(Schema.bakedAttribute) }) {
            if b == 0 || b == 1 { baked = b == 1 } else { add("/@baked", "baked is \(b); it must be 0 or 1") }
        }
        let creator = optional(root, Schema.creatorAttribute) { try root.readString(Schema.creatorAttribute) }
        let unbaked = digestAttribute(root, Schema.unbakedDigestAttribute)
        var declaredInput: TensorShape?
        if version >= FormatVersion(1, 1) {
            // Redundant with the first layer's declared input (which is what the model reads), so
            // optional; when present the two must agree.
            if let d = optional(root, Schema.inputShapeAttribute, { try root.readInt64s(Schema.inputShapeAttribute) }) {
                declaredInput = TensorShape(dimensions: d.map { Int(clamping: $0) })
                if declaredInput == nil {
                    add(
                        "/@input_shape",
                        "input_shape has \(d.count) values; it must be [features] or [height, width, channels]")
                }
            }
        }

        // Layers.
        var layers: [LayerInfo?] = []
        var groups: [Group] = []
        if let lg = get({ try root.group(Schema.layersGroup) }),
            let count = get({ try lg.readInt64(Schema.layerCountAttribute) })
        {
            if count < 1 || count > Int64(Schema.maxLayers) {
                add("/layers@count", "layer count \(count) is outside 1...\(Schema.maxLayers)")
            } else {
                for i in 0..<Int(count) {
                    guard let g = get({ try lg.group(String(i)) }) else {
                        // One problem, not one per missing group: the count is what is wrong.
                        if i + 1 < count {
                            add(
                                "/layers@count",
                                "count is \(count) but /layers/\(i) cannot be opened; the layers after it were not read"
                            )
                        }
                        layers.append(nil)
                        break
                    }
                    groups.append(g)
                    layers.append(parseLayer(g, index: i))
                }
            }
        }

        let rng = parseRNG(root)
        let training = parseTraining(root)
        let history = parseHistory(root, layerCount: layers.count)

        problems += Schema.problems(
            file: path, convention: convention, baked: baked, layers: layers, rng: rng, training: training,
            history: history, hasLayerCountProblem: problems.contains { $0.object == "/layers@count" })

        if let declaredInput, let first = layers.first ?? nil, let firstInput = first.declaredInputShape,
            firstInput != declaredInput
        {
            add(
                "/@input_shape",
                "the model's input_shape is \(declaredInput) but its first layer ('\(first.name)') reads \(firstInput)",
                "the root input_shape must equal the first layer's input")
        }
        if version < FormatVersion(1, 1) {
            for case let (i, layer?) in layers.enumerated() where layer.kind.introduced > version {
                add(
                    "/layers/\(i)@kind",
                    "layer kind '\(layer.kind.rawValue)' is a format \(layer.kind.introduced) kind in a \(version) file",
                    "a file with convolutional layers must declare format_version [1, 1] or later")
            }
        }

        var info: ModelInfo?
        if let convention, let baked, layers.allSatisfy({ $0 != nil }), !layers.isEmpty {
            info = ModelInfo(
                formatVersion: version, convention: convention, baked: baked, layers: layers.map { $0! },
                rng: rng, training: training, history: history, creator: creator)
            info?.unbakedWeightsSHA256 = unbaked
        }
        let code: ErrorCode = refused ? .refused : .invalid
        return Result(file: file, info: info, layerGroups: groups, problems: problems, code: code)
    }

    private mutating func parseLayer(_ g: Group, index i: Int) -> LayerInfo? {
        let name = get { try g.readString("name") }
        let kind: LayerKind?
        if let k = get({ try g.readString("kind") }) {
            kind = LayerKind(rawValue: k)
            if kind == nil {
                add(
                    g.path + "@kind",
                    "layer kind '\(k)' is not one of \(LayerKind.allCases.map { "'\($0.rawValue)'" }.joined(separator: ", "))",
                    "the file was written by a newer dropmodel, or is not a bundle; see Specs/bundle-format.md §4")
            }
        } else {
            kind = nil
        }
        // The kind's own attributes, through its rules (LayerKinds/): read in the order they
        // are written, after `kind`.
        var attributes = LayerAttributes()
        var haveAttributes = false
        if let kind {
            var reader = LayerAttributeReader(file: path)
            haveAttributes = kind.rules.readAttributes(g, &reader, into: &attributes)
            problems += reader.problems
            if reader.refused { refused = true }
        }
        let activation = enumValue(g, "activation", Activation.self, what: "activation")
        let keep = get { try g.readDouble("keep_prob") }
        var mode = DropoutMode.element
        if let has = get({ try g.hasAttribute(Schema.dropoutModeAttribute) }), has {
            if let m = enumValue(g, Schema.dropoutModeAttribute, DropoutMode.self, what: "dropout mode") { mode = m }
        }

        // Datasets: shapes and element types only, against the shapes the kind declares.
        let provisional = kind.map { attributes.layer(kind: $0) }
        let shapes = haveAttributes ? provisional?.parameterShapes : nil
        let declared = haveAttributes ? provisional.map { $0.kind.rules.declaredParameterText($0) } : nil
        var dtype: WeightType?
        // A kind without weights has no datasets (its dtype is nominal: float32).
        let weightless = haveAttributes && provisional != nil && shapes == nil
        if weightless {
            dtype = .float32
            for name in [Schema.weightDataset, Schema.biasDataset] {
                if let has = get({ try g.contains(name) }), has {
                    add(
                        g.path + "/" + name,
                        "a '\(provisional!.kind.rawValue)' layer has no weights, yet the file holds this dataset")
                }
            }
        }
        if !weightless, let w = get({ try g.dataset(Schema.weightDataset) }) {
            if let shape = get({ try w.shape() }), let shapes, let declared, let provisional, shape != shapes.weight {
                add(
                    w.path, "the weight matrix has shape \(shape) but the layer declares \(declared.weight)",
                    provisional.kind.rules.weightLayoutHint)
            }
            dtype = floatType(w)
            requireStored(w)
        }
        if !weightless, let b = get({ try g.dataset(Schema.biasDataset) }) {
            if let shape = get({ try b.shape() }), let shapes, let declared, shape != shapes.bias {
                add(b.path, "the bias has shape \(shape) but the layer has \(declared.bias)")
            }
            if let bt = floatType(b), let dtype, bt != dtype {
                add(
                    b.path,
                    """
                    the bias is \(bt.rawValue) but the weight matrix is \(dtype.rawValue); a layer's weight and bias \
                    share one dtype
                    """)
            }
            requireStored(b)
        }
        guard let name, let kind, haveAttributes, let activation, let keep, let dtype else { return nil }
        if let tooLarge = kind.rules.sizeProblem(attributes.layer(kind: kind)) {
            add(g.path, tooLarge)
            return nil
        }
        var layer = attributes.layer(kind: kind)
        layer.name = name
        layer.activation = activation
        layer.keepProb = keep
        layer.dropoutMode = mode
        layer.dtype = dtype
        return layer
    }

    /// Every value of a weight or bias must be stored: a missing chunk reads as the fill value,
    /// so a file whose writer stopped early (or was made to look big) would read as a model of
    /// zeros. Counting stored chunks walks the chunk index only.
    private mutating func requireStored(_ ds: Dataset) {
        guard let (stored, expected, chunked) = get({ try ds.storedExtent() }), stored < expected else { return }
        add(
            ds.path,
            chunked
                ? "only \(stored) of its \(expected) chunks are stored; the rest would read as the fill value"
                : "only \(stored) of its \(expected) bytes are stored; the rest would read as the fill value",
            "the file is incomplete (its writer stopped early, or it was cut); re-create or re-download it")
    }

    private mutating func floatType(_ ds: Dataset) -> WeightType? {
        guard let t = get({ try ds.elementType() }) else { return nil }
        switch t {
        case .float(2): return .float16
        case .float(4): return .float32
        case .float(8): return .float64
        default:
            add(ds.path, "the dataset holds \(t); weights must be float16, float32 or float64")
            return nil
        }
    }

    private mutating func parseRNG(_ root: Group) -> RNGInfo? {
        guard let has = get({ try root.contains(Schema.rngGroup) }), has,
            let g = get({ try root.group(Schema.rngGroup) })
        else { return nil }
        guard let algorithm = get({ try g.readString("algorithm") }) else { return nil }
        let seed = optional(g, "seed") { try g.readInt64("seed") }
        let layout = optional(g, "stream_layout") { try g.readInt64("stream_layout") } ?? 1
        return RNGInfo(algorithm: algorithm, seed: seed, streamLayout: Int(clamping: layout))
    }

    private mutating func parseTraining(_ root: Group) -> TrainingInfo? {
        guard let has = get({ try root.contains(Schema.trainingGroup) }), has,
            let g = get({ try root.group(Schema.trainingGroup) })
        else { return nil }
        guard let recipe = get({ try g.readString("recipe") }) else { return nil }
        let fp = optional(g, "data_fingerprint") { try g.readString("data_fingerprint") }
        let desc = optional(g, "data_description") { try g.readString("data_description") }
        var examples: Int?
        if let n = optional(g, "examples", { try g.readInt64("examples") }) {
            if n >= 1 && n < 1 << 40 {
                examples = Int(n)
            } else {
                add(g.path + "@examples", "examples is \(n); it must be at least 1")
            }
        }
        var kept: Int?
        if let k = optional(g, "kept_epoch", { try g.readInt64("kept_epoch") }) {
            if k >= 1 && k <= Schema.maxEpochs {
                kept = Int(k)
            } else {
                add(g.path + "@kept_epoch", "kept_epoch is \(k); it must be an epoch of the history (1 or more)")
            }
        }
        return TrainingInfo(
            recipe: recipe, dataFingerprint: fp, dataDescription: desc, examples: examples, keptEpoch: kept)
    }

    /// An optional uint8[32] digest attribute.
    private mutating func digestAttribute(_ object: Object, _ name: String) -> [UInt8]? {
        guard let info = optional(object, name, { try object.attributeInfo(name) }) else { return nil }
        guard info.type == .integer(bytes: 1, signed: false), info.shape == [Schema.digestBytes] else {
            add(
                object.path + "@" + name,
                "the digest is \(info.type) of shape \(info.shape); it must be uint8 of shape [\(Schema.digestBytes)]")
            return nil
        }
        return get { try object.readInt64s(name) }?.map { UInt8($0) }
    }

    private mutating func parseHistory(_ root: Group, layerCount: Int) -> History? {
        guard let has = get({ try root.contains(Schema.historyGroup) }), has,
            let g = get({ try root.group(Schema.historyGroup) })
        else { return nil }
        let initial = digestAttribute(g, "initial_weights_sha256")
        // Every column must exist with one row per epoch; check shapes before reading.
        let columns = ["epoch", "loss", "train_error", "test_error", "weights_sha256"]
        var datasets: [String: Dataset] = [:]
        for c in columns {
            if let d = get({ try g.dataset(c) }) { datasets[c] = d }
        }
        guard datasets.count == columns.count else { return nil }
        guard let n = get({ try datasets["epoch"]!.shape() }), n.count == 1 else {
            add(g.path + "/epoch", "the epoch column must be one-dimensional"); return nil
        }
        let rows = n[0]
        guard rows <= Schema.maxEpochs else {
            add(g.path + "/epoch", "\(rows) epochs is beyond any history dropmodel reads"); return nil
        }
        for c in ["loss", "train_error", "test_error"] {
            if let s = get({ try datasets[c]!.shape() }), s != [rows] {
                add(g.path + "/" + c, "has shape \(s) but the history has \(rows) epochs"); return nil
            }
        }
        if let s = get({ try datasets["weights_sha256"]!.shape() }), s != [rows, Schema.digestBytes] {
            add(g.path + "/weights_sha256", "has shape \(s); it must be [epochs, 32] = [\(rows), 32]"); return nil
        }
        if let t = get({ try datasets["weights_sha256"]!.elementType() }), t != .integer(bytes: 1, signed: false) {
            add(g.path + "/weights_sha256", "holds \(t); digests must be uint8"); return nil
        }
        guard let epochs = get({ try datasets["epoch"]!.readInt64s() }),
            let loss = get({ try datasets["loss"]!.readDoubles() }),
            let train = get({ try datasets["train_error"]!.readDoubles() }),
            let test = get({ try datasets["test_error"]!.readDoubles() }),
            let digests = get({ try datasets["weights_sha256"]!.readUInt8s() })
        else { return nil }
        // Optional per-layer digests [epochs, layers, 32].
        var perLayer: [UInt8]?
        if let has = get({ try g.contains("layer_weights_sha256") }), has,
            let d = get({ try g.dataset("layer_weights_sha256") })
        {
            let shape = get { try d.shape() }
            let type = get { try d.elementType() }
            if shape != [rows, layerCount, Schema.digestBytes] || type != .integer(bytes: 1, signed: false) {
                add(d.path, "must be uint8 of shape [epochs, layers, 32] = [\(rows), \(layerCount), 32]")
            } else {
                perLayer = get { try d.readUInt8s() }
            }
        }
        // Optional validation errors [epochs].
        var validation: [Double]?
        if let has = get({ try g.contains("validation_error") }), has,
            let d = get({ try g.dataset("validation_error") })
        {
            if let s = get({ try d.shape() }), s != [rows] {
                add(d.path, "has shape \(s) but the history has \(rows) epochs")
            } else {
                validation = get { try d.readDoubles() }
            }
        }
        var records: [EpochRecord] = []
        records.reserveCapacity(rows)
        for k in 0..<rows {
            records.append(
                EpochRecord(
                    epoch: Int(clamping: epochs[k]), loss: loss[k], trainError: train[k], testError: test[k],
                    weightsSHA256: Array(digests[(k * 32)..<((k + 1) * 32)]),
                    layerSHA256: perLayer.map { all in
                        (0..<layerCount).map { l in
                            let o = (k * layerCount + l) * 32
                            return Array(all[o..<(o + 32)])
                        }
                    }, validationError: validation?[k]))
        }
        return History(initialWeightsSHA256: initial, epochs: records)
    }
}
