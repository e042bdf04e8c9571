public import DropModelBase
import HDF5Layer

/// The optimizer state of an unfinished training run, kept in a checkpoint bundle's optional
/// `/checkpoint` group (Specs/bundle-format.md §7.2). A normal bundle never has it.
///
/// The rest of the run's state is in the bundle's ordinary sections: the weights (`/layers`),
/// the recipe, seed and data fingerprint, and the history of the epochs done. Learning rate and
/// momentum are functions of the epoch, masks and shuffles of (seed, epoch, step), so the
/// velocities and the epoch reached complete it.
public struct CheckpointState: Equatable, Sendable {
    /// The epochs done (the history has this many rows).
    public var epoch: Int
    /// One per layer: the momentum velocities of its weight and bias, shaped like them (empty
    /// for a layer without weights).
    public var velocities: [Parameters]

    public init(epoch: Int, velocities: [Parameters]) {
        self.epoch = epoch
        self.velocities = velocities
    }
}

extension Schema {
    public static let checkpointGroup = "checkpoint"
    public static let checkpointEpochAttribute = "epoch"
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

    /// `/checkpoint@epoch` and `/checkpoint/velocity/<i>/weight`, `bias` for each weighted layer
    /// (float32, one chunk each, Fletcher32 like the weights).
    static func writeCheckpoint(
        _ state: CheckpointState, layers: [LayerInfo], to file: File, options: WriteOptions
    ) throws {
        let g = try file.root().createGroup(Schema.checkpointGroup)
        try g.write(Schema.checkpointEpochAttribute, int64: Int64(state.epoch))
        let vg = try g.createGroup(Schema.velocityGroup)
        for (i, layer) in layers.enumerated() {
            guard let shapes = layer.parameterShapes else { continue }
            let lg = try vg.createGroup(String(i))
            let v = state.velocities[i]
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
    /// (`.invalid`) naming the object when it is malformed.
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
            let vg = try g.group(Schema.velocityGroup)
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
            return CheckpointState(epoch: epoch, velocities: velocities)
        }
    }
}
