import BundleFormat
import DropModelBase
import Foundation
import Testing
import TestSupport
import Training

/// The verbs as library calls: train, replay, init and masks return typed reports.
@Suite("Library verbs: train, replay, init, masks")
struct VerbTests {
    static func recipe(epochs: Int = 2) -> Recipe {
        var r = Recipe(layers: [784, 12, 10], keep: [0.8, 0.5])
        r.epochs = epochs
        r.limit = 300
        r.testLimit = 200
        r.batchSize = 50
        return r
    }

    @Test("train reports what it wrote; replay proves it identical and checks the stored weights")
    func trainThenReplay() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("m.h5")
        var events = 0
        let report = try TrainingRun.train(
            TrainingRun.Request(recipe: Self.recipe(), seed: 3, threads: 2, output: path)
        ) { e in
            if case .epoch = e { events += 1 }
        }
        #expect(events == 2)
        #expect(report.epochs.map(\.epoch) == [1, 2])
        let info = try BundleReader(path: path).info
        #expect(info.history?.epochs.last?.weightsSHA256 == report.weightsSHA256)
        #expect(try BundleReader(path: path).weightsDigest() == report.weightsSHA256)

        let replay = try Replay.run(Replay.Request(file: path, threads: 1))
        #expect(replay.verdict == .identical)
        #expect(replay.storedWeightsChecked)
        #expect(replay.epochsReplayed == 2 && replay.epochsRecorded == 2)
        #expect(replay.epochs.map(\.weightsSHA256) == report.epochs.map(\.weightsSHA256))

        // A quick audit of the first epoch does not compare the stored weights.
        let partial = try Replay.run(Replay.Request(file: path, epochs: 1))
        #expect(partial.verdict == .identical && !partial.storedWeightsChecked && partial.epochsReplayed == 1)

        // What-if with the same seed writes a bit-identical bundle.
        let whatIf = try Replay.run(Replay.Request(file: path, output: dir.file("again.h5")))
        #expect(whatIf.verdict == .wroteWhatIf && whatIf.outputIdentical == true)
        #expect(
            FileManager.default.contents(atPath: dir.file("again.h5")) == FileManager.default.contents(atPath: path))
    }

    @Test("replay names where a run diverged: a changed weight, a wrong seed")
    func divergence() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("m.h5")
        _ = try TrainingRun.train(TrainingRun.Request(recipe: Self.recipe(), seed: 3, output: path))
        var model = try BundleReader(path: path).readModel()
        model.parameters[1].weight[7] += 0.25
        let tampered = dir.file("tampered.h5")
        try BundleWriter.write(model, to: tampered)

        let r = try Replay.run(Replay.Request(file: tampered))
        #expect(r.verdict == .diverged)
        let d = try #require(r.divergence)
        #expect(d.epoch == nil)  // every digest matched; the stored weights did not
        #expect(d.largest?.layer == 1 && d.largest?.row == 0 && d.largest?.column == 7 && d.largest?.isBias == false)
        #expect(abs((d.largest?.magnitude ?? 0) - 0.25) < 1e-6)

        let wrongSeed = try Replay.run(Replay.Request(file: path, seed: 4))
        #expect(wrongSeed.verdict == .diverged)
        #expect(wrongSeed.divergence?.epoch == 0)
        #expect(wrongSeed.divergence?.claimedSeedDiffers == true)
    }

    @Test("a bundle that cannot be replayed, or other data, is an error with a code")
    func notReplayable() throws {
        let dir = TemporaryDirectory()
        let fixture = dir.file("fixture.h5")
        try BundleWriter.write(Fixtures.model(), to: fixture)
        let e = #expect(throws: DropModelError.self) { try Replay.run(Replay.Request(file: fixture)) }
        #expect(e?.code == .notReplayable)

        let path = dir.file("m.h5")
        _ = try TrainingRun.train(TrainingRun.Request(recipe: Self.recipe(epochs: 1), seed: 3, output: path))
        var other = Self.recipe(epochs: 1)
        other.limit = 301
        let trained = dir.file("other-data.h5")
        _ = try TrainingRun.train(TrainingRun.Request(recipe: other, seed: 3, output: trained))
        // Replaying with --data pointing at the same files but a bundle whose recipe says
        // another limit: the fingerprint differs from the recorded one.
        var model = try BundleReader(path: path).readModel()
        model.info.training?.dataFingerprint = try BundleReader(path: trained).info.training?.dataFingerprint
        let mismatched = dir.file("mismatched.h5")
        try BundleWriter.write(model, to: mismatched)
        let m = #expect(throws: DropModelError.self) { try Replay.run(Replay.Request(file: mismatched)) }
        #expect(m?.code == .dataMismatch)
    }

    @Test("outputs are checked before any data is read or any step trained")
    func outputsFirst() throws {
        var recipe = Self.recipe()
        recipe.data = "/no/such/data"  // would fail later, when loading
        let started = Date()
        let e = #expect(throws: DropModelError.self) {
            try TrainingRun.train(TrainingRun.Request(recipe: recipe, seed: 1, output: "/no/such/folder/m.h5"))
        }
        #expect(e?.code == .outputNotWritable)
        #expect(e?.problems[0].file == "/no/such/folder/m.h5")
        #expect(e?.problems[0].message.contains("'/no/such/folder'") == true)
        #expect(Date().timeIntervalSince(started) < 5)
        let i = #expect(throws: DropModelError.self) {
            try InitialBundle.write(recipe: Self.recipe(), seed: 1, to: "/no/such/folder/m.h5")
        }
        #expect(i?.code == .outputNotWritable)
    }

    @Test("init writes the seeded weights train would start from; masks reads them back")
    func initAndMasks() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("init.h5")
        let r = try InitialBundle.write(recipe: Self.recipe(), seed: 9, to: path)
        #expect(r.weightsSHA256 == WeightDigest.sha256(Self.recipe().initialParameters(seed: 9)))
        #expect(try BundleReader(path: path).weightsDigest() == r.weightsSHA256)

        let m = try MaskQuery.run(
            MaskQuery.Request(file: path, epoch: 1, step: 0, layer: 1, example: 3, png: dir.file("m.png")))
        #expect(m.units == 12 && m.examples.count == 1 && m.examples[0].example == 3)
        #expect(m.previousLayer?.index == 0)
        let png = [UInt8](FileManager.default.contents(atPath: dir.file("m.png")) ?? Data())
        #expect(Array(png.prefix(8)) == [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A])
        let bad = #expect(throws: DropModelError.self) {
            try MaskQuery.run(MaskQuery.Request(file: path, epoch: 1, step: 0, layer: 5))
        }
        #expect(bad?.code == .usage)
    }
}
