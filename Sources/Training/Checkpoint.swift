public import BundleFormat
import DropModelBase
import DropoutRandom
import Foundation
import TrainingData

/// When a training run writes a checkpoint (`train --checkpoint-every`): after every `epochs`
/// epochs, or when `seconds` have passed since the last one (checked at the end of each epoch).
/// Not part of the recipe: the final bundle is the same bits whatever the policy.
public struct CheckpointPolicy: Sendable, Equatable {
    public var epochs: Int?
    public var seconds: Double?

    public init(epochs: Int? = nil, seconds: Double? = nil) {
        self.epochs = epochs
        self.seconds = seconds
    }

    /// `N` (epochs) or a duration `30s`, `10m`, `2h`; nil when it is neither.
    public static func parse(_ text: String) -> CheckpointPolicy? {
        if let n = Int(text) { return n > 0 ? CheckpointPolicy(epochs: n) : nil }
        guard let unit = text.last, let value = Double(text.dropLast()), value > 0, value.isFinite else { return nil }
        switch unit {
        case "s": return CheckpointPolicy(seconds: value)
        case "m": return CheckpointPolicy(seconds: value * 60)
        case "h": return CheckpointPolicy(seconds: value * 3600)
        default: return nil
        }
    }
}

/// Where an epoch is between two steps: the steps done, and what the epoch's metrics sum so far
/// (``Trainer/trainSteps(_:from:progress:stop:)``).
public struct EpochPosition: Sendable, Equatable {
    /// Steps done (0: the epoch has not started).
    public var step: Int
    /// The summed cross-entropy of those steps' examples, in step order.
    public var lossSum: Double
    /// The examples those steps misclassified.
    public var errors: Int

    public init(step: Int = 0, lossSum: Double = 0, errors: Int = 0) {
        self.step = step
        self.lossSum = lossSum
        self.errors = errors
    }
}

/// Where `train --resume` continues: a checkpoint bundle's recipe, seed, weights, optimizer
/// state and history.
public struct ResumePoint: Sendable {
    public var file: String
    public var recipe: Recipe
    public var seed: Int64
    public var parameters: [Parameters]
    public var state: CheckpointState
    public var initialWeightsSHA256: [UInt8]
    public var records: [EpochRecord]
    public var dataFingerprint: String?
    public var dataDescription: String?
}

extension TrainingRun {
    /// The checkpoint of the run writing `output`: `output.ckpt`, beside it.
    public static func checkpointPath(for output: String) -> String { output + ".ckpt" }

    /// The output a checkpoint belongs to (`run.h5.ckpt` → `run.h5`), or nil for another name.
    public static func output(forCheckpoint path: String) -> String? {
        path.hasSuffix(".ckpt") && path.count > 5 ? String(path.dropLast(5)) : nil
    }

    /// The bundle a run writes: `output` when given, else (resuming `checkpoint`) the output that
    /// checkpoint belongs to; a usage error when neither names one.
    public static func output(_ output: String?, resuming checkpoint: String?) throws -> String {
        if let output { return output }
        guard let checkpoint, let o = self.output(forCheckpoint: checkpoint) else {
            throw DropModelError(
                code: .usage, file: checkpoint ?? "", message: "the checkpoint's name does not end in .ckpt",
                hint: "name the bundle to write with -o")
        }
        return o
    }

