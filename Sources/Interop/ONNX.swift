import DropModelBase
public import BundleFormat
public import Foundation

/// The protobuf wire format, encode only: the few ONNX messages an export needs
/// (Specs/interop.md §5.3 says why this is hand-written rather than swift-protobuf).
///
/// Fields are written in the order the caller gives (ascending field numbers below), so the
/// same model always encodes to the same bytes.
struct ProtobufWriter {
    private(set) var bytes: [UInt8] = []

    mutating func varint(_ v: UInt64) {
        var v = v
        while v >= 0x80 {
            bytes.append(UInt8(v & 0x7F) | 0x80)
            v >>= 7
        }
        bytes.append(UInt8(v))
    }

    mutating func tag(_ field: Int, _ wireType: UInt64) { varint(UInt64(field) << 3 | wireType) }

    /// int32/int64/enum (wire type 0); negative values as 10-byte two's complement.
    mutating func int(_ field: Int, _ v: Int64) {
        tag(field, 0)
        varint(UInt64(bitPattern: v))
    }

    mutating func bytes(_ field: Int, _ b: [UInt8]) {
        tag(field, 2)
        varint(UInt64(b.count))
        bytes.append(contentsOf: b)
    }

    mutating func string(_ field: Int, _ s: String) { bytes(field, Array(s.utf8)) }

    mutating func message(_ field: Int, _ build: (inout ProtobufWriter) -> Void) {
        var m = ProtobufWriter()
        build(&m)
        bytes(field, m.bytes)
    }
}

/// Writes a bundle's deterministic network as an ONNX model (opset 13, IR version 7):
/// per layer `Gemm(x, W, b, transB=1)` then `Relu`, `Sigmoid`, `Tanh` or `Softmax(axis=1)`;
/// weights as float32 initializers (raw little-endian). The graph is Specs/interop.md §5.
public enum ONNXExport {
    public static let irVersion: Int64 = 7
    public static let opset: Int64 = 13
    public static let inputName = "input"
    public static let outputName = "output"

    // Field numbers from onnx/onnx.proto (ONNX 1.x).
    enum ModelField {
        static let irVersion = 1, producerName = 2, producerVersion = 3, docString = 6, graph = 7, opsetImport = 8,
            metadataProps = 14
    }
    enum OpsetID { static let domain = 1, version = 2 }
    enum Entry { static let key = 1, value = 2 }
    enum Graph { static let node = 1, name = 2, initializer = 5, docString = 10, input = 11, output = 12 }
    enum Node { static let input = 1, output = 2, name = 3, opType = 4, attribute = 5 }
    enum Attribute {
        static let name = 1, i = 3, ints = 8, type = 20
        static let typeInt: Int64 = 2, typeInts: Int64 = 7
    }
    enum Tensor { static let dims = 1, dataType = 2, name = 8, rawData = 9; static let float: Int64 = 1 }
    enum ValueInfo { static let name = 1, type = 2 }
    enum TypeProto { static let tensorType = 1 }
    enum TensorType { static let elemType = 1, shape = 2 }
    enum Shape { static let dim = 1 }
    enum Dimension { static let value = 1, param = 2 }

    /// A protobuf message cannot exceed 2 GiB; larger ONNX models need external data files,
    /// which this exporter does not write.
    public static let maxModelBytes = Int(Int32.max)

    /// Throws if `model` is too large for a single-file ONNX model.
    public static func checkSize(_ model: Model, file: String) throws {
        let bytes = model.info.parameterCount * 4 + model.info.layers.count * 1024 + 65_536
        if bytes > maxModelBytes {
            throw DropModelError(
                code: .notApplicable, file: file, object: "/layers",
                message: """
                    \(model.info.parameterCount) parameters make an ONNX model of about \(bytes >> 20) MiB; a \
                    single-file ONNX model is limited to 2 GiB
                    """,
                hint: "export to safetensors or npz instead")
        }
    }

