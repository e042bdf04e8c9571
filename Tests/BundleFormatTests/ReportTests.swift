import BundleFormat
import DropModelBase
import Foundation
import HDF5Layer
import Testing
import TestSupport

@Suite("Library verbs: check and bake reports")
struct ReportTests {
    @Test("check: valid, deep, invalid and unopenable files")
    func check() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("m.h5")
        try BundleWriter.write(Fixtures.model(), to: path)
        let shallow = BundleCheck.run(path: path)
        #expect(shallow.verdict == .valid && shallow.problems.isEmpty && shallow.info != nil)
        let deep = BundleCheck.run(path: path, deep: true)
        #expect(deep.verdict == .valid)
        #expect(deep.notes.contains("all data read, checksums verified"))
        #expect(deep.notes.contains { $0.hasPrefix("weights match the digest recorded after epoch 2") })

        // Changed weights under the old history: deep check names the layer.
        var model = Fixtures.model()
        model.parameters[0].weight[0] += 1
        let changed = dir.file("changed.h5")
        try BundleWriter.write(model, to: changed)
        #expect(BundleCheck.run(path: changed).verdict == .valid)
        let deepChanged = BundleCheck.run(path: changed, deep: true)
        #expect(deepChanged.verdict == .invalid)
        #expect(deepChanged.problems.map(\.object) == ["/history/weights_sha256"])

        let broken = dir.file("broken.h5")
        try writeTampered(broken) { root in try root.group("layers").group("0").deleteAttribute("keep_prob") }
        let invalid = BundleCheck.run(path: broken)
        #expect(invalid.verdict == .invalid)
        #expect(invalid.problems.contains { $0.object == "/layers/0@keep_prob" })

        #expect(BundleCheck.run(path: dir.file("absent.h5")).verdict == .unopenable)
        #expect(BundleCheck.run(path: dir.path).verdict == .unopenable)
        let text = dir.file("text.h5")
        try Data("hello".utf8).write(to: URL(fileURLWithPath: text))
        let notHDF5 = BundleCheck.run(path: text)
        #expect(notHDF5.verdict == .unopenable)
        #expect(notHDF5.problems.count == 1)
    }

    @Test("bake reports the scales and the provenance digest; twice is refused; inverted writes nothing")
    func bake() throws {
        let dir = TemporaryDirectory()
        let input = dir.file("m.h5")
        let model = Fixtures.model(keep: [0.8, 0.5, 0.25])
        try BundleWriter.write(model, to: input)
        let output = dir.file("baked.h5")
        let r = try Bake.run(input: input, output: output)
        #expect(r.outcome == .baked && r.output == output && r.dtype == .float32)
        #expect(r.scales == [0.8, 0.5, 0.25])
        #expect(r.unbakedWeightsSHA256 == WeightDigest.sha256(model.parameters))
        let baked = try BundleReader(path: output).readModel()
        #expect(baked.parameters[2].weight == model.parameters[2].weight.map { Float(0.25) * $0 })

        let twice = #expect(throws: DropModelError.self) { try Bake.run(input: output, output: dir.file("twice.h5")) }
        #expect(twice?.code == .notApplicable)
        #expect(!FileManager.default.fileExists(atPath: dir.file("twice.h5")))

        let inverted = dir.file("inverted.h5")
        try BundleWriter.write(Fixtures.model(convention: .inverted), to: inverted)
        let none = try Bake.run(input: inverted, output: dir.file("none.h5"))
        #expect(none.outcome == .notNeeded && none.output == nil)
        #expect(!FileManager.default.fileExists(atPath: dir.file("none.h5")))

        let missing = #expect(throws: DropModelError.self) {
            try Bake.run(input: input, output: dir.file("no/baked.h5"))
        }
        #expect(missing?.code == .outputNotWritable)
        let same = #expect(throws: DropModelError.self) { try Bake.run(input: input, output: input) }
        #expect(same?.code == .usage)
    }

    @Test("HDF5 failures keep their code, operation and cause through every layer")
    func errorModel() throws {
        let dir = TemporaryDirectory()
        let e = #expect(throws: DropModelError.self) { try BundleReader(path: dir.file("absent.h5")) }
        #expect(e?.code == .notFound)
        #expect(e?.operation == "open file")
        #expect(e?.errno == .noSuchFileOrDirectory)
        let text = dir.file("text.h5")
        try Data("hello".utf8).write(to: URL(fileURLWithPath: text))
        let t = #expect(throws: DropModelError.self) { try BundleReader(path: text) }
        #expect(t?.code == .notHDF5)
    }
}
