import ArgumentParser
import BundleFormat
import Foundation
import Interop
import Training
import TrainingData

/// `dropmodel predict`: the deterministic forward pass as a command.
struct Predict: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Class probabilities of the deterministic network on a data set's test examples.",
        discussion: """
            The forward pass eval and the interop tests use: weight scaling applied on the fly to \
            a classic unbaked bundle; a baked or inverted bundle is used as it is. Prints the test \
            error; -o writes the probabilities as a NumPy .npy array of float32 [examples, classes] \
            (row i is test example i, in the data set's order).
            """)

    @Argument(help: "The bundle.")
    var model: String

    @Option(help: "fashion-mnist (default), mnist, a directory of IDX files or an HDF5 data file; its test set is used.")
    var data: String = "fashion-mnist"

    @Option(help: "Only the first N test examples.")
    var limit: Int?

    @Option(name: .shortAndLong, help: "Write the probabilities here (.npy, float32 [examples, classes]).")
    var output: String?

    @OptionGroup var threadsOption: ThreadsOption

    @Flag(help: "Print one JSON object.")
    var json = false

    func validate() throws {
        if let limit, limit < 1 { throw ValidationError("--limit must be at least 1") }
    }

    func run() throws {
        let bundle = try BundleReader(path: model)
        let info = bundle.info
        let (set, dataDescription) = try loadTestSet(data, limit: limit, for: info, model: model, purpose: "predict on")
        let (network, evaluation) = try deterministicEvaluation(bundle, threads: try threadsOption.resolve())
        let probs = evaluation.deterministicProbabilities(set)
        let classes = network.outputs
        let predicted = Predictor.argmax(probs, classes: classes)
        let wrong = zip(predicted, set.labels).filter { $0 != Int($1) }.count
        let error = Double(wrong) / Double(set.count)
        if let output {
            try writeOutputFile(NumPy.npy(.float32(probs, shape: [set.count, classes])), to: output, what: "probabilities")
        }
        let how = info.convention == .inverted ? "weights as stored (inverted)"
            : info.baked ? "weights as stored (baked)" : "weight scaling applied on the fly (classic)"
        if json {
            let o = JSON.object([
                ("model", .string(model)), ("data", .string(dataDescription)), ("examples", .int(Int64(set.count))),
                ("classes", .int(Int64(classes))), ("error", .double(error)), ("inference", .string(how)),
                ("output", .optional(output)),
            ])
            print(o.serialized())
            return
        }
        print("\(model) on \(set.count) test examples of \(data): \(Format.percent(error)) test error (\(how))"
              + (output.map { "; wrote \($0)" } ?? ""))
    }
}
