import BundleFormat
import DropModelBase
import Foundation
import HDF5Layer
import Interop
import Testing
import TestSupport

/// A minimal protobuf reader for the test: (field, wire type, payload) of one message level.
func protobufFields(_ bytes: [UInt8]) -> [(field: Int, value: [UInt8], int: UInt64)] {
    var out: [(Int, [UInt8], UInt64)] = []
    var i = 0
    func varint() -> UInt64 {
        var v: UInt64 = 0, shift: UInt64 = 0
        while i < bytes.count {
            let b = bytes[i]; i += 1
            v |= UInt64(b & 0x7F) << shift
            if b < 0x80 { break }
            shift += 7
        }
        return v
    }
    while i < bytes.count {
        let key = varint()
        switch key & 7 {
        case 0: out.append((Int(key >> 3), [], varint()))
        case 2:
            let n = Int(varint())
            out.append((Int(key >> 3), Array(bytes[i..<(i + n)]), 0))
            i += n
        default: return out
        }
    }
    return out
}

@Suite("export", .tags(.slow))
struct ExportTests {
    @Test("an unbaked classic bundle is refused with the command that fixes it; baked and inverted ones export")
    func deployable() throws {
        let dir = TemporaryDirectory()
        let classic = dir.file("classic.h5")
        try BundleWriter.write(Fixtures.model(convention: .classic), to: classic)
        expectRefusal(.notApplicable, ["/@baked", "not baked", "dropmodel bake \(classic) -o baked.h5"]) {
            _ = try Export.deployableModel(BundleReader(path: classic))
        }
        let baked = dir.file("baked.h5")
        #expect(try Bake.run(input: classic, output: baked).outcome == .baked)
        #expect(try Export.deployableModel(BundleReader(path: baked)).info.baked)
        let inverted = dir.file("inverted.h5")
        try BundleWriter.write(Fixtures.model(convention: .inverted), to: inverted)
        #expect(
            try Export.deployableModel(BundleReader(path: inverted)).parameters
                == Fixtures.model(convention: .inverted).parameters)
    }

    @Test(
        "ONNX: IR 7, opset 13, one Gemm (transB = 1) and one activation per layer, weights as raw float32 initializers")
    func onnx() throws {
        let model = Fixtures.model(sizes: [6, 5, 4, 3], convention: .inverted)
        let top = protobufFields(Array(ONNXExport.encode(model)))
        #expect(top.first { $0.field == 1 }?.int == 7)
        let opset = try #require(top.first { $0.field == 8 })
        #expect(protobufFields(opset.value).first { $0.field == 2 }?.int == 13)
        let graph = protobufFields(try #require(top.first { $0.field == 7 }).value)
        let nodes = graph.filter { $0.field == 1 }.map { protobufFields($0.value) }
        let ops = nodes.map { n in String(decoding: n.first { $0.field == 4 }!.value, as: UTF8.self) }
        #expect(ops == ["Gemm", "Relu", "Gemm", "Relu", "Gemm", "Softmax"])
        let firstGemm = nodes[0]
        #expect(
            firstGemm.filter { $0.field == 1 }.map { String(decoding: $0.value, as: UTF8.self) } == [
                "input", "layers.0.weight", "layers.0.bias",
            ])
        let attr = protobufFields(try #require(firstGemm.first { $0.field == 5 }).value)
        #expect(String(decoding: attr.first { $0.field == 1 }!.value, as: UTF8.self) == "transB")
        #expect(attr.first { $0.field == 3 }?.int == 1)
        let initializers = graph.filter { $0.field == 5 }.map { protobufFields($0.value) }
        #expect(initializers.count == 6)
        let w0 = initializers[0]
        #expect(w0.filter { $0.field == 1 }.map(\.int) == [5, 6])
        let raw = try #require(w0.first { $0.field == 9 }).value
        let floats = stride(from: 0, to: raw.count, by: 4).map { i in
            Float(
                bitPattern: UInt32(raw[i]) | UInt32(raw[i + 1]) << 8 | UInt32(raw[i + 2]) << 16 | UInt32(raw[i + 3])
                    << 24)
        }
        #expect(floats == model.parameters[0].weight)
        let props = top.filter { $0.field == 14 }.map {
            protobufFields($0.value).map { String(decoding: $0.value, as: UTF8.self) }
        }
        #expect(props.contains(["dropmodel.keep_prob", "[0.8,0.5,0.5]"]))
        #expect(props.contains(["dropmodel.convention", "inverted"]))
        #expect(ONNXExport.encode(model) == ONNXExport.encode(model), "the same model gives the same bytes")
    }

    @Test("npy headers are 64-byte aligned; the npz is a stored ZIP with one member per array")
    func numpy() throws {
        let npy = NumPy.npy(.float32([1, 2, 3, 4, 5, 6], shape: [2, 3]))
        let headerLength = Int(npy[8]) | Int(npy[9]) << 8
        #expect((10 + headerLength) % 64 == 0)
        let header = String(decoding: npy[10..<(10 + headerLength)], as: UTF8.self)
        #expect(header.hasPrefix("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }"))
        #expect(header.hasSuffix("\n"))
        #expect(npy.count == 10 + headerLength + 24)
        #expect(
            String(decoding: NumPy.npy(.strings(["ab", "c"], shape: [2]))[10..<60], as: UTF8.self).contains("'<U2'"))

        let model = Fixtures.model(convention: .inverted)
        let zip = [UInt8](try NumPy.npz(Export.npzMembers(model)))
        #expect(zip.starts(with: [0x50, 0x4B, 0x03, 0x04]))
        let end = zip.count - 22
        #expect(Array(zip[end..<(end + 4)]) == [0x50, 0x4B, 0x05, 0x06])
        let entries = Int(zip[end + 10]) | Int(zip[end + 11]) << 8
        #expect(entries == 3 * 2 + 6)
    }

    @Test("Keras export reads back through the Keras importer: same weights, keep probabilities, activations")
    func kerasRoundTrip() throws {
        let dir = TemporaryDirectory()
        var model = Fixtures.model(sizes: [6, 5, 4, 3], keep: [0.8, 1, 0.5], convention: .inverted)
        model.info.layers[1].activation = .tanh
        model.info.layers[0].name = "has space/and slash"
        let path = dir.file("k.h5")
        try KerasExport.write(model, to: path)
        let back = try KerasImport.read(path: path)
        #expect(back.parameters == model.parameters)
        #expect(back.info.layers.map(\.keepProb) == [0.8, 1, 0.5])
        #expect(back.info.layers.map(\.activation) == [.relu, .tanh, .softmax])
        #expect(back.info.layers.map(\.name) == ["dense_0", "hidden2", "output"])
        let root = try File.open(path).root()
        #expect(try root.readString("dropmodel.convention") == "inverted")
    }
}

