import DropModelBase
import HDF5Layer
import Kernels

/// What the convolutional kinds share (format 1.1, Specs/bundle-format.md §4.7): the declared
/// input image `input_shape` (int64 [H, W, C]) and a window (`kernel` or `pool` int64 [h, w],
/// `strides` int64 [h, w], `padding` "valid" or "same"). Output sizes come from the same
/// geometry the engine runs (``Kernels/Convolution/Geometry``, ``Kernels/Pooling/Geometry``),
/// so the format and the engine cannot disagree about a shape.
enum Spatial {
    /// The largest height, width or channel count a layer may declare.
    static let maxSide = 1 << 24
    /// The largest kernel or pool side and stride.
    static let maxWindow = 4096

    static func readImage(_ g: Group, _ reader: inout LayerAttributeReader) -> TensorShape? {
        guard let d = reader.get({ try g.readInt64s("input_shape") }) else { return nil }
        guard d.count == 3 else {
            reader.add(
                g.path + "@input_shape", "input_shape has \(d.count) values; it must be [height, width, channels]")
            return nil
        }
        // Clamped: range problems are reported by problems(_:object:), sizes by sizeProblem.
        return .image(height: Int(clamping: d[0]), width: Int(clamping: d[1]), channels: Int(clamping: d[2]))
    }

    static func readWindow(_ g: Group, _ name: String, _ reader: inout LayerAttributeReader) -> Window? {
        let size = reader.get { try g.readInt64s(name) }
        let strides = reader.get { try g.readInt64s("strides") }
        let padding = reader.get { try g.readString("padding") }
        guard let size, let strides, let padding else { return nil }
        var ok = true
        if size.count != 2 {
            reader.add(g.path + "@" + name, "\(name) has \(size.count) values; it must be [height, width]")
            ok = false
        }
        if strides.count != 2 {
            reader.add(g.path + "@strides", "strides has \(strides.count) values; it must be [height, width]")
            ok = false
        }
        let pad = Padding(rawValue: padding)
        if pad == nil {
            reader.add(g.path + "@padding", "padding '\(padding)' is not 'valid' or 'same'", Schema.specHint)
            ok = false
        }
        guard ok, let pad else { return nil }
        return Window(
            height: Int(clamping: size[0]), width: Int(clamping: size[1]), strideHeight: Int(clamping: strides[0]),
            strideWidth: Int(clamping: strides[1]), padding: pad)
    }

    static func writeImage(_ shape: TensorShape?, to g: Group) throws {
        try g.write("input_shape", int64: (shape?.dimensions ?? []).map { Int64($0) }, shape: [3])
    }

    static func writeWindow(_ w: Window, _ name: String, to g: Group) throws {
        try g.write(name, int64: [Int64(w.height), Int64(w.width)], shape: [2])
        try g.write("strides", int64: [Int64(w.strideHeight), Int64(w.strideWidth)], shape: [2])
        try g.write("padding", string: w.padding.rawValue)
    }

    /// Why an image or window is too large to size anything from, or nil.
    static func sizeProblem(_ layer: LayerInfo) -> String? {
        if let d = layer.inputShape?.dimensions, d.contains(where: { $0 > maxSide }) {
            return "the layer declares an input of \(layer.inputShape!), beyond any model dropmodel reads"
        }
        if let w = layer.window, [w.height, w.width, w.strideHeight, w.strideWidth].contains(where: { $0 > maxWindow })
        {
            return "the layer declares a window of \(w.height)x\(w.width) stride \(w.strideHeight)x\(w.strideWidth), "
                + "beyond the \(maxWindow) dropmodel reads"
        }
        if layer.filters > maxSide {
            return "the layer declares \(layer.filters) filters, beyond any model dropmodel reads"
        }
        return nil
    }

    /// The range problems of the declared image and window.
    static func problems(
        _ layer: LayerInfo, object obj: String, windowName: String?
    )
        -> [(object: String, message: String, hint: String?)]
    {
        var out: [(object: String, message: String, hint: String?)] = []
        if let d = layer.inputShape?.dimensions, d.count == 3 {
            if d.contains(where: { $0 < 1 || $0 > maxSide }) {
                out.append((obj + "@input_shape", "input_shape is \(d); each size must be in 1...\(maxSide)", nil))
            }
        } else {
            out.append((obj + "@input_shape", "the layer declares no image input [height, width, channels]", nil))
        }
        if let windowName {
            if let w = layer.window {
                if w.height < 1 || w.width < 1 || w.height > maxWindow || w.width > maxWindow {
                    out.append(
                        (
                            obj + "@" + windowName,
                            "\(windowName) is [\(w.height), \(w.width)]; each must be in 1...\(maxWindow)", nil
                        ))
                }
                if w.strideHeight < 1 || w.strideWidth < 1 || w.strideHeight > maxWindow || w.strideWidth > maxWindow {
                    out.append(
                        (
                            obj + "@strides",
                            "strides is [\(w.strideHeight), \(w.strideWidth)]; each must be in 1...\(maxWindow)", nil
                        ))
                }
            } else {
                out.append((obj + "@" + windowName, "the layer declares no \(windowName)", nil))
            }
        }
        return out
    }

