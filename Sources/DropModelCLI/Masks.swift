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
            inputs of weighted layer L (dense or conv2d; layer 0: the input features): for an \
            image, one H x W map per channel. Epochs count from 1 as in the history; steps and \
            examples within a step from 0.
            """)

    @Argument(help: "A bundle written by 'dropmodel train' (or 'init').")
    var file: String

    @Option(help: "Epoch, from 1.")
    var epoch: Int

    @Option(help: "Minibatch within the epoch, from 0.")
    var step: Int

    @Option(help: "Weighted layer (dense or conv2d) whose inputs the mask covers, from 0 (as inspect numbers them).")
    var layer: Int

    @Option(help: "One example of the minibatch, from 0 (default: all of them).")
    var example: Int?

    @Option(help: "The seed, if the bundle records none.")
    var seed: Int64?

    @Option(
        help: """
            Also draw the mask as a PNG, white = kept: one row per example, one pixel per unit; for an image, per \
            example a row of the channels' H x W maps.
            """)
    var png: String?

    @Flag(help: "Print JSON: for each example, the indices of the kept units.")
    var json = false

    @OptionGroup var quietOption: QuietOption

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
                    ("units", .int(r.units)), ("shape", .array(r.shape.dimensions.map { .int($0) })),
                    ("keep_prob", .number(r.keepProb)), ("dropout_mode", .string(r.mode.rawValue)),
                    (
                        "examples",
                        .array(
                            r.examples.map { ex in
                                var o: [(String, JSONValue)] = [
                                    ("example", .int(ex.example)),
                                    (
                                        "kept",
                                        .array(
                                            ex.multipliers.indices.filter { ex.multipliers[$0] != 0 }.map { .int($0) })
                                    ),
                                ]
                                if r.mode == .gaussian {
                                    o.append(("multipliers", .array(ex.multipliers.map { .number(Double($0)) })))
                                }
                                return .object(JSONObject(o))
                            })
                    ),
                ])
            return
        }
        let what = r.previousLayer.map { "the outputs of layer \($0.index) ('\($0.name)')" } ?? "the input features"
        print(
            """
            epoch \(r.epoch), step \(r.step), layer \(r.layer) ('\(r.layerName)'): \(r.mode.rawValue) mask over \(what), \
            \(r.shape)\(r.shape.channels == nil ? " units" : ""), keep p \(Format.short(r.keepProb)), seed \(r.seed)
            """)
        for (ex, m) in r.examples {
            let kept = m.filter { $0 != 0 }.count
            if r.mode == .gaussian {
                let mean = m.reduce(0.0) { $0 + Double($1) } / Double(max(1, m.count))
                print(String(format: "example %3d  %d multipliers, mean %.3f", ex, m.count, mean))
            } else {
                print(
                    String(
                        format: "example %3d  kept %d of %d (%.1f %%)", ex, kept, m.count,
                        100 * Double(kept) / Double(m.count)))
            }
            guard r.examples.count == 1 else { continue }
            func mark(_ v: Float) -> String {
                if r.mode == .gaussian { return v < 0.5 ? "." : v < 1 ? "-" : v < 1.5 ? "+" : "#" }
                return v != 0 ? "#" : "."
            }
            if case .image(let h, let w, let c) = r.shape {
                // Per channel, the H x W map: '#' kept, '.' dropped (gaussian: . < 0.5 <= - < 1 <= + < 1.5 <= #).
                for ch in 0..<c {
                    let kept = (0..<(h * w)).filter { m[$0 * c + ch] != 0 }.count
                    print("  channel \(ch): kept \(kept) of \(h * w)")
                    for y in 0..<h {
                        print("    " + (0..<w).map { x in mark(m[(y * w + x) * c + ch]) }.joined())
                    }
                }
            } else {
                // The mask itself, 64 units a line.
                for start in stride(from: 0, to: m.count, by: 64) {
                    let line = m[start..<min(m.count, start + 64)].map(mark).joined()
                    print(String(format: "  %5d  ", start) + line)
                }
            }
        }
        if let png { print("wrote \(png)") }
    }
}
