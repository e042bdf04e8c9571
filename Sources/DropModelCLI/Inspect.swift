import ArgumentParser
import BundleFormat
import Foundation
import DropModelBase
import HDF5Layer

/// `dropmodel inspect`: what is in a bundle, at a glance or as JSON.
struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show what is in a bundle, reading metadata only unless --stats is given.",
        discussion: """
            The summary shows the format version, the dropout convention, whether the weights are \
            baked, a table of layers (kind, inputs -> outputs, activation, keep probability of the \
            layer's inputs, dtype, parameters), totals, the random-number algorithm and seed, the \
            training recipe and the history. Without --stats no weight data is read, so it \
            answers at once on a multi-GB file.
            """)

    @Argument(
        help: """
            The bundles (.h5) to inspect. With several, each is shown in turn (with --json: one compact JSON object \
            per line, JSON Lines); one that cannot be read is reported on stderr and the others are still shown, \
            and the exit status is the worst one's.
            """)
    var files: [String]

    @OptionGroup var jsonOption: JSONOption
    @OptionGroup var quietOption: QuietOption

    @Flag(
        help: """
            Also stream the weights: per layer min, max, mean, std, NaN/Inf counts and the largest L2 norm of a unit's \
            incoming weights.
            """)
    var stats = false

    func validate() throws {
        if files.isEmpty { throw ValidationError("give at least one bundle to inspect") }
    }

    func run() throws {
        // One file: as always (pretty JSON, errors through the one error path).
        guard files.count > 1 else {
            print(try show(try BundleReader(path: files[0]), compact: false))
            return
        }
        // Several: start-up is paid once; a bad file does not stop the others.
        var status = ExitStatus.success
        var first = true
        try BundleReader.forEach(files) { _, opened in
            do {
                let text = try show(try opened.get(), compact: true)
                if !jsonOption.json && !first { print("") }
                first = false
                print(text)
            } catch let e as DropModelError {
                DropModelCommand.report(e, command: Self.self)
                status = max(status, ExitStatus.of(e.code))
            }
        }
        if status != ExitStatus.success { throw ExitCode(status) }
    }

    /// One file's report: text, or JSON (one line when `compact`).
    private func show(_ bundle: BundleReader, compact: Bool) throws -> String {
        var layerStats: [WeightStats]?
        if stats {
            let progress = VerbProgress("stats")
            defer { progress.finish() }
            layerStats = try WeightStats.compute(bundle, progress: progress.observe)
        }
        if jsonOption.json {
            return InspectReport.json(bundle, stats: layerStats).serialized(compact ? .compact : .pretty)
        }
        return InspectReport.text(bundle, stats: layerStats)
    }
}

/// Renders `inspect` output.
enum InspectReport {
    static func conventionText(_ info: ModelInfo) -> String {
        switch (info.convention, info.baked) {
        case (.classic, false): return "classic, not baked (scale weights by p at test time: run 'dropmodel bake')"
        case (.classic, true): return "classic, baked (weight scaling already applied: use the weights as they are)"
        case (.inverted, _): return "inverted (scaled by 1/p while training: use the weights as they are)"
        }
    }

    static func recipeSummary(_ recipe: String) -> String {
        guard let r = try? JSONValue.parse(recipe), case .object(let members) = r else { return "(not a JSON object)" }
        // A bundle made by `dropmodel import` (Specs/interop.md §2.5, §3.3).
        if let source = r["imported_from"], case .string(let format)? = source["format"] {
            var s = "imported from \(format)"
            if case .string(let file)? = source["file"] { s += " file \(file)" }
            if case .string(let version)? = source["keras_version"] { s += " (Keras \(version))" }
            if case .array(let dropouts)? = source["dropout"], !dropouts.isEmpty {
                s += """
                    ; \(dropouts.count) Dropout layer\(dropouts.count == 1 ? "" : "s"), rates and seeds in \
                    /training@recipe
                    """
            }
            return s
        }
        let wanted = [
            "epochs", "batch_size", "learning_rate", "lr_decay", "lr_momentum_scaling", "momentum", "momentum_final",
            "momentum_ramp_epochs", "max_norm", "l2", "limit", "validation", "keep_best", "shards", "data",
        ]
        var parts: [String] = []
        for key in wanted {
            if let v = r[key] { parts.append("\(key) \(v.serialized())") }
        }
        if parts.isEmpty { parts = members.members.prefix(8).map { "\($0.key) \($0.value.serialized())" } }
        return parts.joined(separator: ", ")
    }

