public import DropModelBase
package import HDF5Layer

/// The shape of the activations between two layers, per example.
///
/// Flat feature vectors (format 1.0) or images, H × W × C in NHWC order (1.1): element
/// (h, w, c) of an example is at (h·W + w)·C + c. Code that needs only the element count
/// (buffers, masks, the chain of widths) uses ``count``.
public enum TensorShape: Equatable, Hashable, Sendable, CustomStringConvertible {
    /// A vector of `n` features.
    case flat(Int)
    /// An image of `height` rows, `width` columns and `channels` values per pixel.
    case image(height: Int, width: Int, channels: Int)

    /// Elements per example. Computed without trapping for any declared sizes (a file's
    /// attributes are read before they are validated): a product beyond `Int` is `Int.max`,
    /// which every bound refuses.
    public var count: Int {
        switch self {
        case .flat(let n): return n
        case .image(let h, let w, let c): return saturatingProduct([h, w, c])
        }
    }

    /// The channels of an image, nil for a flat shape.
    public var channels: Int? {
        if case .image(_, _, let c) = self { return c }
        return nil
    }

    /// The dimensions as stored (`[n]` or `[H, W, C]`).
    public var dimensions: [Int] {
        switch self {
        case .flat(let n): return [n]
        case .image(let h, let w, let c): return [h, w, c]
        }
    }

    /// The shape with these stored dimensions (one or three), or nil.
    public init?(dimensions d: [Int]) {
        switch d.count {
        case 1: self = .flat(d[0])
        case 3: self = .image(height: d[0], width: d[1], channels: d[2])
        default: return nil
        }
    }

    /// As inspect and error messages print it: `784`, `28x28x1`.
    public var description: String {
        switch self {
        case .flat(let n): return String(n)
        case .image(let h, let w, let c): return "\(h)x\(w)x\(c)"
        }
    }
}

/// The shapes of a weighted layer's two datasets.
///
/// Every kind stores its weight as ROWS OF FAN-IN: `weight[0]` rows (one per output unit or
/// filter), each the `rowLength` weights that unit reads (a dense unit's inputs; later a conv
/// filter's KH·KW·C patch). Streaming, bake, digests, statistics and max-norm work on these rows
/// and so stay the same for every kind.
public struct ParameterShapes: Equatable, Sendable {
    /// The weight dataset's dimensions, first the rows (dense: `[outputs, inputs]`).
    public var weight: [Int]
    /// The bias dataset's dimensions (one per row: `[weight[0]]`).
    public var bias: [Int]

    public init(weight: [Int], bias: [Int]) {
        self.weight = weight
        self.bias = bias
    }

    /// Rows of the weight: output units (or filters).
    public var rows: Int { weight.first ?? 0 }
    /// Weights per row: the fan-in of one unit (`Int.max` beyond `Int`, as ``TensorShape/count``).
    public var rowLength: Int { saturatingProduct(Array(weight.dropFirst())) }
    /// Weights plus biases (`Int.max` beyond `Int`).
    public var count: Int {
        let (n, overflow) = saturatingProduct([rows, rowLength]).addingReportingOverflow(saturatingProduct(bias))
        return overflow ? .max : n
    }
}

/// The product of `factors`, or `Int.max` when it does not fit in `Int` (declared sizes are
/// multiplied before they are validated; any size that large is refused by the bounds).
func saturatingProduct(_ factors: [Int]) -> Int {
    var p = 1
    for f in factors {
        let (q, overflow) = p.multipliedReportingOverflow(by: f)
        if overflow { return .max }
        p = q
    }
    return p
}

/// What one layer kind defines for the format (Specs/bundle-format.md, "Layer kinds"): its own
/// attributes (read with their problems, validated, written), the shapes of its parameter
/// datasets, its output shape, and the text inspect shows. One conformer per kind, one file per
/// kind in this folder; ``LayerKind/rules`` is the registry. The reader, writer, schema rules,
/// bake, statistics and inspect reach a kind only through here, so adding a kind adds a file and
/// a registry entry, not a case in each of them.
///
/// Attributes every kind shares (name, kind, activation, keep_prob) and the dtype of the
/// datasets are the reader's and writer's; a kind reads and writes only its own.
package protocol LayerKindRules: Sendable {
    var kind: LayerKind { get }

    /// Reads the kind's own attributes from layer group `g` into `attributes`, recording every
    /// problem through `reader`. Returns false when one could not be read (the layer is then not
    /// assembled; its problems are already recorded).
    func readAttributes(
        _ g: Group, _ reader: inout LayerAttributeReader, into attributes: inout LayerAttributes
    ) -> Bool

    /// Why the layer read is too large to be assembled at all (checked before anything is sized
    /// from it), or nil. The full range rules are ``problems(_:object:)``'s.
    func sizeProblem(_ layer: LayerInfo) -> String?

    /// Writes the kind's own attributes (after `kind`, before `activation`: attribute order is
    /// part of a bundle's bytes).
    func writeAttributes(_ layer: LayerInfo, to g: Group) throws

    /// The metadata rules of the kind's own attributes, for the layer at `object`
    /// (e.g. "/layers/3"): each problem as (object, message, hint).
    func problems(_ layer: LayerInfo, object: String) -> [(object: String, message: String, hint: String?)]

    /// The input shape the layer declares, or nil when the kind takes it from the layer before
    /// (or the model's input shape).
    func declaredInputShape(_ layer: LayerInfo) -> TensorShape?

    /// The output shape for a given input shape.
    func outputShape(_ layer: LayerInfo, input: TensorShape) -> TensorShape

    /// The parameter datasets' shapes, or nil for a kind without weights (pooling, flatten):
    /// such a layer has no datasets, nothing to bake and nothing to digest.
    func parameterShapes(_ layer: LayerInfo) -> ParameterShapes?

    /// How messages name the declared weight and bias shapes when a stored dataset differs
    /// (dense: "outputs x inputs = [10, 784]", "10 outputs").
    func declaredParameterText(_ layer: LayerInfo) -> (weight: String, bias: String)

    /// The hint given when a stored weight dataset does not have ``parameterShapes(_:)``'s shape.
    var weightLayoutHint: String { get }

    /// The shape column of inspect's layer table (dense: `784 -> 1200`).
    func shapeText(_ layer: LayerInfo) -> String

    /// The kind's own attributes in inspect's JSON, in order (dense: inputs, outputs).
    func jsonAttributes(_ layer: LayerInfo) -> [(String, JSONValue)]
}