    static func kernelPadding(_ p: Padding) -> Convolution.Padding { p == .same ? .same : .valid }

    /// The convolution geometry of a conv2d layer, or the reason it has none.
    static func convolution(_ layer: LayerInfo) -> Result<Convolution.Geometry, ShapeError>? {
        guard case .image(let h, let w, let c)? = layer.inputShape, let win = layer.window else { return nil }
        do {
            return .success(
                try Convolution.Geometry(
                    inputHeight: h, inputWidth: w, channels: c, kernelHeight: win.height, kernelWidth: win.width,
                    strideHeight: win.strideHeight, strideWidth: win.strideWidth, padding: kernelPadding(win.padding),
                    filters: layer.filters))
        } catch { return .failure(error) }
    }

    /// The pooling geometry of a max or average pooling layer, or the reason it has none.
    static func pooling(_ layer: LayerInfo) -> Result<Pooling.Geometry, ShapeError>? {
        guard case .image(let h, let w, let c)? = layer.inputShape, let win = layer.window else { return nil }
        do {
            return .success(
                try Pooling.Geometry(
                    inputHeight: h, inputWidth: w, channels: c, poolHeight: win.height, poolWidth: win.width,
                    strideHeight: win.strideHeight, strideWidth: win.strideWidth, padding: kernelPadding(win.padding)))
        } catch { return .failure(error) }
    }

    static func windowText(_ w: Window) -> String {
        "\(w.height)x\(w.width)"
            + (w.strideHeight == 1 && w.strideWidth == 1 ? "" : " s\(w.strideHeight)x\(w.strideWidth)")
            + " \(w.padding.rawValue)"
    }

    static func windowJSON(_ w: Window?, _ name: String) -> [(String, JSONValue)] {
        guard let w else { return [] }
        return [
            (name, .array([.int(w.height), .int(w.width)])),
            ("strides", .array([.int(w.strideHeight), .int(w.strideWidth)])),
            ("padding", .string(w.padding.rawValue)),
        ]
    }

    static func shapeJSON(_ s: TensorShape?) -> JSONValue { s.map { .array($0.dimensions.map { .int($0) }) } ?? .null }
}

/// `conv2d`: `z[h, w, f] = b[f] + Σ W[f, i, j, c]·x[h·s + i - pad, w·s + j - pad, c]` over the
/// kernel in (i, j, c) order, then the activation (Specs/determinism.md §8).
///
/// Attributes `input_shape`, `kernel`, `strides`, `padding`, `filters`; weight
/// `[filters, kernel_h, kernel_w, channels]` (row f = filter f's KH·KW·C fan-in, the order of an
/// NHWC patch, so rows of fan-in stream, bake and max-norm as a dense layer's do), bias `[filters]`.
struct Conv2DRules: LayerKindRules {
    var kind: LayerKind { .conv2d }

    func readAttributes(
        _ g: Group, _ reader: inout LayerAttributeReader, into attributes: inout LayerAttributes
    ) -> Bool {
        let image = Spatial.readImage(g, &reader)
        let window = Spatial.readWindow(g, "kernel", &reader)
        let filters = reader.get { try g.readInt64("filters") }
        guard let image, let window, let filters else { return false }
        attributes.inputShape = image
        attributes.window = window
        attributes.filters = Int(clamping: filters)
        return true
    }

    func sizeProblem(_ layer: LayerInfo) -> String? { Spatial.sizeProblem(layer) }

    func writeAttributes(_ layer: LayerInfo, to g: Group) throws {
        try Spatial.writeImage(layer.inputShape, to: g)
        try Spatial.writeWindow(layer.window ?? Window(height: 0, width: 0), "kernel", to: g)
        try g.write("filters", int64: Int64(layer.filters))
    }

