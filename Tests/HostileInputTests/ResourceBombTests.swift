import DropModelBase
import BundleFormat
import Foundation
import HDF5Layer
import Testing
import TestSupport

/// Files built to exhaust a reader: huge attribute and group counts, deep nesting, declared
/// shapes of petabytes. Each ends in a clean error or a correct read, within seconds, in
/// under 512 MiB (measured with DROPMODEL_PEAK_MEMORY=1; the address space is capped at 4 GiB
/// so a runaway allocation fails instead of exhausting the machine).
@Suite("hostile input: resource bombs", .tags(.slow))
struct ResourceBombTests {
    enum Bomb: String, CaseIterable, Sendable, CustomStringConvertible {
        case manyAttributes = "20,000 attributes on the root group"
        case manyMembers = "20,000 members in an extra group"
        case deepGroups = "groups nested 200 deep under /extra"
        case petabyteWeight = "weight declared [2^40, 2^20] (chunked, nothing written), attributes matching"
        case inputs2p31 = "layer 0 declares inputs 2^31, weight [4, 2^31] declared to match"
        case outputs2p31 = "layer 0 declares outputs 2^31, datasets declared to match"
        case attributes2p31 = "inputs and outputs attributes declare 2^31, the datasets are small"
        case squareLayer = "layer declares 2^31 x 2^31 weights, weight declared to match"
        case historyRows = "history declares 2^40 epochs (chunked, nothing written)"

        var description: String { rawValue }

        /// Whether the file is a valid bundle whose model can be compared after reading.
        var validModel: Bool { [.manyAttributes, .manyMembers, .deepGroups].contains(self) }
    }

    static let model = Fixtures.model()  // 6 -> 5 -> 4 -> 3

    /// An unwritten chunked float32 dataset: HDF5 allocates nothing until a chunk is written.
    static func declare(_ g: Group, _ name: String, _ shape: [Int], chunk: [Int]) throws {
        _ = try g.createDataset(name, type: .float32, shape: shape, chunk: chunk, fletcher32: true)
    }

    static func build(_ b: Bomb, at path: String) throws {
        let model = Self.model
        switch b {
        case .manyAttributes:
            try writeBundle(path, model: model) { root in
                for i in 0..<20_000 { try root.write("junk\(i)", int64: Int64(i)) }
            }
        case .manyMembers:
            try writeBundle(path, model: model) { root in
                let extra = try root.createGroup("extra")
                for i in 0..<20_000 { _ = try extra.createGroup("g\(i)") }
            }
        case .deepGroups:
            try writeBundle(path, model: model) { root in
                var g = try root.createGroup("extra")
                for _ in 0..<200 { g = try g.createGroup("deeper") }
            }
        case .petabyteWeight:
            var info = model.info
            info.layers = [
                LayerInfo(name: "output", inputs: 1 << 20, outputs: 1 << 40, activation: .softmax, keepProb: 0.8)
            ]
            info.history = nil
            try writeBundle(
                path, model: model, info: info,
                layer: { _, g, l in
                    try declare(g, Schema.weightDataset, [l.outputs, l.inputs], chunk: [1, 1 << 16])
                    try declare(g, Schema.biasDataset, [l.outputs], chunk: [1 << 16])
                })
        case .inputs2p31:
            var info = model.info
            info.layers = [
                LayerInfo(name: "hidden1", inputs: 1 << 31, outputs: 4, activation: .relu, keepProb: 0.8),
                LayerInfo(name: "output", inputs: 4, outputs: 3, activation: .softmax, keepProb: 0.5),
            ]
            info.history = nil
            try writeBundle(
                path, model: model, info: info,
                layer: { i, g, l in
                    if i == 0 {
                        try declare(g, Schema.weightDataset, [l.outputs, l.inputs], chunk: [1, 1 << 18])
                        let b = try g.createDataset(
                            Schema.biasDataset, type: .float32, shape: [4], chunk: [4], fletcher32: true)
                        try b.write(floats: [0, 0, 0, 0])
                    } else {
                        let (w, b) = try BundleWriter.createLayerDatasets(g, l, options: WriteOptions())!
                        try w.write(floats: (0..<12).map { Float($0) / 12 })
                        try b.write(floats: [0, 0, 0])
                    }
                })
        case .outputs2p31:
            var info = model.info
            info.layers = [
                LayerInfo(name: "hidden1", inputs: 6, outputs: 1 << 31, activation: .relu, keepProb: 0.8),
                LayerInfo(name: "output", inputs: 1 << 31, outputs: 3, activation: .softmax, keepProb: 0.5),
            ]
            info.history = nil
            try writeBundle(
                path, model: model, info: info,
                layer: { i, g, l in
                    try declare(
                        g, Schema.weightDataset, [l.outputs, l.inputs], chunk: i == 0 ? [1 << 16, 6] : [1, 1 << 18])
                    if i == 0 {
                        try declare(g, Schema.biasDataset, [l.outputs], chunk: [1 << 18])
                    } else {
                        let b = try g.createDataset(
                            Schema.biasDataset, type: .float32, shape: [3], chunk: [3], fletcher32: true)
                        try b.write(floats: [0, 0, 0])
                    }
                })
        case .attributes2p31:
            try writeBundle(path, model: model) { root in
                let g = try root.group(Schema.layersGroup).group("1")
                try g.write("inputs", int64: 1 << 31)
                try g.write("outputs", int64: 1 << 31)
            }
        case .squareLayer:
            var info = model.info
            info.layers = [
                LayerInfo(name: "output", inputs: 1 << 31, outputs: 1 << 31, activation: .softmax, keepProb: 0.8)
            ]
            info.history = nil
            try writeBundle(
                path, model: model, info: info,
                layer: { _, g, l in
                    try declare(g, Schema.weightDataset, [l.outputs, l.inputs], chunk: [1, 1 << 18])
                    try declare(g, Schema.biasDataset, [l.outputs], chunk: [1 << 18])
                })
        case .historyRows:
            var info = model.info
            info.history = nil
            try writeBundle(path, model: model, info: info) { root in
                let h = try root.createGroup(Schema.historyGroup)
                let rows = 1 << 40
                _ = try h.createDataset("epoch", type: .int64, shape: [rows], chunk: [1 << 16])
                for c in ["loss", "train_error", "test_error"] {
                    _ = try h.createDataset(c, type: .float64, shape: [rows], chunk: [1 << 16])
                }
                _ = try h.createDataset("weights_sha256", type: .uint8, shape: [rows, 32], chunk: [1 << 12, 32])
            }
        }
    }

