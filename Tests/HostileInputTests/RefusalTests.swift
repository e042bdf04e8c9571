import DropModelBase
import BundleFormat
import Foundation
import HDF5Layer
import Testing
import TestSupport

/// Each refusal rule of Specs/bundle-format.md §1.2 and §4.4: links that are not hard links,
/// external raw storage, virtual datasets, filters not on the allow-list. Refused by the
/// reader, `inspect` (exit 2) and `check` (exit 1), naming the object and what is refused;
/// never followed, never read.
@Suite("hostile input: refusal rules", .tags(.slow))
struct RefusalTests {
    /// Bytes a reader must never show: the content of the file external storage points at.
    static let secret = Array("SECRET-RAW-BYTES-7f3a9c".utf8)

    enum Case: String, CaseIterable, Sendable, CustomStringConvertible {
        case externalLinkLayer = "external link as /layers/2"
        case softLinkLayer = "soft link as /layers/2"
        case softLinkWeight = "soft link as /layers/1/weight"
        case externalStorageBias = "external raw storage for /layers/2/bias"
        case externalStorageWeight = "external raw storage for /layers/1/weight (h5py)"
        case virtualWeight = "virtual /layers/1/weight (h5py)"
        case lzfWeight = "lzf (32000) on /layers/1/weight (h5py)"
        case scaleoffsetWeight = "scale-offset (6, built into libhdf5, not allowed) on /layers/1/weight (h5py)"
        case unknownFilterWeight = "unknown filter 32004 on /layers/1/weight (h5py)"
        case unknownFilterHistory = "unknown filter 32004 on /history/loss (h5py)"

        var description: String { rawValue }
        var needsPython: Bool { rawValue.hasSuffix("(h5py)") }

        /// The object the refusal must name, and words the message must contain.
        var expected: (object: String, words: String) {
            switch self {
            case .externalLinkLayer: return ("/layers/2", "external link")
            case .softLinkLayer: return ("/layers/2", "soft link")
            case .softLinkWeight: return ("/layers/1/weight", "soft link")
            case .externalStorageBias: return ("/layers/2/bias", "external file")
            case .externalStorageWeight: return ("/layers/1/weight", "external file")
            case .virtualWeight: return ("/layers/1/weight", "virtual dataset")
            case .lzfWeight: return ("/layers/1/weight", "filter 32000")
            case .scaleoffsetWeight: return ("/layers/1/weight", "filter 6")
            case .unknownFilterWeight: return ("/layers/1/weight", "filter 32004")
            case .unknownFilterHistory: return ("/history/loss", "filter 32004")
            }
        }
    }