    func problems(_ layer: LayerInfo, object obj: String) -> [(object: String, message: String, hint: String?)] {
        var out = Spatial.problems(layer, object: obj, windowName: "kernel")
        if layer.filters < 1 || layer.filters > Spatial.maxSide {
            out.append((obj + "@filters", "filters is \(layer.filters); it must be in 1...\(Spatial.maxSide)", nil))
        }
        if out.isEmpty, case .failure(let e)? = Spatial.convolution(layer) {
            out.append(
                (
                    obj, "the convolution's sizes do not fit: \(e.message)",
                    "see the padding rules in Specs/determinism.md §8"
                ))
        }
        if out.isEmpty, let shapes = parameterShapes(layer), shapes.rows * shapes.rowLength > Schema.maxParameters {
            out.append(
                (obj, "the layer declares more than the \(Schema.maxParameters) weights any model may have", nil))
        }
        return out
    }

    func declaredInputShape(_ layer: LayerInfo) -> TensorShape? { layer.inputShape }

    func outputShape(_ layer: LayerInfo, input: TensorShape) -> TensorShape {
        guard case .success(let g)? = Spatial.convolution(layer) else { return .flat(0) }
        return .image(height: g.outputHeight, width: g.outputWidth, channels: g.filters)
    }

    func parameterShapes(_ layer: LayerInfo) -> ParameterShapes? {
        let (kh, kw) = (layer.window?.height ?? 0, layer.window?.width ?? 0)
        return ParameterShapes(weight: [layer.filters, kh, kw, layer.inputShape?.channels ?? 0], bias: [layer.filters])
    }

    func declaredParameterText(_ layer: LayerInfo) -> (weight: String, bias: String) {
        let s = parameterShapes(layer)!
        return ("[filters, kernel_h, kernel_w, channels] = \(s.weight)", "\(layer.filters) filters")
    }

    var weightLayoutHint: String {
        "conv2d weights are stored [filters, kernel_h, kernel_w, channels]: row f holds filter f's patch in NHWC order"
    }

    func shapeText(_ layer: LayerInfo) -> String {
        let out = layer.inputShape.map { outputShape(layer, input: $0) }
        return "\(layer.inputShape.map(\.description) ?? "?") -> \(out.map(\.description) ?? "?")"
            + (layer.window.map { " (\(Spatial.windowText($0)))" } ?? "")
    }

    func jsonAttributes(_ layer: LayerInfo) -> [(String, JSONValue)] {
        [("input_shape", Spatial.shapeJSON(layer.inputShape))] + Spatial.windowJSON(layer.window, "kernel")
            + [
                ("filters", .int(layer.filters)),
                ("output_shape", Spatial.shapeJSON(layer.inputShape.map { outputShape(layer, input: $0) })),
            ]
    }
}

/// `max_pool2d` and `avg_pool2d`: no weights. Max takes the first maximum of a window in
/// row-major order; average divides by the window's in-image elements (Specs/determinism.md §8).
/// Attributes `input_shape`, `pool`, `strides`, `padding`.
struct PoolingRules: LayerKindRules {
    let kind: LayerKind

    func readAttributes(
        _ g: Group, _ reader: inout LayerAttributeReader, into attributes: inout LayerAttributes
    ) -> Bool {
        let image = Spatial.readImage(g, &reader)
        let window = Spatial.readWindow(g, "pool", &reader)
        guard let image, let window else { return false }
        attributes.inputShape = image
        attributes.window = window
        return true
    }

    func sizeProblem(_ layer: LayerInfo) -> String? { Spatial.sizeProblem(layer) }

    func writeAttributes(_ layer: LayerInfo, to g: Group) throws {
        try Spatial.writeImage(layer.inputShape, to: g)
        try Spatial.writeWindow(layer.window ?? Window(height: 0, width: 0), "pool", to: g)
    }

    func problems(_ layer: LayerInfo, object obj: String) -> [(object: String, message: String, hint: String?)] {
        var out = Spatial.problems(layer, object: obj, windowName: "pool")
        if out.isEmpty, case .failure(let e)? = Spatial.pooling(layer) {
            out.append(
                (
                    obj, "the pooling's sizes do not fit: \(e.message)",
                    "see the padding rules in Specs/determinism.md §8"
                ))
        }
        return out
    }

    func declaredInputShape(_ layer: LayerInfo) -> TensorShape? { layer.inputShape }

    func outputShape(_ layer: LayerInfo, input: TensorShape) -> TensorShape {
        guard case .success(let g)? = Spatial.pooling(layer) else { return .flat(0) }
        return .image(height: g.outputHeight, width: g.outputWidth, channels: g.channels)
    }

    func parameterShapes(_ layer: LayerInfo) -> ParameterShapes? { nil }

    func declaredParameterText(_ layer: LayerInfo) -> (weight: String, bias: String) { ("no weights", "no bias") }