    /// The encoded model.
    public static func encode(_ model: Model) -> Data {
        let layers = model.info.layers
        var w = ProtobufWriter()
        w.int(ModelField.irVersion, irVersion)
        w.string(ModelField.producerName, "dropmodel")
        w.string(ModelField.producerVersion, DropModelVersion.string)
        w.string(ModelField.docString, docString(model.info))
        w.message(ModelField.graph) { g in
            var current = inputName
            for (i, layer) in layers.enumerated() {
                current = layerNodes(&g, layer, index: i, input: current, isLast: i == layers.count - 1)
            }
            g.string(Graph.name, "dropmodel")
            for (i, (layer, p)) in zip(layers, model.parameters).enumerated() {
                for t in initializers(layer, p, index: i) {
                    g.message(Graph.initializer) { w in tensor(&w, t.name, t.dims, t.values) }
                }
            }
            let shapes = model.info.layerShapes
            g.message(Graph.input) { v in valueInfo(&v, inputName, shape: shapes[0].input) }
            g.message(Graph.output) { v in valueInfo(&v, outputName, shape: shapes[shapes.count - 1].output) }
        }
        w.message(ModelField.opsetImport) { o in
            o.string(OpsetID.domain, "")
            o.int(OpsetID.version, opset)
        }
        for (k, v) in Export.metadata(model) {
            w.message(ModelField.metadataProps) { e in
                e.string(Entry.key, k)
                e.string(Entry.value, v)
            }
        }
        return Data(w.bytes)
    }

    // MARK: Layer kinds: the one place per kind for ONNX

    /// Emits layer `i`'s node(s), reading `input`; returns the name of the value it outputs
    /// (the graph's output for the last layer). A new layer kind adds its case here.
    ///
    /// Images flow in ONNX's NCHW layout (the graph input is `[batch, C, H, W]`); a `flatten`
    /// layer first transposes back to NHWC so that the features come in the bundle's H, W, C
    /// order, which the following Gemm's weights expect (Specs/interop.md §5.1).
    static func layerNodes(
        _ g: inout ProtobufWriter, _ layer: LayerInfo, index i: Int, input: String, isLast last: Bool
    ) -> String {
        switch layer.kind {
        case .dense: return denseNodes(&g, layer, index: i, input: input, isLast: last)
        case .conv2d:
            let w = layer.window!
            let hasActivation = layer.activation != .linear
            let convOut = last && !hasActivation ? outputName : "layers.\(i).z"
            node(
                &g, "Conv", name: layer.name, inputs: [input, "layers.\(i).weight", "layers.\(i).bias"],
                output: convOut
            ) { n in
                ints(&n, "kernel_shape", [w.height, w.width])
                ints(&n, "strides", [w.strideHeight, w.strideWidth])
                ints(&n, "pads", pads(layer))
            }
            guard hasActivation else { return convOut }
            let out = last ? outputName : "layers.\(i).a"
            activationNode(&g, layer, input: convOut, output: out)
            return out
        case .maxPool2d, .avgPool2d:
            let w = layer.window!
            let out = last ? outputName : "layers.\(i).y"
            node(
                &g, layer.kind == .maxPool2d ? "MaxPool" : "AveragePool", name: layer.name, inputs: [input],
                output: out
            ) { n in
                ints(&n, "kernel_shape", [w.height, w.width])
                ints(&n, "strides", [w.strideHeight, w.strideWidth])
                ints(&n, "pads", pads(layer))
                // Padded pixels are not counted: a "same" window averages what lies in the image.
                if layer.kind == .avgPool2d { int(&n, "count_include_pad", 0) }
            }
            return out
        case .globalAvgPool2d:
            let pooled = "layers.\(i).pooled"
            node(&g, "GlobalAveragePool", name: layer.name, inputs: [input], output: pooled) { _ in }
            let out = last ? outputName : "layers.\(i).y"
            node(&g, "Flatten", name: "\(layer.name).flatten", inputs: [pooled], output: out) { n in
                int(&n, "axis", 1)
            }
            return out
        case .flatten:
            let nhwc = "layers.\(i).nhwc"
            node(&g, "Transpose", name: "\(layer.name).to_nhwc", inputs: [input], output: nhwc) { n in
                ints(&n, "perm", [0, 2, 3, 1])
            }
            let out = last ? outputName : "layers.\(i).y"
            node(&g, "Flatten", name: layer.name, inputs: [nhwc], output: out) { n in int(&n, "axis", 1) }
            return out
        }
    }