/// The kind-specific attributes of a layer while it is being read (a kind's rules fill the
/// ones it has; ``layer(kind:)`` gives the provisional layer the dataset checks use).
package struct LayerAttributes {
    package var inputs = 0
    package var outputs = 0
    package var inputShape: TensorShape?
    package var window: Window?
    package var filters = 0

    package init() {}

    /// A layer with these attributes and placeholders for the shared ones.
    package func layer(kind: LayerKind) -> LayerInfo {
        var l = LayerInfo(name: "", kind: kind, inputs: inputs, outputs: outputs, activation: .linear, keepProb: 1)
        l.inputShape = inputShape
        l.window = window
        l.filters = filters
        return l
    }
}

/// Reads attributes of one layer group for a kind's rules, collecting problems as the bundle
/// reader does (the reader merges them into its own list).
package struct LayerAttributeReader {
    package let file: String
    package var problems: [Problem] = []
    /// Set when an HDF5 error was a refusal (the reader's error code then says so).
    package var refused = false

    package init(file: String) { self.file = file }

    /// Runs `body`, recording its error as a located problem and returning nil on failure.
    package mutating func get<T>(_ body: () throws -> T) -> T? {
        do { return try body() } catch let h as HDF5Error {
            if h.code == .refused { refused = true }
            problems.append(contentsOf: DropModelError(h).problems)
        } catch let b as DropModelError {
            problems.append(contentsOf: b.problems)
        } catch {
            problems.append(Problem(file: file, object: "/", message: "\(error)"))
        }
        return nil
    }

    package mutating func add(_ object: String, _ message: String, _ hint: String? = nil) {
        problems.append(Problem(file: file, object: object, message: message, hint: hint))
    }
}

extension LayerKind {
    /// The registry: each kind's rules. A new kind adds its case here and nowhere else in the
    /// reader, writer, schema, bake, statistics or inspect.
    package var rules: any LayerKindRules {
        switch self {
        case .dense: return DenseRules()
        case .conv2d: return Conv2DRules()
        case .maxPool2d, .avgPool2d: return PoolingRules(kind: self)
        case .globalAvgPool2d: return GlobalAveragePoolingRules()
        case .flatten: return FlattenRules()
        }
    }
}

extension LayerInfo {
    /// The weight and bias datasets' shapes; nil for a kind without weights.
    public var parameterShapes: ParameterShapes? { kind.rules.parameterShapes(self) }

    /// Whether the layer has weights (and so a keep probability that bake folds into them).
    public var hasWeights: Bool { parameterShapes != nil }

    /// The input shape the layer declares, if its kind declares one (dense: its inputs).
    public var declaredInputShape: TensorShape? { kind.rules.declaredInputShape(self) }

    /// The layer's output shape given its input shape.
    public func outputShape(input: TensorShape) -> TensorShape { kind.rules.outputShape(self, input: input) }

    /// The shape column of inspect's layer table.
    public var shapeText: String { kind.rules.shapeText(self) }

    /// The kind's own attributes, as inspect's JSON lists them.
    public var kindAttributesJSON: [(String, JSONValue)] { kind.rules.jsonAttributes(self) }
}

extension ModelInfo {
    /// Each layer's input and output shape: a layer's declared input shape, or else the output
    /// of the layer before. Meaningful for a valid model (the shapes chain, Schema rules).
    public var layerShapes: [(input: TensorShape, output: TensorShape)] {
        var out: [(input: TensorShape, output: TensorShape)] = []
        var flowing = TensorShape.flat(0)
        for layer in layers {
            let input = layer.declaredInputShape ?? flowing
            flowing = layer.outputShape(input: input)
            out.append((input, flowing))
        }
        return out
    }
}
