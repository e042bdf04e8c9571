public import BundleFormat
import DropModelBase
import DropoutRandom
import Foundation
public import TrainingData

/// Something a long run reports while it works (for a progress bar and a per-epoch line).
public enum RunEvent: Sendable {
    /// The run is about to start its first epoch.
    case started(RunStart)
    /// `done` of `total` steps of `epoch` are finished.
    case step(epoch: Int, done: Int, total: Int)
    /// An epoch finished.
    case epoch(EpochSummary)
}

/// What a training or replay run starts with.
public struct RunStart: Sendable {
    public var recipe: Recipe
    public var seed: Int64
    public var threads: Int
    /// The data as described to the user ("Fashion-MNIST (/usr/share/...), 60000 train / 10000 test").
    public var data: String
    public var trainExamples: Int
    /// Epochs this run will train.
    public var epochs: Int
}

/// One finished epoch, with how long it took.
public struct EpochSummary: Sendable {
    public var record: EpochRecord
    public var seconds: Double
    /// Training examples per second.
    public var examplesPerSecond: Double
    /// Replay only: whether the digest matched the recorded one (nil when there is none).
    public var identical: Bool?
}

/// What `train` did.
public struct TrainReport: Sendable {
    /// The bundle written.
    public var output: String
    public var recipe: Recipe
    public var seed: Int64
    public var threads: Int
    public var data: String
    public var dataFingerprint: String
    public var initialWeightsSHA256: [UInt8]
    public var epochs: [EpochRecord]
    public var seconds: Double
    /// Stopped early (``TrainingRun/Request/stopRequested``): the checkpoint was written,
    /// not the output.
    public var interrupted: Bool = false
    /// The checkpoint written last (when interrupted: the one to resume), if any.
    public var checkpoint: String?
    /// The epoch a resumed run started after (0 for a fresh run).
    public var resumedAt: Int = 0
    /// When interrupted inside an epoch: the steps of epoch `epochs.count + 1` done (0 when
    /// stopped at an epoch's end).
    public var stoppedAtStep: Int = 0
    /// The epoch whose weights were written (`--keep-best`), nil when it is the last.
    public var keptEpoch: Int?
    /// The digest of the weights written (the kept epoch's, else the last epoch's, or the
    /// initial weights').
    public var weightsSHA256: [UInt8] {
        // `epochs` holds every epoch from 1 (a resumed run's too).
        keptEpoch.map { epochs[$0 - 1].weightsSHA256 } ?? epochs.last?.weightsSHA256 ?? initialWeightsSHA256
    }
    /// The record of the epoch whose weights were written (the kept epoch's, else the last
    /// epoch's; nil before any epoch).
    public var writtenEpoch: EpochRecord? { keptEpoch.map { epochs[$0 - 1] } ?? epochs.last }
}

/// Training as a library call: `dropmodel train`, `init` and what `replay` shares with them.
///
/// ```swift
/// let report = try TrainingRun.train(TrainingRun.Request(recipe: recipe, seed: 1, output: "model.h5"))
/// print(Hex.encode(report.weightsSHA256))
/// ```
///
/// Every random draw is a function of the seed (Specs/random-streams.md) and every reduction
/// has a fixed order (Specs/determinism.md), so the bundle is the same bits for any `threads`.
public enum TrainingRun {
    /// A training run to do.
    public struct Request: Sendable {
        public var recipe: Recipe
        public var seed: Int64
        /// The weights to start from (`train --from`), or nil for the recipe's seeded
        /// initialisation.
        public var initial: [Parameters]?
        public var threads: Int
        /// The bundle to write (atomically, when training ends).
        public var output: String
        /// When to write the checkpoint `output.ckpt` (``checkpointPath(for:)``); nil: only
        /// when stopped.
        public var checkpoints: CheckpointPolicy?
        /// Continue this checkpoint (``resumePoint(from:)``) instead of starting at epoch 0:
        /// `recipe` and `seed` must be its own, `initial` is not read.
        public var resume: ResumePoint?
        /// Asked after every step: true stops the run after writing a checkpoint (SIGINT), inside
        /// the epoch if it has steps left.
        public var stopRequested: @Sendable () -> Bool
        /// The ranks training together (MPI, Trainer's `group`), nil for this process alone.
        /// Only rank 0 checks and writes the output and the checkpoints; `stopRequested` must be
        /// false on every rank (a stop that one rank alone sees would leave the others waiting).
        public var group: (any TrainingGroup)? = nil

