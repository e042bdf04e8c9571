import ArgumentParser
import DropModelBase
import Foundation
import Training

/// `dropmodel masks`: parses, calls ``Training/MaskQuery/run(_:)``, prints.
struct Masks: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show which units were dropped at a training step, computed from the random stream alone.",
        discussion: """
            The mask of (epoch, step, layer, example) is a pure function of the seed \
            (Specs/random-streams.md §5), so it is recomputed directly, in time proportional to \
            the mask: no training is replayed and no data is read. Layer L's mask covers the \
            inputs of dense layer L (layer 0: the input features). Epochs count from 1 as in \
            the history; steps and examples within a step from 0.
            """)

    @Argument(help: "A bundle written by 'dropmodel train' (or 'init').")
    var file: String

    @Option(help: "Epoch, from 1.")
    var epoch: Int

    @Option(help: "Minibatch within the epoch, from 0.")
    var step: Int

    @Option(help: "Dense layer whose inputs the mask covers, from 0.")
    var layer: Int

    @Option(help: "One example of the minibatch, from 0 (default: all of them).")
    var example: Int?

    @Option(help: "The seed, if the bundle records none.")
    var seed: Int64?

    @Option(help: "Also draw the mask as a PNG: one row per example, one pixel per unit, white = kept.")
    var png: String?

    @Flag(help: "Print JSON: for each example, the indices of the kept units.")
    var json = false

    func validate() throws {
        if epoch < 1 { throw ValidationError("--epoch counts from 1") }
        if step < 0 { throw ValidationError("--step counts from 0") }
        if layer < 0 { throw ValidationError("--layer counts from 0") }
        if let example, example < 0 { throw ValidationError("--example counts from 0") }
        if let seed, seed < 0 { throw ValidationError("--seed must be in 0 ..< 2^63") }
    }

    func run() throws {
        let r = try MaskQuery.run(
            MaskQuery.Request(
                file: file, epoch: epoch, step: step, layer: layer, example: example, seed: seed, png: png))
        if json {
            JSONOutput.print(
                "masks",
                [("file", .string(file)), ("output", .optional(png))] + JSONOutput.seed(r.seed) + [
                    ("epoch", .int(r.epoch)), ("step", .int(r.step)), ("layer", .int(r.layer)),
                    ("units", .int(r.units)), ("keep_prob", .number(r.keepProb)),
                    (
                        "examples",
                        .array(
                            r.examples.map { ex in
                                .object(
                                    JSONObject([
                                        ("example", .int(ex.example)),
                                        ("kept", .array(ex.kept.indices.filter { ex.kept[$0] }.map { .int($0) })),
                                    ]))
                            })
                    ),
                ])
            return
        }
        let what = r.previousLayer.map { "the outputs of layer \($0.index) ('\($0.name)')" } ?? "the input features"
        print(
            """
            epoch \(r.epoch), step \(r.step), layer \(r.layer) ('\(r.layerName)'): mask over \(what), \(r.units) \
            units, keep p \(Format.short(r.keepProb)), seed \(r.seed)
            """)
        for (ex, k) in r.examples {
            let count = k.filter { $0 }.count
            print(
                String(
                    format: "example %3d  kept %d of %d (%.1f %%)", ex, count, k.count,
                    100 * Double(count) / Double(k.count)))
            if r.examples.count == 1 {
                // The mask itself, 64 units a line: '#' kept, '.' dropped.
                for start in stride(from: 0, to: k.count, by: 64) {
                    let line = k[start..<min(k.count, start + 64)].map { $0 ? "#" : "." }.joined()
                    print(String(format: "  %5d  ", start) + line)
                }
            }
        }
        if let png { print("wrote \(png)") }
    }
}
