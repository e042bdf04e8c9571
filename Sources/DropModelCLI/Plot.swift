import ArgumentParser
import DropModelBase
import Foundation
import Training

/// `dropmodel plot`: charts drawn from bundles.
struct Plot: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Draw charts from bundles as SVG.",
        subcommands: [PlotHistory.self])

    @OptionGroup var quietOption: QuietOption
}

/// `dropmodel plot history`: parses, calls ``Training/HistoryPlot/plot(files:output:title:)``, prints.
struct PlotHistory: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "history",
        abstract: "Learning curves: train, validation and test error against epoch, one line per bundle and metric.",
        discussion: """
            Reads each bundle's /history (no weights) and writes an SVG: a colour per bundle, a dash per \
            metric (train dotted, validation dashed, test solid), round tick values, the legend outside the \
            plotting area. A metric a run did not measure is left out; --metrics chooses which to draw.

            Example: dropmodel plot history no-dropout.h5 dropout.h5 -o curves.svg
            """)

    @Argument(help: "The bundles whose histories to draw.")
    var files: [String]

    @Option(name: .shortAndLong, help: "The SVG to write.")
    var output: String

    @Option(help: "The chart's title (default: Error against epoch).")
    var title: String?

    @Option(help: "The metrics to draw, comma-separated: train, validation, test (default: all three).")
    var metrics: String?

    @OptionGroup var jsonOption: JSONOption
    @OptionGroup var quietOption: QuietOption

    func validate() throws {
        if files.isEmpty { throw ValidationError("give at least one bundle") }
    }

    func run() throws {
        let r = try HistoryPlot.plot(
            files: files, output: output, title: title,
            metrics: try metrics.map { try parseList($0, "--metrics", "a metric") })
        if jsonOption.json {
            JSONOutput.print(
                "plot.history",
                [
                    ("files", .array(files.map { .string($0) })), ("output", .string(r.output)),
                    (
                        "lines",
                        .array(
                            r.lines.map { l in
                                .object(
                                    JSONObject([
                                        ("file", .string(l.file)), ("metric", .string(l.metric)),
                                        ("epochs", .int(l.points.count)),
                                        ("best_epoch", l.best.map { .int($0.epoch) } ?? .null),
                                        ("best_error", .finite(l.best?.error)),
                                    ]))
                            })
                    ),
                ])
            return
        }
        for l in r.lines {
            let best = l.best.map { "lowest \(Format.percent($0.error)) at epoch \($0.epoch)" } ?? ""
            print("\(l.file) \(l.metric) error: \(l.points.count) epochs, \(best)")
        }
        print("wrote \(r.output)")
    }
}
