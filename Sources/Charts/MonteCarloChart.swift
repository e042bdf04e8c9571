import Foundation

/// An SVG line chart of test error against the number of sampled networks k (log scale), with
/// the weight-scaling error as a dashed line: `eval --plot` (JMLR 2014, Fig. 11).
public enum MonteCarloChart {
    /// One point: the mean error over repeats and its standard deviation.
    public struct Point: Sendable {
        public var k: Int
        public var meanError: Double
        public var stdError: Double
        public init(k: Int, meanError: Double, stdError: Double) {
            self.k = k
            self.meanError = meanError
            self.stdError = stdError
        }
    }

    /// The SVG document.
    public static func svg(points rows: [Point], weightScaling ws: Double, title: String) -> String {
        // The legend is right of the plotting area (550 px wide), never on the data.
        let w = 840.0, h = 400.0, left = 70.0, right = 220.0, top = 40.0, bottom = 50.0
        let kMax = Double(rows.map(\.k).max() ?? 1)
        let values = rows.flatMap { [$0.meanError - $0.stdError, $0.meanError + $0.stdError] } + [ws]
        // Round ticks (1, 2 or 5 × 10^k) covering the data: the axis runs from the first to the last.
        let ticks = Ticks.axis((values.min() ?? 0) * 100, (values.max() ?? 1) * 100, count: 6)
        let lo = ticks.lower, hi = ticks.upper
        func x(_ k: Double) -> Double { left + (w - left - right) * (kMax > 1 ? log(k) / log(kMax) : 0.5) }
        func y(_ e: Double) -> Double { top + (h - top - bottom) * (1 - (e * 100 - lo) / (hi - lo)) }
        var svg = """
            <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(w))" height="\(Int(h))" font-family="sans-serif" \
            font-size="12">
            <rect width="100%" height="100%" fill="white"/>
            <text x="\((left + w - right) / 2)" y="20" text-anchor="middle" font-size="14">\(escape(title))</text>
            <line x1="\(left)" y1="\(h - bottom)" x2="\(w - right)" y2="\(h - bottom)" stroke="black"/>
            <line x1="\(left)" y1="\(top)" x2="\(left)" y2="\(h - bottom)" stroke="black"/>
            <text x="\((left + w - right) / 2)" y="\(h - 10)" text-anchor="middle">number of sampled networks k \
            (log scale)</text>
            <text x="15" y="\(h / 2)" text-anchor="middle" transform="rotate(-90 15 \(h / 2))">test error (%)</text>

            """
        for r in rows {
            svg += "<text x=\"\(x(Double(r.k)))\" y=\"\(h - bottom + 16)\" text-anchor=\"middle\">\(r.k)</text>\n"
        }
        for v in ticks.values {
            let e = v / 100
            svg += """
                <line x1=\"\(left)\" y1=\"\(y(e))\" x2=\"\(w - right)\" y2=\"\(y(e))\" stroke=\"#e0e0e0\"/>
                <text x=\"\(left - 6)\" y=\"\(y(e) + 4)\" \
                text-anchor=\"end\">\(Ticks.label(v, step: ticks.step))</text>\n
                """
        }
        svg += """
            <line x1=\"\(left)\" y1=\"\(y(ws))\" x2=\"\(w - right)\" y2=\"\(y(ws))\" stroke=\"#d62728\" \
            stroke-dasharray=\"6 4\"/>\n
            """
        let legend = w - right + 20
        svg += """
            <line x1=\"\(legend)\" y1=\"\(top + 44)\" x2=\"\(legend + 26)\" y2=\"\(top + 44)\" stroke=\"#d62728\" \
            stroke-dasharray=\"6 4\"/>
            <text x=\"\(legend + 32)\" y=\"\(top + 48)\" fill=\"#d62728\">weight scaling \
            \(String(format: "%.2f", ws * 100)) %</text>\n
            """
        let points = rows.map { "\(x(Double($0.k))),\(y($0.meanError))" }.joined(separator: " ")
        svg += "<polyline points=\"\(points)\" fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"2\"/>\n"
        for r in rows {
            svg += """
                <line x1=\"\(x(Double(r.k)))\" y1=\"\(y(r.meanError - r.stdError))\" x2=\"\(x(Double(r.k)))\" \
                y2=\"\(y(r.meanError + r.stdError))\" stroke=\"#1f77b4\"/>\n
                """
            svg += "<circle cx=\"\(x(Double(r.k)))\" cy=\"\(y(r.meanError))\" r=\"3\" fill=\"#1f77b4\"/>\n"
        }
        svg += """
            <line x1=\"\(legend)\" y1=\"\(top + 8)\" x2=\"\(legend + 26)\" y2=\"\(top + 8)\" stroke=\"#1f77b4\" \
            stroke-width=\"2\"/>
            <text x=\"\(legend + 32)\" y=\"\(top + 12)\" fill=\"#1f77b4\">Monte-Carlo average</text>
            <text x=\"\(legend + 32)\" y=\"\(top + 12 + 14)\" fill=\"#1f77b4\" \
            font-size=\"10\">(mean ± std)</text>\n</svg>\n
            """
        return svg
    }

    /// Text for an SVG text node or attribute.
    static func escape(_ s: String) -> String {
        s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
    }
}