    var weightLayoutHint: String { "a pooling layer has no weight or bias datasets" }

    func shapeText(_ layer: LayerInfo) -> String {
        let out = layer.inputShape.map { outputShape(layer, input: $0) }
        return "\(layer.inputShape.map(\.description) ?? "?") -> \(out.map(\.description) ?? "?")"
            + (layer.window.map { " (\(Spatial.windowText($0)))" } ?? "")
    }

    func jsonAttributes(_ layer: LayerInfo) -> [(String, JSONValue)] {
        [("input_shape", Spatial.shapeJSON(layer.inputShape))] + Spatial.windowJSON(layer.window, "pool")
            + [("output_shape", Spatial.shapeJSON(layer.inputShape.map { outputShape(layer, input: $0) }))]
    }
}

/// A weightless kind that reads an image (`input_shape` its only attribute) and writes flat
/// features: `global_avg_pool2d` and `flatten` share everything but their output size and bounds.
protocol ImageToFlatRules: LayerKindRules {}

extension ImageToFlatRules {
    func readAttributes(
        _ g: Group, _ reader: inout LayerAttributeReader, into attributes: inout LayerAttributes
    ) -> Bool {
        guard let image = Spatial.readImage(g, &reader) else { return false }
        attributes.inputShape = image
        return true
    }

    func sizeProblem(_ layer: LayerInfo) -> String? { Spatial.sizeProblem(layer) }

    func writeAttributes(_ layer: LayerInfo, to g: Group) throws { try Spatial.writeImage(layer.inputShape, to: g) }

    func declaredInputShape(_ layer: LayerInfo) -> TensorShape? { layer.inputShape }

    func parameterShapes(_ layer: LayerInfo) -> ParameterShapes? { nil }

    func declaredParameterText(_ layer: LayerInfo) -> (weight: String, bias: String) { ("no weights", "no bias") }

    func shapeText(_ layer: LayerInfo) -> String {
        let output = layer.inputShape.map { outputShape(layer, input: $0).description }
        return "\(layer.inputShape.map(\.description) ?? "?") -> \(output ?? "?")"
    }

    func jsonAttributes(_ layer: LayerInfo) -> [(String, JSONValue)] {
        [
            ("input_shape", Spatial.shapeJSON(layer.inputShape)),
            ("output_shape", Spatial.shapeJSON(layer.inputShape.map { outputShape(layer, input: $0) })),
        ]
    }
}

/// `global_avg_pool2d`: H×W×C → C, each channel's mean over the image (the sum in row-major
/// order, then one division). Attribute `input_shape`.
struct GlobalAveragePoolingRules: ImageToFlatRules {
    var kind: LayerKind { .globalAvgPool2d }

    func problems(_ layer: LayerInfo, object obj: String) -> [(object: String, message: String, hint: String?)] {
        var out = Spatial.problems(layer, object: obj, windowName: nil)
        if out.isEmpty, let d = layer.inputShape?.dimensions, d[0] * d[1] > Pooling.Geometry.maximumWindow {
            out.append(
                (
                    obj + "@input_shape",
                    "an image of \(d[0]) x \(d[1]) is beyond the \(Pooling.Geometry.maximumWindow) pixels a global average reads",
                    nil
                ))
        }
        return out
    }

    func outputShape(_ layer: LayerInfo, input: TensorShape) -> TensorShape { .flat(input.channels ?? 0) }

    var weightLayoutHint: String { "a global average pooling layer has no weight or bias datasets" }
}

/// `flatten`: H×W×C → H·W·C features in NHWC order, element (h, w, c) at (h·W + w)·C + c (Keras's
/// channels_last order). No arithmetic: the engine's buffers are already in this order.
/// Attribute `input_shape`.
struct FlattenRules: ImageToFlatRules {
    var kind: LayerKind { .flatten }

    func problems(_ layer: LayerInfo, object obj: String) -> [(object: String, message: String, hint: String?)] {
        var out = Spatial.problems(layer, object: obj, windowName: nil)
        // Each side is at most 2^24 here, so the product can exceed Int (2^72): saturated.
        if out.isEmpty, let d = layer.inputShape?.dimensions, saturatingProduct(d) > Schema.maxUnits {
            out.append(
                (obj + "@input_shape", "an image of \(d) flattens to more than \(Schema.maxUnits) features", nil))
        }
        return out
    }

    func outputShape(_ layer: LayerInfo, input: TensorShape) -> TensorShape { .flat(input.count) }

    var weightLayoutHint: String { "a flatten layer has no weight or bias datasets" }
}