    /// ONNX `pads` `[top, left, bottom, right]` of a windowed layer: TensorFlow's "same" rule,
    /// the odd pixel after (Specs/interop.md "Layouts"); zeros for "valid".
    static func pads(_ layer: LayerInfo) -> [Int] {
        guard let w = layer.window, w.padding == .same, case .image(let h, let wd, _)? = layer.inputShape else {
            return [0, 0, 0, 0]
        }
        func total(_ n: Int, _ k: Int, _ s: Int) -> Int { max(((n + s - 1) / s - 1) * s + k - n, 0) }
        let th = total(h, w.height, w.strideHeight), tw = total(wd, w.width, w.strideWidth)
        return [th / 2, tw / 2, th - th / 2, tw - tw / 2]
    }

    static func node(
        _ g: inout ProtobufWriter, _ op: String, name: String, inputs: [String], output: String,
        attributes: (inout ProtobufWriter) -> Void
    ) {
        g.message(Graph.node) { n in
            for x in inputs { n.string(Node.input, x) }
            n.string(Node.output, output)
            n.string(Node.name, name)
            n.string(Node.opType, op)
            attributes(&n)
        }
    }

    static func int(_ n: inout ProtobufWriter, _ name: String, _ v: Int) {
        n.message(Node.attribute) { a in
            a.string(Attribute.name, name)
            a.int(Attribute.i, Int64(v))
            a.int(Attribute.type, Attribute.typeInt)
        }
    }

    static func ints(_ n: inout ProtobufWriter, _ name: String, _ v: [Int]) {
        n.message(Node.attribute) { a in
            a.string(Attribute.name, name)
            for x in v { a.int(Attribute.ints, Int64(x)) }
            a.int(Attribute.type, Attribute.typeInts)
        }
    }

    /// Layer `i`'s initializers (its parameters in ONNX's layout). A new layer kind adds its
    /// case here.
    static func initializers(
        _ layer: LayerInfo, _ p: Parameters, index i: Int
    ) -> [(name: String, dims: [Int], values: [Float])] {
        switch layer.kind {
        case .dense:
            // Gemm with transB = 1 takes the bundle's [outputs, inputs] as it is.
            return [
                ("layers.\(i).weight", [layer.outputs, layer.inputs], p.weight),
                ("layers.\(i).bias", [layer.outputs], p.bias),
            ]
        case .conv2d:
            // The bundle's [F, KH, KW, C] as ONNX's [F, C, KH, KW].
            let (f, kh, kw) = (layer.filters, layer.window!.height, layer.window!.width)
            let c = layer.inputShape!.channels!
            var w = [Float](repeating: 0, count: p.weight.count)
            for o in 0..<f {
                for i in 0..<kh {
                    for j in 0..<kw {
                        for ch in 0..<c {
                            w[((o * c + ch) * kh + i) * kw + j] = p.weight[((o * kh + i) * kw + j) * c + ch]
                        }
                    }
                }
            }
            return [("layers.\(i).weight", [f, c, kh, kw], w), ("layers.\(i).bias", [f], p.bias)]
        case .maxPool2d, .avgPool2d, .globalAvgPool2d, .flatten:
            return []
        }
    }

