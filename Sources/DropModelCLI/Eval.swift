import ArgumentParser
import DropModelBase
import Foundation
import Training

/// `dropmodel eval`: parses, calls ``Training/EvalRun/evaluate(_:progress:)``, prints.
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

    @OptionGroup var jsonOption: JSONOption
    @OptionGroup var quietOption: QuietOption

    @Option(help: "Also draw error against k as an SVG chart.")
    var plot: String?

    var ks: [Int] { (try? parseList(mc, "--mc", "a number of networks")) ?? [] }

    func validate() throws {
        if !mc.isEmpty {
            let ks: [Int] = try parseList(mc, "--mc", "a number of networks (1...100000)")
            if let bad = ks.first(where: { !(1...100_000).contains($0) }) {
                throw ValidationError("--mc: \(bad) is not a number of networks (1...100000)")
            }
        }
        if repeats < 1 { throw ValidationError("--repeats must be at least 1") }
        if let seed, seed < 0 { throw ValidationError("--seed must be in 0 ..< 2^63") }
        if let limit, limit < 1 { throw ValidationError("--limit must be at least 1") }
    }

    func run() throws {
        var bar: ProgressBar?
        let r = try EvalRun.evaluate(
            EvalRun.EvalRequest(
                file: model, data: data, ks: mc.isEmpty ? [] : ks, repeats: repeats, seed: seed, limit: limit,
                threads: threadsOption.resolved, plot: plot)
        ) { done, total, examples in
            if bar == nil { bar = ProgressBar(label: "monte carlo", total: total, unitsPerStep: Double(examples)) }
            bar?.update(done)
        }
        bar?.finish()
        if jsonOption.json {
            JSONOutput.print(
                "eval",
                [
                    ("file", .string(model)), ("output", .optional(r.plot)), ("data", .string(r.data)),
                    ("examples", .int(r.examples)),
                    ("convention", .string(r.convention.rawValue)), ("baked", .bool(r.baked)),
                    ("weight_scaling_error", .number(r.weightScalingError)),
                ] + JSONOutput.seed(r.seed) + [
                    ("repeats", .int(r.repeats)),
                    (
                        "monte_carlo",
                        .array(
                            r.monteCarlo.map { row in
                                .object(
                                    JSONObject([
                                        ("k", .int(row.k)), ("mean_error", .number(row.meanError)),
                                        ("std_error", .number(row.stdError)),
                                        ("errors", .array(row.errors.map { .number($0) })),
                                    ]))
                            })
                    ),
                    ("seconds", .finite(r.seconds)),
                ])
            return
        }
        print("\(model) on \(r.examples) test examples of \(r.data)")
        print("weight scaling: \(Format.percent(r.weightScalingError)) test error (\(r.inference.rawValue))")
        if !r.monteCarlo.isEmpty {
            print("Monte-Carlo model averaging, \(r.repeats) repeat\(r.repeats == 1 ? "" : "s"), seed \(r.seed):")
            let table = r.monteCarlo.map { row in
                [
                    String(row.k), Format.percent(row.meanError), Format.percent(row.stdError),
                    String(format: "%+.2f", (row.meanError - r.weightScalingError) * 100),
                ]
            }
            print(
                Format.table(
                    ["k", "mean error", "std", "minus weight scaling (points)"], table, rightAligned: [0, 1, 2, 3]))
        }
        print(String(format: "(%.1f s)", r.seconds) + (plot.map { "; wrote \($0)" } ?? ""))
    }
}
