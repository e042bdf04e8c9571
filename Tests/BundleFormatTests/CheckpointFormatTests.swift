import BundleFormat
import DropModelBase
import Foundation
import Testing
import TestSupport

/// The optional `/checkpoint` section (Specs/bundle-format.md §7.2).
@Suite("checkpoint section")
struct CheckpointFormatTests {
    static func velocities(_ model: Model) -> [Parameters] {
        model.parameters.map { p in
            Parameters(weight: p.weight.map { $0 / 7 - 0.01 }, bias: p.bias.map { -$0 / 3 })
        }
    }

    @Test("a checkpoint round-trips its epoch and velocities and is still a valid bundle")
    func roundTrip() throws {
        let dir = TemporaryDirectory()
        let model = Fixtures.model()
        let state = CheckpointState(epoch: 2, velocities: Self.velocities(model))
        try BundleWriter.write(model, checkpoint: state, to: dir.file("c.h5.ckpt"))
        let reader = try BundleReader(path: dir.file("c.h5.ckpt"))
        #expect(reader.isCheckpoint)
        #expect(try reader.readCheckpoint() == state)
        #expect(try reader.readModel().parameters == model.parameters)
        #expect(BundleCheck.run(path: dir.file("c.h5.ckpt"), deep: true).isValid)
    }

    @Test("a normal bundle has no checkpoint section, and its bytes do not change")
    func normalBundle() throws {
        let dir = TemporaryDirectory()
        let model = Fixtures.model()
        try BundleWriter.write(model, to: dir.file("a.h5"))
        try writeTampered(dir.file("b.h5"), model: model) { _ in }
        let reader = try BundleReader(path: dir.file("a.h5"))
        #expect(!reader.isCheckpoint)
        #expect(try reader.readCheckpoint() == nil)
        #expect(
            try Data(contentsOf: URL(fileURLWithPath: dir.file("a.h5")))
                == Data(contentsOf: URL(fileURLWithPath: dir.file("b.h5"))))
    }

    @Test("a checkpoint whose epoch is not the history's is refused, naming the attribute")
    func wrongEpoch() throws {
        let dir = TemporaryDirectory()
        let model = Fixtures.model()
        try BundleWriter.write(
            model, checkpoint: CheckpointState(epoch: 5, velocities: Self.velocities(model)), to: dir.file("c.ckpt"))
        #expect {
            try BundleReader(path: dir.file("c.ckpt")).readCheckpoint()
        } throws: { e in
            (e as? DropModelError)?.code == .invalid
                && (e as? DropModelError)?.problems.first?.object == "/checkpoint@epoch"
        }
    }
}
