import DropModelBase
import BundleFormat
import Foundation
import HDF5Layer
import Interop
import Testing
import TestSupport

@Suite("Keras HDF5 import", .tags(.slow))
struct KerasImportTests {
    /// Reads a kernel [inputs, units] straight from the Keras file, by path.
    func kernel(_ file: String, _ path: [String]) throws -> (shape: [Int], values: [Float]) {
        var g = try File.open(file).root()
        for c in path.dropLast() { g = try g.group(c) }
        let ds = try g.dataset(path.last!)
        return (try ds.shape(), try ds.readFloats())
    }

    func recipe(_ model: Model) throws -> [String: Any] {
        let data = Data(try #require(model.info.training?.recipe).utf8)
        return try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
    }

    func dropoutRecords(_ model: Model) throws -> [[String: Any]] {
        let source = try #require(try recipe(model)["imported_from"] as? [String: Any])
        return try #require(source["dropout"] as? [[String: Any]])
    }

    @Test("Keras 3 Sequential: p = 1 - rate on the receiving layer, inverted, kernels transposed, seeds kept")
    func keras3Sequential() throws {
        let path = KerasFixture.path("keras3_sequential.h5")
        let m = try KerasImport.read(path: path)
        #expect(m.info.convention == .inverted)
        #expect(!m.info.baked)
        #expect(m.info.layers.map(\.name) == ["hidden", "output"])
        let keeps: [Double] = [1 - 0.2, 1 - 0.5]
        #expect(m.info.layers.map(\.keepProb) == keeps)
        #expect(m.info.layers.map(\.activation) == [.relu, .softmax])
        #expect(m.info.layers.map(\.inputs) == [784, 32])
        #expect(m.info.layers.map(\.outputs) == [32, 10])
        let k = try kernel(path, ["model_weights", "hidden", "fashion_sequential", "hidden", "kernel"])
        #expect(k.shape == [784, 32])
        let w = m.parameters[0].weight
        for (u, i) in [(0, 0), (5, 100), (31, 783), (17, 400)] {
            #expect(w[u * 784 + i] == k.values[i * 32 + u], "W[\(u), \(i)] is kernel[\(i), \(u)]")
        }
        #expect(w != k.values, "the kernel must be transposed, not copied")
        let records = try dropoutRecords(m)
        #expect(records.map { $0["name"] as? String } == ["input_dropout", "hidden_dropout"])
        #expect(records.map { ($0["seed"] as? NSNumber)?.intValue } == [11, 12])
        #expect(records.map { $0["keep_prob_of"] as? String } == ["hidden", "output"])
        let source = try #require(try recipe(m)["imported_from"] as? [String: Any])
        #expect((source["keras_version"] as? String)?.hasPrefix("3.") == true)
        #expect(source["model_class"] as? String == "Sequential")
    }

    @Test("Keras 3 Functional chain: Activation layers merged, consecutive Dropouts multiply")
    func keras3Functional() throws {
        let m = try KerasImport.read(path: KerasFixture.path("keras3_functional.h5"))
        #expect(m.info.layers.map(\.name) == ["dense_a", "dense_b", "logits"])
        #expect(m.info.layers.map(\.activation) == [.relu, .tanh, .softmax])
        #expect(m.info.layers[0].keepProb == 1)
        #expect(m.info.layers[1].keepProb == 1 - 0.25)
        let both: Double = (1 - 0.2) * (1 - 0.25)
        #expect(m.info.layers[2].keepProb == both)
        let records = try dropoutRecords(m)
        #expect(records.map { $0["keep_prob_of"] as? String } == ["dense_b", "logits", "logits"])
        #expect(records[1]["seed"] is NSNull, "a Dropout without a seed records null")
    }

    @Test("Keras 2 layout (kernel:0 names), Sequential and Functional, made by tf-keras")
    func keras2() throws {
        let path = KerasFixture.path("keras2_sequential.h5")
        let s = try KerasImport.read(path: path)
        #expect(s.info.layers.map(\.name) == ["dense", "dense_1"])
        #expect(s.info.layers.map(\.keepProb) == [0.8, 0.5])
        #expect(try dropoutRecords(s).map { ($0["seed"] as? NSNumber)?.intValue } == [3, 4])
        let k = try kernel(path, ["model_weights", "dense_1", "dense_1", "kernel:0"])
        #expect(k.shape == [32, 10])
        #expect(s.parameters[1].weight[9 * 32 + 31] == k.values[31 * 10 + 9])
        let f = try KerasImport.read(path: KerasFixture.path("keras2_functional.h5"))
        #expect(f.info.layers.map(\.activation) == [.logistic, .softmax])
        #expect(f.info.layers.map(\.keepProb) == [1, 0.7])
    }

    @Test("the imported model is a valid bundle that reads back identically")
    func writesBundle() throws {
        let dir = TemporaryDirectory()
        let m = try KerasImport.read(path: KerasFixture.path("keras3_functional.h5"))
        try BundleWriter.write(m, to: dir.file("b.h5"))
        let back = try BundleReader(path: dir.file("b.h5")).readModel()
        #expect(back.parameters == m.parameters)
        #expect(back.info.layers == m.info.layers)
        #expect(back.info.training == m.info.training)
    }

    @Test("a small convolution (issue 12) imports: conv, flatten, dense")
    func convolution() throws {
        let m = try KerasImport.read(path: KerasFixture.path("keras3_conv.h5"))
        #expect(m.info.layers.map(\.kind) == [.conv2d, .flatten, .dense])
        #expect(m.info.inputShape == .image(height: 6, width: 6, channels: 1))
    }

    @Test("a branch is refused, naming the layer that does not read the layer before it")
    func branch() {
        expectRefusal(.unsupported, ["'right'", "branches"]) {
            _ = try KerasImport.read(path: KerasFixture.path("keras3_branch.h5"))
        }
    }

    struct Case: Sendable, CustomTestStringConvertible {
        var label: String
        var layers: [String]
        var code: ErrorCode
        var needles: [String]
        var testDescription: String { label }
    }

    static let refusals: [Case] = [
        Case(
            label: "custom layer", layers: [dense("d1", 3, "relu"), layer("MyCustomLayer", "mine"), dense("d2", 2)],
            code: .unsupported, needles: ["'mine'", "MyCustomLayer", "nothing from the file is executed"]),
        Case(
            label: "dropout after the last Dense",
            layers: [dense("d1", 3, "relu"), dense("d2", 2), dropout("late", 0.5)],
            code: .unsupported, needles: ["'late'", "after the last Dense"]),
        Case(
            label: "activation after a dropout",
            layers: [
                dense("d1", 3), dropout("dr", 0.5), layer("Activation", "act", #", "activation": "relu""#),
                dense("d2", 2),
            ],
            code: .unsupported, needles: ["'act'", "Dropout layer stands between"]),
        Case(
            label: "unknown activation", layers: [dense("d1", 3, "gelu"), dense("d2", 2)],
            code: .unsupported, needles: ["'d1'", "gelu"]),
        Case(
            label: "rate 1", layers: [dropout("all", 1.0), dense("d1", 3), dense("d2", 2)],
            code: .invalid, needles: ["'all'", "[0, 1)"]),
        Case(
            label: "noise_shape",
            layers: [
                #"{"class_name": "Dropout", "config": {"name": "sp", "rate": 0.5, "noise_shape": [null, 1]}}"#,
                dense("d1", 3), dense("d2", 2),
            ],
            code: .unsupported, needles: ["'sp'", "noise_shape"]),
        Case(
            label: "GaussianDropout rate 1",
            layers: [layer("GaussianDropout", "gd", #", "rate": 1"#), dense("d1", 3), dense("d2", 2)],
            code: .invalid, needles: ["'gd'", "GaussianDropout"]),
    ]

    @Test("unsupported or invalid configs are refused, naming the layer", arguments: refusals)
    func refusal(_ c: Case) throws {
        let dir = TemporaryDirectory()
        let path = dir.file("k.h5")
        try writeKerasFile(
            path, config: sequentialConfig(c.layers),
            dense: [
                ("d1", 4, 3, values(12, seed: 1), values(3, seed: 2)),
                ("d2", 3, 2, values(6, seed: 3), values(2, seed: 4)),
            ])
        expectRefusal(c.code, c.needles + [path]) { _ = try KerasImport.read(path: path) }
    }

    @Test("a hand-written Keras 3 file with every supported piece imports as expected")
    func handWritten() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("k.h5")
        let config = sequentialConfig([
            layer("InputLayer", "in", #", "batch_shape": [null, 2, 2]"#), layer("Flatten", "flat"),
            dropout("d0", 0.25, seed: "42"),
            dense("d1", 3), layer("Activation", "a1", #", "activation": "sigmoid""#), dropout("x", 0.5),
            dense("d2", 2, "softmax"),
        ])
        let k1 = values(12, seed: 5)
        try writeKerasFile(
            path, config: config,
            dense: [("d1", 4, 3, k1, [0.1, 0.2, 0.3]), ("d2", 3, 2, values(6, seed: 6), [0, 1])])
        let m = try KerasImport.read(path: path)
        #expect(m.info.layers.map(\.keepProb) == [0.75, 0.5])
        #expect(m.info.layers.map(\.activation) == [.logistic, .softmax])
        #expect(m.parameters[0].bias == [0.1, 0.2, 0.3])
        // kernel [4, 3] row-major -> weight [3, 4]
        for u in 0..<3 { for i in 0..<4 { #expect(m.parameters[0].weight[u * 4 + i] == k1[i * 3 + u]) } }
    }

    @Test(
        """
        hostile or broken files: not JSON, nested too deep, too large, weights missing or mis-shaped, weights-only, a \
        bundle
        """)
    func hostile() throws {
        let dir = TemporaryDirectory()
        let weights: [(name: String, inputs: Int, units: Int, kernel: [Float], bias: [Float])] = [
            ("d1", 4, 3, values(12, seed: 1), values(3, seed: 2)), ("d2", 3, 2, values(6, seed: 3), values(2, seed: 4)),
        ]
        let good = sequentialConfig([dense("d1", 3, "relu"), dense("d2", 2, "softmax")])
        func refuse(
            _ name: String, config: String,
            dense: [(name: String, inputs: Int, units: Int, kernel: [Float], bias: [Float])]? = nil,
            _ code: ErrorCode, _ needles: [String]
        ) throws {
            let path = dir.file(name)
            try writeKerasFile(path, config: config, dense: dense ?? weights)
            expectRefusal(code, needles) { _ = try KerasImport.read(path: path) }
        }
        try refuse("notjson.h5", config: "{not json", .invalid, ["model_config", "not valid JSON"])
        try refuse(
            "deep.h5", config: String(repeating: "[", count: 10_000) + String(repeating: "]", count: 10_000), .invalid,
            ["more than 64 deep"])
        try refuse(
            "big.h5",
            config: #"{"class_name": "Sequential", "pad": ""#
                + String(repeating: "x", count: KerasImport.maxConfigBytes) + #""}"#,
            .invalid, ["more than the 4194304 bytes"])
        try refuse("subclassed.h5", config: #"{"class_name": "MyModel", "config": {}}"#, .unsupported, ["'MyModel'"])
        try refuse("missing.h5", config: good, dense: [weights[0]], .invalid, ["/model_weights/d2", "missing"])
        try refuse(
            "shape.h5", config: sequentialConfig([dense("d1", 3, "relu"), dense("d2", 5)]), .invalid,
            ["kernel has shape [3, 2]", "5 units"])
        let chainBroken = [weights[0], ("d2", 4, 2, values(8, seed: 3), values(2, seed: 4))]
        try refuse(
            "chain.h5", config: good, dense: chainBroken, .invalid,
            ["4 inputs but the previous Dense layer has 3 units"])

        let weightsOnly = dir.file("weights.h5")
        try File.writeAtomically(to: weightsOnly) { f in _ = try f.root().createGroup("layers") }
        expectRefusal(.unsupported, ["weights-only", "model.save"]) { _ = try KerasImport.read(path: weightsOnly) }

        let bundle = dir.file("bundle.h5")
        try BundleWriter.write(Fixtures.model(), to: bundle)
        expectRefusal(.notApplicable, ["already a dropmodel bundle"]) { _ = try KerasImport.read(path: bundle) }

        // A 2.4 MB kernel declared but never written (unallocated chunks: fill values).
        let sparse = dir.file("sparse.h5")
        try File.writeAtomically(to: sparse) { f in
            let root = try f.root()
            try root.write("model_config", string: sequentialConfig([dense("big", 600)]))
            let g = try root.createGroup("model_weights").createGroup("big")
            try g.write("weight_names", strings: ["big/kernel", "big/bias"])
            let inner = try g.createGroup("big")
            _ = try inner.createDataset("kernel", type: .float32, shape: [1000, 600], chunk: [100, 600])
            try inner.createDataset("bias", type: .float32, shape: [600]).write(
                floats: [Float](repeating: 0, count: 600))
        }
        expectRefusal(.invalid, ["/model_weights/big/big/kernel", "declares 2400000 bytes", "stores only 0 bytes"]) {
            _ = try KerasImport.read(path: sparse)
        }

        let nan = dir.file("nan.h5")
        try writeKerasFile(
            nan, config: good, dense: [("d1", 4, 3, [Float.nan] + values(11, seed: 1), values(3, seed: 2)), weights[1]])
        expectRefusal(.invalid, ["not finite"]) { _ = try KerasImport.read(path: nan) }
    }

    @Test("an external link in place of a weight group is refused, not followed")
    func externalLink() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("k.h5")
        try writeKerasFile(
            path, config: sequentialConfig([dense("d1", 3, "relu"), dense("d2", 2), dense("d3", 2)]),
            dense: [
                ("d1", 4, 3, values(12, seed: 1), values(3, seed: 2)),
                ("d2", 3, 2, values(6, seed: 3), values(2, seed: 4)),
            ]
        ) { root in
            try root.group("model_weights").createExternalLinkForTesting("d3", file: "/etc/hostname", object: "/")
        }
        expectRefusal(.refused, ["external link"]) { _ = try KerasImport.read(path: path) }
    }
}

@Suite("Keras 3 .keras archives", .tags(.slow))
struct KerasArchiveTests {
    static let archive = KerasFixture.path("keras3_functional.keras")

    @Test("a .keras archive imports to the same bundle layers and weights as the same model's .h5")
    func sameAsHDF5() throws {
        let a = try KerasImport.read(path: Self.archive)
        let h = try KerasImport.read(path: KerasFixture.path("keras3_functional.h5"))
        #expect(a.parameters == h.parameters)
        #expect(a.info.layers == h.info.layers)
        #expect(a.info.training?.recipe.contains(#""format":"keras-archive""#) == true)
    }

    /// The fixture's bytes with `edit` applied, written to a new file.
    func tampered(_ dir: TemporaryDirectory, _ name: String, _ edit: (inout [UInt8]) -> Void) throws -> String {
        var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: Self.archive)))
        edit(&bytes)
        let path = dir.file(name)
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        return path
    }

    func offsets(of needle: String, in bytes: [UInt8]) -> [Int] {
        let n = Array(needle.utf8)
        return (0...(bytes.count - n.count)).filter { Array(bytes[$0..<($0 + n.count)]) == n }
    }

    @Test("damaged archives are refused with the member named: truncated, CRC mismatch, compressed, no config")
    func hostile() throws {
        let dir = TemporaryDirectory()
        let truncated = try tampered(dir, "t.keras") { $0.removeLast(200) }
        expectRefusal(.invalid, ["ZIP archive", "end-of-central-directory"]) {
            _ = try KerasImport.read(path: truncated)
        }

        let crc = try tampered(dir, "c.keras") { b in
            let at = offsets(of: "\"class_name\"", in: b)[0]
            b[at + 1] = UInt8(ascii: "k")
        }
        expectRefusal(.invalid, ["config.json", "CRC-32"]) { _ = try KerasImport.read(path: crc) }

        let compressed = try tampered(dir, "m.keras") { b in
            // The central directory entry of config.json: method field at +10 from its signature.
            let name = offsets(of: "config.json", in: b).last!
            b[name - 46 + 10] = 8
        }
        expectRefusal(.unsupported, ["config.json", "compressed (method 8)"]) {
            _ = try KerasImport.read(path: compressed)
        }

        let renamed = try tampered(dir, "r.keras") { b in
            for at in offsets(of: "config.json", in: b) { b[at] = UInt8(ascii: "k") }
        }
        expectRefusal(.invalid, ["no config.json"]) { _ = try KerasImport.read(path: renamed) }
    }
}
