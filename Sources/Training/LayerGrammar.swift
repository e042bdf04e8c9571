public import BundleFormat
import DropModelBase
import DropoutRandom
import Foundation
import Kernels

/// The `--layers` grammar: a network written as a comma-separated list, parsed and shape-checked
/// before anything is trained (issue 12; the engine for the convolutional items is not wired in
/// yet, so `train` still accepts dense widths only).
///
/// ```
/// 784,1024,1024,10                                    input features, then dense widths
/// 28x28x1,conv3x3x16,maxpool2,conv3x3x32,maxpool2,128,10
/// 32x32x3,conv5x5x32/same,maxpool3/s2/same,gap,10
/// ```
///
/// * The first item is the input: `N` features, or `HxWxC` (height, width, channels).
/// * `convKHxKWxF`: a 2-D convolution with an KH×KW kernel and F filters; options `/sS` or
///   `/sSHxSW` (stride, default 1) and `/same` or `/valid` (padding, default valid, as Keras).
/// * `maxpoolK`, `avgpoolK` (or `KHxKW`): pooling, stride = the pool unless `/sS` is given,
///   padding `/valid` (default) or `/same`.
/// * `gap`: global average pooling (H×W×C → C). `flatten`: H×W×C → H·W·C features, in H, W, C
///   order (implied before the first dense width after an image layer).
/// * A plain number: a dense layer with that many units.
///
/// Every size is bounded (1 … 2^24, kernels and strides 1 … 4096) and every shape is checked
/// against the padding rules (Specs/determinism.md §8) before any allocation; an error names the
/// item and its position.
public enum LayerGrammar {
    /// A tensor between layers: flat features, or an image (the bundle's shapes).
    public typealias Shape = TensorShape

    public typealias Padding = BundleFormat.Padding

    /// One layer as written.
    public enum Item: Equatable, Sendable {
        case dense(units: Int)
        case conv2d(
            kernelHeight: Int, kernelWidth: Int, filters: Int, strideHeight: Int, strideWidth: Int, padding: Padding)
        case maxPool2d(poolHeight: Int, poolWidth: Int, strideHeight: Int, strideWidth: Int, padding: Padding)
        case avgPool2d(poolHeight: Int, poolWidth: Int, strideHeight: Int, strideWidth: Int, padding: Padding)
        case globalAvgPool2d
        case flatten

        /// The item as the grammar writes it, defaults left out.
        public var text: String {
            func window(_ h: Int, _ w: Int) -> String { h == w ? "\(h)" : "\(h)x\(w)" }
            func options(_ sh: Int, _ sw: Int, defaults: (Int, Int), _ p: Padding) -> String {
                ((sh, sw) == defaults ? "" : "/s" + window(sh, sw)) + (p == .same ? "/same" : "")
            }
            switch self {
            case .dense(let units): return "\(units)"
            case .conv2d(let kh, let kw, let f, let sh, let sw, let p):
                return "conv\(kh)x\(kw)x\(f)" + options(sh, sw, defaults: (1, 1), p)
            case .maxPool2d(let ph, let pw, let sh, let sw, let p):
                return "maxpool" + window(ph, pw) + options(sh, sw, defaults: (ph, pw), p)
            case .avgPool2d(let ph, let pw, let sh, let sw, let p):
                return "avgpool" + window(ph, pw) + options(sh, sw, defaults: (ph, pw), p)
            case .globalAvgPool2d: return "gap"
            case .flatten: return "flatten"
            }
        }

        /// Whether the layer has weights (and so a keep probability of its inputs).
        public var isWeighted: Bool {
            switch self {
            case .dense, .conv2d: return true
            default: return false
            }
        }
    }

    /// A parsed network: the input shape, and each layer with the shapes it reads and writes.
    public struct Network: Equatable, Sendable {
        public var input: Shape
        public var layers: [(item: Item, input: Shape, output: Shape)]

        public static func == (a: Network, b: Network) -> Bool {
            a.input == b.input && a.layers.count == b.layers.count
                && zip(a.layers, b.layers).allSatisfy {
                    $0.item == $1.item && $0.input == $1.input && $0.output == $1.output
                }
        }

        /// Whether every layer is dense (what `train` runs today).
        public var isDenseOnly: Bool {
            layers.allSatisfy { if case .dense = $0.item { return true } else { return false } }
        }

        /// The number of weighted layers (one keep probability each).
        public var weightedCount: Int { layers.filter { $0.item.isWeighted }.count }

