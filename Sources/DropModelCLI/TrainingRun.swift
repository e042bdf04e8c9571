import BundleFormat
import DropoutRandom
import Foundation
import Training
import TrainingData

/// What `train` and `replay` share: loading the data a recipe names and running epochs.
enum TrainingRun {
    /// Loads the recipe's data (with its limits) and checks it fits the network.
    static func loadData(_ recipe: Recipe, override: String? = nil) throws -> DataSplit {
        let split: DataSplit
        do {
            split = try DataSource.load(override ?? recipe.data, limit: recipe.limit, testLimit: recipe.testLimit)
        } catch let e as DataError {
            throw CommandFailure(message: e.description, hint: e.hint)
        }
        guard split.train.features == recipe.layers.first else {
            throw CommandFailure(
                message: "the data has \(split.train.features) features per example but the network's first layer has \(recipe.layers.first ?? 0) inputs",
                hint: "set --layers to start with \(split.train.features)")
        }
        guard split.train.classes <= recipe.layers.last ?? 0 else {
            throw CommandFailure(
                message: "the data has \(split.train.classes) classes but the output layer has \(recipe.layers.last ?? 0) units",
                hint: "set --layers to end with \(split.train.classes)")
        }
        return split
    }

    /// Runs epochs `1...epochs`, printing a line per epoch (and a progress bar on a terminal);
    /// `check` sees each epoch's metrics and may stop the run by returning false.
    static func run(
        _ trainer: Trainer, epochs: Int, quiet: Bool = false, check: (EpochMetrics) throws -> Bool = { _ in true }
    ) rethrows -> [EpochMetrics] {
        var out: [EpochMetrics] = []
        let batch = Double(trainer.recipe.batchSize)
        for e in 1...max(1, epochs) where epochs > 0 {
            let started = Date()
            let bar = ProgressBar(label: "epoch \(e)/\(epochs)", total: trainer.stepsPerEpoch, unitsPerStep: batch)
            let m = trainer.trainEpoch(e) { done, _ in bar.update(done) }
            bar.finish()
            let seconds = Date().timeIntervalSince(started)
            if !quiet {
                let rate = Double(trainer.data.train.count) / max(seconds, 1e-9)
                print(String(format: "epoch %d/%d  loss %.4f  train error %@  test error %@  (%.1f s, %@ ex/s)",
                             e, epochs, m.loss, Format.percent(m.trainError), Format.percent(m.testError), seconds,
                             Format.grouped(Int(rate))))
                // Into a pipe (`dropmodel train | tee log`) too, each line as it happens.
                fflush(nil)
            }
            out.append(m)
            if try !check(m) { break }
        }
        return out
    }

    static func record(_ m: EpochMetrics, _ trainer: Trainer) -> EpochRecord {
        EpochRecord(
            epoch: m.epoch, loss: m.loss, trainError: m.trainError, testError: m.testError, weightsSHA256: m.weightsSHA256,
            layerSHA256: WeightDigest.layerSHA256(trainer.network.parameters))
    }

    /// The bundle metadata of a finished run.
    static func info(recipe: Recipe, seed: Int64, data: DataSplit, initialDigest: [UInt8], records: [EpochRecord]) -> ModelInfo {
        ModelInfo(
            convention: recipe.convention, baked: false, layers: recipe.layerInfos,
            rng: RNGInfo(algorithm: "philox4x32-10", seed: seed, streamLayout: StreamLayout.version),
            training: TrainingInfo(
                recipe: recipe.json(), dataFingerprint: data.fingerprint, dataDescription: data.description,
                examples: data.train.count),
            history: History(initialWeightsSHA256: initialDigest, epochs: records))
    }
}
