// Channel dropout masks, Gaussian dropout noise and the generalised Glorot initialisation of
// the stream layout (Specs/random-streams.md §5.1, §5.2, §6.4, §8.1, §8.2, §10). Every
// function here is a pure function of (seed, purpose, indices), like the rest of the module.

// MARK: - Normal deviates from IEEE basic operations (§10)

/// Standard normal deviates computed from two Philox words with the Box-Muller transform,
/// using only binary64 `+ - * /`, exact scalings by powers of two and exact bit operations:
/// no `log`, `sin`, `cos` or `sqrt` from the platform's libm, which differ between C libraries
/// in the last bit. Every operation below is one correctly rounded IEEE 754 binary64 operation
/// (Swift never contracts `a * b + c` into a fused multiply-add), in the order written, so the
/// bits are the same on every platform; `Specs/random-streams.md` §10 is the normative text and
/// `Tests/interop/philox_reference.py`-style reimplementations in Python floats reproduce them.
public enum DeterministicNormal {
    /// `ln 2`, the binary64 nearest.
    @usableFromInline static let ln2 = 0x1.62e4_2fef_a39e_fp-1
    /// `π / 2`, the binary64 nearest.
    @usableFromInline static let halfPi = 0x1.921f_b544_42d1_8p0
    /// `sqrt(2)`, the binary64 nearest: the split point of the logarithm's reduction.
    @usableFromInline static let sqrt2 = 0x1.6a09_e667_f3bc_dp0

    /// `1 / (2k + 1)` for k = 0 ... 9 (binary64 nearest: one correctly rounded division).
    @usableFromInline static let logCoefficients: [Double] = (0...9).map { 1.0 / Double(2 * $0 + 1) }
    /// `(-1)^k / (2k + 1)!` for k = 0 ... 8.
    @usableFromInline static let sinCoefficients: [Double] = (0...8).map { k in
        let f = (1...(2 * k + 1)).reduce(1.0) { $0 * Double($1) }  // exact: (2k+1)! < 2^53
        return k % 2 == 0 ? 1.0 / f : -(1.0 / f)
    }
    /// `(-1)^k / (2k)!` for k = 0 ... 8.
    @usableFromInline static let cosCoefficients: [Double] = (0...8).map { k in
        let f = (0..<(2 * k)).reduce(1.0) { $0 * Double($1 + 1) }  // exact: (2k)! < 2^53
        return k % 2 == 0 ? 1.0 / f : -(1.0 / f)
    }

    /// `x = m · 2^e` with `m` in `[1, 2)`, exactly (bit operations only).
    @inlinable
    static func split(_ x: Double) -> (m: Double, e: Int) {
        (x.significand, Int(x.exponent))
    }

    /// The natural logarithm of `x` in `(0, 1]` (§10.2): `x = m · 2^e` with `m` in
    /// `[sqrt(2)/2, sqrt(2))`, `s = (m - 1) / (m + 1)`, `z = s · s`,
    /// `P = ((c9 · z + c8) · z + ... + c1) · z + c0` with `c_k = 1 / (2k + 1)`, then
    /// `ln x = e · ln2 + (2 · s) · P`. Accurate to a few ulp; what matters is that the bits are
    /// fixed.
    ///
    /// - Precondition: `x` is finite and positive (normal).
    @inlinable
    public static func log(_ x: Double) -> Double {
        precondition(x.isNormal && x > 0, "log of \(x)")
        var (m, e) = split(x)
        if m > sqrt2 {
            m = m * 0.5  // exact
            e += 1
        }
        let s = (m - 1) / (m + 1)
        let z = s * s
        let c = logCoefficients
        var p = c[9]
        for k in stride(from: 8, through: 0, by: -1) { p = p * z + c[k] }
        return Double(e) * ln2 + (2 * s) * p
    }