        public init(
            recipe: Recipe, seed: Int64, initial: [Parameters]? = nil, threads: Int = 1, output: String,
            checkpoints: CheckpointPolicy? = nil, resume: ResumePoint? = nil,
            stopRequested: @escaping @Sendable () -> Bool = { false }
        ) {
            self.recipe = recipe
            self.seed = seed
            self.initial = initial
            self.threads = threads
            self.output = output
            self.checkpoints = checkpoints
            self.resume = resume
            self.stopRequested = stopRequested
        }
    }

    /// Where `train --from` starts: a bundle's recipe, seed and weights.
    public struct StartingPoint: Sendable {
        public var recipe: Recipe
        public var seed: Int64?
        public var parameters: [Parameters]
    }

    /// Reads the starting point of `train --from`: an epoch-0 bundle written by `init`.
    public static func startingPoint(from path: String) throws -> StartingPoint {
        let bundle = try BundleReader(path: path)
        guard let t = bundle.info.training, let base = try? Recipe.decode(json: t.recipe) else {
            throw DropModelError(
                code: .notReplayable, file: path, object: "/training@recipe",
                message: "the bundle has no dropmodel recipe to continue from",
                hint: "--from takes a bundle written by 'dropmodel init'")
        }
        let trained = bundle.info.history?.epochs.count ?? 0
        guard trained == 0 else {
            throw DropModelError(
                code: .notApplicable, file: path, object: "/history",
                message: """
                    the bundle was already trained for \(trained) epochs; --from takes an epoch-0 bundle from \
                    'dropmodel init'
                    """)
        }
        return StartingPoint(recipe: base, seed: bundle.info.rng?.seed, parameters: try bundle.readModel().parameters)
    }

