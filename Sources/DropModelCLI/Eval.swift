import ArgumentParser
import BundleFormat
import Foundation
import Training
import TrainingData

/// `dropmodel eval`.
struct Eval: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Test error with weight scaling against Monte-Carlo model averaging over sampled thinned networks.",
        discussion: """
            The deterministic network is the weight-scaled one: the rule is applied on the fly to \
            a classic bundle; a baked or inverted bundle is used as it is. Monte-Carlo averaging \
            samples k thinned networks (fresh dropout masks, seeded: Specs/random-streams.md §8) \
            and averages their predicted probabilities (JMLR 2014, Sec. 7.5); each k is repeated \
            --repeats times and reported as mean ± standard deviation.
            """)

    @Argument(help: "The bundle to evaluate.")
    var model: String

    @Option(help: "Data whose test set to use (default: the bundle's recipe's, else fashion-mnist).")
    var data: String?

    @Option(help: ArgumentHelp("Numbers of sampled networks k (empty: none).", valueName: "k,k,..."))
    var mc: String = "1,2,5,10,20,50,100"

    @Option(help: "Repeats of each Monte-Carlo estimate.")
    var repeats: Int = 3

    @Option(help: "Seed of the Monte-Carlo masks (default: the bundle's seed, else 0).")
    var seed: Int64?

    @Option(help: "Evaluate only the first N test examples.")
    var limit: Int?

    @OptionGroup var threadsOption: ThreadsOption

    @Flag(help: "Print one JSON object.")
    var json = false

    @Option(help: "Also draw error against k as an SVG chart.")
    var plot: String?

    func run() throws {
        let ks = try mc.split(separator: ",").map { s -> Int in
            guard let k = Int(s.trimmingCharacters(in: .whitespaces)), k >= 1, k <= 100_000 else {
                throw ValidationError("--mc: '\(s)' is not a number of networks (1...100000)")
            }
            return k
        }
        guard repeats >= 1 else { throw ValidationError("--repeats must be at least 1") }
        if let seed, seed < 0 { throw ValidationError("--seed must be in 0 ..< 2^63") }
        let bundle = try BundleReader(path: model)
        let info = bundle.info
        let recipe = info.training.flatMap { try? Recipe.decode(json: $0.recipe) }
        let source = data ?? recipe?.data ?? "fashion-mnist"
        let (set, dataDescription) = try loadTestSet(source, limit: limit, for: info, model: model, purpose: "evaluate on")
        let (_, evaluation) = try deterministicEvaluation(bundle, threads: try threadsOption.resolve())
        let started = Date()
        let ws = evaluation.weightScalingError(set)
        let mcSeed = seed ?? info.rng?.seed ?? 0
        let bar = ProgressBar(label: "monte carlo", total: repeats * (ks.max() ?? 0), unitsPerStep: Double(set.count))
        let rows = evaluation.monteCarlo(set, ks: ks, repeats: repeats, seed: UInt64(mcSeed)) { done, _ in bar.update(done) }
        bar.finish()
        let seconds = Date().timeIntervalSince(started)
        let how = info.convention == .inverted ? "weights as stored (inverted)"
            : info.baked ? "weights as stored (baked)" : "weight scaling applied on the fly (classic)"
        if let plot { try writePlot(rows, weightScaling: ws, to: plot, title: "\(URL(fileURLWithPath: model).lastPathComponent): \(set.count) test examples") }
        if json {
            let o = JSON.object([
                ("model", .string(model)), ("data", .string(dataDescription)), ("examples", .int(Int64(set.count))),
                ("convention", .string(info.convention.rawValue)), ("baked", .bool(info.baked)),
                ("weight_scaling_error", .double(ws)), ("seed", .int(mcSeed)), ("repeats", .int(Int64(repeats))),
                ("monte_carlo", .array(rows.map { r in
                    .object([("k", .int(Int64(r.k))), ("mean_error", .double(r.meanError)), ("std_error", .double(r.stdError)),
                             ("errors", .array(r.errors.map { .double($0) }))])
                })),
            ])
            print(o.serialized())
            return
        }
        print("\(model) on \(set.count) test examples of \(source)")
        print("weight scaling: \(Format.percent(ws)) test error (\(how))")
        if !rows.isEmpty {
            print("Monte-Carlo model averaging, \(repeats) repeat\(repeats == 1 ? "" : "s"), seed \(mcSeed):")
            let table = rows.map { r in
                [String(r.k), Format.percent(r.meanError), Format.percent(r.stdError),
                 String(format: "%+.2f", (r.meanError - ws) * 100)]
            }
            print(Format.table(["k", "mean error", "std", "minus weight scaling (points)"], table, rightAligned: [0, 1, 2, 3]))
        }
        print(String(format: "(%.1f s)", seconds) + (plot.map { "; wrote \($0)" } ?? ""))
    }

    /// A small SVG line chart: mean error ± std against k (log scale), and the weight-scaling line.
    func writePlot(_ rows: [Evaluation.MonteCarloRow], weightScaling ws: Double, to path: String, title: String) throws {
        let w = 640.0, h = 400.0, left = 70.0, right = 20.0, top = 40.0, bottom = 50.0
        let kMax = Double(rows.map(\.k).max() ?? 1)
        let values = rows.flatMap { [$0.meanError - $0.stdError, $0.meanError + $0.stdError] } + [ws]
        var lo = (values.min() ?? 0) * 100, hi = (values.max() ?? 1) * 100
        if hi - lo < 0.5 { lo -= 0.25; hi += 0.25 }
        let pad = (hi - lo) * 0.1
        lo -= pad; hi += pad
        func x(_ k: Double) -> Double { left + (w - left - right) * (kMax > 1 ? log(k) / log(kMax) : 0.5) }
        func y(_ e: Double) -> Double { top + (h - top - bottom) * (1 - (e * 100 - lo) / (hi - lo)) }
        var svg = """
            <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(w))" height="\(Int(h))" font-family="sans-serif" font-size="12">
            <rect width="100%" height="100%" fill="white"/>
            <text x="\(w / 2)" y="20" text-anchor="middle" font-size="14">\(escape(title))</text>
            <line x1="\(left)" y1="\(h - bottom)" x2="\(w - right)" y2="\(h - bottom)" stroke="black"/>
            <line x1="\(left)" y1="\(top)" x2="\(left)" y2="\(h - bottom)" stroke="black"/>
            <text x="\(w / 2)" y="\(h - 10)" text-anchor="middle">number of sampled networks k (log scale)</text>
            <text x="15" y="\(h / 2)" text-anchor="middle" transform="rotate(-90 15 \(h / 2))">test error (%)</text>

            """
        for r in rows {
            svg += "<text x=\"\(x(Double(r.k)))\" y=\"\(h - bottom + 16)\" text-anchor=\"middle\">\(r.k)</text>\n"
        }
        for i in 0...4 {
            let e = (lo + (hi - lo) * Double(i) / 4) / 100
            svg += "<text x=\"\(left - 6)\" y=\"\(y(e) + 4)\" text-anchor=\"end\">\(String(format: "%.2f", e * 100))</text>\n"
        }
        svg += "<line x1=\"\(left)\" y1=\"\(y(ws))\" x2=\"\(w - right)\" y2=\"\(y(ws))\" stroke=\"#d62728\" stroke-dasharray=\"6 4\"/>\n"
        svg += "<text x=\"\(w - right)\" y=\"\(y(ws) - 6)\" text-anchor=\"end\" fill=\"#d62728\">weight scaling \(String(format: "%.2f", ws * 100)) %</text>\n"
        let points = rows.map { "\(x(Double($0.k))),\(y($0.meanError))" }.joined(separator: " ")
        svg += "<polyline points=\"\(points)\" fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"2\"/>\n"
        for r in rows {
            svg += "<line x1=\"\(x(Double(r.k)))\" y1=\"\(y(r.meanError - r.stdError))\" x2=\"\(x(Double(r.k)))\" y2=\"\(y(r.meanError + r.stdError))\" stroke=\"#1f77b4\"/>\n"
            svg += "<circle cx=\"\(x(Double(r.k)))\" cy=\"\(y(r.meanError))\" r=\"3\" fill=\"#1f77b4\"/>\n"
        }
        svg += "<text x=\"\(left + 10)\" y=\"\(top + 12)\" fill=\"#1f77b4\">Monte-Carlo average (mean ± std)</text>\n</svg>\n"
        try writeOutputFile(Data(svg.utf8), to: path, what: "plot")
    }

    func escape(_ s: String) -> String {
        s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
    }
}

