import ArgumentParser
import BundleFormat
import DropModelBase
import Foundation
import Training

/// `dropmodel replay`: parses, calls ``Training/Replay/run(_:observer:)``, prints; exit 1 when
/// the run diverged.
struct ReplayCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "replay",
        abstract:
            "Retrain a bundle from its recipe and seed and prove the result bit-identical, or say where it diverged.",
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

    @Option(
        help: """
            Replay only epochs E to the last, starting from --start (a checkpoint of the run at the end of epoch \
            E-1, whose weight digest must be the one recorded; a plain bundle of E-1 epochs where its missing \
            momentum velocities cannot matter: epoch E's momentum is 0): a faster audit of a long run's tail.
            """)
    var fromEpoch: Int?

    @Option(help: "With --from-epoch: the checkpoint (or plain bundle) to start from.")
    var start: String?

    @OptionGroup var threadsOption: ThreadsOption

    @Option(name: .shortAndLong, help: "What-if: write the retrained bundle here instead of failing on differences.")
    var output: String?

    @OptionGroup var jsonOption: JSONOption
    @OptionGroup var quietOption: QuietOption

    func validate() throws {
        if let seed, seed < 0 { throw ValidationError("--seed must be in 0 ..< 2^63") }
        if let epochs, epochs < 1 { throw ValidationError("--epochs must be at least 1") }
        if let fromEpoch, fromEpoch < 1 { throw ValidationError("--from-epoch must be at least 1") }
        if start != nil && fromEpoch == nil { throw ValidationError("--start needs --from-epoch") }
    }

    func run() throws {
        let json = jsonOption.json
        let printer = RunPrinter(json: json, command: .replay)
        let request = Replay.Request(
            file: file, seed: seed, epochs: epochs, data: data, threads: threadsOption.resolved, output: output,
            fromEpoch: fromEpoch, start: start)
        let report = try Replay.run(request) { event in
            if case .started(let s) = event, !json {
                print(
                    "replaying \(file): \(s.recipe.networkText), seed \(s.seed), "
                        + "\(s.epochs) epoch\(s.epochs == 1 ? "" : "s"), "
                        + "\(s.threads) thread\(s.threads == 1 ? "" : "s"), on \(s.data)")
            }
            printer.observe(event)
        }
        if json {
            printJSON(report)
        } else {
            printText(report)
        }
        if report.verdict == .diverged { throw ExitCode(ExitStatus.difference) }
    }

    func printJSON(_ r: ReplayReport) {
        let divergence: JSONValue =
            r.divergence.map { d in
                .object(
                    JSONObject([
                        ("epoch", d.epoch.map { .int($0) } ?? .null), ("layers", .array(d.layers.map { .int($0) })),
                        (
                            "largest_difference",
                            d.largest.map { w in
                                .object(
                                    JSONObject([
                                        ("layer", .int(w.layer)), ("tensor", .string(w.isBias ? "bias" : "weight")),
                                        ("row", .int(w.row)),
                                        ("column", .int(w.column)), ("stored", .finite(Double(w.stored))),
                                        ("replayed", .finite(Double(w.replayed))),
                                    ]))
                            } ?? .null
                        ),
                        ("message", .string(message(r, d))),
                    ]))
            } ?? .null
        let verdict: String
        switch r.verdict {
        case .identical: verdict = "identical"
        case .diverged: verdict = "diverged"
        case .wroteWhatIf: verdict = "what-if"
        }
        JSONOutput.print(
            "replay",
            [("file", .string(r.file)), ("output", .optional(r.output)), ("verdict", .string(verdict))]
                + JSONOutput.seed(r.seed) + [
                    ("threads", .int(r.threads)), ("epochs_replayed", .int(r.epochsReplayed)),
                    ("epochs_recorded", .int(r.epochsRecorded)),
                    ("stored_weights_checked", .bool(r.storedWeightsChecked)),
                    ("output_identical", r.outputIdentical.map { .bool($0) } ?? .null), ("divergence", divergence),
                    ("seconds", .finite(r.seconds)),
                ], lines: true)
    }

    func printText(_ r: ReplayReport) {
        switch r.verdict {
        case .wroteWhatIf:
            let how =
                r.outputIdentical == true
                ? "bit-identical to \(file)"
                : r.divergence?.epoch.map { "differs from \(file) from epoch \($0) on" }
                    ?? "\(r.epochsReplayed) epochs vs \(r.epochsRecorded) recorded"
            print(
                String(
                    format: "wrote %@ (what-if run, %d epochs, %.1f s): %@", r.output ?? "", r.epochsReplayed,
                    r.seconds, how))
        case .diverged:
            FileHandle.standardError.write(Data("replay: \(file): \(message(r, r.divergence!))\n".utf8))
        case .identical:
            let checked =
                r.storedWeightsChecked
                ? "every epoch's weight digest and the stored weights match"
                : "every replayed epoch's weight digest matches"
            print(
                String(
                    format: "replay: bit-identical through epoch %d of %d: %@ (%.1f s)", r.epochsReplayed,
                    r.epochsRecorded, checked, r.seconds))
        }
    }

    /// The divergence in words: where, which layers, by how much.
    func message(_ r: ReplayReport, _ d: ReplayReport.Divergence) -> String {
        func describe(_ w: WeightDifference) -> String {
            let where_ = w.isBias ? "bias[\(w.row)]" : "weight[\(w.row), \(w.column)]"
            return
                "layer \(w.layer) ('\(r.layerNames[w.layer])') \(where_): stored \(w.stored), replayed \(w.replayed), "
                + "|difference| \(abs(w.stored - w.replayed))"
        }
        if let k = d.keptEpoch {
            return """
                every epoch's digest matches, but the bundle records kept epoch \
                \(k.recorded.map(String.init) ?? "none") where the replay keeps epoch \
                \(k.replayed.map(String.init) ?? "none") (lowest validation error, the \
                earliest of ties)
                """
        }
        guard let epoch = d.epoch else {
            return "every epoch's digest matches, but the stored weights differ from the replayed ones: "
                + (d.largest.map(describe) ?? "") + " (the weights were changed after training)"
        }
        if epoch == 0 {
            let claim =
                d.claimedSeedDiffers
                ? "; the claimed seed \(r.seed) does not reproduce it"
                : " (the run started from weights that are not this seed's initialisation)"
            return "diverged before epoch 1: the initial weights regenerated from seed \(r.seed) have digest "
                + """
                sha256:\(Hex.encode(d.replayedSHA256 ?? [])), the bundle records \
                sha256:\(Hex.encode(d.expectedSHA256 ?? []))
                """ + claim
        }
        var text = "diverged at epoch \(epoch): the weight digest differs from the one recorded"
        if !d.layers.isEmpty {
            text +=
                "; layer\(d.layers.count == 1 ? "" : "s") "
                + d.layers.map { "\($0) ('\(r.layerNames[$0])')" }.joined(separator: ", ") + " differ"
        }
        if let w = d.largest {
            text += "; largest difference from the stored weights: " + describe(w)
        } else if epoch < r.epochsRecorded {
            text += """
                 (the bundle stores weights after epoch \(r.epochsRecorded) only, so the size of the difference at \
                epoch \(epoch) is unknown)
                """
        }
        return text
    }
}
