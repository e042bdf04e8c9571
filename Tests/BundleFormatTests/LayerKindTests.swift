import DropModelBase
import BundleFormat
import HDF5Layer
import Testing
import TestSupport

// The layer-kind abstraction (Specs/bundle-format.md §4.6, docs/adding-a-layer-kind.md): every
// kind has rules, the reader, writer and schema reach a kind's attributes only through them, and
// for dense they give the format 1.0 rules exactly.

@Suite("Layer kinds")
struct LayerKindTests {
    @Test("every LayerKind case has rules, and they are its own")
    func registry() {
        for kind in LayerKind.allCases {
            #expect(kind.rules.kind == kind, "LayerKind.rules maps \(kind) to \(kind.rules.kind)'s rules")
        }
    }

    @Test("dense: weight as rows of fan-in, flat shapes, inspect text, parameter count")
    func denseShapes() {
        let l = LayerInfo(name: "h", inputs: 784, outputs: 10, activation: .relu, keepProb: 0.8)
        let shapes = l.parameterShapes
        #expect(shapes == ParameterShapes(weight: [10, 784], bias: [10]))
        #expect(shapes?.rows == 10 && shapes?.rowLength == 784 && shapes?.count == 7850)
        #expect(l.hasWeights)
        #expect(l.parameterCount == 7850)
        #expect(l.declaredInputShape == .flat(784))
        #expect(l.outputShape(input: .flat(784)) == .flat(10))
        #expect(l.shapeText == "784 -> 10")
        #expect(l.kindAttributesJSON.map(\.0) == ["inputs", "outputs"])
        #expect(TensorShape.flat(784).count == 784 && TensorShape.flat(784).description == "784")
    }

    @Test("a model's shapes chain from its first layer's input")
    func layerShapes() {
        let info = Fixtures.model(sizes: [6, 5, 4, 3]).info
        let shapes = info.layerShapes
        #expect(shapes.map(\.input) == [.flat(6), .flat(5), .flat(4)])
        #expect(shapes.map(\.output) == [.flat(5), .flat(4), .flat(3)])
    }

    @Test("dense rules: units out of range and too many weights, each located")
    func denseRuleProblems() {
        let rules = LayerKind.dense.rules
        func objects(_ inputs: Int, _ outputs: Int) -> [String] {
            let l = LayerInfo(name: "h", inputs: inputs, outputs: outputs, activation: .relu, keepProb: 1)
            return rules.problems(l, object: "/layers/3").map(\.object)
        }
        #expect(objects(6, 5).isEmpty)
        #expect(objects(0, 5) == ["/layers/3@inputs"])
        #expect(objects(6, Schema.maxUnits + 1) == ["/layers/3@outputs"])
        #expect(objects(Schema.maxUnits, Schema.maxUnits) == ["/layers/3"])  // 2^48 weights > 2^40
        let huge = LayerInfo(name: "h", inputs: 1 << 30, outputs: 4, activation: .relu, keepProb: 1)
        #expect(rules.sizeProblem(huge) != nil)
        #expect(rules.sizeProblem(LayerInfo(name: "h", inputs: 6, outputs: 5, activation: .relu, keepProb: 1)) == nil)
    }

    @Test("the reader refuses a layer whose own attributes are wrong, through its kind's rules")
    func readerUsesRules() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("m.h5")
        try writeTampered(path) { root in
            let layers = try root.group("layers")
            try layers.group("1").deleteAttribute("outputs")
            try layers.group("1").write("outputs", string: "four")  // not an integer
            try layers.group("2").deleteAttribute("inputs")
            try layers.group("2").write("inputs", int64: 0)  // out of range, and breaks the chain
        }
        let e = try #require(throws: DropModelError.self) { try BundleReader(path: path) }
        #expect(e.code == .invalid)
        let ps = e.problems
        // Layer 1's outputs cannot be read: the layer is not assembled, the problem is located.
        #expect(ps.contains { $0.object == "/layers/1@outputs" })
        // Layer 2: the dense rule on inputs, and the stored weight is not [outputs, inputs] any more.
        #expect(ps.contains { $0.object == "/layers/2@inputs" && $0.message.contains("1...") })
        #expect(
            ps.contains {
                $0.object == "/layers/2/weight" && $0.message.contains("outputs x inputs = [3, 0]")
                    && $0.hint == "weights are stored [outputs, inputs]: row u holds unit u's incoming weights"
            })
    }

    @Test("shapes that do not chain are named with both layers' shapes")
    func chain() {
        var info = Fixtures.model(sizes: [6, 5, 4, 3]).info
        info.layers[2].inputs = 7
        let ps = info.problems(file: "m.h5")
        #expect(
            ps.contains {
                $0.object == "/layers/2" && $0.message.contains("has 7 inputs but layer 1 ('hidden2') has 4 outputs")
            })
    }

    @Test("a bundle written and read through the kind's rules is the model, and streams rows of fan-in")
    func roundTrip() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("m.h5")
        let model = Fixtures.model(sizes: [9, 7, 3])
        try BundleWriter.write(model, to: path)
        let reader = try BundleReader(path: path)
        let read = try reader.readModel()
        #expect(read.info.layers == model.info.layers && read.parameters == model.parameters)
        var rows: [(Int, Int, Int)] = []
        try reader.streamWeightRows(0, maxBlockElements: 20) { first, n, block in rows.append((first, n, block.count)) }
        // Blocks of whole rows of 9 weights: 2 rows (18 elements) per block of at most 20.
        #expect(rows.map(\.0) == [0, 2, 4, 6] && rows.map(\.2) == [18, 18, 18, 9])
    }
}