    /// Reads a checkpoint bundle written by `train --checkpoint-every` or an interrupted run, and
    /// checks this build can continue it (the random streams it was made with, the dropmodel
    /// version that wrote it: another version's final bundle would differ in its bytes).
    public static func resumePoint(from path: String) throws -> ResumePoint {
        let bundle = try BundleReader(path: path)
        let info = bundle.info
        guard let state = try bundle.readCheckpoint() else {
            throw DropModelError(
                code: .notApplicable, file: path, object: "/" + Schema.checkpointGroup,
                message: "the bundle is not a checkpoint (it has no optimizer state to continue from)",
                hint: "--resume takes the .ckpt file 'dropmodel train --checkpoint-every' or an interrupted run wrote")
        }
        guard let t = info.training, let recipe = try? Recipe.decode(json: t.recipe) else {
            throw DropModelError(
                code: .notReplayable, file: path, object: "/training@recipe",
                message: "the checkpoint has no dropmodel recipe to continue")
        }
        var problems: [Problem] = []
        if let rng = info.rng, rng.algorithm != StreamLayout.algorithm || rng.streamLayout != StreamLayout.version {
            problems.append(
                Problem(
                    file: path, object: "/rng",
                    message: """
                        made with '\(rng.algorithm)' stream layout \(rng.streamLayout); this dropmodel draws \
                        '\(StreamLayout.algorithm)' layout \(StreamLayout.version)
                        """))
        }
        let ours = WriteOptions().creator
        if info.creator != ours {
            problems.append(
                Problem(
                    file: path, object: "/@creator",
                    message: "written by \(info.creator ?? "an unknown writer"); this is \(ours ?? "dropmodel")",
                    hint: "resume with the dropmodel that wrote the checkpoint, or train again from the start"))
        }
        guard let seed = info.rng?.seed else {
            throw DropModelError(
                code: .notReplayable, file: path, object: "/rng@seed", message: "the checkpoint records no seed")
        }
        if !problems.isEmpty { throw DropModelError(code: .notReplayable, problems: problems) }
        guard state.epoch < recipe.epochs else {
            throw DropModelError(
                code: .notApplicable, file: path, object: "/checkpoint@epoch",
                message: "the checkpoint is at epoch \(state.epoch) of \(recipe.epochs): nothing is left to train")
        }
        let history = info.history
        return ResumePoint(
            file: path, recipe: recipe, seed: seed, parameters: try bundle.readModel().parameters, state: state,
            initialWeightsSHA256: history?.initialWeightsSHA256 ?? WeightDigest.sha256([]),
            records: history?.epochs ?? [], dataFingerprint: t.dataFingerprint, dataDescription: t.dataDescription)
    }

    /// The recipe keys whose values differ, as `key: a -> b` (empty when the recipes are equal).
    public static func recipeDifferences(_ a: Recipe, _ b: Recipe) -> [String] {
        guard let x = a.jsonValue.object, let y = b.jsonValue.object else { return [] }
        let keys = (x.map(\.key) + y.map(\.key)).reduce(into: [String]()) { if !$0.contains($1) { $0.append($1) } }
        return keys.compactMap { k in
            let (u, v) = (x[k], y[k])
            guard u != v else { return nil }
            return "\(k): \(u?.text ?? "absent") -> \(v?.text ?? "absent")"
        }
    }

    /// A resumed run must have the checkpoint's recipe and seed: a usage error listing every
    /// difference otherwise.
    static func checkResume(_ resume: ResumePoint, recipe: Recipe, seed: Int64) throws {
        var differences = recipeDifferences(resume.recipe, recipe)
        if seed != resume.seed { differences.append("seed: \(resume.seed) -> \(seed)") }
        guard !differences.isEmpty else { return }
        throw DropModelError(
            code: .usage,
            problems: differences.map {
                Problem(
                    file: resume.file, object: "/training@recipe",
                    message: "the options differ from the checkpoint's run: \($0)",
                    hint: "--resume continues the checkpoint's recipe and seed: give no recipe options")
            })
    }

    /// The checkpoint's data fingerprint against the data loaded now, and its position inside
    /// an epoch against the epoch's steps.
    static func checkResumeData(_ resume: ResumePoint, _ data: DataSplit) throws {
        if let fp = resume.dataFingerprint, fp != data.fingerprint {
            throw DropModelError(
                code: .dataMismatch, file: resume.file, object: "/training@data_fingerprint",
                message: """
                    the data does not match the checkpoint: \(data.description) has fingerprint \(data.fingerprint), \
                    the run was trained on \(fp)\(resume.dataDescription.map { " (\($0))" } ?? "")
                    """,
                hint: "resume needs the exact training data of the run (same files, same --limit)")
        }
        let (state, batch) = (resume.state, resume.recipe.batchSize)
        let steps = (data.train.count + batch - 1) / batch
        if state.step >= steps {
            throw DropModelError(
                code: .invalid, file: resume.file, object: "/checkpoint@step",
                message: """
                    is \(state.step), past the last step of an epoch: \(data.train.count) examples in batches of \
                    \(batch) make \(steps) steps (0 to \(steps - 1))
                    """,
                hint: "the checkpoint was altered or written for other data; resume from an earlier one or start again")
        }
        if state.errors > min(state.step * batch, data.train.count) {
            throw DropModelError(
                code: .invalid, file: resume.file, object: "/checkpoint@errors",
                message: "is \(state.errors), more than the \(state.step * batch) examples of \(state.step) steps")
        }
    }

    /// Adds to a failed write that the checkpoint at `path` (epoch `epoch`) is intact.
    static func keepsCheckpoint(_ error: any Error, path: String, epoch: Int) -> any Error {
        guard var e = error as? DropModelError else { return error }
        e.problems.append(
            Problem(
                file: path, object: "",
                message: "the previous checkpoint (epoch \(epoch)) is intact",
                hint: "free space, then continue with 'dropmodel train --resume \(path)': nothing was lost"))
        return e
    }
}