@Suite("import, export and predict commands", .tags(.slow))
struct InteropCommandTests {
    @Test("export of an unbaked classic bundle: exit 2, the reason and the fix, nothing written, input unchanged")
    func refuseUnbaked() throws {
        let dir = TemporaryDirectory()
        let input = dir.file("classic.h5"), out = dir.file("m.onnx")
        try BundleWriter.write(Fixtures.model(convention: .classic), to: input)
        let before = try Data(contentsOf: URL(fileURLWithPath: input))
        let r = try CLI.run(["export", input, "--format", "onnx", "-o", out])
        #expect(r.status == 2)
        #expect(r.stderr.contains("dropmodel: error: \(input): /@baked:"))
        #expect(r.stderr.contains("hint: bake it first: dropmodel bake"))
        #expect(!FileManager.default.fileExists(atPath: out))
        #expect(try Data(contentsOf: URL(fileURLWithPath: input)) == before)
    }

    @Test("import of an unsupported Keras model: exit 2, the layer named, no stack trace or HDF5 dump")
    func refuseBatchNorm() throws {
        let dir = TemporaryDirectory()
        let r = try CLI.run(["import", KerasFixture.path("keras3_cnn_refuse_batchnorm.h5"), "-o", dir.file("b.h5")])
        #expect(r.status == 2)
        #expect(r.stderr.contains("layer 'bn' (BatchNormalization)"))
        #expect(!r.stderr.contains("HDF5-DIAG") && !r.stderr.contains("Fatal error"))
        #expect(!FileManager.default.fileExists(atPath: dir.file("b.h5")))
    }

