import BundleFormat
import DropModelBase
import Foundation
import HDF5Layer
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

    @Test("a checkpoint inside an epoch round-trips its step, loss sum and error count; deep check notes it")
    func insideAnEpoch() throws {
        let dir = TemporaryDirectory()
        let model = Fixtures.model()
        let state = CheckpointState(
            epoch: 2, step: 3, lossSum: 12.375, errors: 7, velocities: Self.velocities(model))
        try BundleWriter.write(model, checkpoint: state, to: dir.file("c.ckpt"))
        #expect(try BundleReader(path: dir.file("c.ckpt")).readCheckpoint() == state)
        let deep = BundleCheck.run(path: dir.file("c.ckpt"), deep: true)
        #expect(deep.isValid && deep.notes.contains { $0.contains("inside epoch 3 (after step 3)") }, "\(deep)")
        // At an epoch's end the three attributes are not written.
        try BundleWriter.write(
            model, checkpoint: CheckpointState(epoch: 2, velocities: Self.velocities(model)), to: dir.file("e.ckpt"))
        let g = try File.open(dir.file("e.ckpt")).root().group(Schema.checkpointGroup)
        #expect(try !g.hasAttribute(Schema.checkpointStepAttribute))
        #expect(try !g.hasAttribute(Schema.checkpointLossSumAttribute))
    }

    @Test(
        "a position inside an epoch that breaks the rules is refused, naming the attribute",
        arguments: [
            ([("step", 3.0), ("loss_sum", 1.5)], "/checkpoint@errors"),
            ([("step", 0.0), ("loss_sum", 0.0), ("errors", 0.0)], "/checkpoint@step"),
            ([("step", -2.0), ("loss_sum", 1.0), ("errors", 0.0)], "/checkpoint@step"),
            ([("step", 2.0), ("loss_sum", -1.0), ("errors", 0.0)], "/checkpoint@loss_sum"),
            ([("step", 2.0), ("loss_sum", .nan), ("errors", 0.0)], "/checkpoint@loss_sum"),
            ([("step", 2.0), ("loss_sum", 1.0), ("errors", -1.0)], "/checkpoint@errors"),
        ])
    func badPosition(attributes: [(String, Double)], object: String) throws {
        let dir = TemporaryDirectory()
        try writeTampered(dir.file("c.ckpt")) { root in
            let g = try root.createGroup(Schema.checkpointGroup)
            try g.write(Schema.checkpointEpochAttribute, int64: 2)
            for (name, value) in attributes {
                if name == "loss_sum" {
                    try g.write(name, double: value)
                } else {
                    try g.write(name, int64: Int64(value))
                }
            }
        }
        #expect {
            try BundleReader(path: dir.file("c.ckpt")).readCheckpoint()
        } throws: { e in
            (e as? DropModelError)?.code == .invalid && (e as? DropModelError)?.problems.first?.object == object
        }
    }
}
