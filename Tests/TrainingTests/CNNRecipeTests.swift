import BundleFormat
import DropModelBase
import DropoutRandom
import Foundation
import Testing
import TestSupport
import Training

/// Convolutional recipes (issue 12): the --layers grammar in a recipe, its JSON, the layers and
/// initial weights it gives, init and masks on its bundle.
@Suite("CNN recipes")
struct CNNRecipeTests {
    static let spec = "28x28x1,conv3x3x16,maxpool2,conv3x3x32/same,maxpool2,128,10"

    static func recipe(modes: [DropoutMode] = []) throws -> Recipe {
        Recipe(network: try LayerGrammar.parse(spec), keep: [0.9, 0.75, 0.5, 0.5], dropoutModes: modes)
    }

    @Test("the canonical text parses back to the same network")
    func canonicalText() throws {
        for text in [
            Self.spec, "32x32x3,conv5x5x8/s2/same,avgpool3/s2/same,gap,10",
            "10x12x2,conv3x1x4/s1x2,maxpool2x3,flatten,7",
            "784,1024,10",
        ] {
            let n = try LayerGrammar.parse(text)
            #expect(try LayerGrammar.parse(n.text) == n, "\(text) -> \(n.text)")
        }
        #expect(
            try LayerGrammar.parse(Self.spec).text
                == "28x28x1,conv3x3x16,maxpool2,conv3x3x32/same,maxpool2,flatten,128,10")
    }

    @Test("recipe JSON: a CNN stores its --layers text and modes; a dense recipe's bytes are unchanged")
    func json() throws {
        let r = try Self.recipe(modes: [.element, .channel, .channel, .gaussian])
        let back = try Recipe.decode(json: r.json())
        #expect(back == r)
        #expect(r.json().contains(#""layers":"28x28x1,conv3x3x16,maxpool2,conv3x3x32/same,maxpool2,flatten,128,10""#))
        #expect(r.json().contains(#""dropout_modes":["element","channel","channel","gaussian"]"#))
        // A dense network through the grammar is the same recipe, the same bytes, as widths.
        let dense = Recipe(network: try LayerGrammar.parse("784,1024,1024,10"), keep: [0.8, 0.5, 0.5])
        #expect(dense == Recipe(layers: [784, 1024, 1024, 10], keep: [0.8, 0.5, 0.5]))
        #expect(dense.json().contains(#""layers":[784,1024,1024,10]"#))
        #expect(!dense.json().contains("dropout_modes"))
    }

    @Test("layers: kinds, names, shapes, keep and modes on the weighted layers only")
    func layers() throws {
        let infos = try Self.recipe(modes: [.element, .channel, .channel, .gaussian]).layerInfos
        #expect(infos.map(\.kind) == [.conv2d, .maxPool2d, .conv2d, .maxPool2d, .flatten, .dense, .dense])
        #expect(infos.map(\.name) == ["conv1", "maxpool1", "conv2", "maxpool2", "flatten1", "dense1", "output"])
        #expect(infos.map(\.keepProb) == [0.9, 1, 0.75, 1, 1, 0.5, 0.5])
        #expect(infos.map(\.dropoutMode) == [.element, .element, .channel, .element, .element, .channel, .gaussian])
        let info = ModelInfo(convention: .classic, layers: infos)
        #expect(info.problems(file: "").isEmpty)
        #expect(info.layerShapes.last?.output == .flat(10))
        #expect(infos[5].inputs == 6 * 6 * 32)
    }

    @Test("recipe rules: keep and mode counts, channel dropout needs channels")
    func rules() throws {
        var r = try Self.recipe()
        r.keep = [0.9, 0.5]
        #expect(r.problems().contains { $0.contains("one keep probability per weighted layer (4)") })
        r = try Self.recipe(modes: [.element, .channel])
        #expect(r.problems().contains { $0.contains("one mode per weighted layer") })
        r = try Self.recipe(modes: [.element, .element, .element, .channel])
        #expect(r.problems().contains { $0.contains("channel dropout needs an image input") })
    }

    @Test("initial weights: rows of fan-in with Glorot's conv fans; init writes exactly them")
    func initialWeights() throws {
        let r = try Self.recipe()
        let p = r.initialParameters(seed: 5)
        #expect(p.map(\.weight.count) == [16 * 9, 0, 32 * 9 * 16, 0, 0, 128 * 1152, 10 * 128])
        let limit = RandomStreams.glorotUniformLimit(fanIn: 9 * 16, fanOut: 9 * 32)
        #expect(p[2].weight.allSatisfy { abs($0) <= limit } && p[2].weight.contains { abs($0) > limit * 0.9 })
        // The dense layers draw as a dense recipe always has (same layer index, same rows).
        let streams = RandomStreams(seed: 5)
        var row = [Float](repeating: 0, count: 10 * 128)
        row.withUnsafeMutableBufferPointer {
            streams.uniformInit(
                layer: 6, outputs: 10, inputs: 128, limit: RandomStreams.glorotUniformLimit(fanIn: 128, fanOut: 10),
                into: $0)
        }
        #expect(p[6].weight == row)

        let dir = TemporaryDirectory()
        let path = dir.file("cnn-init.h5")
        let report = try InitialBundle.write(recipe: r, seed: 5, to: path)
        #expect(report.weightsSHA256 == WeightDigest.sha256(p))
        let bundle = try BundleReader(path: path)
        #expect(bundle.info.formatVersion == FormatVersion(1, 1))
        #expect(try bundle.readModel().parameters == p)
        #expect(try Recipe.decode(json: bundle.info.training!.recipe) == r)
    }

    @Test("masks of a conv layer: an image mask, per channel; weightless layers are refused")
    func masks() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("cnn-init.h5")
        _ = try InitialBundle.write(recipe: try Self.recipe(), seed: 5, to: path)
        let m = try MaskQuery.run(
            MaskQuery.Request(file: path, epoch: 1, step: 0, layer: 2, example: 1, png: dir.file("m.png")))
        #expect(m.shape == .image(height: 13, width: 13, channels: 16))
        #expect(m.units == 13 * 13 * 16 && m.examples[0].multipliers.count == m.units)
        let kept = Double(m.examples[0].multipliers.filter { $0 != 0 }.count) / Double(m.units)
        #expect(abs(kept - 0.75) < 0.05)
        let png = [UInt8](FileManager.default.contents(atPath: dir.file("m.png")) ?? Data())
        #expect(png.count > 8)
        let bad = #expect(throws: DropModelError.self) {
            try MaskQuery.run(MaskQuery.Request(file: path, epoch: 1, step: 0, layer: 1))
        }
        #expect(bad?.code == .usage && bad?.problems[0].message.contains("0, 2, 5, 6") == true)
    }
}
