import DropModelBase
import BundleFormat
import Foundation
import HDF5Layer
import Testing
import TestSupport

@Suite("Bundle round trips")
struct RoundTripTests {
    @Test("weights bit for bit and all metadata", arguments: [WeightType.float32, .float16, .float64])
    func exactRoundTrip(_ dtype: WeightType) throws {
        let dir = TemporaryDirectory()
        let path = dir.file("m.h5")
        var model = Fixtures.model(sizes: [7, 5, 3, 2], dtype: dtype)
        // Include values that must survive exactly: signed zero, subnormal-ish tiny values, extremes.
        if dtype != .float16 {
            model.parameters[0].weight[0] = -0.0
            model.parameters[0].weight[1] = Float.leastNormalMagnitude
            model.parameters[0].weight[2] = 1e30
        }
        try BundleWriter.write(model, to: path)
        let reader = try BundleReader(path: path)
        var expected = model.info
        expected.creator = WriteOptions().creator
        #expect(reader.info == expected)
        let back = try reader.readModel()
        for (a, b) in zip(back.parameters, model.parameters) {
            #expect(a.weight.map(\.bitPattern) == b.weight.map(\.bitPattern))
            #expect(a.bias.map(\.bitPattern) == b.bias.map(\.bitPattern))
        }
        #expect(try reader.weightDataset(0).elementType() == .float(bytes: dtype.bytes))
    }

    @Test("optional sections may be absent")
    func minimal() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("m.h5")
        var model = Fixtures.model(convention: .inverted)
        model.info.rng = nil
        model.info.training = nil
        model.info.history = nil
        model.info.creator = nil
        var options = WriteOptions()
        options.creator = nil
        try BundleWriter.write(model, to: path, options: options)
        let info = try BundleReader(path: path).info
        #expect(info == model.info)
        #expect(info.convention == .inverted)
    }

    @Test("weights are chunked by whole rows with Fletcher32")
    func storage() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("m.h5")
        try BundleWriter.write(Fixtures.model(sizes: [300, 2000, 10]), to: path)
        let reader = try BundleReader(path: path)
        let s = try reader.weightDataset(0).storageInfo()
        #expect(s.layout == .chunked)
        #expect(s.filters == ["fletcher32"])
        let chunk = try #require(s.chunk)
        #expect(chunk[1] == 300)
        #expect(chunk[0] * 300 * 4 <= 1 << 20)
    }

    @Test("streaming rows reproduces the full matrix and the digest")
    func streaming() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("m.h5")
        let model = Fixtures.model(sizes: [33, 17, 5])
        try BundleWriter.write(model, to: path)
        let reader = try BundleReader(path: path)
        var rows: [Float] = []
        try reader.streamWeightRows(0, maxBlockElements: 100) { first, n, block in
            #expect(first * 33 == rows.count)
            #expect(block.count == n * 33)
            rows += block
        }
        #expect(rows == model.parameters[0].weight)
        #expect(try reader.weightsDigest() == WeightDigest.sha256(model.parameters))
    }

    @Test("the same model written twice gives the same bytes")
    func reproducible() throws {
        let dir = TemporaryDirectory()
        try BundleWriter.write(Fixtures.model(), to: dir.file("a.h5"))
        Thread.sleep(forTimeInterval: 1.1)
        try BundleWriter.write(Fixtures.model(), to: dir.file("b.h5"))
        #expect(FileManager.default.contentsEqual(atPath: dir.file("a.h5"), andPath: dir.file("b.h5")))
    }

    @Test("opening reads metadata only: corrupt weight data does not stop it")
    func metadataOnly() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("m.h5")
        let model = Fixtures.model(sizes: [64, 64, 4], withHistory: false)
        try BundleWriter.write(model, to: path)
        // Flip one byte inside the first weight chunk: find the weights' bytes in the file.
        var bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        let needle = model.parameters[0].weight[10..<14].withUnsafeBytes { Data($0) }
        let at = try #require(bytes.range(of: needle)).lowerBound
        bytes[at] ^= 0x40
        try bytes.write(to: URL(fileURLWithPath: path))
        let reader = try BundleReader(path: path)  // metadata still fine
        #expect(reader.info.layers.count == 2)
        // The Fletcher32 checksum turns the flipped byte into an error, not a wrong weight.
        #expect(throws: DropModelError.self) { try reader.parameters(0) }
    }
}

func problems(_ path: String) throws -> [Problem] {
    let e = try #require(throws: DropModelError.self) { try BundleReader(path: path) }
    return e.problems
}