    /// A square root of `x ≥ 0` by five Newton steps (§10.3): `x = m · 2^(2k)` with `m` in
    /// `[1, 4)` (exact), `y = (m + 2) / 3`, five times `y = 0.5 · (y + m / y)`, then `y · 2^k`
    /// (exact). Within an ulp or two of `sqrt`, and the same bits everywhere.
    @inlinable
    public static func squareRoot(_ x: Double) -> Double {
        precondition(x.isFinite && x >= 0, "square root of \(x)")
        if x == 0 { return 0 }
        var (m, e) = split(x)
        if e & 1 != 0 {
            m = m * 2  // exact
            e -= 1
        }
        var y = (m + 2) / 3
        for _ in 0..<5 { y = 0.5 * (y + m / y) }
        return Double(sign: .plus, exponent: e / 2, significand: y)
    }

    /// `(cos θ, sin θ)` for `θ = 2π · w / 2^32` (§10.4): quadrant `q = w >> 30`, fraction
    /// `f = (w & (2^30 - 1)) · 2^-30` (exact); for `f ≤ 1/2`, `a = f · (π/2)` and
    /// `(C, S) = (cosP(a), sinP(a))`; otherwise `a = (1 - f) · (π/2)` and
    /// `(C, S) = (sinP(a), cosP(a))`; then by quadrant 0, 1, 2, 3: `(C, S)`, `(-S, C)`,
    /// `(-C, -S)`, `(S, -C)`. `sinP(a) = a · Σ s_k z^k`, `cosP(a) = Σ c_k z^k` (k = 0 ... 8,
    /// `z = a · a`, Horner from k = 8 down).
    @inlinable
    public static func cosSin(turn w: UInt32) -> (cos: Double, sin: Double) {
        let q = w >> 30
        let f = Double(w & 0x3FFF_FFFF) * 0x1p-30
        let flip = f > 0.5
        let a = (flip ? 1 - f : f) * halfPi
        let z = a * a
        let sc = sinCoefficients, cc = cosCoefficients
        var ps = sc[8], pc = cc[8]
        for k in stride(from: 7, through: 0, by: -1) {
            ps = ps * z + sc[k]
            pc = pc * z + cc[k]
        }
        let sinA = a * ps
        let (c, s) = flip ? (sinA, pc) : (pc, sinA)
        switch q {
        case 0: return (c, s)
        case 1: return (-s, c)
        case 2: return (-c, -s)
        default: return (s, -c)
        }
    }

    /// Two independent standard normal deviates from two words (§10.1):
    /// `u = (w0 + 0.5) · 2^-32` in `(0, 1)` (exact), `r = squareRoot(-2 · log(u))`,
    /// `(C, S) = cosSin(turn: w1)`, and the pair `(r · C, r · S)`.
    @inlinable
    public static func pair(_ w0: UInt32, _ w1: UInt32) -> (Double, Double) {
        let u = (Double(w0) + 0.5) * 0x1p-32
        let r = squareRoot(-2 * log(u))
        let (c, s) = cosSin(turn: w1)
        return (r * c, r * s)
    }

    /// The standard deviation of Gaussian dropout with keep probability `p` (§5.2):
    /// `σ = squareRoot((1 - p) / p)` in binary64 (0 for p = 1).
    ///
    /// - Precondition: `0 < p <= 1`.
    @inlinable
    public static func dropoutSigma(keepProbability p: Double) -> Double {
        precondition(p > 0 && p <= 1, "keep probability \(p) is not in (0, 1]")
        return squareRoot((1 - p) / p)
    }

    /// The binary32 multiplier `Float(1 + σ · z)` (binary64 product and sum, then one rounding
    /// to nearest binary32, ties to even).
    @inlinable
    public static func multiplier(sigma: Double, normal z: Double) -> Float {
        Float(1 + sigma * z)
    }
}

