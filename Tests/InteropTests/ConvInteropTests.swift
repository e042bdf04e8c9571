import DropModelBase
import BundleFormat
import Foundation
import HDF5Layer
import Interop
import Testing
import TestSupport

/// Convolutional import and export (issue 12, Specs/interop.md "Convolutional models"): the
/// committed CNN fixtures (Tests/interop/fixtures/keras{2,3}_cnn_*, trained on Fashion-MNIST by
/// make_cnn_fixtures.py), hand-written configs for the refusals without fixtures, and exports of
/// a small CNN model read back through the importer.
@Suite("convolutional import and export", .tags(.slow))
struct ConvInteropTests {
    /// A dataset of a Keras file by path.
    func dataset(_ file: String, _ path: [String]) throws -> (shape: [Int], values: [Float]) {
        var g = try File.open(file).root()
        for c in path.dropLast() { g = try g.group(c) }
        let ds = try g.dataset(path.last!)
        return (try ds.shape(), try ds.readFloats())
    }

    @Test("Keras 3 Sequential CNN: kinds, shapes, keep probabilities and modes on the receiving layers")
    func sequential() throws {
        let m = try KerasImport.read(path: KerasFixture.path("keras3_cnn_sequential.h5"))
        let l = m.info.layers
        #expect(
            l.map(\.kind) == [.conv2d, .maxPool2d, .conv2d, .maxPool2d, .flatten, .dense, .dense])
        #expect(l.map(\.name) == ["conv1", "pool1", "conv2", "pool2", "flatten", "hidden", "output"])
        #expect(l.map(\.keepProb) == [1, 1, 0.75, 1, 1, 0.8, 0.5])
        #expect(l.map(\.dropoutMode) == [.element, .element, .element, .element, .element, .channel, .element])
        #expect(m.info.inputShape == .image(height: 28, width: 28, channels: 1))
        #expect(l[0].window == Window(height: 3, width: 3))
        #expect(l[1].window == Window(height: 2, width: 2, strideHeight: 2, strideWidth: 2))
        #expect(l[4].inputShape == .image(height: 5, width: 5, channels: 16))
        #expect(l[5].inputs == 400 && l[5].outputs == 32)
        #expect(m.info.convention == .inverted && !m.info.baked)
        #expect(m.info.requiredFormatVersion == FormatVersion(1, 1))
        // weight[f, i, j, c] = kernel[i, j, c, f]
        let k = try dataset(
            KerasFixture.path("keras3_cnn_sequential.h5"),
            ["model_weights", "conv2", "cnn_sequential", "conv2", "kernel"])
        #expect(k.shape == [3, 3, 8, 16])
        let w = m.parameters[2].weight
        for f in [0, 7, 15] {
            for (i, j, c) in [(0, 0, 0), (1, 2, 5), (2, 1, 7)] {
                #expect(w[((f * 3 + i) * 3 + j) * 8 + c] == k.values[((i * 3 + j) * 8 + c) * 16 + f])
            }
        }
        #expect(m.parameters[1].weight.isEmpty && m.parameters[1].bias.isEmpty)
    }

    @Test(
        "the .h5 and .keras twins import to the same bundle layers and weights",
        arguments: [
            "keras3_cnn_sequential", "keras3_cnn_functional", "keras3_cnn_same_stride", "keras3_cnn_gap_gaussian",
        ])
    func twins(_ name: String) throws {
        let a = try KerasImport.read(path: KerasFixture.path(name + ".h5"))
        let b = try KerasImport.read(path: KerasFixture.path(name + ".keras"))
        #expect(a.info.layers == b.info.layers)
        #expect(a.parameters == b.parameters)
    }

    @Test("every fixture's dropout: keep probability and mode of each weighted layer, as its rates say")
    func dropoutFacts() throws {
        // From the rates in make_cnn_fixtures.py (the same table as test_cnn_fixtures.py).
        let expected: [String: [(Double, DropoutMode)]] = [
            "keras3_cnn_functional.h5": [(1, .element), (0.9, .channel), (0.8, .element), (0.8 * 0.75, .element)],
            "keras3_cnn_same_stride.h5": [(1, .element), (1, .element), (0.7, .channel)],
            "keras3_cnn_gap_gaussian.h5": [(0.9, .gaussian), (0.8, .gaussian), (1, .element), (0.7, .gaussian)],
            "keras2_cnn_sequential.h5": [(1, .element), (0.75, .element), (0.8, .channel), (0.5, .element)],
            "keras2_cnn_gaussian_avgpool.h5": [(1, .element), (0.8, .gaussian), (0.7, .element)],
        ]
        for (file, want) in expected {
            let m = try KerasImport.read(path: KerasFixture.path(file))
            let weighted = m.info.layers.filter(\.hasWeights)
            #expect(weighted.count == want.count, "\(file)")
            for (l, (p, mode)) in zip(weighted, want) {
                #expect(abs(l.keepProb - p) < 1e-12, "\(file): \(l.name)")
                #expect(l.dropoutMode == mode, "\(file): \(l.name)")
            }
        }
        let f = try KerasImport.read(path: KerasFixture.path("keras3_cnn_functional.h5"))
        #expect(f.info.layers[0].activation == .tanh, "Activation(tanh) folds into conv_a")
        #expect(f.info.layers[1].window == Window(height: 3, width: 3, strideHeight: 2, strideWidth: 2, padding: .same))
    }

    @Test(
        "each refusal fixture is refused naming its layer and class",
        arguments: [
            ("keras3_cnn_refuse_batchnorm.h5", "layer 'bn' (BatchNormalization)"),
            ("keras3_cnn_refuse_residual.h5", "layer 'skip' (Add)"),
            ("keras3_cnn_refuse_dilation.h5", "layer 'dilated' (Conv2D)"),
            ("keras3_cnn_refuse_groups.h5", "layer 'grouped' (Conv2D)"),
            ("keras3_cnn_refuse_channels_first.h5", "layer 'chw' (Conv2D)"),
            ("keras3_cnn_refuse_noise_shape.h5", "layer 'pixel_dropout' (Dropout)"),
        ])
    func refusedFixture(_ file: String, _ object: String) {
        let path = KerasFixture.path(file)
        do {
            _ = try KerasImport.read(path: path)
            Issue.record("\(file) was imported")
        } catch let e as DropModelError {
            #expect(e.code == .unsupported)
            #expect(e.problems.first?.file == path)
            #expect(e.problems.first?.object == "/@model_config: \(object)")
            #expect(e.problems.first?.hint != nil)
        } catch {
            Issue.record("unexpected error \(error)")
        }
    }

    struct Case: Sendable, CustomTestStringConvertible {
        var label: String
        var layers: [String]
        var object: String
        var testDescription: String { label }
    }

    static func input(_ h: Int, _ w: Int, _ c: Int) -> String {
        layer("InputLayer", "in", #", "batch_shape": [null, \#(h), \#(w), \#(c)]"#)
    }
    static func conv(_ name: String, _ filters: Int, _ extra: String = "", activation: String = "relu") -> String {
        layer(
            "Conv2D", name, #", "filters": \#(filters), "kernel_size": [3, 3], "activation": "\#(activation)""# + extra)
    }

    static let refusals: [Case] = [
        Case(
            label: "a pooling layer between a dropout and its receiver",
            layers: [
                input(8, 8, 1), conv("c1", 2), dropout("d", 0.5),
                layer("MaxPooling2D", "p", #", "pool_size": [2, 2]"#), conv("c2", 2), layer("Flatten", "f"),
                dense("d1", 3),
            ],
            object: "layer 'p' (MaxPooling2D)"),
        Case(
            label: "two dropouts of different modes in a row",
            layers: [
                input(8, 8, 1), conv("c1", 2), dropout("d", 0.5),
                layer("SpatialDropout2D", "sd", #", "rate": 0.2"#), conv("c2", 2), layer("Flatten", "f"),
                dense("d1", 3),
            ],
            object: "layer 'sd' (SpatialDropout2D)"),
        Case(
            label: "a Dense reading an image", layers: [input(8, 8, 1), conv("c1", 2), dense("d1", 3)],
            object: "layer 'd1' (Dense)"),
        Case(
            label: "softmax on a Conv2D",
            layers: [input(8, 8, 1), conv("c1", 2, activation: "softmax"), layer("Flatten", "f"), dense("d1", 3)],
            object: "layer 'c1' (Conv2D)"),
        Case(
            label: "GlobalAveragePooling2D keepdims",
            layers: [
                input(8, 8, 1), conv("c1", 2), layer("GlobalAveragePooling2D", "g", #", "keepdims": true"#),
                dense("d1", 3),
            ],
            object: "layer 'g' (GlobalAveragePooling2D)"),
        Case(
            label: "padding causal",
            layers: [input(8, 8, 1), conv("c1", 2, #", "padding": "causal""#), layer("Flatten", "f"), dense("d1", 3)],
            object: "layer 'c1' (Conv2D)"),
        Case(
            label: "SpatialDropout2D on a vector",
            layers: [
                input(8, 8, 1), conv("c1", 2), layer("Flatten", "f"),
                layer("SpatialDropout2D", "sd", #", "rate": 0.2"#),
                dense("d1", 3),
            ],
            object: "layer 'sd' (SpatialDropout2D)"),
        Case(
            label: "a Conv2D reading a vector",
            layers: [layer("InputLayer", "in", #", "batch_shape": [null, 8]"#), conv("c1", 2), dense("d1", 3)],
            object: "layer 'c1' (Conv2D)"),
        Case(
            label: "a Flatten of more features than a layer reads",
            layers: [
                layer("InputLayer", "in", #", "batch_shape": [null, 16777216, 16777216, 16777216]"#),
                layer("Flatten", "f"), dense("d1", 3),
            ],
            object: "layer 'f' (Flatten)"),
        Case(
            label: "a GaussianDropout after the last Dense",
            layers: [
                input(8, 8, 1), conv("c1", 2), layer("Flatten", "f"), dense("d1", 3),
                layer("GaussianDropout", "late", #", "rate": 0.2"#),
            ],
            object: "layer 'late' (GaussianDropout)"),
    ]

    @Test("refusals without fixtures name the layer", arguments: refusals)
    func refusal(_ c: Case) throws {
        let dir = TemporaryDirectory()
        let path = dir.file("k.h5")
        try writeKerasFile(path, config: sequentialConfig(c.layers), dense: [])
        do {
            _ = try KerasImport.read(path: path)
            Issue.record("imported")
        } catch let e as DropModelError {
            #expect([.unsupported, .invalid].contains(e.code))
            #expect(e.problems.first?.object == "/@model_config: \(c.object)", "\(text(e))")
        }
    }

    @Test("kernels declaring more weights than dropmodel reads are refused before anything is allocated")
    func hugeKernel() throws {
        let dir = TemporaryDirectory()
        // A Conv2D beyond the engine's sizes: refused from the config, naming the layer.
        let conv = dir.file("conv.h5")
        try writeKerasFile(
            conv,
            config: sequentialConfig([
                Self.input(3, 3, 1 << 20), Self.conv("big", 1 << 20), layer("Flatten", "f"), dense("d1", 3),
            ]), dense: [])
        // A Dense of 2^24 x 2^24 declared, never written (unallocated chunks): refused at the kernel.
        let wide = dir.file("dense.h5")
        try writeKerasFile(
            wide,
            config: sequentialConfig([
                layer("InputLayer", "in", #", "batch_shape": [null, 16777216]"#), dense("big", 1 << 24),
            ]),
            dense: []
        ) { root in
            let g = try root.group("model_weights").createGroup("big")
            try g.write("weight_names", strings: ["big/kernel", "big/bias"])
            let inner = try g.createGroup("big")
            _ = try inner.createDataset("kernel", type: .float32, shape: [1 << 24, 1 << 24], chunk: [64, 64])
            _ = try inner.createDataset("bias", type: .float32, shape: [1 << 24], chunk: [1024])
        }
        for (path, object) in [
            (conv, "/@model_config: layer 'big' (Conv2D)"), (wide, "/model_weights/big/big/kernel"),
        ] {
            do {
                _ = try KerasImport.read(path: path)
                Issue.record("imported")
            } catch let e as DropModelError {
                #expect(e.code == .invalid)
                #expect(e.problems.first?.object == object, "\(text(e))")
            }
        }
    }

    /// A small CNN: conv 3x3 same s1 (6x6x2 -> 6x6x3), max-pool 2, conv 2x2 valid s1 with channel
    /// dropout, avg-pool 2 same, flatten, dense with channel dropout, dense with gaussian dropout;
    /// and a second one ending in global average pooling.
    static func cnn(gap: Bool = false) -> Model {
        var rng = FixtureRandom(seed: 3)
        let input = TensorShape.image(height: 6, width: 6, channels: 2)
        var layers: [LayerInfo] = [
            .conv2d(
                name: "c1", input: input, window: Window(height: 3, width: 3, padding: .same), filters: 3,
                activation: .relu, keepProb: 0.9, dropoutMode: .element),
            .weightless(
                .maxPool2d, name: "p1", input: .image(height: 6, width: 6, channels: 3),
                window: Window(height: 2, width: 2, strideHeight: 2, strideWidth: 2)),
            .conv2d(
                name: "c2", input: .image(height: 3, width: 3, channels: 3), window: Window(height: 2, width: 2),
                filters: 4, activation: .tanh, keepProb: 0.75, dropoutMode: .channel),
        ]
        if gap {
            layers.append(.weightless(.globalAvgPool2d, name: "g", input: .image(height: 2, width: 2, channels: 4)))
            layers.append(
                LayerInfo(
                    name: "out", inputs: 4, outputs: 3, activation: .softmax, keepProb: 0.5, dropoutMode: .gaussian))
        } else {
            layers.append(
                .weightless(
                    .avgPool2d, name: "p2", input: .image(height: 2, width: 2, channels: 4),
                    window: Window(height: 2, width: 2, strideHeight: 2, strideWidth: 2, padding: .same)))
            layers.append(.weightless(.flatten, name: "f", input: .image(height: 1, width: 1, channels: 4)))
            layers.append(
                LayerInfo(name: "h", inputs: 4, outputs: 5, activation: .relu, keepProb: 0.8, dropoutMode: .channel))
            layers.append(
                LayerInfo(
                    name: "out", inputs: 5, outputs: 3, activation: .softmax, keepProb: 0.5, dropoutMode: .gaussian))
        }
        let params = layers.map { l -> Parameters in
            guard let s = l.parameterShapes else { return Parameters(weight: [], bias: []) }
            return Parameters(
                weight: (0..<(s.rows * s.rowLength)).map { _ in rng.float() * 0.5 },
                bias: (0..<s.rows).map { _ in rng.float() * 0.5 })
        }
        return Model(info: ModelInfo(convention: .inverted, layers: layers), parameters: params)
    }

    @Test("Keras export (.h5 and .keras) of a CNN reads back through the importer: layers, weights, dropout")
    func kerasRoundTrip() throws {
        let dir = TemporaryDirectory()
        for gap in [false, true] {
            let model = Self.cnn(gap: gap)
            for name in ["k.h5", "k.keras"] {
                let path = dir.file((gap ? "gap-" : "") + name)
                try KerasExport.write(model, to: path)
                let back = try KerasImport.read(path: path)
                #expect(back.info.layers.map(\.kind) == model.info.layers.map(\.kind), "\(path)")
                #expect(back.info.layers.map(\.keepProb) == model.info.layers.map(\.keepProb), "\(path)")
                #expect(back.info.layers.map(\.dropoutMode) == model.info.layers.map(\.dropoutMode), "\(path)")
                #expect(back.info.layers.map(\.window) == model.info.layers.map(\.window), "\(path)")
                #expect(back.info.layers.map(\.activation) == model.info.layers.map(\.activation), "\(path)")
                #expect(back.parameters == model.parameters, "\(path)")
            }
        }
    }

    @Test("ONNX export of a CNN: Conv, MaxPool, AveragePool, Transpose + Flatten, Gemm; conv weights [F, C, KH, KW]")
    func onnx() throws {
        let model = Self.cnn()
        let top = protobufFields(Array(ONNXExport.encode(model)))
        let graph = try #require(top.first { $0.field == 7 }?.value)
        let fields = protobufFields(graph)
        let ops = fields.filter { $0.field == 1 }.map { node in
            String(decoding: protobufFields(node.value).first { $0.field == 4 }!.value, as: UTF8.self)
        }
        #expect(
            ops == [
                "Conv", "Relu", "MaxPool", "Conv", "Tanh", "AveragePool", "Transpose", "Flatten", "Gemm", "Relu",
                "Gemm", "Softmax",
            ])
        // The first initializer: conv c1's weight [3, 2, 3, 3], w[o, ch, i, j] = bundle[o, i, j, ch].
        let initializer = protobufFields(try #require(fields.first { $0.field == 5 }?.value))
        #expect(initializer.filter { $0.field == 1 }.map(\.int) == [3, 2, 3, 3])
        let raw = try #require(initializer.first { $0.field == 9 }?.value)
        let onnxW = stride(from: 0, to: raw.count, by: 4).map { k in
            Float(
                bitPattern: UInt32(raw[k]) | UInt32(raw[k + 1]) << 8 | UInt32(raw[k + 2]) << 16 | UInt32(raw[k + 3])
                    << 24)
        }
        let w = model.parameters[0].weight
        for o in 0..<3 {
            for ch in 0..<2 {
                for i in 0..<3 {
                    for j in 0..<3 {
                        #expect(onnxW[((o * 2 + ch) * 3 + i) * 3 + j] == w[((o * 3 + i) * 3 + j) * 2 + ch])
                    }
                }
            }
        }
    }

    @Test("export of a CNN bundle through Conversion: every format, 1.1 metadata; .keras output accepted")
    func conversion() throws {
        let dir = TemporaryDirectory()
        let bundle = dir.file("cnn.h5")
        try BundleWriter.write(Self.cnn(), to: bundle)
        for (format, name) in [
            (Export.Format.onnx, "m.onnx"), (.keras, "m.h5"), (.keras, "m.keras"), (.safetensors, "m.safetensors"),
            (.npz, "m.npz"),
        ] {
            let r = try Conversion.export(bundle, format: format, to: dir.file(name))
            #expect(r.info.layers.count == 7)
            #expect(FileManager.default.fileExists(atPath: dir.file(name)))
        }
        // safetensors import reads dense layers: a CNN export is refused by its metadata, not by a shape.
        do {
            _ = try SafetensorsImport.read(path: dir.file("m.safetensors"))
            Issue.record("a convolutional safetensors export was imported")
        } catch let e as DropModelError {
            #expect(e.code == .unsupported)
            #expect(e.problems.first?.object == "header: __metadata__[dropmodel.layer_kinds]")
        }
        let meta = Dictionary(uniqueKeysWithValues: Export.metadata(Self.cnn()))
        #expect(
            meta[MetadataKey.dropoutModes]
                == #"["element","element","channel","element","element","channel","gaussian"]"#)
        #expect(meta[MetadataKey.inputShape] == "[6,6,2]")
        #expect(Export.metadata(Fixtures.model(convention: .inverted)).allSatisfy { $0.0 != MetadataKey.layerKinds })
        do {
            _ = try Conversion.export(bundle, format: .keras, to: dir.file("m.onnx"))
            Issue.record("a Keras export named .onnx was written")
        } catch let e as DropModelError {
            #expect(e.code == .usage)
        }
    }

    @Test("the imported fixtures write as valid bundles that read back identically")
    func writesBundle() throws {
        let dir = TemporaryDirectory()
        for name in ["keras3_cnn_gap_gaussian.keras", "keras2_cnn_gaussian_avgpool.h5"] {
            let out = dir.file(name + ".bundle.h5")
            let r = try Conversion.importModel(KerasFixture.path(name), to: out)
            let back = try BundleReader(path: out).readModel()
            #expect(back.info.layers == r.info.layers)
        }
    }
}
