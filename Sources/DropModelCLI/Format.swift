import Foundation

/// Small text-formatting helpers for human-readable output.
enum Format {
    /// 1234567 -> "1,234,567".
    static func grouped(_ n: Int) -> String {
        let s = String(n.magnitude)
        var out = ""
        for (i, c) in s.enumerated() {
            if i > 0 && (s.count - i) % 3 == 0 { out.append(",") }
            out.append(c)
        }
        return (n < 0 ? "-" : "") + out
    }

    /// Bytes as "12.3 MiB".
    static func bytes(_ n: UInt64) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var v = Double(n)
        var u = 0
        while v >= 1024 && u < units.count - 1 { v /= 1024; u += 1 }
        return u == 0 ? "\(n) B" : String(format: "%.1f %@", v, units[u])
    }

    /// A number with up to `digits` significant digits, no trailing zeros.
    static func short(_ d: Double, digits: Int = 4) -> String {
        if d.isNaN { return "nan" }
        if d.isInfinite { return d > 0 ? "inf" : "-inf" }
        return String(format: "%.\(digits)g", d)
    }

    static func percent(_ d: Double) -> String {
        d.isNaN ? "n/a" : String(format: "%.2f %%", d * 100)
    }

    /// A left/right aligned text table.
    static func table(_ header: [String], _ rows: [[String]], rightAligned: Set<Int>) -> String {
        let all = [header] + rows
        let widths = header.indices.map { c in all.map { $0[c].count }.max() ?? 0 }
        func line(_ r: [String]) -> String {
            var text = r.enumerated().map { c, cell in
                let padding = String(repeating: " ", count: widths[c] - cell.count)
                return rightAligned.contains(c) ? padding + cell : cell + padding
            }.joined(separator: "  ")
            // Trailing blanks trimmed by hand: a regular expression here set up ICU's regex engine,
            // a quarter of inspect's own time (docs/benchmarks.md).
            while text.last?.isWhitespace == true { text.removeLast() }
            return text
        }
        return all.map(line).joined(separator: "\n")
    }
}