extension StreamRow {
    /// Writes Gaussian dropout multipliers for units `0 ..< units` (§5.2): unit `u` takes block
    /// `u >> 2`; words `(x0, x1)` give units `4D` (the cosine deviate) and `4D + 1` (the sine),
    /// words `(x2, x3)` units `4D + 2` and `4D + 3`; each becomes
    /// ``DeterministicNormal/multiplier(sigma:normal:)``.
    ///
    /// - Precondition: `buffer.count >= units`, `0 <= units <= 2^32`.
    @inlinable
    public func fillGaussian(units: Int, sigma: Double, into buffer: UnsafeMutableBufferPointer<Float>) {
        precondition(units >= 0 && units <= StreamLayout.unitLimit, "row length \(units) is not in 0 ... 2^32")
        precondition(buffer.count >= units, "noise buffer holds \(buffer.count) values, \(units) needed")
        if sigma == 0 {
            for u in 0..<units { buffer[u] = 1 }
            return
        }
        var u = 0
        var b: UInt32 = 0
        while u < units {
            let x = block(b)
            let (a0, a1) = DeterministicNormal.pair(x[0], x[1])
            buffer[u] = DeterministicNormal.multiplier(sigma: sigma, normal: a0)
            if u + 1 < units { buffer[u + 1] = DeterministicNormal.multiplier(sigma: sigma, normal: a1) }
            if u + 2 < units {
                let (a2, a3) = DeterministicNormal.pair(x[2], x[3])
                buffer[u + 2] = DeterministicNormal.multiplier(sigma: sigma, normal: a2)
                if u + 3 < units { buffer[u + 3] = DeterministicNormal.multiplier(sigma: sigma, normal: a3) }
            }
            u += 4
            b &+= 1
        }
    }
}

// MARK: - The rows of channel and Gaussian dropout

extension RandomStreams {
    /// The training channel-dropout row of the inputs of layer `layer` for the example at
    /// position `example` of step `step` of epoch `epoch` (tag 5, §5.1): word `c` decides
    /// channel `c`. The fields of tag 3 (§5) under another tag.
    @inlinable
    public func channelDropoutRow(epoch: Int, step: Int, layer: Int, example: Int) -> StreamRow {
        let e = Self.field(epoch, below: StreamLayout.epochLimit, "epoch")
        let t = Self.field(step, below: StreamLayout.stepLimit, "step")
        let l = Self.field(layer, below: StreamLayout.layerLimit, "layer")
        let b = Self.field(example, below: StreamLayout.exampleInBatchLimit, "example in batch")
        return StreamRow(key: key, c1: t, c2: l << 24 | b, c3: Self.high(.channelMask, e))
    }

    /// The training Gaussian-dropout row (tag 7, §5.2): the fields of tag 3.
    @inlinable
    public func gaussianDropoutRow(epoch: Int, step: Int, layer: Int, example: Int) -> StreamRow {
        let e = Self.field(epoch, below: StreamLayout.epochLimit, "epoch")
        let t = Self.field(step, below: StreamLayout.stepLimit, "step")
        let l = Self.field(layer, below: StreamLayout.layerLimit, "layer")
        let b = Self.field(example, below: StreamLayout.exampleInBatchLimit, "example in batch")
        return StreamRow(key: key, c1: t, c2: l << 24 | b, c3: Self.high(.gaussianNoise, e))
    }

    /// The Monte-Carlo channel-dropout row (tag 6, §8.1): the fields of tag 4.
    @inlinable
    public func monteCarloChannelRow(sample: Int, example: Int, layer: Int) -> StreamRow {
        let s = Self.field(sample, below: StreamLayout.monteCarloSampleLimit, "Monte-Carlo sample")
        let x = Self.field(example, below: StreamLayout.evaluationExampleLimit, "evaluation example")
        let l = Self.field(layer, below: StreamLayout.layerLimit, "layer")
        return StreamRow(key: key, c1: x, c2: l << 24, c3: Self.high(.monteCarloChannelMask, s))
    }

    /// The Monte-Carlo Gaussian-dropout row (tag 8, §8.2): the fields of tag 4.
    @inlinable
    public func monteCarloGaussianRow(sample: Int, example: Int, layer: Int) -> StreamRow {
        let s = Self.field(sample, below: StreamLayout.monteCarloSampleLimit, "Monte-Carlo sample")
        let x = Self.field(example, below: StreamLayout.evaluationExampleLimit, "evaluation example")
        let l = Self.field(layer, below: StreamLayout.layerLimit, "layer")
        return StreamRow(key: key, c1: x, c2: l << 24, c3: Self.high(.monteCarloGaussianNoise, s))
    }