    /// `Gemm(x, W, b, transB=1)`, then the activation's node unless linear.
    static func denseNodes(
        _ g: inout ProtobufWriter, _ layer: LayerInfo, index i: Int, input: String, isLast last: Bool
    ) -> String {
        let weight = "layers.\(i).weight", bias = "layers.\(i).bias"
        let hasActivation = layer.activation != .linear
        let gemmOut = last && !hasActivation ? outputName : "layers.\(i).z"
        g.message(Graph.node) { n in
            for x in [input, weight, bias] { n.string(Node.input, x) }
            n.string(Node.output, gemmOut)
            n.string(Node.name, layer.name)
            n.string(Node.opType, "Gemm")
            n.message(Node.attribute) { a in
                a.string(Attribute.name, "transB")
                a.int(Attribute.i, 1)
                a.int(Attribute.type, Attribute.typeInt)
            }
        }
        guard hasActivation else { return gemmOut }
        let out = last ? outputName : "layers.\(i).a"
        activationNode(&g, layer, input: gemmOut, output: out)
        return out
    }

    /// The activation of `layer` as one node (none for linear): shared by every kind.
    static func activationNode(_ g: inout ProtobufWriter, _ layer: LayerInfo, input: String, output out: String) {
        g.message(Graph.node) { n in
            n.string(Node.input, input)
            n.string(Node.output, out)
            n.string(Node.name, "\(layer.name).\(layer.activation.rawValue)")
            switch layer.activation {
            case .relu: n.string(Node.opType, "Relu")
            case .logistic: n.string(Node.opType, "Sigmoid")
            case .tanh: n.string(Node.opType, "Tanh")
            case .softmax:
                n.string(Node.opType, "Softmax")
                n.message(Node.attribute) { a in
                    a.string(Attribute.name, "axis")
                    a.int(Attribute.i, 1)
                    a.int(Attribute.type, Attribute.typeInt)
                }
            case .linear: break
            }
        }
    }

    static func tensor(_ t: inout ProtobufWriter, _ name: String, _ dims: [Int], _ values: [Float]) {
        for d in dims { t.int(Tensor.dims, Int64(d)) }
        t.int(Tensor.dataType, Tensor.float)
        t.string(Tensor.name, name)
        var raw = [UInt8]()
        raw.reserveCapacity(values.count * 4)
        for v in values { withUnsafeBytes(of: v.bitPattern.littleEndian) { raw.append(contentsOf: $0) } }
        t.bytes(Tensor.rawData, raw)
    }

    /// A float tensor `[batch, features]`, or `[batch, C, H, W]` for an image, with a symbolic
    /// batch dimension.
    static func valueInfo(_ v: inout ProtobufWriter, _ name: String, shape: TensorShape) {
        let dims: [Int]
        switch shape {
        case .flat(let n): dims = [n]
        case .image(let h, let w, let c): dims = [c, h, w]
        }
        v.string(ValueInfo.name, name)
        v.message(ValueInfo.type) { ty in
            ty.message(TypeProto.tensorType) { tt in
                tt.int(TensorType.elemType, Tensor.float)
                tt.message(TensorType.shape) { s in
                    s.message(Shape.dim) { d in d.string(Dimension.param, "batch") }
                    for x in dims { s.message(Shape.dim) { d in d.int(Dimension.value, Int64(x)) } }
                }
            }
        }
    }

    static func docString(_ info: ModelInfo) -> String {
        let what = info.layers.allSatisfy { $0.kind == .dense } ? "dense network" : "convolutional network"
        let keep = info.layers.map { String($0.keepProb) }.joined(separator: ", ")
        let how =
            info.convention == .inverted
            ? "trained with inverted dropout: the weights are used as stored"
            : "trained with classic dropout and baked (weights scaled by the keep probabilities)"
        return """
            dropmodel export of a \(what) \(how). Keep probabilities of each layer's inputs during training: \
            \(keep). 
            """
                + "Dropout is not in the graph: at inference it is the identity. Specs/interop.md section 5."
    }
}
