public import BundleFormat
import DropModelBase
import DropoutRandom
import Foundation

/// What `replay` found.
public struct ReplayReport: Sendable {
    /// How the replay ended.
    public enum Verdict: Sendable, Equatable {
        /// Every replayed epoch's digest matched; with `storedWeightsChecked`, so did the stored
        /// weights, value for value.
        case identical
        /// The run diverged: see ``divergence``.
        case diverged
        /// A what-if run (`-o`): the retrained bundle was written to ``output``.
        case wroteWhatIf
    }

    /// Where a run first differs from the bundle.
    public struct Divergence: Sendable, Equatable {
        /// The first epoch whose digest differs; 0 for the initial weights; nil when every
        /// digest matched but the stored weights differ (they were changed after training).
        public var epoch: Int?
        /// The layers whose per-layer digest differs at that epoch (empty when unknown).
        public var layers: [Int]
        /// The largest difference between the stored and the replayed weights, when it could
        /// be measured (the bundle stores the last epoch's weights only).
        public var largest: WeightDifference?
        /// The initial weights: the digests, when `epoch == 0`.
        public var expectedSHA256: [UInt8]?
        public var replayedSHA256: [UInt8]?
        /// When `epoch == 0`: whether the seed replayed was given by the caller and differs
        /// from the recorded one.
        public var claimedSeedDiffers: Bool
        /// A `--keep-best` run whose digests all match but whose recorded kept epoch
        /// (`/training@kept_epoch`) is not the one the replay selects: (recorded, replayed).
        public var keptEpoch: KeptEpochMismatch? = nil
    }

    /// The kept epoch recorded and the one the replay selects (nil: none).
    public struct KeptEpochMismatch: Sendable, Equatable {
        public var recorded: Int?
        public var replayed: Int?
    }

    public var file: String
    public var seed: Int64
    public var threads: Int
    public var data: String
    /// Epochs replayed, and epochs the bundle records.
    public var epochsReplayed: Int
    public var epochsRecorded: Int
    public var verdict: Verdict
    public var divergence: Divergence?
    /// Whether the stored weights were compared with the replayed ones (only after replaying
    /// every recorded epoch).
    public var storedWeightsChecked: Bool
    /// The replayed epochs.
    public var epochs: [EpochRecord]
    /// The what-if output, and whether it equals the bundle bit for bit.
    public var output: String?
    public var outputIdentical: Bool?
    public var seconds: Double
    /// Layer names, for messages.
    public var layerNames: [String]
}

/// One weight or bias that differs between two sets of weights.
public struct WeightDifference: Sendable, Equatable {
    public var layer: Int
    public var isBias: Bool
    /// `weight[row, column]` or `bias[row]`.
    public var row: Int
    public var column: Int
    public var stored: Float
    public var replayed: Float
    public var magnitude: Float { stored.isNaN || replayed.isNaN ? .infinity : abs(stored - replayed) }
}

/// Replay as a library call: retrain a bundle from its recipe and seed and prove the result
/// bit-identical, or say where it diverged (`dropmodel replay`).
///
/// ```swift
/// let report = try Replay.run(Replay.Request(file: "model.h5"))
/// if report.verdict == .diverged { print(report.divergence!) }
/// ```
public enum Replay {
    public struct Request: Sendable {
        public var file: String
        /// The seed to replay with: needed when the bundle records none; otherwise a claim to
        /// check.
        public var seed: Int64?
        /// Replay only the first K epochs.
        public var epochs: Int?
        /// Read the training data from here instead of the recipe's (the fingerprint must match).
        public var data: String?
        public var threads: Int
        /// What-if: retrain and write the bundle here instead of failing on differences.
        public var output: String?
        /// Replay only epochs `fromEpoch...`, starting from ``start``: a checkpoint at epoch
        /// `fromEpoch - 1` of the same run (or, for 1, an epoch-0 bundle) whose weight digest
        /// must be the recorded one.
        public var fromEpoch: Int?
        public var start: String?

        public init(
            file: String, seed: Int64? = nil, epochs: Int? = nil, data: String? = nil, threads: Int = 1,
            output: String? = nil, fromEpoch: Int? = nil, start: String? = nil
        ) {
            self.file = file
            self.seed = seed
            self.epochs = epochs
            self.data = data
            self.threads = threads
            self.output = output
            self.fromEpoch = fromEpoch
            self.start = start
        }
    }