@Suite("Validation rules")
struct ValidationTests {
    @Test("keep probability outside (0, 1] or NaN", arguments: [1.5, 0, -0.2, Double.nan, Double.infinity])
    func keepProb(_ p: Double) throws {
        let dir = TemporaryDirectory()
        let path = dir.file("m.h5")
        try writeTampered(path) { root in try root.group("layers").group("1").write("keep_prob", double: p) }
        let ps = try problems(path)
        #expect(ps.count == 1)
        #expect(ps[0].object == "/layers/1@keep_prob")
        #expect(ps[0].file == path)
        #expect(ps[0].message.contains("outside (0, 1]"))
    }

    @Test("keep probability 1 (no dropout) is valid")
    func keepOne() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("m.h5")
        try BundleWriter.write(Fixtures.model(keep: [1, 1, 1]), to: path)
        #expect(try BundleReader(path: path).info.layers.map(\.keepProb) == [1, 1, 1])
    }

    @Test("shapes that do not chain")
    func chain() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("m.h5")
        var info = Fixtures.model().info
        info.layers[1].inputs = 4  // layer 0 has 5 outputs
        try writeTampered(path, info: info) { _ in }
        let ps = try problems(path)
        #expect(ps.contains { $0.object == "/layers/1" && $0.message.contains("do not chain") })
    }

    @Test("a weight matrix whose shape is not [outputs, inputs]")
    func weightShape() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("m.h5")
        try writeTampered(path) { root in
            let g = try root.group("layers").group("0")
            try g.write("outputs", int64: 4)
        }
        let ps = try problems(path)
        #expect(ps.contains { $0.object == "/layers/0/weight" && $0.message.contains("[4, 6]") })
    }

    @Test(
        "missing required attributes are each reported",
        arguments: [
            ("/", "convention"), ("/", "baked"), ("/layers/0", "keep_prob"), ("/layers/1", "activation"),
            ("/layers/2", "name"), ("/layers", "count"),
        ])
    func missing(_ object: String, _ attribute: String) throws {
        let dir = TemporaryDirectory()
        let path = dir.file("m.h5")
        try writeTampered(path) { root in
            var g: Group = root
            for part in object.split(separator: "/") { g = try g.group(String(part)) }
            try g.deleteAttribute(attribute)
        }
        let ps = try problems(path)
        let at = object == "/" ? "/@\(attribute)" : "\(object)@\(attribute)"
        #expect(ps.contains { $0.object == at && $0.message.contains("missing") })
    }

    @Test("every problem is listed, not only the first")
    func allProblems() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("m.h5")
        try writeTampered(path) { root in
            try root.write("convention", string: "sideways")
            try root.group("layers").group("0").write("keep_prob", double: 2)
            try root.group("layers").group("2").write("activation", string: "swish")
        }
        let objects = Set(try problems(path).map(\.object))
        #expect(objects == ["/@convention", "/layers/0@keep_prob", "/layers/2@activation"])
    }

    @Test("unknown and newer versions")
    func versions() throws {
        let dir = TemporaryDirectory()
        let newer = dir.file("newer-major.h5")
        try writeTampered(newer) { root in try root.write("format_version", int64: [2, 0], shape: [2]) }
        let e = try #require(throws: DropModelError.self) { try BundleReader(path: newer) }
        #expect(e.code == .unsupportedVersion)
        #expect(e.problems[0].object == "/@format_version")
        #expect(e.problems[0].hint?.contains("upgrade") == true)

        let minor = dir.file("newer-minor.h5")
        try writeTampered(minor) { root in
            try root.write("format_version", int64: [1, 3], shape: [2])
            try root.write("some_future_field", string: "ignored")
        }
        let info = try BundleReader(path: minor).info
        #expect(info.formatVersion == FormatVersion(1, 3))
    }

    @Test("not a bundle: an HDF5 file without the marker")
    func notABundle() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("plain.h5")
        try File.writeAtomically(to: path) { f in try f.root().write("x", int64: 1) }
        let ps = try problems(path)
        #expect(ps[0].message.contains("not a dropmodel bundle"))
    }

    @Test("baked with the inverted convention, duplicate names, unknown kind")
    func otherRules() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("m.h5")
        try writeTampered(path) { root in
            try root.write("convention", string: "inverted")
            try root.write("baked", uint8: 1)
            try root.group("layers").group("1").write("name", string: "hidden1")
            try root.group("layers").group("2").write("kind", string: "lstm")
        }
        let ps = try problems(path)
        #expect(ps.contains { $0.object == "/@baked" })
        #expect(ps.contains { $0.object == "/layers/1@name" && $0.message.contains("also used") })
        #expect(ps.contains { $0.object == "/layers/2@kind" && $0.message.contains("lstm") })
    }

    @Test("the writer refuses invalid models and leaves nothing behind")
    func writerValidates() throws {
        let dir = TemporaryDirectory()
        var model = Fixtures.model()
        model.info.layers[0].keepProb = 0
        model.parameters[1].bias.removeLast()
        let e = try #require(throws: DropModelError.self) { try BundleWriter.write(model, to: dir.file("m.h5")) }
        #expect(e.problems.count == 2)
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path).isEmpty)
    }

    @Test("a truncated bundle is an error, at every cut")
    func truncated() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("m.h5")
        try BundleWriter.write(Fixtures.model(sizes: [40, 30, 10]), to: path)
        let bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        let cut = dir.file("cut.h5")
        for fraction in [0.02, 0.1, 0.3, 0.5, 0.7, 0.9, 0.99] {
            try bytes.prefix(Int(Double(bytes.count) * fraction)).write(to: URL(fileURLWithPath: cut))
            // Either opening fails, or (if all metadata survived) reading the weights does.
            let failed: Bool
            do {
                let r = try BundleReader(path: cut)
                _ = try r.readModel()
                failed = false
            } catch is DropModelError {
                failed = true
            }
            #expect(failed, "cut at \(fraction)")
        }
    }
}