        /// The network in the grammar, canonically: every flatten explicit, defaults left out
        /// (`28x28x1,conv3x3x16,maxpool2,flatten,128,10`). Parsing it gives the same network.
        public var text: String { ([input.description] + layers.map(\.item.text)).joined(separator: ",") }

        /// The dense widths, input first, when every layer is dense (`[784, 1024, 10]`).
        public var denseWidths: [Int]? {
            guard isDenseOnly, case .flat(let n) = input else { return nil }
            return [n] + layers.map(\.output.count)
        }

        /// The paper's keep probabilities for this network, one per weighted layer: 0.8 for a dense
        /// network's inputs, 0.9 for an image's, 0.75 for the inputs of later conv layers, 0.5 for
        /// hidden dense layers'.
        public var defaultKeep: [Double] {
            var out: [Double] = []
            for layer in layers where layer.item.isWeighted {
                if out.isEmpty {
                    out.append(input.channels == nil ? 0.8 : 0.9)
                } else if case .conv2d = layer.item {
                    out.append(0.75)
                } else {
                    out.append(0.5)
                }
            }
            return out
        }

        /// A dense network of these widths (input first).
        public static func dense(_ widths: [Int]) -> Network {
            Network(
                input: .flat(widths.first ?? 0),
                layers: zip(widths, widths.dropFirst()).map { (Item.dense(units: $1), Shape.flat($0), Shape.flat($1)) })
        }

        /// The bundle's layers: one per item, weighted layers taking `keep[k]` and `modes[k]` in
        /// order (k counts weighted layers), hidden weighted layers `activation`, the last layer
        /// softmax. Names: dense-only networks `hidden1`, ..., `output` (as always); otherwise
        /// `conv1`, `maxpool1`, `avgpool1`, `gap`, `flatten`, `dense1`, ..., `output`.
        public func layerInfos(keep: [Double], modes: [DropoutMode], activation: Activation) -> [LayerInfo] {
            var counts: [String: Int] = [:]
            func name(_ base: String) -> String {
                counts[base, default: 0] += 1
                return "\(base)\(counts[base]!)"
            }
            let denseOnly = isDenseOnly
            var k = 0
            var out: [LayerInfo] = []
            for (i, layer) in layers.enumerated() {
                let last = i == layers.count - 1
                func weighted() -> (Double, DropoutMode) {
                    defer { k += 1 }
                    return (k < keep.count ? keep[k] : 1, k < modes.count ? modes[k] : .element)
                }
                switch layer.item {
                case .dense(let units):
                    let (p, mode) = weighted()
                    out.append(
                        LayerInfo(
                            name: last ? "output" : name(denseOnly ? "hidden" : "dense"), inputs: layer.input.count,
                            outputs: units, activation: last ? .softmax : activation, keepProb: p, dropoutMode: mode))
                case .conv2d(let kh, let kw, let f, let sh, let sw, let padding):
                    let (p, mode) = weighted()
                    out.append(
                        .conv2d(
                            name: name("conv"), input: layer.input,
                            window: Window(height: kh, width: kw, strideHeight: sh, strideWidth: sw, padding: padding),
                            filters: f, activation: activation, keepProb: p, dropoutMode: mode))
                case .maxPool2d(let ph, let pw, let sh, let sw, let padding):
                    out.append(
                        .weightless(
                            .maxPool2d, name: name("maxpool"), input: layer.input,
                            window: Window(height: ph, width: pw, strideHeight: sh, strideWidth: sw, padding: padding)))
                case .avgPool2d(let ph, let pw, let sh, let sw, let padding):
                    out.append(
                        .weightless(
                            .avgPool2d, name: name("avgpool"), input: layer.input,
                            window: Window(height: ph, width: pw, strideHeight: sh, strideWidth: sw, padding: padding)))
                case .globalAvgPool2d:
                    out.append(.weightless(.globalAvgPool2d, name: name("gap"), input: layer.input))
                case .flatten:
                    out.append(.weightless(.flatten, name: name("flatten"), input: layer.input))
                }
            }
            return out
        }
    }

    static let maxUnits = 1 << 24
    static let maxWindow = 4096

