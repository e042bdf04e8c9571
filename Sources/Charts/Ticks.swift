import Foundation

/// Round axis ticks: steps of 1, 2 or 5 × 10^k ("nice numbers", Heckbert, Graphics Gems, 1990),
/// so an axis reads 10, 12, 14 rather than 11.26, 11.96, 12.66.
public enum Ticks {
    /// Ticks covering `lo ... hi` about `count` apart: the first at or below `lo`, the last at or
    /// above `hi`, every value a multiple of `step` (1, 2 or 5 × 10^k).
    public struct Axis: Sendable, Equatable {
        public var values: [Double]
        public var step: Double
        public var lower: Double { values.first ?? 0 }
        public var upper: Double { values.last ?? 1 }
    }

    /// Round ticks for data in `lo ... hi`. A range of zero width is widened around its value.
    public static func axis(_ lo: Double, _ hi: Double, count: Int = 5) -> Axis {
        var (lo, hi) = (min(lo, hi), max(lo, hi))
        if !(lo.isFinite && hi.isFinite) { (lo, hi) = (0, 1) }
        if hi - lo < 1e-12 {
            let d = lo == 0 ? 1 : abs(lo) * 0.1
            (lo, hi) = (lo - d, hi + d)
        }
        let step = nice((hi - lo) / Double(max(1, count - 1)), round: true)
        // step = m · 10^e with m in {1, 2, 5, 10}: each tick is (k · m) scaled by an exact power of
        // ten, one rounding, so 3 × 0.1 is the double nearest 0.3, not 0.30000000000000004.
        let e = Int(Foundation.floor(Foundation.log10(step) + 1e-9))
        let m = (step / Foundation.pow(10, Double(e))).rounded()
        func value(_ k: Double) -> Double {
            e >= 0 ? k * m * Foundation.pow(10, Double(e)) : (k * m) / Foundation.pow(10, Double(-e))
        }
        let first = (lo / step).rounded(.down), last = (hi / step).rounded(.up)
        return Axis(values: stride(from: first, through: last, by: 1).map(value), step: value(1))
    }

    /// A nice number near `x` > 0: 1, 2, 5 or 10 × 10^k; rounded to the nearest (`round`) or the
    /// smallest not below `x`.
    public static func nice(_ x: Double, round: Bool) -> Double {
        guard x > 0, x.isFinite else { return 1 }
        let exponent = Foundation.floor(Foundation.log10(x))
        let power = Foundation.pow(10, exponent)
        let f = x / power
        let n: Double
        if round {
            n = f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10
        } else {
            n = f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10
        }
        return n * power
    }

    /// A tick value with as many decimals as the step needs (`0.5` → 1, `2` → 0).
    public static func label(_ v: Double, step: Double) -> String {
        let decimals = max(0, Int(-Foundation.floor(Foundation.log10(step) + 1e-9)))
        let text = String(format: "%.\(decimals)f", v)
        return text.hasPrefix("-") && Double(text) == 0 ? String(text.dropFirst()) : text
    }
}