    static let timeout: Double = 15

    @Test("a clean error or a correct read, within seconds, in bounded memory", arguments: Bomb.allCases)
    func bomb(_ b: Bomb) throws {
        let dir = TemporaryDirectory()
        let path = dir.file("bomb.h5")
        let plain = dir.file("plain.h5")
        try Self.build(b, at: path)
        try writeBundle(plain, model: Self.model)
        let expected = try BundleReader(path: plain).readModel()

        // In-process: metadata always (it reads no weight data); weights only where the file
        // declares a small model, so a runaway read cannot take the test process down.
        do {
            let reader = try BundleReader(path: path)
            if b.validModel {
                #expect(differences(expected, try reader.readModel()).isEmpty, "\(b)")
                #expect(try reader.weightsDigest() == expected.info.history?.epochs.last?.weightsSHA256)
            } else {
                let declared = reader.info.layers.map { [$0.inputs, $0.outputs] }
                #expect(
                    reader.info.layers.allSatisfy { $0.inputs <= 1 << 31 && $0.outputs <= 1 << 31 }, "\(b): \(declared)"
                )
                // Reading all weights of a model this size at once must be refused, not attempted.
                if reader.info.parameterCount > 1 << 31 {
                    #expect(throws: DropModelError.self, "\(b): readModel of \(reader.info.parameterCount) parameters")
                    {
                        _ = try reader.readModel()
                    }
                }
            }
        } catch let e as DropModelError {
            #expect(!b.validModel, "\(b): a valid model was refused: \(e)")
        }

        let valid: Set<Int32> = b.validModel ? [0] : [0, 2]
        let inspectJSON = try Bounded.run(["inspect", "--json", path], timeout: Self.timeout)
        expectClean(inspectJSON, allowed: valid, "\(b)")
        if b.validModel {
            // The same report as for the plain bundle, but for the file's name and size.
            let reference = try Bounded.run(["inspect", "--json", plain])
            func report(_ text: String) -> NSDictionary? {
                guard var o = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any] else {
                    return nil
                }
                o["file"] = nil
                o["file_size"] = nil
                return o as NSDictionary
            }
            let got = report(inspectJSON.stdout), want = report(reference.stdout)
            #expect(
                got != nil && got == want,
                "\(b): inspect --json differs from the plain bundle's:\n\(inspectJSON.stdout)")
        }
        expectClean(try Bounded.run(["inspect", "--stats", path], timeout: Self.timeout), allowed: valid, "\(b)")
        // check may report an unreadable extra (e.g. nesting beyond its walk) as a problem.
        let check = try Bounded.run(["check", "--deep", path], timeout: Self.timeout)
        expectClean(check, allowed: b.validModel ? [0, 1] : [0, 1, 2], "\(b)")
        if b == .manyAttributes || b == .manyMembers {
            #expect(check.status == 0, "\(b): \(check)")
        }
    }
}