    /// Writes the channel mask of channels `0 ..< channels` (one value per channel, §5.1):
    /// `keptValue` where kept (word `c < T(p)`), 0 where dropped. The caller broadcasts
    /// channel `c` to every element of the channel.
    @inlinable
    public func channelKeepMask(
        epoch: Int, step: Int, layer: Int, example: Int, channels: Int, keepProbability: Double,
        keptValue: Float = 1, into buffer: UnsafeMutableBufferPointer<Float>
    ) {
        channelDropoutRow(epoch: epoch, step: step, layer: layer, example: example)
            .fillMask(
                units: channels, threshold: KeepThreshold(keepProbability: keepProbability), keptValue: keptValue,
                into: buffer)
    }

    /// The Monte-Carlo channel mask (§8.1), as ``channelKeepMask(epoch:step:layer:example:channels:keepProbability:keptValue:into:)``.
    @inlinable
    public func monteCarloChannelKeepMask(
        sample: Int, example: Int, layer: Int, channels: Int, keepProbability: Double, keptValue: Float = 1,
        into buffer: UnsafeMutableBufferPointer<Float>
    ) {
        monteCarloChannelRow(sample: sample, example: example, layer: layer)
            .fillMask(
                units: channels, threshold: KeepThreshold(keepProbability: keepProbability), keptValue: keptValue,
                into: buffer)
    }

    /// Writes the Gaussian dropout multipliers `1 + σ·z` (σ² = (1 - p)/p) of units
    /// `0 ..< units` (§5.2). The same values in both conventions.
    @inlinable
    public func gaussianNoise(
        epoch: Int, step: Int, layer: Int, example: Int, units: Int, keepProbability: Double,
        into buffer: UnsafeMutableBufferPointer<Float>
    ) {
        gaussianDropoutRow(epoch: epoch, step: step, layer: layer, example: example)
            .fillGaussian(
                units: units, sigma: DeterministicNormal.dropoutSigma(keepProbability: keepProbability), into: buffer)
    }

    /// The Monte-Carlo Gaussian multipliers (§8.2).
    @inlinable
    public func monteCarloGaussianNoise(
        sample: Int, example: Int, layer: Int, units: Int, keepProbability: Double,
        into buffer: UnsafeMutableBufferPointer<Float>
    ) {
        monteCarloGaussianRow(sample: sample, example: example, layer: layer)
            .fillGaussian(
                units: units, sigma: DeterministicNormal.dropoutSigma(keepProbability: keepProbability), into: buffer)
    }

    // MARK: Glorot uniform for any weight shape (§6.4)

    /// Fills a weight of `rows` rows of `rowLength` (rows of fan-in: a dense layer's
    /// `[outputs, inputs]`, a convolution's `[F, KH·KW·C]`) with Glorot uniform weights of the
    /// given fans (§6.4): element `(i, j)` at `i · rowLength + j` is
    /// `v(layer, i, j) * glorotUniformLimit(fanIn:fanOut:)`. Keras's fans for a convolution are
    /// `fanIn = KH·KW·C`, `fanOut = KH·KW·F`. With `fanIn = rowLength = inputs` and
    /// `fanOut = rows = outputs` this is ``glorotUniformInit(layer:outputs:inputs:into:)``, bit
    /// for bit.
    @inlinable
    public func glorotUniformInit(
        layer: Int, rows: Int, rowLength: Int, fanIn: Int, fanOut: Int, into buffer: UnsafeMutableBufferPointer<Float>
    ) {
        uniformInit(
            layer: layer, outputs: rows, inputs: rowLength,
            limit: Self.glorotUniformLimit(fanIn: fanIn, fanOut: fanOut), into: buffer)
    }
}