    /// Replays `request.file`. Throws when the bundle cannot be replayed at all (no recipe, no
    /// seed, other data); a divergence is a report, not an error.
    public static func run(_ request: Request, observer: (RunEvent) -> Void = { _ in }) throws -> ReplayReport {
        let file = request.file
        if let output = request.output { try OutputCheck.verify(output, inputs: [file]) }
        let bundle = try BundleReader(path: file)
        let info = bundle.info
        guard let training = info.training else {
            throw DropModelError(
                code: .notReplayable, file: file, object: "/training",
                message: "the bundle records no training recipe, so it cannot be replayed",
                hint: "bundles written by 'dropmodel train' record one")
        }
        let recipe: Recipe
        do { recipe = try Recipe.decode(json: training.recipe) } catch {
            throw DropModelError(
                code: .notReplayable, file: file, object: "/training@recipe",
                message: "not a dropmodel recipe (\(error))")
        }
        if let rng = info.rng, rng.algorithm != StreamLayout.algorithm || rng.streamLayout != StreamLayout.version {
            throw DropModelError(
                code: .notReplayable, file: file, object: "/rng",
                message: """
                    algorithm '\(rng.algorithm)' with stream layout \(rng.streamLayout) is not one this dropmodel can \
                    replay (\(StreamLayout.algorithm), layout \(StreamLayout.version))
                    """)
        }
        guard let seed = request.seed ?? info.rng?.seed else {
            throw DropModelError(
                code: .notReplayable, file: file, object: "/rng@seed", message: "the bundle records no seed",
                hint: "give the seed with --seed S")
        }
        try TrainingRun.checkSeed(seed)
        let recorded = info.history?.epochs ?? []
        let total = request.output == nil ? recorded.count : recipe.epochs
        let epochs = min(request.epochs ?? total, total)
        if request.output == nil && recorded.isEmpty {
            throw DropModelError(
                code: .notReplayable, file: file, object: "/history",
                message: "the bundle records no epochs to compare against")
        }

        // The data must be the data the bundle was trained on.
        let split = try TrainingRun.loadData(recipe, override: request.data)
        if let fp = training.dataFingerprint, fp != split.fingerprint {
            throw DropModelError(
                code: .dataMismatch, file: split.description,
                message: """
                    the data does not match the bundle: it has fingerprint \(split.fingerprint), \(file) was trained \
                    on \(fp)
                    """
                        + (training.dataDescription.map { " (\($0))" } ?? ""),
                hint: "replay needs the exact training data (same files, same --limit); point --data at it")
        }
        var report = ReplayReport(
            file: file, seed: seed, threads: request.threads, data: split.description, epochsReplayed: 0,
            epochsRecorded: recorded.count, verdict: .identical, divergence: nil, storedWeightsChecked: false,
            epochs: [],
            output: nil, outputIdentical: nil, seconds: 0, layerNames: info.layers.map(\.name))

        // The initial weights are a function of the seed.
        let tail = try request.fromEpoch.flatMap { _ in
            try startingState(request, recipe: recipe, history: info.history, last: epochs)
        }
        let initial = tail?.parameters ?? recipe.initialParameters(seed: UInt64(seed))
        let initialDigest = WeightDigest.sha256(initial)
        if tail == nil, request.output == nil, let expected = info.history?.initialWeightsSHA256,
            expected != initialDigest
        {
            report.verdict = .diverged
            report.divergence = ReplayReport.Divergence(
                epoch: 0, layers: [], largest: nil, expectedSHA256: expected, replayedSHA256: initialDigest,
                claimedSeedDiffers: request.seed != nil && request.seed != info.rng?.seed)
            return report
        }
        observer(
            .started(
                RunStart(
                    recipe: recipe, seed: seed, threads: request.threads, data: split.description,
                    trainExamples: split.train.count, epochs: epochs)))
        let started = Date()
        let trainer = Trainer(
            recipe: recipe, seed: UInt64(seed), data: split, initial: initial, threads: request.threads)
        if let tail { trainer.velocities = tail.velocities }
        var mismatch: (epoch: Int, layers: [Int])?
        var records: [EpochRecord] = []
        // --keep-best: the epochs before the first replayed are the recorded ones.
        let before = Array(recorded.prefix((request.fromEpoch ?? 1) - 1))
        var best: (epoch: Int, error: Double, parameters: [Parameters]?)? = TrainingRun.bestEpoch(before).map {
            ($0.epoch, $0.error, tail?.best?.epoch == $0.epoch ? tail?.best?.parameters : nil)
        }
        TrainingRun.run(trainer, from: request.fromEpoch ?? 1, epochs: epochs, observer: observer) { summary in
            let record = summary.record
            records.append(record)
            if recipe.keepBest == .validation, let v = record.validationError, v < best?.error ?? .infinity {
                best = (record.epoch, v, trainer.network.parameters)
            }
            guard record.epoch <= recorded.count else { return true }
            let expected = recorded[record.epoch - 1]
            if expected.weightsSHA256 == record.weightsSHA256 {
                summary.identical = true
                return true
            }
            summary.identical = false
            var layers: [Int] = []
            if let theirs = expected.layerSHA256, let ours = record.layerSHA256, theirs.count == ours.count {
                layers = theirs.indices.filter { theirs[$0] != ours[$0] }
            }
            if mismatch == nil { mismatch = (record.epoch, layers) }
            return request.output != nil
        }
        report.epochs = records
        report.epochsReplayed = records.count
        let replayedTo = (request.fromEpoch ?? 1) - 1 + records.count
        report.seconds = Date().timeIntervalSince(started)

        if let output = request.output {
            let newInfo = TrainingRun.bundleInfo(
                recipe: recipe, seed: seed, data: split, initialDigest: initialDigest, records: records,
                keptEpoch: best?.epoch)
            try BundleWriter.write(
                Model(info: newInfo, parameters: best?.parameters ?? trainer.network.parameters), to: output)
            report.verdict = .wroteWhatIf
            report.output = output
            report.outputIdentical = mismatch == nil && records.count == recorded.count
            if let mismatch {
                report.divergence = ReplayReport.Divergence(
                    epoch: mismatch.epoch, layers: mismatch.layers, largest: nil, claimedSeedDiffers: false)
            }
            return report
        }
        let storesLast = (info.training?.keptEpoch ?? recorded.count) == recorded.count
        if let mismatch {
            report.verdict = .diverged
            let largest =
                mismatch.epoch == recorded.count && storesLast
                ? try largestDifference(bundle, trainer.network.parameters) : nil
            report.divergence = ReplayReport.Divergence(
                epoch: mismatch.epoch, layers: mismatch.layers, largest: largest, claimedSeedDiffers: false)
            return report
        }
        // Every digest matched; the kept epoch (--keep-best) must be the one the replay selects.
        if replayedTo == recorded.count, recipe.keepBest != nil || info.training?.keptEpoch != nil,
            best?.epoch != info.training?.keptEpoch
        {
            report.verdict = .diverged
            report.divergence = ReplayReport.Divergence(
                epoch: nil, layers: [], largest: nil, claimedSeedDiffers: false,
                keptEpoch: ReplayReport.KeptEpochMismatch(recorded: info.training?.keptEpoch, replayed: best?.epoch))
            return report
        }
        // The stored weights must be the replayed ones too: the kept epoch's (--keep-best; known
        // when it was replayed) or the last's.
        let stored = recipe.keepBest != nil && best != nil ? best?.parameters : trainer.network.parameters
        if replayedTo == recorded.count, let stored {
            report.storedWeightsChecked = true
            if let largest = try largestDifference(bundle, stored) {
                report.verdict = .diverged
                report.divergence = ReplayReport.Divergence(
                    epoch: nil, layers: [largest.layer], largest: largest, claimedSeedDiffers: false)
            }
        }
        return report
    }

