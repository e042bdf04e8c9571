import BundleFormat
import DropModelBase
import Foundation
import HDF5Layer
import Testing
import TestSupport

@Suite("Format 1.1: convolutional layers and dropout modes")
struct ConvFormatTests {
    @Test("a CNN bundle round-trips: kinds, shapes, windows, modes, weights; written as 1.1")
    func roundTrip() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("cnn.h5")
        let model = Fixtures.cnnModel()
        #expect(model.info.requiredFormatVersion == FormatVersion(1, 1))
        try BundleWriter.write(model, to: path)
        let reader = try BundleReader(path: path)
        var expected = model.info
        expected.creator = WriteOptions().creator
        #expect(reader.info == expected)
        #expect(reader.info.formatVersion == FormatVersion(1, 1))
        #expect(reader.info.inputShape == .image(height: 6, width: 6, channels: 2))
        let shapes = reader.info.layerShapes.map(\.output)
        #expect(
            shapes == [
                .image(height: 6, width: 6, channels: 3), .image(height: 3, width: 3, channels: 3),
                .image(height: 2, width: 2, channels: 4), .flat(16), .flat(5), .flat(3),
            ])
        #expect(reader.info.layers[0].parameterShapes?.weight == [3, 3, 3, 2])
        let back = try reader.readModel()
        #expect(back.parameters == model.parameters)
        #expect(try reader.weightsDigest() == WeightDigest.sha256(model.parameters))
        // Weightless layers have no datasets; the root records the input shape.
        let file = try File.open(path)
        #expect(try file.root().readInt64s("input_shape") == [6, 6, 2])
        #expect(try file.root().group("layers").group("1").contains("weight") == false)
        #expect(try file.root().group("layers").group("2").readString("dropout_mode") == "channel")
    }

    @Test("a dense model with element dropout is still written as format 1.0, without 1.1 attributes")
    func denseStays10() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("mlp.h5")
        try BundleWriter.write(Fixtures.model(), to: path)
        let root = try File.open(path).root()
        #expect(try root.readInt64s("format_version") == [1, 0])
        #expect(try root.hasAttribute("input_shape") == false)
        #expect(try root.group("layers").group("0").hasAttribute("dropout_mode") == false)
        // A dense model with gaussian dropout needs 1.1.
        var g = Fixtures.model()
        g.info.layers[1].dropoutMode = .gaussian
        #expect(g.info.requiredFormatVersion == FormatVersion(1, 1))
    }

    @Test("1.1 rules: each broken rule is located")
    func rules() throws {
        let dir = TemporaryDirectory()
        func problemsOf(_ change: (inout Model) -> Void) throws -> [Problem] {
            var m = Fixtures.cnnModel()
            change(&m)
            let e = #expect(throws: DropModelError.self) { try BundleWriter.write(m, to: dir.file("x.h5")) }
            return e?.problems ?? []
        }
        // Dropout recorded on a weightless layer.
        #expect(try problemsOf { $0.info.layers[1].keepProb = 0.5 }.contains { $0.object == "/layers/1@keep_prob" })
        // Channel dropout on a flat input that is not a flatten's output.
        #expect(
            try problemsOf { $0.info.layers[5].dropoutMode = .channel }.contains {
                $0.object == "/layers/5@dropout_mode"
            })
        // Shapes that do not chain through the pool.
        #expect(
            try problemsOf { $0.info.layers[2].inputShape = .image(height: 4, width: 3, channels: 3) }.contains {
                $0.object == "/layers/2" && $0.message.contains("do not chain")
            })
        // A valid window larger than its input.
        #expect(
            try problemsOf { $0.info.layers[2].window = Window(height: 5, width: 5) }.contains {
                $0.object == "/layers/2"
            })
        // A stride of 0.
        #expect(
            try problemsOf { $0.info.layers[1].window?.strideWidth = 0 }.contains { $0.object == "/layers/1@strides" })
    }

    @Test("a reader refuses a 1.0 file holding a 1.1 kind, a bad input_shape and datasets on a pool")
    func readerRules() throws {
        let dir = TemporaryDirectory()
        let a = dir.file("a.h5")
        try writeTampered(a, model: Fixtures.cnnModel()) { root in
            try root.write("format_version", int64: [1, 0], shape: [2])
        }
        let pa = try problems(a)
        #expect(pa.contains { $0.object == "/layers/0@kind" && $0.message.contains("1.1") })

        let c = dir.file("c.h5")
        try writeTampered(c, model: Fixtures.cnnModel()) { root in
            try root.write("input_shape", int64: [6, 6, 3], shape: [3])
        }
        #expect(try problems(c).contains { $0.object == "/@input_shape" })

        let b = dir.file("b.h5")
        try writeTampered(b, model: Fixtures.cnnModel()) { root in
            try root.group("layers").group("1").createDataset("weight", type: .float32, shape: [1]).write(floats: [0])
            try root.group("layers").group("0").write("padding", string: "full")
        }
        let pb = try problems(b)
        #expect(pb.contains { $0.object == "/layers/1/weight" })
        #expect(pb.contains { $0.object == "/layers/0@padding" })
    }

    @Test("sizes are bounded before anything is allocated")
    func bounds() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("huge.h5")
        try writeTampered(path, model: Fixtures.cnnModel()) { root in
            try root.group("layers").group("0").write("input_shape", int64: [1 << 40, 1 << 40, 2], shape: [3])
        }
        let ps = try problems(path)
        #expect(ps.contains { $0.object == "/layers/0" && $0.message.contains("beyond") })
    }

    @Test("bake scales element and channel layers by p, gaussian and weightless layers by nothing")
    func bake() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("cnn.h5")
        let model = Fixtures.cnnModel()
        try BundleWriter.write(model, to: path)
        let out = dir.file("baked.h5")
        let report = try Bake.run(input: path, output: out)
        #expect(report.scales == [0.9, 1, 0.75, 1, 1, 0.5])
        let baked = try BundleReader(path: out).readModel()
        for (l, layer) in model.info.layers.enumerated() {
            let p = Float(layer.bakeScale)
            #expect(baked.parameters[l].weight == model.parameters[l].weight.map { p * $0 })
            #expect(baked.parameters[l].bias == model.parameters[l].bias)
        }
        #expect(try BundleReader(path: out).info.baked)
        let twice = #expect(throws: DropModelError.self) { try Bake.run(input: out, output: dir.file("again.h5")) }
        #expect(twice?.code == .notApplicable)
    }
}