    static func text(_ bundle: BundleReader, stats: [WeightStats]?) -> String {
        let info = bundle.info
        var out: [String] = []
        let size = File.size(of: bundle.path).map(Format.bytes) ?? "?"
        var head = "\(bundle.path)  (\(size), format \(info.formatVersion)"
        if let c = info.creator { head += ", written by \(c)" }
        out.append(head + ")")
        if info.formatVersion > FormatVersion.current {
            out.append(
                "note: written by a newer minor format version; fields this dropmodel does not know are not shown")
        }
        out.append("convention  " + conventionText(info))
        if case .image = info.inputShape { out.append("input       \(info.inputShape) (height x width x channels)") }
        let bytes = info.layers.reduce(0) { $0 + $1.parameterCount * $1.dtype.bytes }
        out.append("parameters  \(Format.grouped(info.parameterCount)) (\(Format.bytes(UInt64(bytes))))")
        out.append("")
        // Format 1.0 models keep their table; 1.1 adds the dropout mode and names the shapes
        // (H×W×C for images).
        let v11 = info.requiredFormatVersion > FormatVersion(1, 0)
        var rows: [[String]] = []
        for (i, l) in info.layers.enumerated() {
            let weighted = l.hasWeights
            rows.append(
                [
                    String(i), l.name, l.kind.rawValue, l.shapeText, weighted ? l.activation.rawValue : "-",
                    weighted || !v11 ? Format.short(l.keepProb) : "-",
                ] + (v11 ? [weighted ? l.dropoutMode.rawValue : "-"] : []) + [
                    weighted ? l.dtype.rawValue : "-", Format.grouped(l.parameterCount),
                ])
        }
        let header =
            ["#", "name", "kind", v11 ? "shape" : "inputs -> outputs", "activation", "keep p"]
            + (v11 ? ["dropout"] : []) + ["dtype", "parameters"]
        rows.append(Array(repeating: "", count: header.count - 1) + [Format.grouped(info.parameterCount)])
        rows[rows.count - 1][1] = "total"
        out.append(Format.table(header, rows, rightAligned: [0, header.count - 1]))
        if let stats {
            out.append("")
            var srows: [[String]] = []
            // Only weighted layers have weights to describe.
            for (i, s) in stats.enumerated() where info.layers[i].hasWeights {
                srows.append([
                    String(i), info.layers[i].name, Format.short(s.min), Format.short(s.max), Format.short(s.mean),
                    Format.short(s.std), String(s.nanCount), String(s.infCount), Format.short(s.maxUnitNorm),
                ])
            }
            out.append(
                Format.table(
                    ["#", "name", "min", "max", "mean", "std", "NaN", "Inf", "max unit L2"],
                    srows, rightAligned: [0, 2, 3, 4, 5, 6, 7, 8]))
        }
        out.append("")
        if let rng = info.rng {
            out.append(
                """
                rng         \(rng.algorithm), seed \(rng.seed.map { String($0) } ?? "not recorded"), stream layout \
                \(rng.streamLayout)
                """)
        } else {
            out.append("rng         not recorded")
        }
        if let t = info.training {
            out.append("training    " + recipeSummary(t.recipe))
            if let d = t.dataDescription { out.append("data        " + d) }
            if let fp = t.dataFingerprint { out.append("fingerprint " + fp) }
        } else {
            out.append("training    not recorded")
        }
        if let h = info.history, let last = h.epochs.last {
            out.append(
                """
                history     \(h.epochs.count) epoch\(h.epochs.count == 1 ? "" : "s"); last: loss \
                \(Format.short(last.loss)), 
                """
                    + "train error \(Format.percent(last.trainError)), "
                    + (last.validationError.map { "validation error \(Format.percent($0)), " } ?? "")
                    + "test error \(Format.percent(last.testError))")
            if let kept = info.training?.keptEpoch, let k = info.weightsRecord {
                out.append(
                    "kept        epoch \(kept) (lowest validation error"
                        + (k.validationError.map { ", \(Format.percent($0))" } ?? "")
                        + "; test error \(Format.percent(k.testError)))")
            }
            let stored = info.weightsRecord ?? last
            out.append("digest      sha256:\(WeightDigest.hex(stored.weightsSHA256)) (after epoch \(stored.epoch))")
        } else if let h = info.history {
            out.append("history     0 epochs" + (h.initialWeightsSHA256 != nil ? " (initial weights only)" : ""))
        } else {
            out.append("history     not recorded")
        }
        if bundle.isCheckpoint {
            out.append("checkpoint  of an unfinished run: continue with 'dropmodel train --resume \(bundle.path)'")
        }
        return out.joined(separator: "\n")
    }

