import DropModelBase
import Testing
import Training

@Suite("--layers grammar")
struct LayerGrammarTests {
    @Test("the issue's CNN: shapes chain through convolution, pooling and an implied flatten")
    func issueNetwork() throws {
        let n = try LayerGrammar.parse("28x28x1,conv3x3x16,maxpool2,conv3x3x32,maxpool2,128,10")
        #expect(n.input == .image(height: 28, width: 28, channels: 1))
        #expect(
            n.layers.map(\.output) == [
                .image(height: 26, width: 26, channels: 16), .image(height: 13, width: 13, channels: 16),
                .image(height: 11, width: 11, channels: 32), .image(height: 5, width: 5, channels: 32),
                .flat(800), .flat(128), .flat(10),
            ])
        #expect(n.layers[4].item == .flatten)
        #expect(n.weightedCount == 4)
        #expect(!n.isDenseOnly)
    }

    @Test("dense widths mean what they always meant")
    func dense() throws {
        let n = try LayerGrammar.parse("784,1024, 1024,10")
        #expect(n.input == .flat(784))
        #expect(n.layers.map(\.item) == [.dense(units: 1024), .dense(units: 1024), .dense(units: 10)])
        #expect(n.isDenseOnly && n.weightedCount == 3)
    }

    @Test("strides, same padding (TensorFlow's rule), rectangular windows, gap")
    func options() throws {
        let n = try LayerGrammar.parse("32x30x3,conv5x5x8/s2/same,maxpool3/s2/same,avgpool2x1,gap,10")
        #expect(
            n.layers[0].item
                == .conv2d(
                    kernelHeight: 5, kernelWidth: 5, filters: 8, strideHeight: 2, strideWidth: 2, padding: .same))
        #expect(n.layers[0].output == .image(height: 16, width: 15, channels: 8))  // ceil(32/2), ceil(30/2)
        #expect(n.layers[1].output == .image(height: 8, width: 8, channels: 8))
        #expect(n.layers[2].output == .image(height: 4, width: 8, channels: 8))
        #expect(n.layers[3].output == .flat(8))
        #expect(n.layers[4].output == .flat(10))
    }

    @Test(
        "bad networks are usage errors naming the item",
        arguments: [
            ("", "needs an input"), ("784", "needs an input"), ("784,conv3x3x8,10", "needs an image input"),
            ("28x28x1,conv3x3x8", "ends with an image"), ("28x28x1,maxpool2,gap", "no layer with weights"),
            ("28x28x1,conv3x3,10", "3 sizes"), ("28x28x1,conv0x3x8,10", "not in 1..."),
            ("28x28x1,conv30x30x8,10", "on a 28x28x1 input"), ("28x28x1,conv3x3x8/s2/s2,10", "stride is given twice"),
            ("28x28x1,conv3x3x8/tiny,10", "unknown option"), ("28x28x1,pool2,10", "not a layer"),
            ("28x28,10", "1 or 3 sizes"), ("784,-5,10", "not a layer"), ("784,1e3,10", "not a whole number"),
            ("784,99999999999,10", "not a whole number"), ("784,,10", "an empty item"),
            ("4096x4096x4096,10", "more than"), ("28x28x1,conv5000x1x1,10", "larger than 4096"),
            // What the bundle format refuses (issue 17, the layers fuzz target's cross-check):
            // more than 2^24 flat features, more than 2^40 parameters in a layer or in all.
            ("28x28x1,conv3x3x65536,flatten,10", "item 3 'flatten': a 26x26x65536 image flattens to"),
            ("28x28x1,conv3x3x65536,10", "item 3 '10': a 26x26x65536 image flattens to"),
            ("16777216,16777216,10", "more than the 1099511627776 a model may have"),
            ("1048576,1048575,1048575", "the network has more than the 1099511627776"),
            ("78,flatten,128,10", "item 2 'flatten': needs an image input"),
        ])
    func refused(_ text: String, _ needle: String) {
        let e = #expect(throws: DropModelError.self) { try LayerGrammar.parse(text) }
        #expect(e?.code == .usage)
        #expect(e?.description.contains(needle) == true, "\(text): \(e?.description ?? "")")
    }
}
