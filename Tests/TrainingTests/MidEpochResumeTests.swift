import BundleFormat
import DropModelBase
import Foundation
import Synchronization
import Testing
import TestSupport
import Training

/// Issue 15, point 3: a stop finishes the current step, not the epoch; the checkpoint records
/// the position inside the epoch and a resume from it writes the uninterrupted run's bytes.
@Suite("stopping and resuming inside an epoch")
struct MidEpochResumeTests {
    /// 300 examples in batches of 50: 6 steps an epoch.
    static func recipe() -> Recipe {
        var r = Recipe(layers: [784, 12, 10], keep: [0.8, 0.5])
        r.epochs = 3
        r.limit = 300
        r.testLimit = 100
        r.batchSize = 50
        return r
    }

    static func bytes(_ path: String) -> Data? { FileManager.default.contents(atPath: path) }

    /// A stop request that answers true from its `n`-th question on.
    static func stop(atQuestion n: Int) -> @Sendable () -> Bool {
        final class Questions: Sendable { let asked = Atomic<Int>(0) }
        let q = Questions()
        return { q.asked.add(1, ordering: .relaxed).newValue >= n }
    }

    /// Trains to `output` and stops at the `n`-th question: the report and the checkpoint's state.
    static func interrupted(
        _ output: String, threads: Int, atQuestion n: Int
    ) throws -> (TrainReport, CheckpointState) {
        let report = try TrainingRun.train(
            TrainingRun.Request(
                recipe: recipe(), seed: 3, threads: threads, output: output,
                stopRequested: stop(atQuestion: n)))
        #expect(report.interrupted)
        let checkpoint = TrainingRun.checkpointPath(for: output)
        let state = try #require(try BundleReader(path: checkpoint).readCheckpoint())
        return (report, state)
    }