    /// Trains the request's recipe and writes the bundle: checks the output can be written and
    /// the data fits the network before the first step, reports each epoch to `observer`.
    public static func train(_ request: Request, observer: (RunEvent) -> Void = { _ in }) throws -> TrainReport {
        // With ranks (issue 16), rank 0 alone writes.
        let writes = (request.group?.rank ?? 0) == 0
        if writes { try OutputCheck.verify(request.output) }
        let recipe = request.recipe
        try checkRecipe(recipe)
        if let group = request.group { try checkShards(group, recipe: recipe) }
        try checkSeed(request.seed)
        if let initial = request.initial {
            // Weights and biases by each kind's parameter shapes (none for a kind without weights).
            let shapes = recipe.layerInfos.map { l in
                l.parameterShapes.map { [$0.rows * $0.rowLength, $0.rows] } ?? [0, 0]
            }
            guard initial.map({ [$0.weight.count, $0.bias.count] }) == shapes else {
                throw DropModelError(
                    code: .usage, file: request.output,
                    message: "the starting weights do not have the recipe's layer sizes (\(recipe.networkText))",
                    hint: "--layers cannot change the shape of the --from bundle")
            }
        }
        let resume = request.resume
        if let resume { try checkResume(resume, recipe: recipe, seed: request.seed) }
        let data = try loadData(recipe)
        if let resume { try checkResumeData(resume, data) }
        let initial = resume?.parameters ?? request.initial ?? recipe.initialParameters(seed: UInt64(request.seed))
        let initialDigest = resume?.initialWeightsSHA256 ?? WeightDigest.sha256(initial)
        if let group = request.group {
            try checkGroup(
                group, recipe: recipe, seed: request.seed, data: data,
                initialDigest: WeightDigest.sha256(initial), resume: resume)
        }
        let trainer = Trainer(
            recipe: recipe, seed: UInt64(request.seed), data: data, initial: initial, threads: request.threads,
            group: request.group)
        if let resume { trainer.velocities = resume.state.velocities }
        // --keep-best: the best epoch so far and its weights (a resumed run's: the checkpoint's).
        var best: (epoch: Int, error: Double, parameters: [Parameters])?
        if recipe.keepBest != nil, let resume, let b = bestEpoch(resume.records) {
            best = (b.epoch, b.error, try resumedBest(resume, epoch: b.epoch))
        }
        observer(
            .started(
                RunStart(
                    recipe: recipe, seed: request.seed, threads: request.threads, data: data.description,
                    trainExamples: data.train.count, epochs: recipe.epochs)))
        let started = Date()
        var records: [EpochRecord] = resume?.records ?? []
        let checkpointPath = checkpointPath(for: request.output)
        var lastCheckpoint: (epoch: Int, path: String)? = resume.map { ($0.state.epoch, $0.file) }
        var lastCheckpointTime = Date()
        var interrupted = false
        func info(kept: Int? = nil) -> ModelInfo {
            bundleInfo(
                recipe: recipe, seed: request.seed, data: data, initialDigest: initialDigest, records: records,
                keptEpoch: kept)
        }
        func writeCheckpoint(_ state: CheckpointState) throws {
            guard writes else { return }
            do {
                try BundleWriter.write(
                    Model(info: info(), parameters: trainer.network.parameters), checkpoint: state, to: checkpointPath)
            } catch {
                throw lastCheckpoint.map { keepsCheckpoint(error, path: $0.path, epoch: $0.epoch) } ?? error
            }
            lastCheckpoint = (state.epoch, checkpointPath)
            lastCheckpointTime = Date()
        }
        let position = resume.map {
            EpochPosition(step: $0.state.step, lossSum: $0.state.lossSum, errors: $0.state.errors)
        }
        let stopped = try run(
            trainer, from: (resume?.state.epoch ?? 0) + 1, at: position ?? EpochPosition(), epochs: recipe.epochs,
            observer: observer, stop: request.stopRequested
        ) { summary in
            records.append(summary.record)
            if recipe.keepBest == .validation, let v = summary.record.validationError, v < best?.error ?? .infinity {
                best = (summary.record.epoch, v, trainer.network.parameters)
            }
            let e = summary.record.epoch
            guard e < recipe.epochs else { return true }
            let stop = request.stopRequested()
            let policy = request.checkpoints
            let due =
                (policy?.epochs.map { e % $0 == 0 } ?? false)
                || (policy?.seconds.map { Date().timeIntervalSince(lastCheckpointTime) >= $0 } ?? false)
            if stop || due {
                try writeCheckpoint(
                    CheckpointState(
                        epoch: e, velocities: trainer.velocities, best: best.map { ($0.epoch, $0.parameters) }))
            }
            if stop { interrupted = true }
            return !stop
        }
        if let (e, at) = stopped {
            // Stopped inside epoch e: the checkpoint records the steps done and the epoch's sums so far.
            try writeCheckpoint(
                CheckpointState(
                    epoch: e - 1, step: at.step, lossSum: at.lossSum, errors: at.errors, velocities: trainer.velocities,
                    best: best.map { ($0.epoch, $0.parameters) }))
            interrupted = true
        }
        var report = TrainReport(
            output: request.output, recipe: recipe, seed: request.seed, threads: request.threads,
            data: data.description,
            dataFingerprint: data.fingerprint, initialWeightsSHA256: initialDigest, epochs: records,
            seconds: Date().timeIntervalSince(started))
        report.resumedAt = resume?.state.epoch ?? 0
        report.checkpoint = lastCheckpoint?.path
        if !interrupted, let best { report.keptEpoch = best.epoch }
        if interrupted {
            report.interrupted = true
            report.stoppedAtStep = stopped?.position.step ?? 0
            return report
        }
        guard writes else { return report }
        do {
            try BundleWriter.write(
                Model(info: info(kept: best?.epoch), parameters: best?.parameters ?? trainer.network.parameters),
                to: request.output)
        } catch {
            throw lastCheckpoint.map { keepsCheckpoint(error, path: $0.path, epoch: $0.epoch) } ?? error
        }
        // The run is complete: its checkpoint is no longer needed.
        if unlink(checkpointPath) != 0 && errno != ENOENT {
            let reason = String(cString: strerror(errno))
            throw DropModelError(
                code: .system, file: checkpointPath,
                message: "wrote \(request.output) but cannot remove the checkpoint (\(reason))",
                operation: "remove checkpoint")
        }
        report.checkpoint = nil
        return report
    }

    /// The best epoch's weights of a resumed `--keep-best` run: the checkpoint's `/checkpoint/best`,
    /// which must be that epoch's and have its recorded digest.
    static func resumedBest(_ resume: ResumePoint, epoch: Int) throws -> [Parameters] {
        guard let best = resume.state.best, best.epoch == epoch,
            WeightDigest.sha256(best.parameters) == resume.records[epoch - 1].weightsSHA256
        else {
            throw DropModelError(
                code: .notApplicable, file: resume.file, object: "/checkpoint/best",
                message: """
                    the run keeps its best epoch (--keep-best), epoch \(epoch) so far, but the checkpoint does not \
                    hold \
                    that epoch's weights\(resume.state.best.map { " (it holds epoch \($0.epoch)'s)" } ?? "")
                    """,
                hint: "train the recipe again from the start")
        }
        return best.parameters
    }

    /// A recipe's own consistency (the rules of ``Recipe/problems()``) as an error.
    static func checkRecipe(_ recipe: Recipe) throws {
        if let first = recipe.problems().first {
            throw DropModelError(code: .usage, file: "", message: first)
        }
    }