    /// Parses and shape-checks `text`. Throws a `.usage` ``DropModelBase/DropModelError`` naming
    /// the item that is wrong.
    public static func parse(_ text: String) throws -> Network {
        let items = text.split(separator: ",", omittingEmptySubsequences: false).map {
            String($0).trimmingCharacters(in: .whitespaces)
        }
        guard items.count >= 2 else {
            throw failure(
                text, "a network needs an input and at least one layer, e.g. 784,1024,10 or 28x28x1,conv3x3x16,10")
        }
        guard items.count <= 1 + StreamLayout.layerLimit else {
            throw failure(text, "at most \(StreamLayout.layerLimit) layers")
        }
        let input = try parseInput(items[0])
        var shape = input
        var total = 0
        var layers: [(item: Item, input: Shape, output: Shape)] = []
        for (position, raw) in items.enumerated().dropFirst() {
            let item = try parseItem(raw, position: position)
            // A dense layer after an image reads it flattened (H, W, C order): make that explicit.
            if case .dense = item, case .image = shape {
                let flat = try outputShape(.flatten, input: shape, raw: raw, position: position)
                layers.append((.flatten, shape, flat))
                shape = flat
            }
            let output = try outputShape(item, input: shape, raw: raw, position: position)
            layers.append((item, shape, output))
            shape = output
            // What the bundle format stores (Schema): at most 2^40 parameters in a layer and in all.
            let count = parameters(item, input: layers.last!.input)
            total = total.addingReportingOverflow(count).partialValue
            guard count <= Schema.maxParameters, total <= Schema.maxParameters else {
                throw failure(
                    raw,
                    count > Schema.maxParameters
                        ? "on a \(layers.last!.input) input the layer has \(count) parameters, more than the "
                            + "\(Schema.maxParameters) a model may have"
                        : "the network has more than the \(Schema.maxParameters) parameters a model may have",
                    position: position)
            }
        }
        guard case .flat = shape else {
            throw failure(
                items.last!, "the network ends with an image (\(shape)); end with dense layers (e.g. ...,gap,10)")
        }
        guard layers.contains(where: { $0.item.isWeighted }) else {
            throw failure(text, "the network has no layer with weights")
        }
        return Network(input: input, layers: layers)
    }

    // MARK: - Pieces

    static func failure(_ item: String, _ message: String, position: Int? = nil) -> DropModelError {
        DropModelError(
            code: .usage, file: "",
            message: "--layers: " + (position.map { "item \($0 + 1) " } ?? "") + "'\(item)': \(message)",
            hint: "e.g. --layers 784,1024,10 or --layers 28x28x1,conv3x3x16,maxpool2,conv3x3x32/same,maxpool2,128,10")
    }

    static func number(_ s: Substring, _ item: String, _ position: Int, max: Int) throws -> Int {
        guard !s.isEmpty, s.allSatisfy({ $0.isASCII && $0.isNumber }), s.count <= 9, let v = Int(s) else {
            throw failure(item, "'\(s)' is not a whole number", position: position)
        }
        guard v >= 1, v <= max else { throw failure(item, "\(v) is not in 1...\(max)", position: position) }
        return v
    }

    /// `AxB...` as numbers (1, 2 or 3 of them, as `count` allows).
    static func dims(_ s: Substring, _ item: String, _ position: Int, counts: Set<Int>, max: Int) throws -> [Int] {
        let parts = s.split(separator: "x", omittingEmptySubsequences: false)
        guard counts.contains(parts.count) else {
            throw failure(
                item, "expected \(counts.sorted().map { "\($0)" }.joined(separator: " or ")) sizes joined by 'x'",
                position: position)
        }
        return try parts.map { try number($0, item, position, max: max) }
    }

    static func parseInput(_ raw: String) throws -> Shape {
        let d = try dims(Substring(raw), raw, 0, counts: [1, 3], max: maxUnits)
        if d.count == 1 { return .flat(d[0]) }
        guard d[0].multipliedReportingOverflow(by: d[1]).partialValue <= maxUnits,
            d[0] * d[1] * d[2] <= maxUnits
        else { throw failure(raw, "the input has more than \(maxUnits) values", position: 0) }
        return .image(height: d[0], width: d[1], channels: d[2])
    }

    /// Splits `conv3x3x16/s2/same` into the head and its options.
    static func options(_ raw: String, _ position: Int) throws -> (head: Substring, stride: [Int]?, padding: Padding) {
        var parts = raw.split(separator: "/", omittingEmptySubsequences: false)
        let head = parts.removeFirst()
        var stride: [Int]?
        var padding: Padding?
        for p in parts {
            if p == "same" || p == "valid" {
                guard padding == nil else { throw failure(raw, "the padding is given twice", position: position) }
                padding = Padding(rawValue: String(p))
            } else if p.hasPrefix("s") {
                guard stride == nil else { throw failure(raw, "the stride is given twice", position: position) }
                stride = try dims(p.dropFirst(), raw, position, counts: [1, 2], max: maxWindow)
            } else {
                throw failure(
                    raw, "unknown option '/\(p)' (use /sS or /sSHxSW for the stride, /same or /valid)",
                    position: position)
            }
        }
        return (head, stride, padding ?? .valid)
    }