    /// Writes the hostile bundle for `c` into `dir`; returns its path.
    static func build(_ c: Case, in dir: TemporaryDirectory) throws -> String {
        let model = Fixtures.model()  // 6 -> 5 -> 4 -> 3
        let path = dir.file("hostile.h5")
        let secretFile = dir.file("secret.raw")
        try Bytes.write(Array((0..<64).flatMap { _ in secret }), to: secretFile)
        var twoLayers = model.info
        twoLayers.layers.removeLast()
        let layer2 = model.info.layers[2], p2 = model.parameters[2]

        func plainDatasets(
            _ g: Group, _ l: LayerInfo, _ p: Parameters, weightName: String = Schema.weightDataset
        ) throws {
            let w = try g.createDataset(
                weightName, type: .float32, shape: [l.outputs, l.inputs], chunk: [l.outputs, l.inputs], fletcher32: true
            )
            try w.write(floats: p.weight)
            let b = try g.createDataset(
                Schema.biasDataset, type: .float32, shape: [l.outputs], chunk: [l.outputs], fletcher32: true)
            try b.write(floats: p.bias)
        }

        switch c {
        case .externalLinkLayer:
            // The link's target is a real, valid layer in another bundle: following it would
            // "work", silently reading another file.
            let other = dir.file("other.h5")
            try writeModel(model, to: other)
            try writeBundle(path, model: model, info: twoLayers) { root in
                let lg = try root.group(Schema.layersGroup)
                try lg.write(Schema.layerCountAttribute, int64: 3)
                try lg.createExternalLinkForTesting("2", file: other, object: "/layers/2")
            }
        case .softLinkLayer:
            try writeBundle(path, model: model, info: twoLayers) { root in
                let g = try root.createGroup("stash").createGroup("2")
                try writeLayerAttributes(g, layer2)
                try plainDatasets(g, layer2, p2)
                let lg = try root.group(Schema.layersGroup)
                try lg.write(Schema.layerCountAttribute, int64: 3)
                try lg.createSoftLinkForTesting("2", target: "/stash/2")
            }
        case .softLinkWeight:
            try writeBundle(
                path, model: model,
                layer: { i, g, l in
                    if i == 1 {
                        try plainDatasets(g, l, model.parameters[i], weightName: "weight_real")
                        try g.createSoftLinkForTesting(Schema.weightDataset, target: "/layers/1/weight_real")
                    } else {
                        try plainDatasets(g, l, model.parameters[i])
                    }
                })
        case .externalStorageBias:
            try writeBundle(
                path, model: model,
                layer: { i, g, l in
                    if i == 2 {
                        let w = try g.createDataset(
                            Schema.weightDataset, type: .float32, shape: [l.outputs, l.inputs],
                            chunk: [l.outputs, l.inputs], fletcher32: true)
                        try w.write(floats: model.parameters[i].weight)
                        try g.createExternalDatasetForTesting(
                            Schema.biasDataset, externalFile: secretFile, elements: l.outputs)
                    } else {
                        try plainDatasets(g, l, model.parameters[i])
                    }
                })
        case .externalStorageWeight:
            try writeModel(model, to: path)
            try Python.restore(path, dataset: "layers/1/weight", mode: "external", aux: secretFile)
        case .virtualWeight:
            try writeModel(model, to: path)
            try Python.restore(path, dataset: "layers/1/weight", mode: "virtual", aux: dir.file("virtual-source.h5"))
        case .lzfWeight:
            try writeModel(model, to: path)
            try Python.restore(path, dataset: "layers/1/weight", mode: "lzf")
        case .scaleoffsetWeight:
            try writeModel(model, to: path)
            try Python.restore(path, dataset: "layers/1/weight", mode: "scaleoffset")
        case .unknownFilterWeight:
            try writeModel(model, to: path)
            try Python.restore(path, dataset: "layers/1/weight", mode: "unknown-filter", aux: "32004")
        case .unknownFilterHistory:
            try writeModel(model, to: path)
            try Python.restore(path, dataset: "history/loss", mode: "unknown-filter", aux: "32004")
        }
        return path
    }

    static let swiftCases = Case.allCases.filter { !$0.needsPython }
    static let pythonCases = Case.allCases.filter { $0.needsPython }

    @Test("refused (HDF5Layer-built files)", arguments: swiftCases)
    func refusedSwift(_ c: Case) throws { try refused(c) }

    @Test(
        "refused (h5py-built files)",
        .enabled(if: Python.h5pyAvailable, "needs h5py: .venv (Tests/interop/requirements.txt)"),
        arguments: pythonCases)
    func refusedPython(_ c: Case) throws { try refused(c) }

    func refused(_ c: Case) throws {
        let dir = TemporaryDirectory()
        let path = try Self.build(c, in: dir)
        let (object, words) = c.expected
        let secret = String(decoding: Self.secret.prefix(6), as: UTF8.self)  // "SECRET"

        // In-process: a refusal, naming the object.
        do {
            let reader = try BundleReader(path: path)
            let model = try reader.readModel()
            Issue.record("\(c): the reader returned a model: \(differences(Fixtures.model(), model))")
        } catch let e as DropModelError {
            #expect(e.code == .refused, "\(c): code \(e.code): \(e)")
            #expect(
                e.problems.contains { $0.object == object && $0.message.contains(words) },
                "\(c): no problem at \(object) saying '\(words)': \(e)")
            #expect(!e.description.contains(secret))
        }

