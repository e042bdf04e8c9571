import BundleFormat
import Charts
import DropModelBase
import Foundation
import Testing
import TestSupport
import Training

/// Issue 14, point 3: learning curves with the legend off the data.
@Suite("charts: learning curves")
struct PlotTests {
    @Test("the legend lies right of the plotting area")
    func legend() {
        let chart = LineChart(
            title: "t", xLabel: "epoch", yLabel: "error (%)",
            series: [LineChart.Series(name: "a.h5 test", points: [(1, 12.5), (2, 11.2)], color: "#1f77b4")],
            integerX: true)
        let svg = chart.svg()
        #expect(svg.contains(">a.h5 test</text>"))
        #expect(svg.contains(">epoch</text>") && svg.contains(">error (%)</text>"))
        // The plotting area ends at x = 550; the legend's text starts after it.
        #expect(svg.contains("<text x=\"602.00\""), "\(svg)")
        #expect(!svg.contains("11.26"))
    }

    @Test("plot history: one line per bundle and metric")
    func history() throws {
        let dir = TemporaryDirectory()
        var r = Recipe(layers: [784, 8, 10], keep: [0.8, 0.5])
        r.epochs = 2
        r.limit = 200
        r.testLimit = 50
        r.batchSize = 50
        r.validation = 50
        let a = dir.file("a.h5"), b = dir.file("b.h5")
        _ = try TrainingRun.train(TrainingRun.Request(recipe: r, seed: 1, output: a))
        r.validation = 0
        _ = try TrainingRun.train(TrainingRun.Request(recipe: r, seed: 1, output: b))
        let out = dir.file("curves.svg")
        let report = try HistoryPlot.plot(files: [a, b], output: out)
        #expect(report.lines.map(\.metric) == ["train", "validation", "test", "train", "test"])
        #expect(report.lines.allSatisfy { $0.points.count == 2 })
        let svg = try String(contentsOfFile: out, encoding: .utf8)
        #expect(svg.contains(">a.h5 validation</text>") && svg.contains(">b.h5 test</text>"))
        #expect(!svg.contains(">b.h5 validation</text>"))
        #expect(svg.components(separatedBy: "<polyline").count == 6)

        // --metrics: only the metrics named, in drawing order; an unknown name is a usage error.
        let chosen = try HistoryPlot.plot(files: [a, b], output: out, metrics: ["test", "validation"])
        #expect(chosen.lines.map(\.metric) == ["validation", "test", "test"])
        let fewer = try String(contentsOfFile: out, encoding: .utf8)
        #expect(fewer.components(separatedBy: "<polyline").count == 4)
        #expect(!fewer.contains(">a.h5 train</text>"))
        let unknown = #expect(throws: DropModelError.self) {
            try HistoryPlot.plot(files: [a], output: out, metrics: ["valid"])
        }
        #expect(unknown?.code == .usage)

        let initial = dir.file("init.h5")
        r.epochs = 0
        _ = try TrainingRun.train(TrainingRun.Request(recipe: r, seed: 1, output: initial))
        let error = #expect(throws: DropModelError.self) { try HistoryPlot.plot(files: [initial], output: out) }
        #expect(error?.code == .notApplicable)
    }
}