    static func json(_ bundle: BundleReader, stats: [WeightStats]?) -> JSONValue {
        let info = bundle.info
        let layers: [JSONValue] = info.layers.enumerated().map { i, l in
            var o: [(String, JSONValue)] = [
                ("index", .int(i)), ("name", .string(l.name)), ("kind", .string(l.kind.rawValue)),
            ]
            o += l.kindAttributesJSON  // the kind's own attributes (dense: inputs, outputs)
            o += [
                ("activation", .string(l.activation.rawValue)), ("keep_prob", .number(l.keepProb)),
                ("dropout_mode", .string(l.dropoutMode.rawValue)),
                ("dtype", .string(l.dtype.rawValue)), ("parameters", .int(l.parameterCount)),
            ]
            if let s = stats?[i], l.hasWeights {
                o.append(
                    (
                        "stats",
                        .object(
                            JSONObject([
                                ("min", .finite(s.min)), ("max", .finite(s.max)), ("mean", .finite(s.mean)),
                                ("std", .finite(s.std)),
                                ("nan", .int(s.nanCount)), ("inf", .int(s.infCount)),
                                ("max_unit_norm", .finite(s.maxUnitNorm)),
                            ]))
                    ))
            }
            return .object(JSONObject(o))
        }
        let rng: JSONValue =
            info.rng.map { r in
                .object(
                    JSONObject(
                        [("algorithm", .string(r.algorithm))] + JSONOutput.seed(r.seed) + [
                            ("stream_layout", .int(r.streamLayout))
                        ]))
            } ?? .null
        let training: JSONValue =
            info.training.map { t in
                .object(
                    JSONObject(
                        [
                            ("recipe", (try? JSONValue.parse(t.recipe)) ?? .string(t.recipe)),
                            ("data_fingerprint", .optional(t.dataFingerprint)),
                            ("data_description", .optional(t.dataDescription)),
                        ] + (t.keptEpoch.map { [("kept_epoch", .int($0))] } ?? [])))
            } ?? .null
        let history: JSONValue =
            info.history.map { h in
                .object(
                    JSONObject([
                        ("epochs", .int(h.epochs.count)),
                        ("initial_weights_sha256", JSONOutput.sha256(h.initialWeightsSHA256)),
                        (
                            "records",
                            .array(
                                h.epochs.map { e in
                                    .object(
                                        JSONObject(
                                            [
                                                ("epoch", .int(e.epoch)), ("loss", .finite(e.loss)),
                                                ("train_error", .finite(e.trainError)),
                                                ("test_error", .finite(e.testError)),
                                            ]
                                                + (e.validationError.map { [("validation_error", .finite($0))] } ?? [])
                                                + [("weights_sha256", JSONOutput.sha256(e.weightsSHA256))]))
                                })
                        ),
                    ]))
            } ?? .null
        return .object(
            JSONObject([
                ("schema", .string("dropmodel.inspect/1")),
                ("file", .string(bundle.path)),
                ("file_size", File.size(of: bundle.path).map { .integer(Int64($0)) } ?? .null),
                ("format_version", .string(info.formatVersion.description)),
                ("creator", .optional(info.creator)),
                ("convention", .string(info.convention.rawValue)),
                ("baked", .bool(info.baked)),
                ("parameters", .int(info.parameterCount)),
                ("input_shape", .array(info.inputShape.dimensions.map { .int($0) })),
                ("layers", .array(layers)),
                ("rng", rng),
                ("training", training),
                ("history", history),
            ]))
    }
}