    /// Where `replay --from-epoch E --start FILE` starts: FILE's weights and velocities, after
    /// checking FILE is at the end of epoch E - 1 and its weights have the digest the bundle
    /// records there. FILE is a checkpoint, or a plain bundle of E - 1 epochs (or epoch 0) when
    /// its missing velocities cannot matter: E is 1 (they start at 0), or epoch E's momentum is
    /// 0 (the first update multiplies them by 0).
    static func startingState(
        _ request: Request, recipe: Recipe, history: History?, last: Int
    ) throws -> (parameters: [Parameters], velocities: [Parameters], best: (epoch: Int, parameters: [Parameters])?)? {
        let e = request.fromEpoch ?? 1
        let recorded = history?.epochs ?? []
        guard request.output == nil else {
            throw DropModelError(code: .usage, file: request.file, message: "--from-epoch cannot be used with -o")
        }
        guard e >= 1, e <= min(last, recorded.count) else {
            throw DropModelError(
                code: .usage, file: request.file, object: "/history",
                message: "--from-epoch \(e) is not one of the epochs replayed (1 to \(min(last, recorded.count)))")
        }
        guard let path = request.start else {
            if e == 1 { return nil }  // the initial weights are a function of the seed
            throw DropModelError(
                code: .usage, file: request.file,
                message: "--from-epoch \(e) needs --start: a checkpoint of the run at epoch \(e - 1)",
                hint: "'train --checkpoint-every' writes checkpoints; for --from-epoch 1 no --start is needed")
        }
        let start = try BundleReader(path: path)
        let state = try start.readCheckpoint()
        let at = state?.epoch ?? start.info.history?.epochs.count ?? 0
        guard at == e - 1 else {
            throw DropModelError(
                code: .notApplicable, file: path, object: state == nil ? "/history" : "/checkpoint@epoch",
                message: """
                    the \(state == nil ? "bundle" : "checkpoint") is at epoch \(at); --from-epoch \(e) needs one at \
                    epoch \(e - 1)
                    """)
        }
        let mu = recipe.momentum(epoch: e)
        if state == nil, at > 0, mu != 0 {
            throw DropModelError(
                code: .notApplicable, file: path, object: "/checkpoint",
                message: """
                    not a checkpoint: it has the weights after epoch \(at) but not the momentum velocities, and \
                    epoch \(e)'s momentum is \(mu), so the replay cannot continue the run exactly without them
                    """,
                hint: """
                    give a checkpoint of the run at epoch \(at) ('train --checkpoint-every'); a plain bundle can start \
                    the replay only at epoch 1 or where the momentum is 0
                    """)
        }
        if let state, state.step > 0 {
            throw DropModelError(
                code: .notApplicable, file: path, object: "/checkpoint@step",
                message: """
                    the checkpoint is inside epoch \(e) (after step \(state.step)): no recorded digest vouches for its \
                    weights; --start needs a checkpoint at the end of epoch \(e - 1)
                    """,
                hint: "'train --checkpoint-every' writes checkpoints at the end of epochs")
        }
        let parameters = try start.readModel().parameters
        let digest = WeightDigest.sha256(parameters)
        let expected = e == 1 ? history?.initialWeightsSHA256 : recorded[e - 2].weightsSHA256
        guard digest == expected else {
            throw DropModelError(
                code: .dataMismatch, file: path, object: "/layers",
                message: """
                    its weights (sha256:\(Hex.encode(digest))) are not \(request.file)'s at epoch \(e - 1) \
                    (\(expected.map { "sha256:" + Hex.encode($0) } ?? "not recorded"))
                    """,
                hint: "--start takes a checkpoint of the run that wrote the bundle")
        }
        let velocities =
            state?.velocities
            ?? parameters.map {
                Parameters(
                    weight: [Float](repeating: 0, count: $0.weight.count),
                    bias: [Float](repeating: 0, count: $0.bias.count))
            }
        // A --keep-best run's checkpoint: the best epoch so far, if its weights have the recorded digest.
        let best = state?.best.flatMap { b in
            recorded.indices.contains(b.epoch - 1)
                && WeightDigest.sha256(b.parameters) == recorded[b.epoch - 1].weightsSHA256
                ? b : nil
        }
        return (parameters, velocities, best)
    }

    /// The first layer whose stored weights differ from `replayed`, with its largest difference.
    static func largestDifference(_ bundle: BundleReader, _ replayed: [Parameters]) throws -> WeightDifference? {
        for l in replayed.indices {
            let stored = try bundle.parameters(l)
            let inputs = bundle.info.layers[l].parameterShapes?.rowLength ?? 1  // row = one unit's fan-in
            var worst: WeightDifference?
            func consider(_ a: [Float], _ b: [Float], bias: Bool) {
                for i in a.indices where a[i].bitPattern != b[i].bitPattern {
                    let d = WeightDifference(
                        layer: l, isBias: bias, row: bias ? i : i / inputs, column: bias ? 0 : i % inputs,
                        stored: a[i], replayed: b[i])
                    if worst == nil || d.magnitude > worst!.magnitude { worst = d }
                }
            }
            consider(stored.weight, replayed[l].weight, bias: false)
            consider(stored.bias, replayed[l].bias, bias: true)
            if let worst { return worst }
        }
        return nil
    }
}
