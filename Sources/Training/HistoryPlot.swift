import BundleFormat
import Charts
import DropModelBase
import Foundation

/// Learning curves as a library call: `dropmodel plot history A.h5 B.h5 -o curves.svg`. One line
/// per bundle and metric (train, validation, test error, in percent) against the epoch, read
/// from each bundle's `/history`; a bundle's colour is shared by its metrics, a metric's dash by
/// its bundles.
public enum HistoryPlot {
    /// One line drawn.
    public struct Line: Sendable {
        public var file: String
        /// `train`, `validation` or `test`.
        public var metric: String
        /// (epoch, error as a fraction).
        public var points: [(epoch: Int, error: Double)]
        /// The lowest error and its epoch (the earliest of ties).
        public var best: (epoch: Int, error: Double)?
    }

    /// What `plot history` drew.
    public struct Report: Sendable {
        public var output: String
        public var lines: [Line]
    }

    /// The dash of each metric's line: train dotted, validation dashed, test solid.
    static let metrics: [(name: String, dash: String?, value: @Sendable (EpochRecord) -> Double?)] = [
        ("train", "2 3", { $0.trainError }), ("validation", "7 4", { $0.validationError }),
        ("test", nil, { $0.testError.isNaN ? nil : $0.testError }),
    ]

    /// The metrics a chart can draw, in drawing order.
    public static let metricNames = metrics.map(\.name)

    /// Reads the histories of `files` and writes the chart to `output` (atomically). A file
    /// without history rows is an error; a metric a bundle did not measure is left out, and only
    /// the `metrics` named are drawn (all of ``metricNames`` by default).
    public static func plot(
        files: [String], output: String, title: String? = nil, metrics chosen: [String]? = nil
    ) throws -> Report {
        guard !files.isEmpty else {
            throw DropModelError(code: .usage, file: output, message: "plot history needs at least one bundle")
        }
        let drawn = chosen ?? metricNames
        if let unknown = drawn.first(where: { !metricNames.contains($0) }) {
            throw DropModelError(
                code: .usage, file: output,
                message: "there is no metric '\(unknown)' to plot",
                hint: "choose among \(metricNames.joined(separator: ", ")), e.g. --metrics validation,test")
        }
        if drawn.isEmpty {
            throw DropModelError(
                code: .usage, file: output, message: "no metric to plot",
                hint: "choose among \(metricNames.joined(separator: ", "))")
        }
        try OutputCheck.verify(output, option: "-o", inputs: files)
        var lines: [Line] = []
        for file in files {
            let info = try BundleReader(path: file).info
            guard let epochs = info.history?.epochs, !epochs.isEmpty else {
                throw DropModelError(
                    code: .notApplicable, file: file, object: "/history",
                    message: "the bundle records no training epochs to plot",
                    hint: "plot history takes bundles written by 'dropmodel train'")
            }
            for m in metrics where drawn.contains(m.name) {
                let points = epochs.compactMap { r in m.value(r).map { (epoch: r.epoch, error: $0) } }
                guard !points.isEmpty else { continue }
                var best: (epoch: Int, error: Double)?
                for p in points where p.error < best?.error ?? .infinity { best = (p.epoch, p.error) }
                lines.append(Line(file: file, metric: m.name, points: points, best: best))
            }
        }
        let names = files.map { URL(fileURLWithPath: $0).lastPathComponent }
        let series = lines.map { line in
            let i = files.firstIndex(of: line.file) ?? 0
            return LineChart.Series(
                name: "\(names[i]) \(line.metric)", points: line.points.map { (Double($0.epoch), $0.error * 100) },
                color: LineChart.palette[i % LineChart.palette.count],
                dash: metrics.first { $0.name == line.metric }?.dash)
        }
        let chart = LineChart(
            title: title ?? "Error against epoch", xLabel: "epoch", yLabel: "error (%)", series: series,
            integerX: true)
        try AtomicFile.write(Array(chart.svg().utf8), to: output, what: "plot")
        return Report(output: output, lines: lines)
    }
}