        for args in [["inspect", path], ["inspect", "--json", "--stats", path]] {
            let o = try Bounded.run(args)
            if expectClean(o, allowed: [2], "\(c)") {
                #expect(o.stderr.contains("dropmodel: error: \(path): \(object): "), "\(c): object not named:\n\(o)")
                #expect(o.stderr.contains(words), "\(c): '\(words)' not said:\n\(o)")
                #expect(o.stdout.isEmpty, "\(c): inspect printed a report for a refused file:\n\(o)")
            }
            #expect(!o.stdout.contains(secret) && !o.stderr.contains(secret), "\(c): external bytes leaked:\n\(o)")
        }
        for args in [["check", path], ["check", "--deep", path], ["check", "--deep", "--json", path]] {
            let o = try Bounded.run(args)
            if expectClean(o, allowed: [1], "\(c)") {
                #expect(
                    o.stdout.contains(object) && o.stdout.contains(words),
                    "\(c): \(object) / '\(words)' not reported:\n\(o)")
            }
            #expect(!o.stdout.contains(secret) && !o.stderr.contains(secret), "\(c): external bytes leaked:\n\(o)")
        }
    }

    @Test(
        "a link or unsafe dataset outside the bundle's paths: never followed, inspect reads the model, check reports it"
    )
    func outsideBundlePaths() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("extra.h5")
        let other = dir.file("other.h5")
        let model = Fixtures.model()
        try writeModel(model, to: other)
        let secretFile = dir.file("secret.raw")
        try Bytes.write(Array((0..<64).flatMap { _ in Self.secret }), to: secretFile)
        try writeBundle(path, model: model) { root in
            let extra = try root.createGroup("extra")
            try extra.createExternalLinkForTesting("elsewhere", file: other, object: "/layers")
            try extra.createSoftLinkForTesting("alias", target: "/layers/0")
            try extra.createExternalDatasetForTesting("leak", externalFile: secretFile, elements: 16)
        }
        let read = try BundleReader(path: path).readModel()
        #expect(differences(try readBack(model, dir), read).isEmpty)
        let inspect = try Bounded.run(["inspect", path])
        expectClean(inspect, allowed: [0], "links under /extra")
        let check = try Bounded.run(["check", path])
        if expectClean(check, allowed: [1], "links under /extra") {
            for (object, words) in [
                ("/extra/elsewhere", "external link"), ("/extra/alias", "soft link"), ("/extra/leak", "external file"),
            ] {
                #expect(
                    check.stdout.contains("\(object): ") && check.stdout.contains(words),
                    "\(object) not reported:\n\(check)")
            }
        }
        #expect(!check.stdout.contains("SECRET") && !inspect.stdout.contains("SECRET"))
    }

    /// The model as dropmodel's own writer stores it (the creator attribute is the writer's).
    func readBack(_ model: Model, _ dir: TemporaryDirectory) throws -> Model {
        let p = dir.file("plain-\(UUID().uuidString).h5")
        try writeModel(model, to: p)
        return try BundleReader(path: p).readModel()
    }

    enum Accepted: String, CaseIterable, Sendable, CustomStringConvertible {
        case deflateShuffle = "deflate+shuffle+fletcher32"
        case deflate = "deflate"
        case contiguous = "contiguous"
        case compact = "compact"
        var description: String { rawValue }
    }

    @Test(
        "allowed storage (deflate, shuffle, contiguous, compact) is accepted and read exactly",
        .enabled(if: Python.h5pyAvailable, "needs h5py: .venv (Tests/interop/requirements.txt)"),
        arguments: Accepted.allCases)
    func accepted(_ a: Accepted) throws {
        let dir = TemporaryDirectory()
        let path = dir.file("ok.h5")
        let model = Fixtures.model(sizes: [30, 20, 10], seed: 3)
        try writeModel(model, to: path)
        let expected = try BundleReader(path: path).readModel()
        for ds in ["layers/0/weight", "layers/1/bias"] {
            try Python.restore(path, dataset: ds, mode: a == .deflateShuffle ? "deflate+shuffle" : a.rawValue)
        }
        let reader = try BundleReader(path: path)
        let info = try reader.weightDataset(0).storageInfo()
        switch a {
        case .deflateShuffle: #expect(Set(info.filters) == ["deflate", "shuffle", "fletcher32"], "\(info)")
        case .deflate: #expect(info.filters == ["deflate"], "\(info)")
        case .contiguous: #expect(info.layout == .contiguous, "\(info)")
        case .compact: #expect(info.layout == .compact, "\(info)")
        }
        #expect(differences(expected, try reader.readModel()).isEmpty)
        #expect(try reader.weightsDigest() == expected.info.history?.epochs.last?.weightsSHA256)
        expectClean(try Bounded.run(["inspect", "--stats", path]), allowed: [0], "\(a)")
        let check = try Bounded.run(["check", "--deep", path])
        if expectClean(check, allowed: [0], "\(a)") {
            #expect(check.stdout.contains("weights match the digest recorded after epoch 2"), "\(check)")
        }
    }
}
