import ArgumentParser
import BundleFormat
import Foundation
import Training
import TrainingData

/// `dropmodel replay`.
struct Replay: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Retrain a bundle from its recipe and seed and prove the result bit-identical, or say where it diverged.",
        discussion: """
            Checks the data fingerprint, regenerates the initial weights from the seed, retrains \
            epoch by epoch comparing the weight digest recorded after every epoch, and finally \
            compares the stored weights value by value. Exit 0 when bit-identical; exit 1 at the \
            first mismatch, naming the epoch, the layer and the largest difference.

            With -o it is a what-if run instead: retrain (e.g. with another --seed) and write \
            the new bundle; differences from the original are reported, not failed.
            """)

    @Argument(help: "The bundle to replay.")
    var file: String

    @Option(help: "The seed to replay with: needed when the bundle records none; otherwise checks a claimed seed.")
    var seed: Int64?

    @Option(help: "Replay only the first K epochs (a quick audit).")
    var epochs: Int?

    @Option(help: "Read the training data from here instead of the recipe's --data (the fingerprint must still match).")
    var data: String?

    @OptionGroup var threadsOption: ThreadsOption

    @Option(name: .shortAndLong, help: "What-if: write the retrained bundle here instead of failing on differences.")
    var output: String?

    func run() throws {
        let bundle = try BundleReader(path: file)
        let info = bundle.info
        guard let training = info.training else {
            throw CommandFailure(message: "\(file): /training: the bundle records no training recipe, so it cannot be replayed",
                                 hint: "bundles written by 'dropmodel train' record one")
        }
        let recipe: Recipe
        do { recipe = try Recipe.decode(json: training.recipe) } catch {
            throw CommandFailure(message: "\(file): /training@recipe: not a dropmodel recipe (\(error))")
        }
        if let rng = info.rng, rng.algorithm != "philox4x32-10" || rng.streamLayout != 1 {
            throw CommandFailure(
                message: "\(file): /rng: algorithm '\(rng.algorithm)' with stream layout \(rng.streamLayout) is not one this dropmodel can replay (philox4x32-10, layout 1)")
        }
        guard let seed = seed ?? info.rng?.seed else {
            throw CommandFailure(message: "\(file): /rng@seed: the bundle records no seed", hint: "give the seed with --seed S")
        }
        guard seed >= 0 else { throw ValidationError("--seed must be in 0 ..< 2^63") }
        let recorded = info.history?.epochs ?? []
        let total = output == nil ? recorded.count : recipe.epochs
        let epochs = min(epochs ?? total, total)
        if output == nil && recorded.isEmpty {
            throw CommandFailure(message: "\(file): /history: the bundle records no epochs to compare against")
        }
        let threads = try threadsOption.resolve()

        // The data must be the data the bundle was trained on.
        let split = try TrainingRun.loadData(recipe, override: data)
        if let fp = training.dataFingerprint, fp != split.fingerprint {
            throw CommandFailure(
                message: "the data does not match the bundle: \(split.description) has fingerprint \(split.fingerprint), "
                    + "\(file) was trained on \(fp)" + (training.dataDescription.map { " (\($0))" } ?? ""),
                hint: "replay needs the exact training data (same files, same --limit); point --data at it")
        }

        // The initial weights are a function of the seed.
        let initial = recipe.initialParameters(seed: UInt64(seed))
        let initialDigest = WeightDigest.sha256(initial)
        if output == nil, let expected = info.history?.initialWeightsSHA256, expected != initialDigest {
            let claim = self.seed.map { $0 != info.rng?.seed ? "the claimed seed \($0) does not reproduce it" : "" } ?? ""
            fail("diverged before epoch 1: the initial weights regenerated from seed \(seed) have digest "
                 + "sha256:\(WeightDigest.hex(initialDigest)), the bundle records sha256:\(WeightDigest.hex(expected))"
                 + (claim.isEmpty ? " (the run started from weights that are not this seed's initialisation)" : "; " + claim))
        }
        print("replaying \(file): \(recipe.layers.map(String.init).joined(separator: "-")), seed \(seed), "
              + "\(epochs) of \(recorded.count) epoch\(recorded.count == 1 ? "" : "s"), \(threads) thread\(threads == 1 ? "" : "s"), "
              + "on \(split.description)")
        let started = Date()
        let trainer = Trainer(recipe: recipe, seed: UInt64(seed), data: split, initial: initial, threads: threads)
        var mismatch: (epoch: Int, layers: [Int])?
        var records: [EpochRecord] = []
        _ = TrainingRun.run(trainer, epochs: epochs) { m in
            let record = TrainingRun.record(m, trainer)
            records.append(record)
            guard m.epoch <= recorded.count else { return true }
            let expected = recorded[m.epoch - 1]
            if expected.weightsSHA256 == m.weightsSHA256 {
                print("  epoch \(m.epoch): identical (sha256:\(WeightDigest.hex(m.weightsSHA256).prefix(16))...)")
                return true
            }
            var layers: [Int] = []
            if let theirs = expected.layerSHA256, let ours = record.layerSHA256 {
                layers = theirs.indices.filter { theirs[$0] != ours[$0] }
            }
            mismatch = (m.epoch, layers)
            return output != nil
        }
        let seconds = Date().timeIntervalSince(started)

        if let output {
            let newInfo = TrainingRun.info(recipe: recipe, seed: seed, data: split, initialDigest: initialDigest, records: records)
            try BundleWriter.write(Model(info: newInfo, parameters: trainer.network.parameters), to: output)
            let same = mismatch == nil && records.count == recorded.count
            print("wrote \(output) (what-if run, \(records.count) epochs, \(String(format: "%.1f", seconds)) s): "
                  + (same ? "bit-identical to \(file)" : mismatch.map { "differs from \(file) from epoch \($0.epoch) on" }
                     ?? "\(records.count) epochs vs \(recorded.count) recorded"))
            return
        }
        if let mismatch {
            var text = "diverged at epoch \(mismatch.epoch): the weight digest differs from the one recorded"
            if !mismatch.layers.isEmpty {
                text += "; layer\(mismatch.layers.count == 1 ? "" : "s") "
                    + mismatch.layers.map { "\($0) ('\(info.layers[$0].name)')" }.joined(separator: ", ") + " differ"
            }
            if mismatch.epoch == recorded.count, let (layer, diff) = try largestDifference(bundle, trainer.network.parameters) {
                text += "; largest difference from the stored weights: " + describe(layer: layer, diff: diff, info: info)
            } else if mismatch.epoch < recorded.count {
                text += " (the bundle stores weights after epoch \(recorded.count) only, so the size of the difference at epoch \(mismatch.epoch) is unknown)"
            }
            fail(text)
        }
        // Every digest matched; the stored weights must be the replayed ones too.
        if epochs == recorded.count, let (layer, diff) = try largestDifference(bundle, trainer.network.parameters) {
            fail("every epoch's digest matches, but the stored weights differ from the replayed ones: "
                 + describe(layer: layer, diff: diff, info: info) + " (the weights were changed after training)")
        }
        let checked = epochs == recorded.count ? "every epoch's weight digest and the stored weights match" : "every replayed epoch's weight digest matches"
        print(String(format: "replay: bit-identical through epoch %d of %d: %@ (%.1f s)", epochs, recorded.count, checked, seconds))
    }

    struct Difference {
        var index: Int
        var row: Int
        var column: Int
        var stored: Float
        var replayed: Float
        var isBias: Bool
    }

    /// The first layer whose stored weights differ from `replayed`, with its largest difference.
    func largestDifference(_ bundle: BundleReader, _ replayed: [Parameters]) throws -> (Int, Difference)? {
        for l in replayed.indices {
            let stored = try bundle.parameters(l)
            let inputs = bundle.info.layers[l].inputs
            var worst: Difference?
            var worstSize: Float = -1
            func consider(_ a: [Float], _ b: [Float], bias: Bool) {
                for i in a.indices where a[i].bitPattern != b[i].bitPattern {
                    let d = a[i].isNaN || b[i].isNaN ? Float.infinity : abs(a[i] - b[i])
                    if d > worstSize {
                        worstSize = d
                        worst = Difference(index: i, row: bias ? i : i / inputs, column: bias ? 0 : i % inputs,
                                           stored: a[i], replayed: b[i], isBias: bias)
                    }
                }
            }
            consider(stored.weight, replayed[l].weight, bias: false)
            consider(stored.bias, replayed[l].bias, bias: true)
            if let worst { return (l, worst) }
        }
        return nil
    }

    func describe(layer: Int, diff: Difference, info: ModelInfo) -> String {
        let where_ = diff.isBias ? "bias[\(diff.row)]" : "weight[\(diff.row), \(diff.column)]"
        return "layer \(layer) ('\(info.layers[layer].name)') \(where_): stored \(diff.stored), replayed \(diff.replayed), "
            + "|difference| \(abs(diff.stored - diff.replayed))"
    }

    func fail(_ message: String) -> Never {
        FileHandle.standardError.write(Data("replay: \(file): \(message)\n".utf8))
        Foundation.exit(ExitStatus.difference)
    }
}