    @Test("a stop inside an epoch, resumed: the uninterrupted run's bytes", arguments: [1, 2])
    func resume(threads: Int) throws {
        let dir = TemporaryDirectory()
        let reference = dir.file("reference.h5")
        _ = try TrainingRun.train(TrainingRun.Request(recipe: Self.recipe(), seed: 3, threads: 1, output: reference))
        // Asked after each step (not after an epoch's last) and at each epoch's end: 6 questions
        // an epoch. 1: after step 1 of epoch 1; 9: after step 3 of epoch 2; 6: at the end of epoch 1.
        for (n, epoch, step) in [(1, 0, 1), (9, 1, 3), (6, 1, 0), (17, 2, 5)] {
            let output = dir.file("run-\(threads)-\(n).h5")
            let checkpoint = TrainingRun.checkpointPath(for: output)
            let (report, state) = try Self.interrupted(output, threads: threads, atQuestion: n)
            #expect(state.epoch == epoch && state.step == step, "question \(n): \(state.epoch), \(state.step)")
            #expect(report.stoppedAtStep == step && report.epochs.count == epoch)
            #expect(state.step == 0 || state.lossSum > 0, "question \(n)")
            #expect(
                FileManager.default.fileExists(atPath: checkpoint) && !FileManager.default.fileExists(atPath: output))
            // The checkpoint is a valid bundle, deep-checked too.
            let check = BundleCheck.run(path: checkpoint, deep: true)
            #expect(check.isValid, "question \(n): \(check.problems)")
            let point = try TrainingRun.resumePoint(from: checkpoint)
            let resumed = try TrainingRun.train(
                TrainingRun.Request(
                    recipe: point.recipe, seed: point.seed, threads: 3 - threads, output: output, resume: point))
            #expect(!resumed.interrupted && resumed.epochs.count == 3)
            #expect(Self.bytes(output) == Self.bytes(reference), "question \(n): the resumed bundle differs")
            #expect(!FileManager.default.fileExists(atPath: checkpoint))
        }
    }

    @Test("a checkpoint whose step is past the epoch's last step is refused, naming the attribute")
    func stepOutOfRange() throws {
        let dir = TemporaryDirectory()
        let output = dir.file("run.h5")
        let checkpoint = TrainingRun.checkpointPath(for: output)
        var (_, state) = try Self.interrupted(output, threads: 1, atQuestion: 3)
        let model = try BundleReader(path: checkpoint).readModel()
        // 6 steps an epoch: step 6 does not exist (an epoch's end is step 0 of the next).
        for bad in [6, 40] {
            state.step = bad
            try BundleWriter.write(model, checkpoint: state, to: checkpoint)
            let point = try TrainingRun.resumePoint(from: checkpoint)
            #expect {
                try TrainingRun.train(
                    TrainingRun.Request(recipe: point.recipe, seed: point.seed, output: output, resume: point))
            } throws: { e in
                guard let e = e as? DropModelError else { return false }
                return e.code == .invalid && e.problems.first?.object == "/checkpoint@step"
                    && e.problems.first?.message.contains("6 steps (0 to 5)") == true
            }
        }
        // Past the examples: the reader refuses it already.
        state.step = 300
        try BundleWriter.write(model, checkpoint: state, to: checkpoint)
        #expect {
            try TrainingRun.resumePoint(from: checkpoint)
        } throws: { e in
            (e as? DropModelError)?.problems.first?.object == "/checkpoint@step"
        }
        #expect(!FileManager.default.fileExists(atPath: output))
    }

    @Test("replay --start refuses a checkpoint inside an epoch: no recorded digest vouches for it")
    func replayStart() throws {
        let dir = TemporaryDirectory()
        let reference = dir.file("reference.h5")
        _ = try TrainingRun.train(TrainingRun.Request(recipe: Self.recipe(), seed: 3, output: reference))
        let output = dir.file("run.h5")
        _ = try Self.interrupted(output, threads: 1, atQuestion: 9)
        #expect {
            try Replay.run(
                Replay.Request(
                    file: reference, fromEpoch: 2, start: TrainingRun.checkpointPath(for: output)))
        } throws: { e in
            (e as? DropModelError)?.problems.first?.object == "/checkpoint@step"
        }
    }

    @Test("replay --from-epoch E --start PLAIN: a plain bundle of E-1 epochs starts the tail where momentum is 0")
    func replayFromPlainBundle() throws {
        let dir = TemporaryDirectory()
        // Plain SGD: the velocities a plain bundle lacks are multiplied by 0 at epoch E's first step.
        var sgd = Self.recipe()
        sgd.momentum = 0
        sgd.momentumFinal = 0
        let full = dir.file("full.h5"), head = dir.file("head.h5")
        _ = try TrainingRun.train(TrainingRun.Request(recipe: sgd, seed: 3, output: full))
        var short = sgd
        short.epochs = 1
        _ = try TrainingRun.train(TrainingRun.Request(recipe: short, seed: 3, output: head))
        let tail = try Replay.run(Replay.Request(file: full, fromEpoch: 2, start: head))
        #expect(tail.verdict == .identical && tail.storedWeightsChecked, "\(tail)")
        #expect(tail.epochs.map(\.epoch) == [2, 3])
        // Not the epoch the bundle is at.
        #expect {
            try Replay.run(Replay.Request(file: full, fromEpoch: 3, start: head))
        } throws: { e in
            (e as? DropModelError)?.code == .notApplicable
        }
        // With momentum, the velocities matter: a plain bundle is refused, a checkpoint is needed.
        let withMomentum = dir.file("momentum.h5"), momentumHead = dir.file("momentum-head.h5")
        _ = try TrainingRun.train(TrainingRun.Request(recipe: Self.recipe(), seed: 3, output: withMomentum))
        var shortMomentum = Self.recipe()
        shortMomentum.epochs = 1
        _ = try TrainingRun.train(TrainingRun.Request(recipe: shortMomentum, seed: 3, output: momentumHead))
        #expect {
            try Replay.run(Replay.Request(file: withMomentum, fromEpoch: 2, start: momentumHead))
        } throws: { e in
            guard let e = e as? DropModelError else { return false }
            return e.code == .notApplicable && e.problems.first?.message.contains("momentum") == true
        }
    }
}
