import ArgumentParser
import DropModelBase
import Foundation
import Interop
import Training

/// `dropmodel predict`: parses, calls ``Training/EvalRun/predict(_:)``, writes the `.npy`, prints.
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

    @Option(
        help: "fashion-mnist (default), mnist, a directory of IDX files or an HDF5 data file; its test set is used.")
    var data: String = "fashion-mnist"

    @Option(help: "Only the first N test examples.")
    var limit: Int?

    @Option(name: .shortAndLong, help: "Write the probabilities here (.npy, float32 [examples, classes]).")
    var output: String?

    @OptionGroup var threadsOption: ThreadsOption

    @OptionGroup var jsonOption: JSONOption
    @OptionGroup var quietOption: QuietOption

    func validate() throws {
        if let limit, limit < 1 { throw ValidationError("--limit must be at least 1") }
    }

    func run() throws {
        let r = try EvalRun.predict(
            EvalRun.PredictRequest(
                file: model, data: data, limit: limit, threads: threadsOption.resolved, output: output))
        if let output {
            let npy = NumPy.npy(.float32(r.probabilities, shape: [r.examples, r.classes]))
            try npy.withUnsafeBytes { try AtomicFile.write($0, to: output, what: "probabilities") }
        }
        if jsonOption.json {
            JSONOutput.print(
                "predict",
                [
                    ("file", .string(model)), ("output", .optional(output)), ("data", .string(r.data)),
                    ("examples", .int(r.examples)),
                    ("classes", .int(r.classes)), ("error", .number(r.error)),
                    ("inference", .string(r.inference.rawValue)),
                ])
            return
        }
        print(
            """
            \(model) on \(r.examples) test examples of \(data): \(Format.percent(r.error)) test error \
            (\(r.inference.rawValue))
            """
                + (output.map { "; wrote \($0)" } ?? ""))
    }
}