@Suite("bake: direct chunk path")
struct BakeDirectTests {
    /// 3000 inputs: 87 rows of 12 KB per 1 MiB chunk, so 200 outputs make 3 chunks, the last
    /// one partial (its padding must be written as libhdf5 pads it).
    static let model = Fixtures.model(sizes: [3000, 200, 10], keep: [0.8, 0.5])

    @Test("the direct chunk path writes the same bytes as the filter path, edge chunks included")
    func sameBytes() throws {
        let dir = TemporaryDirectory()
        let input = dir.file("in.h5"), direct = dir.file("direct.h5"), filtered = dir.file("filtered.h5")
        try BundleWriter.write(Self.model, to: input)
        #expect(try BundleReader(path: input).weightDataset(0).float32RowChunks() == 87)
        #expect(try Bake.run(input: input, output: direct, dtype: nil, direct: true).outcome == .baked)
        #expect(try Bake.run(input: input, output: filtered, dtype: nil, direct: false).outcome == .baked)
        let a = try Data(contentsOf: URL(fileURLWithPath: direct))
        let b = try Data(contentsOf: URL(fileURLWithPath: filtered))
        #expect(a == b, "the two bake paths wrote different files (\(a.count) and \(b.count) bytes)")
        let baked = try BundleReader(path: direct).readModel()
        for (l, layer) in Self.model.info.layers.enumerated() {
            let p = Float(layer.keepProb)
            #expect(
                baked.parameters[l].weight.map(\.bitPattern)
                    == Self.model.parameters[l].weight.map { (p * $0).bitPattern })
        }
    }

    @Test("the digest fed by the direct path: more chunks than its ring, a larger chunk later, same digest and bytes")
    func fedDigest() throws {
        let dir = TemporaryDirectory()
        let input = dir.file("in.h5"), direct = dir.file("direct.h5"), filtered = dir.file("filtered.h5")
        // Layer 0: 13 chunks of 87 rows of 3000 (1,044,000 bytes), more than the ring's buffers;
        // layer 1: 5 chunks of 238 rows of 1100 (1,047,200 bytes), larger, so the ring is freed
        // and grown between the layers.
        let model = Fixtures.model(sizes: [3000, 1100, 1000, 10], keep: [0.8, 0.5, 0.5])
        try BundleWriter.write(model, to: input)
        let reader = try BundleReader(path: input)
        #expect(try reader.weightDataset(0).float32RowChunks() == 87)
        #expect(try reader.weightDataset(1).float32RowChunks() == 238)
        #expect(13 > Bake.InputDigest.ring)
        let expected = WeightDigest.sha256(model.parameters)
        for (output, path) in [(direct, true), (filtered, false)] {
            let report = try Bake.run(input: input, output: output, dtype: nil, direct: path)
            #expect(report.unbakedWeightsSHA256 == expected, "direct: \(path)")
        }
        #expect(try Data(contentsOf: URL(fileURLWithPath: direct)) == Data(contentsOf: URL(fileURLWithPath: filtered)))
    }

    @Test("the fed digest across layers of equal chunks: the ring is taken in the order it is given back")
    func fedDigestAcrossLayers() throws {
        let dir = TemporaryDirectory()
        let input = dir.file("in.h5")
        // Six layers of one 1 MiB chunk each (512 rows of 512), the same size, so the ring is not
        // freed between layers: a layer's chunk must not land in a buffer the digest still holds
        // from the layer before. The digest is made to lag reading, as on a loaded machine.
        let model = Fixtures.model(sizes: [Int](repeating: 512, count: 7), keep: [Double](repeating: 0.5, count: 6))
        try BundleWriter.write(model, to: input)
        #expect(try BundleReader(path: input).weightDataset(1).float32RowChunks() == 512)
        let expected = WeightDigest.sha256(model.parameters)
        Bake.InputDigest.lagForTesting = 0.02
        defer { Bake.InputDigest.lagForTesting = 0 }
        for attempt in 0..<2 {
            let output = dir.file("out-\(attempt).h5")
            let report = try Bake.run(input: input, output: output, dtype: nil, direct: true)
            #expect(report.unbakedWeightsSHA256 == expected, "bake \(attempt)")
        }
    }

    @Test("a flipped weight byte: the direct path declines and the filter path reports the checksum; nothing written")
    func corruptChunk() throws {
        let dir = TemporaryDirectory()
        let input = dir.file("in.h5"), output = dir.file("out.h5")
        try BundleWriter.write(Self.model, to: input)
        // Find the first weight's bytes in the file and flip one bit.
        var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: input)))
        let needle = withUnsafeBytes(of: Self.model.parameters[0].weight[1000].bitPattern.littleEndian) { Array($0) }
        let at = (0...(bytes.count - 4)).first { bytes[$0..<($0 + 4)].elementsEqual(needle) }
        #expect(at != nil)
        if let at { bytes[at] ^= 0x10 }
        try Data(bytes).write(to: URL(fileURLWithPath: input))
        #expect(throws: DropModelError.self) { try Bake.run(input: input, output: output) }
        #expect(!FileManager.default.fileExists(atPath: output))
    }

    /// `input` with one bit of weight `index` of layer `layer` flipped (its chunk no longer checks).
    private func corrupt(_ input: String, layer: Int, index: Int) throws {
        var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: input)))
        let value = Self.model.parameters[layer].weight[index].bitPattern.littleEndian
        let needle = withUnsafeBytes(of: value) { Array($0) }
        let at = try #require((0...(bytes.count - 4)).first { bytes[$0..<($0 + 4)].elementsEqual(needle) })
        bytes[at] ^= 0x10
        try Data(bytes).write(to: URL(fileURLWithPath: input))
    }

    @Test("the provenance digest, hashed on its own thread, is the unbaked weights' on every path")
    func provenanceDigest() throws {
        let dir = TemporaryDirectory()
        let input = dir.file("in.h5"), wide = dir.file("wide.h5")
        try BundleWriter.write(Self.model, to: input)
        // float64 weights: the digest's reads go through libhdf5's filters, not the stored chunks.
        try BundleWriter.write(Fixtures.model(sizes: [300, 20, 10], keep: [0.8, 0.5], dtype: .float64), to: wide)
        let expected = WeightDigest.sha256(Self.model.parameters)
        #expect(try BundleReader(path: input).weightsDigest() == expected)
        let cases: [(String, String, WeightType?, Bool)] = [
            (input, "direct.h5", nil, true), (input, "filtered.h5", nil, false), (input, "half.h5", .float16, true),
            (wide, "wide-direct.h5", nil, true), (wide, "wide-half.h5", .float16, false),
        ]
        for (source, name, dtype, direct) in cases {
            let output = dir.file(name)
            let unbaked = try BundleReader(path: source).weightsDigest()
            let report = try Bake.run(input: source, output: output, dtype: dtype, direct: direct)
            #expect(report.unbakedWeightsSHA256 == unbaked, "\(name)")
            #expect(try BundleReader(path: output).info.unbakedWeightsSHA256 == unbaked, "\(name): stored")
        }
    }

    @Test("an error on the hashing side is reported by the bake, and the digest thread ends with it")
    func digestError() throws {
        let dir = TemporaryDirectory()
        let input = dir.file("in.h5"), output = dir.file("out.h5")
        try BundleWriter.write(Self.model, to: input)
        // The valid input: the digest thread's result, and a digest finished early returns.
        let reader = try BundleReader(path: input)
        #expect(try Bake.InputDigest(reader).wait() == WeightDigest.sha256(Self.model.parameters))
        let early = Bake.InputDigest(reader)
        early.finish()
        #expect((try? early.wait()) == nil || (try? early.wait()) == WeightDigest.sha256(Self.model.parameters))
        // The last layer's weights no longer check: the hashing side meets the checksum error
        // (after falling back from the stored chunks to libhdf5's filters) and rethrows it.
        try corrupt(input, layer: 1, index: 100)
        let digest = Bake.InputDigest(try BundleReader(path: input))
        let error = try #require(throws: (any Error).self) { try digest.wait() }
        #expect(!(error is Bake.InputDigest.Cancelled))
        #expect("\(error)".contains("layers/1"), "names the layer: \(error)")
        #expect(throws: DropModelError.self) { try Bake.run(input: input, output: output) }
        #expect(!FileManager.default.fileExists(atPath: output))
    }
}
