import DropModelBase
import HDF5Layer

/// The optimizer state of an unfinished training run, kept in a checkpoint bundle's optional
/// `/checkpoint` group (Specs/bundle-format.md §7.2). A normal bundle never has it.
///
/// The rest of the run's state is in the bundle's ordinary sections: the weights (`/layers`),
/// the recipe, seed and data fingerprint, and the history of the epochs done. Learning rate and
/// momentum are functions of the epoch, masks and shuffles of (seed, epoch, step), so the
/// velocities and the position reached (epochs done, steps done in the next epoch and what
/// that epoch's metrics sum so far) complete it.
public struct CheckpointState: Equatable, Sendable {
    /// The epochs done (the history has this many rows).
    public var epoch: Int
    /// The minibatch steps of epoch `epoch + 1` done (0: the checkpoint is at the end of epoch
    /// `epoch`); the weights and velocities are those after that step.
    public var step: Int
    /// Epoch `epoch + 1`'s summed cross-entropy over the examples of its first `step` steps,
    /// as training sums it (float64, in step order); 0 when `step` is 0.
    public var lossSum: Double
    /// The training examples the thinned networks misclassified in those steps; 0 when `step`
    /// is 0.
    public var errors: Int
    /// One per layer: the momentum velocities of its weight and bias, shaped like them (empty
    /// for a layer without weights).
    public var velocities: [Parameters]
    /// A `--keep-best` run: the best epoch so far (1 ... `epoch`) and its weights, one per layer
    /// (empty for a layer without weights); nil otherwise.
    public var best: (epoch: Int, parameters: [Parameters])?

    public init(
        epoch: Int, step: Int = 0, lossSum: Double = 0, errors: Int = 0, velocities: [Parameters],
        best: (epoch: Int, parameters: [Parameters])? = nil
    ) {
        self.best = best
        self.epoch = epoch
        self.step = step
        self.lossSum = lossSum
        self.errors = errors
        self.velocities = velocities
    }
}

extension CheckpointState {
    public static func == (a: CheckpointState, b: CheckpointState) -> Bool {
        a.epoch == b.epoch && a.step == b.step && a.lossSum.bitPattern == b.lossSum.bitPattern && a.errors == b.errors
            && a.velocities == b.velocities && a.best?.epoch == b.best?.epoch
            && a.best?.parameters == b.best?.parameters
    }
}

extension Schema {
    public static let checkpointBestEpochAttribute = "best_epoch"
    public static let bestGroup = "best"
    public static let checkpointGroup = "checkpoint"
    public static let checkpointEpochAttribute = "epoch"
    public static let checkpointStepAttribute = "step"
    public static let checkpointLossSumAttribute = "loss_sum"
    public static let checkpointErrorsAttribute = "errors"
    public static let velocityGroup = "velocity"
}

extension BundleWriter {
    /// Writes `model` with its checkpoint section, atomically (a checkpoint bundle).
    public static func write(
        _ model: Model, checkpoint: CheckpointState, to path: String, options: WriteOptions = WriteOptions()
    ) throws {
        try write(model, to: path, options: options) { file in
            try writeCheckpoint(checkpoint, layers: model.info.layers, to: file, options: options)
        }
    }

    /// `/checkpoint@epoch`, inside an epoch `@step`, `@loss_sum` and `@errors` (not written at an
    /// epoch's end, so such a checkpoint is what it was before they existed), and
    /// `/checkpoint/velocity/<i>/weight`, `bias` for each weighted layer (float32, one chunk
    /// each, Fletcher32 like the weights).
    static func writeCheckpoint(
        _ state: CheckpointState, layers: [LayerInfo], to file: File, options: WriteOptions
    ) throws {
        let g = try file.root().createGroup(Schema.checkpointGroup)
        try g.write(Schema.checkpointEpochAttribute, int64: Int64(state.epoch))
        if state.step > 0 {
            try g.write(Schema.checkpointStepAttribute, int64: Int64(state.step))
            try g.write(Schema.checkpointLossSumAttribute, double: state.lossSum)
            try g.write(Schema.checkpointErrorsAttribute, int64: Int64(state.errors))
        }
        try writeLayerTensors(state.velocities, layers: layers, to: try g.createGroup(Schema.velocityGroup), options)
        if let best = state.best {
            try g.write(Schema.checkpointBestEpochAttribute, int64: Int64(best.epoch))
            try writeLayerTensors(best.parameters, layers: layers, to: try g.createGroup(Schema.bestGroup), options)
        }
    }

    /// `<i>/weight`, `<i>/bias` of `values` under `group` for each weighted layer (float32, one
    /// chunk each, Fletcher32 like the weights).
    private static func writeLayerTensors(
        _ values: [Parameters], layers: [LayerInfo], to vg: Group, _ options: WriteOptions
    ) throws {
        for (i, layer) in layers.enumerated() {
            guard let shapes = layer.parameterShapes else { continue }
            let lg = try vg.createGroup(String(i))
            let v = values[i]
            for (name, shape, values) in [
                (Schema.weightDataset, shapes.weight, v.weight), (Schema.biasDataset, shapes.bias, v.bias),
            ] {
                let d = try lg.createDataset(
                    name, type: .float32, shape: shape, chunk: shape, fletcher32: options.fletcher32)
                try d.write(floats: values)
                d.close()
            }
        }
    }
}

