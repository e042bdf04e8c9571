import Charts
import Foundation
import Testing

/// Round axis ticks for every chart dropmodel draws (issue 14: "round tick values").
@Suite("charts: nice ticks")
struct TicksTests {
    @Test("nice ticks are 1, 2 or 5 x 10^k and cover the data")
    func ticks() {
        let a = Ticks.axis(11.26, 13.66)
        #expect(a.step == 0.5)
        #expect(a.values == [11, 11.5, 12, 12.5, 13, 13.5, 14])
        let b = Ticks.axis(0, 87.3)
        #expect(b.step == 20 && b.values == [0, 20, 40, 60, 80, 100])
        let c = Ticks.axis(1, 60, count: 6)
        #expect(c.step == 10 && c.lower == 0 && c.upper == 60)
        #expect(Ticks.axis(0.1, 0.7).values == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7])
        #expect(Ticks.axis(0.1, 0.4).values == [0.1, 0.2, 0.3, 0.4])
        for (lo, hi) in [(0.0, 1e-9), (5.0, 5.0), (-3.0, 2.0), (1234.0, 98765.0)] {
            let t = Ticks.axis(lo, hi)
            #expect(t.lower <= lo && t.upper >= hi, "\(lo) \(hi): \(t)")
            let mantissa = t.step / pow(10, floor(log10(t.step)))
            #expect([1.0, 2, 5].contains { abs($0 - mantissa) < 1e-9 }, "\(t.step)")
        }
        #expect(Ticks.label(12.5, step: 0.5) == "12.5")
        #expect(Ticks.label(40, step: 20) == "40")
        #expect(Ticks.label(0.3, step: 0.1) == "0.3")
        #expect(Ticks.label(-0.0, step: 1) == "0")
    }
}