/// The test examples of `source` (at most `limit`), checked against the model's input width.
func loadTestSet(_ source: String, limit: Int?, for info: ModelInfo, model: String, purpose: String) throws -> (LabeledExamples, String) {
    let split: DataSplit
    do { split = try DataSource.load(source, limit: 1, testLimit: limit) } catch let e as DataError {
        throw CommandFailure(message: e.description, hint: e.hint)
    }
    guard let set = split.test else {
        throw CommandFailure(message: "\(source) has no test set to \(purpose)",
                             hint: "a data directory needs t10k-images/t10k-labels; an HDF5 file /test/inputs and /test/labels")
    }
    guard set.features == info.layers.first?.inputs else {
        throw CommandFailure(message: "\(source) has \(set.features) features per example; \(model) expects \(info.layers.first?.inputs ?? 0)")
    }
    return (set, split.description)
}

/// The bundle's network and its deterministic evaluation (weight scaling applied on the fly to
/// an unbaked classic bundle; Specs/bake.md).
func deterministicEvaluation(_ bundle: BundleReader, threads: Int) throws -> (Network, Evaluation) {
    let info = bundle.info
    let network = Network(layers: info.layers, parameters: try bundle.readModel().parameters)
    return (network, Evaluation(network: network, convention: info.convention, baked: info.baked, threads: threads))
}