    static func parseItem(_ raw: String, position: Int) throws -> Item {
        guard !raw.isEmpty else { throw failure(raw, "an empty item", position: position) }
        let lower = raw.lowercased()
        if lower == "gap" { return .globalAvgPool2d }
        if lower == "flatten" { return .flatten }
        if lower.first?.isNumber == true {
            return .dense(units: try number(Substring(lower), raw, position, max: maxUnits))
        }
        let (head, stride, padding) = try options(lower, position)
        func strides(_ s: [Int]?, default d: (Int, Int)) -> (Int, Int) {
            guard let s else { return d }
            return s.count == 1 ? (s[0], s[0]) : (s[0], s[1])
        }
        if head.hasPrefix("conv") {
            let d = try dims(head.dropFirst(4), raw, position, counts: [3], max: maxUnits)
            guard d[0] <= maxWindow, d[1] <= maxWindow else {
                throw failure(raw, "a kernel side is larger than \(maxWindow)", position: position)
            }
            let (sh, sw) = strides(stride, default: (1, 1))
            return .conv2d(
                kernelHeight: d[0], kernelWidth: d[1], filters: d[2], strideHeight: sh, strideWidth: sw,
                padding: padding)
        }
        for (prefix, isMax) in [("maxpool", true), ("avgpool", false)] where head.hasPrefix(prefix) {
            let d = try dims(head.dropFirst(prefix.count), raw, position, counts: [1, 2], max: maxWindow)
            let (ph, pw) = d.count == 1 ? (d[0], d[0]) : (d[0], d[1])
            let (sh, sw) = strides(stride, default: (ph, pw))
            return isMax
                ? .maxPool2d(poolHeight: ph, poolWidth: pw, strideHeight: sh, strideWidth: sw, padding: padding)
                : .avgPool2d(poolHeight: ph, poolWidth: pw, strideHeight: sh, strideWidth: sw, padding: padding)
        }
        throw failure(
            raw, "not a layer: use a number (dense units), convKHxKWxF, maxpoolK, avgpoolK, gap or flatten",
            position: position)
    }

    /// Weights and biases of `item` on `input` (sizes already bounded: no overflow below 2^63).
    static func parameters(_ item: Item, input: Shape) -> Int {
        switch item {
        case .dense(let units): return units * (input.count + 1)
        case .conv2d(let kh, let kw, let f, _, _, _): return f * (kh * kw * (input.channels ?? 0) + 1)
        default: return 0
        }
    }

    static func outputShape(_ item: Item, input: Shape, raw: String, position: Int) throws -> Shape {
        func image() throws -> (Int, Int, Int) {
            guard case .image(let h, let w, let c) = input else {
                throw failure(
                    raw, "needs an image input (HxWxC), but it reads \(input) flat features", position: position)
            }
            return (h, w, c)
        }
        func pad(_ p: Padding) -> Convolution.Padding { p == .same ? .same : .valid }
        do {
            switch item {
            case .dense(let units):
                return .flat(units)
            case .flatten:
                // Reads an image (a bundle's flatten declares one), and stays within the format's
                // bound on flat features (what a dense layer reads).
                _ = try image()
                guard input.count <= maxUnits else {
                    throw failure(
                        raw, "a \(input) image flattens to \(input.count) features, more than \(maxUnits)",
                        position: position)
                }
                return .flat(input.count)
            case .globalAvgPool2d:
                return .flat(try image().2)
            case .conv2d(let kh, let kw, let f, let sh, let sw, let p):
                let (h, w, c) = try image()
                let g = try Convolution.Geometry(
                    inputHeight: h, inputWidth: w, channels: c, kernelHeight: kh, kernelWidth: kw, strideHeight: sh,
                    strideWidth: sw, padding: pad(p), filters: f)
                return .image(height: g.outputHeight, width: g.outputWidth, channels: f)
            case .maxPool2d(let ph, let pw, let sh, let sw, let p), .avgPool2d(let ph, let pw, let sh, let sw, let p):
                let (h, w, c) = try image()
                let g = try Pooling.Geometry(
                    inputHeight: h, inputWidth: w, channels: c, poolHeight: ph, poolWidth: pw, strideHeight: sh,
                    strideWidth: sw, padding: pad(p))
                return .image(height: g.outputHeight, width: g.outputWidth, channels: c)
            }
        } catch let e as ShapeError {
            throw failure(raw, "on a \(input) input: \(e.message)", position: position)
        }
    }
}