extension BundleReader {
    /// Whether the bundle has a `/checkpoint` section (is a checkpoint of an unfinished run).
    public var isCheckpoint: Bool {
        (try? wrap { try file.root().contains(Schema.checkpointGroup) }) ?? false
    }

    /// Reads the `/checkpoint` section: nil when the bundle has none; throws ``DropModelError``
    /// (`.invalid`) naming the object when it is malformed (Specs/bundle-format.md §7.2; that
    /// `step` is below the epoch's step count depends on the recipe: the resume checks it).
    public func readCheckpoint() throws -> CheckpointState? {
        guard isCheckpoint else { return nil }
        return try wrap {
            let g = try file.root().group(Schema.checkpointGroup)
            let epoch = Int(try g.readInt64(Schema.checkpointEpochAttribute))
            let recorded = info.history?.epochs.count ?? 0
            guard epoch == recorded else {
                throw DropModelError(
                    code: .invalid, file: path, object: g.path + "@epoch",
                    message: "the checkpoint says epoch \(epoch) but the history records \(recorded) epochs")
            }
            let position = try readPosition(g)
            let velocities = try readLayerTensors(try g.group(Schema.velocityGroup))
            var best: (epoch: Int, parameters: [Parameters])?
            if try g.hasAttribute(Schema.checkpointBestEpochAttribute) {
                let e = Int(try g.readInt64(Schema.checkpointBestEpochAttribute))
                guard (1...max(1, epoch)).contains(e), epoch >= 1 else {
                    throw DropModelError(
                        code: .invalid, file: path, object: g.path + "@" + Schema.checkpointBestEpochAttribute,
                        message: "is \(e); the best epoch of a checkpoint at epoch \(epoch) is in 1 ... \(epoch)")
                }
                best = (e, try readLayerTensors(try g.group(Schema.bestGroup)))
            }
            return CheckpointState(
                epoch: epoch, step: position.step, lossSum: position.lossSum, errors: position.errors,
                velocities: velocities, best: best)
        }
    }

    /// `<i>/weight`, `<i>/bias` under `vg` for each weighted layer, shaped like the layer's.
    private func readLayerTensors(_ vg: Group) throws -> [Parameters] {
        try wrap {
            var velocities: [Parameters] = []
            for (i, layer) in info.layers.enumerated() {
                guard let shapes = layer.parameterShapes else {
                    velocities.append(Parameters(weight: [], bias: []))
                    continue
                }
                let lg = try vg.group(String(i))
                var v = Parameters(weight: [], bias: [])
                for (name, shape) in [(Schema.weightDataset, shapes.weight), (Schema.biasDataset, shapes.bias)] {
                    let d = try lg.dataset(name)
                    guard try d.shape() == shape else {
                        throw DropModelError(
                            code: .invalid, file: path, object: d.path,
                            message: "has shape \(try d.shape()); the layer's \(name) is \(shape)")
                    }
                    if name == Schema.weightDataset {
                        v.weight = try d.readFloats()
                    } else {
                        v.bias = try d.readFloats()
                    }
                }
                velocities.append(v)
            }
            return velocities
        }
    }

    /// `@step`, `@loss_sum`, `@errors` of `/checkpoint`: all three or none (none: step 0).
    private func readPosition(_ g: Group) throws -> (step: Int, lossSum: Double, errors: Int) {
        let names = [
            Schema.checkpointStepAttribute, Schema.checkpointLossSumAttribute, Schema.checkpointErrorsAttribute,
        ]
        let present = try names.filter { try g.hasAttribute($0) }
        guard !present.isEmpty else { return (0, 0, 0) }
        func invalid(_ name: String, _ message: String) -> DropModelError {
            DropModelError(code: .invalid, file: path, object: g.path + "@" + name, message: message)
        }
        if let missing = names.first(where: { !present.contains($0) }) {
            throw invalid(missing, "missing: a checkpoint inside an epoch has step, loss_sum and errors")
        }
        let step = Int(try g.readInt64(Schema.checkpointStepAttribute))
        let lossSum = try g.readDouble(Schema.checkpointLossSumAttribute)
        let errors = Int(try g.readInt64(Schema.checkpointErrorsAttribute))
        let examples = info.training?.examples
        guard step >= 1 else {
            throw invalid(
                Schema.checkpointStepAttribute, "is \(step); a checkpoint inside an epoch has done 1 step or more")
        }
        if let examples, step >= examples {
            throw invalid(
                Schema.checkpointStepAttribute,
                "is \(step); an epoch of \(examples) examples has fewer steps than that")
        }
        guard lossSum.isFinite, lossSum >= 0 else {
            throw invalid(
                Schema.checkpointLossSumAttribute, "is \(lossSum); a sum of cross-entropies is finite and >= 0")
        }
        guard errors >= 0, errors <= examples ?? Int.max else {
            throw invalid(
                Schema.checkpointErrorsAttribute,
                "is \(errors); a count of misclassified examples is in 0 ... \(examples ?? Int.max)")
        }
        return (step, lossSum, errors)
    }
}
