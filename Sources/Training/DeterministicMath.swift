/// Elementwise functions with the same bits on every machine.
///
/// libm's `expf` differs between C libraries (and versions), so the engine uses its own: only
/// IEEE 754 additions, multiplications and an exact scaling by a power of two, each rounded
/// once, in a fixed order (Swift never fuses `a * b + c`). `Specs/determinism.md` §Elementwise.
public enum DeterministicMath {
    /// e^x in float32, within about 2 ulp; 0 below -103.9, +inf above 88.72.
    @inlinable
    public static func exp(_ x: Float) -> Float {
        if x.isNaN { return x }
        if x > 88.72283 { return .infinity }
        if x < -103.97208 { return 0 }
        // x = k ln2 + r, |r| <= ln2/2, with ln2 split in a high part exact to 12 bits.
        let k = (x * 0x1.715476p0).rounded(.toNearestOrEven)  // log2(e)
        // ln2 = 0x1.62e4p-1 (16 bits, so k * it is exact for |k| <= 255) + 0x1.7f7d1cp-20.
        let r = (x - k * 0x1.62e4p-1) - k * 0x1.7f7d1cp-20
        // e^r by its Taylor series to degree 7 (Horner), error < 1 ulp on |r| <= 0.347.
        var p: Float = 1.0 / 5040
        p = p * r + 1.0 / 720
        p = p * r + 1.0 / 120
        p = p * r + 1.0 / 24
        p = p * r + 1.0 / 6
        p = p * r + 0.5
        p = p * r + 1
        p = p * r + 1
        // Scale by 2^k exactly, in two steps so subnormal results and k = 128 are handled.
        let ki = Int(k)
        if ki > 127 { return p * 2 * Float(sign: .plus, exponent: 127, significand: 1) }
        if ki < -125 {
            return (p * Float(sign: .plus, exponent: ki + 100, significand: 1))
                * Float(sign: .plus, exponent: -100, significand: 1)
        }
        return p * Float(sign: .plus, exponent: ki, significand: 1)
    }

    /// 1 / (1 + e^-x).
    @inlinable
    public static func logistic(_ x: Float) -> Float {
        1 / (1 + exp(-x))
    }

    /// tanh x = 1 - 2 / (e^{2x} + 1).
    @inlinable
    public static func tanh(_ x: Float) -> Float {
        if x > 10 { return 1 }
        if x < -10 { return -1 }
        return 1 - 2 / (exp(2 * x) + 1)
    }
}