    /// Seeds are in `0 ..< 2^63` (Specs/random-streams.md).
    static func checkSeed(_ seed: Int64) throws {
        guard seed >= 0 else {
            throw DropModelError(
                code: .usage, file: "", message: "the seed \(seed) is negative; seeds are in 0 ..< 2^63")
        }
    }

    /// Loads the recipe's data (with its limits) and checks it fits the network.
    public static func loadData(_ recipe: Recipe, override: String? = nil) throws -> DataSplit {
        let split = try DataSource.load(
            override ?? recipe.data, limit: recipe.limit, testLimit: recipe.testLimit, validation: recipe.validation)
        guard split.train.features == recipe.inputCount else {
            let input = recipe.network.input
            throw DropModelError(
                code: .dataMismatch, file: split.description,
                message: """
                    the data has \(split.train.features) features per example but the network's input is \
                    \(input)\(input.channels == nil ? "" : " (\(input.count) values)")
                    """,
                hint: split.train.features == 784
                    ? "set --layers to start with 784 (dense) or 28x28x1 (an image)"
                    : "set --layers to start with \(split.train.features) values")
        }
        guard split.train.classes <= recipe.outputCount else {
            throw DropModelError(
                code: .dataMismatch, file: split.description,
                message: """
                    the data has \(split.train.classes) classes but the output layer has \(recipe.outputCount) \
                    units
                    """,
                hint: "set --layers to end with \(split.train.classes)")
        }
        return split
    }

    /// Runs epochs `first...epochs`, the first from `position`, reporting steps and epochs to
    /// `observer`; `check` sees each epoch and may stop the run by returning false. `stop`,
    /// asked after every step, ends the run inside an epoch: returns that epoch and the position
    /// reached (nil when the run ended otherwise).
    @discardableResult
    static func run(
        _ trainer: Trainer, from first: Int = 1, at position: EpochPosition = EpochPosition(), epochs: Int,
        observer: (RunEvent) -> Void, stop: (@Sendable () -> Bool)? = nil,
        check: (inout EpochSummary) throws -> Bool
    ) rethrows -> (epoch: Int, position: EpochPosition)? {
        guard epochs >= first else { return nil }
        var position = position
        for e in first...epochs {
            let started = Date()
            let at = withoutActuallyEscaping(observer) { observer in
                trainer.trainSteps(
                    e, from: position, progress: { done, total in observer(.step(epoch: e, done: done, total: total)) },
                    stop: stop)
            }
            position = EpochPosition()
            if at.step < trainer.stepsPerEpoch { return (e, at) }
            let m = trainer.finishEpoch(e, at)
            let seconds = Date().timeIntervalSince(started)
            var summary = EpochSummary(
                record: record(m, trainer), seconds: seconds,
                examplesPerSecond: Double(trainer.data.train.count) / max(seconds, 1e-9), identical: nil)
            let goOn = try check(&summary)
            observer(.epoch(summary))
            if !goOn { break }
        }
        return nil
    }

    static func record(_ m: EpochMetrics, _ trainer: Trainer) -> EpochRecord {
        EpochRecord(
            epoch: m.epoch, loss: m.loss, trainError: m.trainError, testError: m.testError,
            weightsSHA256: m.weightsSHA256,
            layerSHA256: WeightDigest.layerSHA256(trainer.network.parameters), validationError: m.validationError)
    }

    /// The epoch with the lowest validation error (ties: the earliest), nil without any.
    public static func bestEpoch(_ records: [EpochRecord]) -> (epoch: Int, error: Double)? {
        var best: (epoch: Int, error: Double)?
        for r in records {
            guard let v = r.validationError, v < best?.error ?? .infinity else { continue }
            best = (r.epoch, v)
        }
        return best
    }

    /// The bundle metadata of a finished run (`keptEpoch`: the epoch whose weights it holds, if
    /// not the last).
    static func bundleInfo(
        recipe: Recipe, seed: Int64, data: DataSplit, initialDigest: [UInt8], records: [EpochRecord],
        keptEpoch: Int? = nil
    ) -> ModelInfo {
        ModelInfo(
            convention: recipe.convention, baked: false, layers: recipe.layerInfos,
            rng: RNGInfo(algorithm: StreamLayout.algorithm, seed: seed, streamLayout: StreamLayout.version),
            training: TrainingInfo(
                recipe: recipe.json(), dataFingerprint: data.fingerprint, dataDescription: data.description,
                examples: data.train.count, keptEpoch: keptEpoch),
            history: History(initialWeightsSHA256: initialDigest, epochs: records))
    }
}
