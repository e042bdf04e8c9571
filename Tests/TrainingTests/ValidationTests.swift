import BundleFormat
import DropModelBase
import Foundation
import Testing
import TestSupport
import Training
import TrainingData

/// Issue 14, point 1: `--validation N` holds out the last N training examples, measures their
/// error after every epoch, and `--keep-best validation` keeps the best epoch's weights.
@Suite("validation set and --keep-best")
struct ValidationTests {
    /// 300 examples (50 held out) in batches of 50: 5 steps an epoch.
    static func recipe(validation: Int = 50, keepBest: Recipe.KeepBest? = nil, epochs: Int = 4) -> Recipe {
        var r = Recipe(layers: [784, 12, 10], keep: [0.8, 0.5])
        r.epochs = epochs
        r.limit = 300
        r.testLimit = 100
        r.batchSize = 50
        r.learningRate = 0.5
        r.validation = validation
        r.keepBest = keepBest
        return r
    }

    @Test("the split: the last N of the limited training set, in the description and the fingerprint")
    func split() throws {
        let all = try DataSource.load("fashion-mnist", limit: 300, testLimit: 100)
        let held = try DataSource.load("fashion-mnist", limit: 300, testLimit: 100, validation: 50)
        #expect(held.train.count == 250)
        #expect(held.validation?.count == 50)
        #expect(held.train.inputs == Array(all.train.inputs[0..<(250 * 784)]))
        #expect(held.validation?.inputs == Array(all.train.inputs[(250 * 784)...]))
        #expect(held.validation?.labels == Array(all.train.labels[250...]))
        #expect(held.description == "fashion-mnist: train 250, validation 50, test 100")
        #expect(all.description == "fashion-mnist: train 300, test 100")
        #expect(held.fingerprint != all.fingerprint)
        let other = try DataSource.load("fashion-mnist", limit: 300, testLimit: 100, validation: 60)
        #expect(other.fingerprint != held.fingerprint)
        // No validation set: the version-1 fingerprint, as every bundle so far records.
        #expect(
            try DataSource.load("fashion-mnist", limit: 300, testLimit: 100, validation: 0).fingerprint
                == all.fingerprint)
    }

    @Test("a validation set as large as the training set is a usage error")
    func tooLarge() throws {
        let error = #expect(throws: DropModelError.self) {
            try DataSource.load("fashion-mnist", limit: 300, testLimit: 10, validation: 300)
        }
        #expect(error?.code == .usage)
        var r = Self.recipe(validation: 300)
        #expect(r.problems().contains { $0.contains("--validation 300") }, "\(r.problems())")
        r.validation = -1
        #expect(r.problems().contains { $0.contains("--validation must be 0 or more") })
        r = Self.recipe(validation: 0, keepBest: .validation)
        #expect(r.problems().contains { $0.contains("--keep-best validation needs a validation set") })
    }

    @Test("the recipe records validation and keep_best only when set")
    func recipeJSON() throws {
        let plain = Self.recipe(validation: 0)
        #expect(!plain.json().contains("validation") && !plain.json().contains("keep_best"))
        let r = Self.recipe(validation: 50, keepBest: .validation)
        #expect(r.json().contains("\"validation\":50") && r.json().contains("\"keep_best\":\"validation\""))
        #expect(try Recipe.decode(json: r.json()) == r)
        #expect(try Recipe.decode(json: plain.json()) == plain)
        #expect(throws: RecipeError.self) {
            try Recipe.decode(
                json: r.json().replacingOccurrences(of: "\"keep_best\":\"validation\"", with: "\"keep_best\":\"test\""))
        }
    }

    @Test("validation error per epoch: recorded, replayed, the same bits on 1 and 2 threads")
    func history() throws {
        let dir = TemporaryDirectory()
        let a = dir.file("a.h5"), b = dir.file("b.h5")
        let report = try TrainingRun.train(TrainingRun.Request(recipe: Self.recipe(), seed: 5, threads: 1, output: a))
        _ = try TrainingRun.train(TrainingRun.Request(recipe: Self.recipe(), seed: 5, threads: 2, output: b))
        #expect(FileManager.default.contents(atPath: a) == FileManager.default.contents(atPath: b))
        #expect(report.keptEpoch == nil)
        let info = try BundleReader(path: a).info
        let epochs = try #require(info.history?.epochs)
        #expect(epochs.count == 4)
        #expect(epochs.allSatisfy { ($0.validationError ?? -1) >= 0 && ($0.validationError ?? 2) <= 1 })
        #expect(epochs.map(\.validationError) == report.epochs.map(\.validationError))
        #expect(info.training?.examples == 250)
        #expect(info.training?.dataDescription == "fashion-mnist: train 250, validation 50, test 100")
        #expect(info.training?.keptEpoch == nil)
        let replay = try Replay.run(Replay.Request(file: a))
        #expect(replay.verdict == .identical && replay.storedWeightsChecked)
        #expect(replay.epochs.map(\.validationError) == epochs.map(\.validationError))

        // Without a validation set: no validation column.
        let c = dir.file("c.h5")
        _ = try TrainingRun.train(TrainingRun.Request(recipe: Self.recipe(validation: 0), seed: 5, output: c))
        #expect(try BundleReader(path: c).info.history?.epochs.allSatisfy { $0.validationError == nil } == true)
    }

    @Test("--lr-momentum-scaling: recorded, changes the weights, and replays bit for bit")
    func momentumScaledRate() throws {
        let dir = TemporaryDirectory()
        let plain = dir.file("plain.h5"), scaled = dir.file("scaled.h5")
        var r = Self.recipe(validation: 0, epochs: 3)
        r.learningRate = 2
        r.momentum = 0.5
        r.momentumFinal = 0.9
        r.momentumRampEpochs = 3
        _ = try TrainingRun.train(TrainingRun.Request(recipe: r, seed: 9, output: plain))
        r.lrMomentumScaling = true
        _ = try TrainingRun.train(TrainingRun.Request(recipe: r, seed: 9, output: scaled))
        let a = try BundleReader(path: plain).info, b = try BundleReader(path: scaled).info
        #expect(a.history?.epochs.last?.weightsSHA256 != b.history?.epochs.last?.weightsSHA256)
        #expect(b.training?.recipe.contains("\"lr_momentum_scaling\":true") == true)
        let replay = try Replay.run(Replay.Request(file: scaled))
        #expect(replay.verdict == .identical && replay.epochsReplayed == 3)
    }

    @Test("the validation set takes no random draw: the training of 250 examples is the same without it")
    func noDraws() throws {
        let dir = TemporaryDirectory()
        let with = try TrainingRun.train(
            TrainingRun.Request(recipe: Self.recipe(validation: 50), seed: 5, output: dir.file("w.h5")))
        var limited = Self.recipe(validation: 0)
        limited.limit = 250
        let without = try TrainingRun.train(TrainingRun.Request(recipe: limited, seed: 5, output: dir.file("o.h5")))
        #expect(with.epochs.map(\.weightsSHA256) == without.epochs.map(\.weightsSHA256))
    }

    @Test("--keep-best validation: the lowest validation error's weights, replayed and checked")
    func keepBest() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("best.h5")
        // A learning rate high enough that the validation error does not only fall.
        var recipe = Self.recipe(keepBest: .validation, epochs: 6)
        recipe.learningRate = 2
        let report = try TrainingRun.train(TrainingRun.Request(recipe: recipe, seed: 5, output: path))
        let errors = report.epochs.map { $0.validationError! }
        let best = errors.indices.min { errors[$0] < errors[$1] }! + 1  // the first minimum
        #expect(report.keptEpoch == best)
        #expect(TrainingRun.bestEpoch(report.epochs)?.epoch == best)
        let bundle = try BundleReader(path: path)
        #expect(bundle.info.training?.keptEpoch == best)
        #expect(WeightDigest.sha256(try bundle.readModel().parameters) == report.epochs[best - 1].weightsSHA256)
        #expect(report.weightsSHA256 == report.epochs[best - 1].weightsSHA256)
        #expect(bundle.info.history?.epochs.count == 6)
        #expect(bundle.info.problems(file: path).isEmpty)
        let replay = try Replay.run(Replay.Request(file: path))
        #expect(replay.verdict == .identical && replay.storedWeightsChecked && replay.epochsReplayed == 6)
    }

    @Test("a --keep-best run stopped and resumed writes the uninterrupted run's bytes", arguments: [1, 2])
    func keepBestResume(threads: Int) throws {
        let dir = TemporaryDirectory()
        var recipe = Self.recipe(keepBest: .validation, epochs: 5)
        recipe.learningRate = 2
        let reference = dir.file("reference.h5")
        _ = try TrainingRun.train(TrainingRun.Request(recipe: recipe, seed: 5, threads: threads, output: reference))
        // 5 steps an epoch: asked after steps 1-4 and at each epoch's end (5 questions an epoch).
        for n in [3, 5, 12, 20] {
            let output = dir.file("run-\(n).h5")
            let stopped = try TrainingRun.train(
                TrainingRun.Request(
                    recipe: recipe, seed: 5, threads: threads, output: output,
                    stopRequested: MidEpochResumeTests.stop(atQuestion: n)))
            #expect(stopped.interrupted, "question \(n)")
            let checkpoint = TrainingRun.checkpointPath(for: output)
            let state = try #require(try BundleReader(path: checkpoint).readCheckpoint())
            #expect((state.best == nil) == (state.epoch == 0), "question \(n)")
            if state.step == 0 {
                // Replaying the tail from the checkpoint still checks the kept weights, wherever they are.
                let tail = try Replay.run(
                    Replay.Request(file: reference, fromEpoch: state.epoch + 1, start: checkpoint))
                #expect(tail.verdict == .identical && tail.storedWeightsChecked, "question \(n)")
            }
            let resumed = try TrainingRun.train(
                TrainingRun.Request(
                    recipe: recipe, seed: 5, threads: threads, output: output,
                    resume: try TrainingRun.resumePoint(from: checkpoint)))
            #expect(!resumed.interrupted)
            #expect(
                FileManager.default.contents(atPath: output) == FileManager.default.contents(atPath: reference),
                "question \(n)")
        }
    }

    @Test("ties keep the earliest epoch")
    func ties() {
        let d = [UInt8](repeating: 0, count: 32)
        let records = [0.5, 0.25, 0.25, 0.3].enumerated().map {
            EpochRecord(epoch: $0 + 1, loss: 1, trainError: 0.5, testError: 0.5, weightsSHA256: d, validationError: $1)
        }
        #expect(TrainingRun.bestEpoch(records)?.epoch == 2)
        #expect(TrainingRun.bestEpoch([]) == nil)
    }

    @Test("a bundle whose kept epoch is outside its history is invalid")
    func keptEpochRule() {
        let d = [UInt8](repeating: 0, count: 32)
        var info = ModelInfo(
            convention: .classic, layers: Self.recipe().layerInfos,
            training: TrainingInfo(recipe: "{}", keptEpoch: 3),
            history: History(epochs: [EpochRecord(epoch: 1, loss: 1, trainError: 0, testError: 0, weightsSHA256: d)]))
        #expect(info.problems(file: "x").contains { $0.object == "/training@kept_epoch" })
        info.training?.keptEpoch = 1
        #expect(!info.problems(file: "x").contains { $0.object == "/training@kept_epoch" })
        info.history?.epochs[0].validationError = 1.5
        #expect(info.problems(file: "x").contains { $0.object == "/history/validation_error" })
    }
}