    @Test("import -> export every format -> predict writes .npy probabilities; bad flags are usage errors")
    func pipeline() throws {
        let dir = TemporaryDirectory()
        let bundle = dir.file("b.h5")
        var r = try CLI.run(["import", KerasFixture.path("keras2_sequential.h5"), "-o", bundle])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.contains("keep p 0.8, 0.5"))
        for (format, name) in [
            ("onnx", "m.onnx"), ("keras", "m.h5"), ("safetensors", "m.safetensors"), ("npz", "m.npz"),
        ] {
            r = try CLI.run(["export", bundle, "--format", format, "-o", dir.file(name)])
            #expect(r.status == 0, "\(format): \(r.stderr)")
            #expect(FileManager.default.fileExists(atPath: dir.file(name)))
        }
        r = try CLI.run(["export", bundle, "--format", "keras", "-o", dir.file("m.keras")])
        #expect(r.status == 0, "the Keras 3 archive: \(r.stderr)")
        r = try CLI.run(["export", bundle, "--format", "keras", "-o", dir.file("m.json")])
        #expect(r.status == 64, "Keras picks its reader by the name: .h5, .hdf5 or .keras")
        r = try CLI.run(["export", bundle, "--format", "tflite", "-o", dir.file("x")])
        #expect(r.status == 64)
        r = try CLI.run(["import", KerasFixture.path("keras2_sequential.h5"), "-o", dir.file("c.h5"), "--keep", "0.5"])
        #expect(r.status == 64, "a Keras file states its own rates")
        r = try CLI.run(["predict", bundle, "--limit", "50", "-o", dir.file("p.npy"), "--threads", "1"])
        #expect(r.status == 0, "\(r.stderr)")
        let npy = try Data(contentsOf: URL(fileURLWithPath: dir.file("p.npy")))
        let headerLength = Int(npy[8]) | Int(npy[9]) << 8
        #expect(String(decoding: npy[10..<(10 + headerLength)], as: UTF8.self).contains("'shape': (50, 10)"))
        #expect(npy.count == 10 + headerLength + 50 * 10 * 4)
    }

    @Test(
        """
        bit flips in a Keras file: exit 0 or 2, never a crash report, even where libhdf5 crashes (in the isolated \
        pre-read)
        """)
    func bitFlips() throws {
        let dir = TemporaryDirectory()
        let original = [UInt8](try Data(contentsOf: URL(fileURLWithPath: KerasFixture.path("keras2_functional.h5"))))
        // Offset 4363 bit 3 of this fixture made libhdf5 1.10.8 crash (a global-heap string read).
        var flips = [(4363, 3)]
        for k in 0..<40 { flips.append(((k * 211 + 13) % min(original.count, 12_000), k % 8)) }
        var knownFlip: CommandResult?
        for (offset, bit) in flips {
            var bytes = original
            bytes[offset] ^= UInt8(1 << bit)
            let path = dir.file("flip.h5"), out = dir.file("flip.bundle.h5")
            try Data(bytes).write(to: URL(fileURLWithPath: path))
            try? FileManager.default.removeItem(atPath: out)
            let r = try CLI.run(["import", path, "-o", out])
            #expect(r.status == 0 || r.status == 2, "offset \(offset) bit \(bit): exit \(r.status)\n\(r.stderr)")
            for marker in ["Backtrac", "Program crashed", "HDF5-DIAG", "Fatal error"] {
                #expect(!r.stderr.contains(marker), "offset \(offset) bit \(bit): \(r.stderr)")
            }
            if r.status == 2 { #expect(r.stderr.hasPrefix("dropmodel: error: \(path): ")) }
            if offset == 4363 && bit == 3 { knownFlip = r }
        }
        // The flip that crashed libhdf5 in-process: now a clean refusal naming an object.
        #expect(knownFlip?.status == 2, "\(knownFlip?.stderr ?? "")")
    }
}

@Suite("export progress")
struct ExportProgressTests {
    @Test(
        "export reports the bytes read layer by layer, then written, ending at the total",
        arguments: Export.Format.allCases)
    func progress(format: Export.Format) throws {
        let dir = TemporaryDirectory()
        let path = dir.file("m.h5")
        let model = Fixtures.model(sizes: [20, 16, 8, 4], convention: .inverted)
        try BundleWriter.write(model, to: path)
        var reports: [WorkProgress] = []
        let name = "m." + (format == .keras ? "keras" : format.rawValue)
        _ = try Conversion.export(path, format: format, to: dir.file(name)) { reports.append($0) }
        let total = 2 * model.info.dataBytes
        #expect(reports.count >= 4, "\(reports)")
        #expect(reports.allSatisfy { $0.total == total })
        let done = reports.map(\.done)
        #expect(zip(done, done.dropFirst()).allSatisfy { $0 <= $1 }, "\(done)")
        #expect(done.last == total)
    }
}
