import Foundation

/// An SVG line chart: several named series against a common x axis, round ticks on both axes
/// (``Ticks``), labelled axes, and the legend to the right of the plotting area, where it never
/// covers a line. `plot history` draws learning curves with it.
public struct LineChart: Sendable {
    /// One line.
    public struct Series: Sendable {
        public var name: String
        public var points: [(x: Double, y: Double)]
        /// An SVG colour (`#1f77b4`).
        public var color: String
        /// An SVG `stroke-dasharray` (`"6 4"`), nil for a solid line.
        public var dash: String?

        public init(name: String, points: [(x: Double, y: Double)], color: String, dash: String? = nil) {
            self.name = name
            self.points = points
            self.color = color
            self.dash = dash
        }
    }

    public var title: String
    public var xLabel: String
    public var yLabel: String
    public var series: [Series]
    /// Ticks on whole numbers only on the x axis (epochs).
    public var integerX: Bool

    public init(title: String, xLabel: String, yLabel: String, series: [Series], integerX: Bool = false) {
        self.title = title
        self.xLabel = xLabel
        self.yLabel = yLabel
        self.series = series
        self.integerX = integerX
    }

    /// The colours of matplotlib's default cycle ("tab10").
    public static let palette = [
        "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
    ]

    /// The SVG document.
    public func svg() -> String {
        let plotW = 480.0, plotH = 300.0, left = 70.0, top = 40.0, bottom = 55.0
        // The legend's width from its longest name (about 7 px a character at 12 px).
        let longest = Double(series.map(\.name.count).max() ?? 0)
        let legendX = left + plotW + 20
        let w = (legendX + 34 + longest * 7 + 10).rounded(.up)
        let h = max(top + plotH + bottom, top + Double(series.count) * 18 + 20)
        let points = series.flatMap(\.points).filter { $0.x.isFinite && $0.y.isFinite }
        var xAxis = Ticks.axis(points.map(\.x).min() ?? 0, points.map(\.x).max() ?? 1, count: 6)
        if integerX && xAxis.step < 1 {
            let lo = (points.map(\.x).min() ?? 0).rounded(.down), hi = (points.map(\.x).max() ?? 1).rounded(.up)
            xAxis = Ticks.Axis(values: Array(stride(from: lo, through: max(hi, lo + 1), by: 1)), step: 1)
        }
        let yAxis = Ticks.axis(points.map(\.y).min() ?? 0, points.map(\.y).max() ?? 1, count: 6)
        func x(_ v: Double) -> Double { left + plotW * (v - xAxis.lower) / (xAxis.upper - xAxis.lower) }
        func y(_ v: Double) -> Double { top + plotH * (1 - (v - yAxis.lower) / (yAxis.upper - yAxis.lower)) }
        func f(_ v: Double) -> String { String(format: "%.2f", v) }
        let (x0, x1, y0, y1) = (left, left + plotW, top + plotH, top)
        var svg = """
            <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(w))" height="\(Int(h))" font-family="sans-serif" \
            font-size="12">
            <rect width="100%" height="100%" fill="white"/>
            <text x="\(f(left + plotW / 2))" y="22" text-anchor="middle" font-size="14">\(Self.escape(title))</text>

            """
        // Grid and ticks.
        for v in yAxis.values {
            svg += """
                <line x1="\(f(x0))" y1="\(f(y(v)))" x2="\(f(x1))" y2="\(f(y(v)))" stroke="#e0e0e0"/>
                <text x="\(f(x0 - 6))" y="\(f(y(v) + 4))" text-anchor="end">\(Ticks.label(v, step: yAxis.step))</text>

                """
        }
        for v in xAxis.values {
            svg += """
                <line x1="\(f(x(v)))" y1="\(f(y0))" x2="\(f(x(v)))" y2="\(f(y0 + 5))" stroke="black"/>
                <text x="\(f(x(v)))" y="\(f(y0 + 18))" text-anchor="middle">\(Ticks.label(v, step: xAxis.step))</text>

                """
        }
        svg += """
            <rect x="\(f(x0))" y="\(f(y1))" width="\(f(plotW))" height="\(f(plotH))" fill="none" stroke="black"/>
            <text x="\(f(left + plotW / 2))" y="\(f(y0 + 40))" text-anchor="middle">\(Self.escape(xLabel))</text>
            <text x="18" y="\(f(top + plotH / 2))" text-anchor="middle" \
            transform="rotate(-90 18 \(f(top + plotH / 2)))">\(Self.escape(yLabel))</text>

            """
        for s in series {
            let coordinates = s.points.filter { $0.x.isFinite && $0.y.isFinite }.map { "\(f(x($0.x))),\(f(y($0.y)))" }
            guard !coordinates.isEmpty else { continue }
            let dash = s.dash.map { " stroke-dasharray=\"\($0)\"" } ?? ""
            svg += """
                <polyline points="\(coordinates.joined(separator: " "))" fill="none" stroke="\(s.color)" \
                stroke-width="1.8"\(dash)/>

                """
            if coordinates.count == 1 {
                let p = s.points.first { $0.x.isFinite && $0.y.isFinite }!
                svg += "<circle cx=\"\(f(x(p.x)))\" cy=\"\(f(y(p.y)))\" r=\"3\" fill=\"\(s.color)\"/>\n"
            }
        }
        // The legend, outside the plotting area.
        for (i, s) in series.enumerated() {
            let ly = top + 8 + Double(i) * 18
            let dash = s.dash.map { " stroke-dasharray=\"\($0)\"" } ?? ""
            svg += """
                <line x1="\(f(legendX))" y1="\(f(ly))" x2="\(f(legendX + 26))" y2="\(f(ly))" stroke="\(s.color)" \
                stroke-width="1.8"\(dash)/>
                <text x="\(f(legendX + 32))" y="\(f(ly + 4))">\(Self.escape(s.name))</text>

                """
        }
        return svg + "</svg>\n"
    }

    /// Text for an SVG text node or attribute.
    static func escape(_ s: String) -> String { MonteCarloChart.escape(s) }
}
