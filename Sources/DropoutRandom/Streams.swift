// The stream layout: which Philox block and word every random draw of a run
// uses. Normative text: Specs/random-streams.md (stream layout version 1).
// Section numbers (§) below refer to that document.

/// Constants of the stream layout (`Specs/random-streams.md`).
///
/// A bundle stores ``version``; a reader must refuse to replay or continue a
/// run recorded with a layout version it does not implement.
public enum StreamLayout {
    /// The stream layout version implemented by this module.
    public static let version = 1

    /// The generator's name as bundles record it (`/rng@algorithm`).
    public static let algorithm = "philox4x32-10"

    // Exclusive upper bounds of the indices (§3.3). Indices are checked with
    // `precondition`; validate user input (epochs, batch size, ...) against
    // these before training starts.

    /// Layers: `0 ..< 2^8`.
    public static let layerLimit = 1 << 8
    /// Epochs: `0 ..< 2^24`.
    public static let epochLimit = 1 << 24
    /// Steps (minibatches) within an epoch: `0 ..< 2^32`.
    public static let stepLimit = 1 << 32
    /// Example positions within a minibatch: `0 ..< 2^24`.
    public static let exampleInBatchLimit = 1 << 24
    /// Units of one activation vector, rows and columns of a weight matrix: `0 ..< 2^32`.
    public static let unitLimit = 1 << 32
    /// Monte-Carlo samples: `0 ..< 2^24`.
    public static let monteCarloSampleLimit = 1 << 24
    /// Example indices in an evaluated data set: `0 ..< 2^32`.
    public static let evaluationExampleLimit = 1 << 32
    /// Number of examples an epoch shuffle can permute: `0 ..< 2^32`.
    public static let shuffleCountLimit = 1 << 32
}

/// The purpose tag stored in the top byte of counter word 3 (§3.2).
///
/// Tags 0 and 9...255 are reserved.
public enum StreamPurpose: UInt8, Sendable, CaseIterable {
    /// Weight initialisation (§6).
    case weightInit = 1
    /// Epoch shuffle (§7).
    case epochShuffle = 2
    /// Dropout masks during training (§5).
    case dropoutMask = 3
    /// Monte-Carlo evaluation masks (§8).
    case monteCarloMask = 4
    /// Channel dropout masks during training (§5.1).
    case channelMask = 5
    /// Channel dropout masks of Monte-Carlo evaluation (§8.1).
    case monteCarloChannelMask = 6
    /// Gaussian dropout noise during training (§5.2).
    case gaussianNoise = 7
    /// Gaussian dropout noise of Monte-Carlo evaluation (§8.2).
    case monteCarloGaussianNoise = 8
}

// MARK: - Bernoulli threshold

/// The integer threshold `T(p) = round_half_even(p * 2^32)` of a keep
/// probability `p`; a word `w` means keep iff `w < T` (§4).
///
/// Compute it once per layer; ``keeps(_:)`` is a single comparison.
public struct KeepThreshold: Sendable, Hashable {
    /// `T(p)`, in `0 ... 2^32`.
    public let value: UInt64

    /// - Precondition: `0 <= keepProbability <= 1` (NaN is rejected).
    @inlinable
    public init(keepProbability p: Double) {
        precondition(p >= 0 && p <= 1, "keep probability \(p) is not in [0, 1]")
        // p * 2^32 is exact in binary64; round half to even (§4). Integer
        // arithmetic rather than `rounded()`, which would need libm's `rint`.
        let x = p * 0x1p32
        var t = UInt64(x)  // truncation
        let fraction = x - Double(t)  // exact
        if fraction > 0.5 || (fraction == 0.5 && t & 1 == 1) { t += 1 }
        value = t
    }

    /// Whether the word `w` means keep.
    @inlinable
    public func keeps(_ w: UInt32) -> Bool {
        UInt64(w) < value
    }
}

// MARK: - Rows

/// A row of random words: every counter field fixed except word 0, which
/// holds `index >> 2`; word number `index` of the row is output word
/// `index & 3` of that block (§3.6).
///
/// Dropout masks, Monte-Carlo masks and weight rows are rows. A row of `N`
/// words costs `ceil(N / 4)` Philox blocks; any single word costs one.
public struct StreamRow: Sendable, Hashable {
    /// The Philox key (the seed, §3.1).
    public let key: SIMD2<UInt32>
    /// The counter of block 0 (its word 0 is 0).
    public let baseCounter: SIMD4<UInt32>

    /// A row with the given key and counter words 1, 2, 3.
    @inlinable
    public init(key: SIMD2<UInt32>, c1: UInt32, c2: UInt32, c3: UInt32) {
        self.key = key
        self.baseCounter = SIMD4(0, c1, c2, c3)
    }

    /// Block number `blockIndex` of the row (words `4 * blockIndex ..< 4 * blockIndex + 4`).
    @inlinable
    public func block(_ blockIndex: UInt32) -> SIMD4<UInt32> {
        var counter = baseCounter
        counter[0] = blockIndex
        return Philox4x32_10.block(counter: counter, key: key)
    }

    /// Word number `index` of the row, computed alone (one block).
    ///
    /// - Precondition: `0 <= index < 2^32`.
    @inlinable
    public func word(_ index: Int) -> UInt32 {
        precondition(index >= 0 && index < StreamLayout.unitLimit, "row index \(index) is not in 0 ..< 2^32")
        return block(UInt32(truncatingIfNeeded: index >> 2))[index & 3]
    }

    /// Calls `body(index, word)` for the words `0 ..< count` in increasing
    /// order, computing each block once.
    ///
    /// - Precondition: `0 <= count <= 2^32`.
    @inlinable
    public func forEachWord(count: Int, _ body: (Int, UInt32) -> Void) {
        precondition(count >= 0 && count <= StreamLayout.unitLimit, "row length \(count) is not in 0 ... 2^32")
        let fullBlocks = count >> 2
        var index = 0
        for b in 0..<fullBlocks {
            let x = block(UInt32(truncatingIfNeeded: b))
            body(index, x[0])
            body(index + 1, x[1])
            body(index + 2, x[2])
            body(index + 3, x[3])
            index += 4
        }
        let tail = count & 3
        if tail > 0 {
            let x = block(UInt32(truncatingIfNeeded: fullBlocks))
            for q in 0..<tail {
                body(index + q, x[q])
            }
        }
    }

    /// Whether unit `unit` of this mask row is kept (§4).
    @inlinable
    public func isKept(_ unit: Int, threshold: KeepThreshold) -> Bool {
        threshold.keeps(word(unit))
    }

    /// Writes the mask of units `0 ..< units` to `buffer[0 ..< units]`:
    /// `keptValue` where kept, `0` where dropped.
    ///
    /// - Precondition: `buffer.count >= units`.
    @inlinable
    public func fillMask(
        units: Int, threshold: KeepThreshold, keptValue: Float = 1,
        into buffer: UnsafeMutableBufferPointer<Float>
    ) {
        precondition(buffer.count >= units, "mask buffer holds \(buffer.count) values, \(units) needed")
        forEachWord(count: units) { u, w in
            buffer[u] = threshold.keeps(w) ? keptValue : 0
        }
    }

    /// Writes the mask of units `0 ..< units` as a bitset: unit `u` is bit
    /// `u % 64` of `buffer[u / 64]`, 1 = kept; the unused high bits of the
    /// last word are 0 (§5).
    ///
    /// - Precondition: `buffer.count >= (units + 63) / 64`.
    @inlinable
    public func fillBits(units: Int, threshold: KeepThreshold, into buffer: UnsafeMutableBufferPointer<UInt64>) {
        let words = (units + 63) >> 6
        precondition(buffer.count >= words, "bitset holds \(buffer.count) words, \(words) needed")
        for i in 0..<words { buffer[i] = 0 }
        forEachWord(count: units) { u, w in
            if threshold.keeps(w) {
                buffer[u >> 6] |= 1 &<< UInt64(u & 63)
            }
        }
    }
}

// MARK: - The streams of one run

/// Every random draw of a training or evaluation run, as a pure function of
/// (seed, purpose, indices), laid out as in `Specs/random-streams.md`
/// (stream layout version 1).
///
/// There is no generator state: each method computes the Philox blocks it
/// needs from the seed and its arguments, so results do not depend on the
/// order of calls, on threads, or on how work is split.
///
/// ```swift
/// let streams = RandomStreams(seed: 42)
/// let keep = streams.isKept(epoch: 0, step: 7, layer: 1, example: 3, unit: 100, keepProbability: 0.5)
/// ```
///
/// Indices outside the bounds of ``StreamLayout`` are programming errors and
/// trap.
public struct RandomStreams: Sendable, Hashable {
    /// The run's 64-bit seed.
    public let seed: UInt64

    @inlinable
    public init(seed: UInt64) {
        self.seed = seed
    }

    /// The Philox key: the seed's low word, then its high word (§3.1).
    @inlinable
    public var key: SIMD2<UInt32> {
        SIMD2(UInt32(truncatingIfNeeded: seed), UInt32(truncatingIfNeeded: seed >> 32))
    }

    @inlinable
    internal static func field(_ value: Int, below limit: Int, _ name: StaticString) -> UInt32 {
        precondition(
            value >= 0 && value < limit,
            "\(name) \(value) is out of range 0 ..< \(limit) (Specs/random-streams.md §3.3)")
        return UInt32(truncatingIfNeeded: value)
    }

    @inlinable
    internal static func high(_ purpose: StreamPurpose, _ a: UInt32) -> UInt32 {
        UInt32(purpose.rawValue) << 24 | a
    }

    // MARK: Rows of each purpose (§3.2)

    /// The row of uniform draws for row `row` of weight matrix `layer` (§6.2);
    /// its word `j` is the draw of column `j`.
    @inlinable
    public func weightInitRow(layer: Int, row: Int) -> StreamRow {
        let l = Self.field(layer, below: StreamLayout.layerLimit, "layer")
        let i = Self.field(row, below: StreamLayout.unitLimit, "row")
        return StreamRow(key: key, c1: i, c2: l << 24, c3: Self.high(.weightInit, 0))
    }

    /// The training dropout mask row of activation vector `layer` for the
    /// example at position `example` of step `step` of epoch `epoch` (§5).
    @inlinable
    public func dropoutRow(epoch: Int, step: Int, layer: Int, example: Int) -> StreamRow {
        let e = Self.field(epoch, below: StreamLayout.epochLimit, "epoch")
        let t = Self.field(step, below: StreamLayout.stepLimit, "step")
        let l = Self.field(layer, below: StreamLayout.layerLimit, "layer")
        let b = Self.field(example, below: StreamLayout.exampleInBatchLimit, "example in batch")
        return StreamRow(key: key, c1: t, c2: l << 24 | b, c3: Self.high(.dropoutMask, e))
    }

    /// The Monte-Carlo evaluation mask row of activation vector `layer` for
    /// sample `sample` and data-set example `example` (§8).
    @inlinable
    public func monteCarloRow(sample: Int, example: Int, layer: Int) -> StreamRow {
        let s = Self.field(sample, below: StreamLayout.monteCarloSampleLimit, "Monte-Carlo sample")
        let x = Self.field(example, below: StreamLayout.evaluationExampleLimit, "evaluation example")
        let l = Self.field(layer, below: StreamLayout.layerLimit, "layer")
        return StreamRow(key: key, c1: x, c2: l << 24, c3: Self.high(.monteCarloMask, s))
    }

    // MARK: Dropout masks (§5)

    /// Whether unit `unit` of activation vector `layer` is kept for the
    /// example at position `example` of step `step` of epoch `epoch`.
    /// Agrees with ``keepMask(epoch:step:layer:example:units:keepProbability:keptValue:into:)``.
    @inlinable
    public func isKept(
        epoch: Int, step: Int, layer: Int, example: Int, unit: Int, keepProbability: Double
    ) -> Bool {
        dropoutRow(epoch: epoch, step: step, layer: layer, example: example)
            .isKept(unit, threshold: KeepThreshold(keepProbability: keepProbability))
    }

    /// Writes the dropout mask of units `0 ..< units` to `buffer[0 ..< units]`:
    /// `keptValue` (1 for classic dropout, `1/p` for inverted) where kept, 0
    /// where dropped. Costs `ceil(units / 4)` Philox blocks.
    @inlinable
    public func keepMask(
        epoch: Int, step: Int, layer: Int, example: Int, units: Int,
        keepProbability: Double, keptValue: Float = 1,
        into buffer: UnsafeMutableBufferPointer<Float>
    ) {
        dropoutRow(epoch: epoch, step: step, layer: layer, example: example)
            .fillMask(
                units: units, threshold: KeepThreshold(keepProbability: keepProbability),
                keptValue: keptValue, into: buffer)
    }

    /// Writes the dropout mask of units `0 ..< units` as a bitset (see
    /// ``StreamRow/fillBits(units:threshold:into:)``).
    @inlinable
    public func keepBits(
        epoch: Int, step: Int, layer: Int, example: Int, units: Int,
        keepProbability: Double, into buffer: UnsafeMutableBufferPointer<UInt64>
    ) {
        dropoutRow(epoch: epoch, step: step, layer: layer, example: example)
            .fillBits(units: units, threshold: KeepThreshold(keepProbability: keepProbability), into: buffer)
    }

    // MARK: Monte-Carlo evaluation masks (§8)

    /// Whether unit `unit` of activation vector `layer` is kept in
    /// Monte-Carlo sample `sample` for data-set example `example`.
    @inlinable
    public func monteCarloIsKept(
        sample: Int, example: Int, layer: Int, unit: Int, keepProbability: Double
    ) -> Bool {
        monteCarloRow(sample: sample, example: example, layer: layer)
            .isKept(unit, threshold: KeepThreshold(keepProbability: keepProbability))
    }

    /// Writes the Monte-Carlo mask of units `0 ..< units` to `buffer[0 ..< units]`.
    @inlinable
    public func monteCarloKeepMask(
        sample: Int, example: Int, layer: Int, units: Int,
        keepProbability: Double, keptValue: Float = 1,
        into buffer: UnsafeMutableBufferPointer<Float>
    ) {
        monteCarloRow(sample: sample, example: example, layer: layer)
            .fillMask(
                units: units, threshold: KeepThreshold(keepProbability: keepProbability),
                keptValue: keptValue, into: buffer)
    }

    // MARK: Uniform numbers and weight initialisation (§6)

    /// `binary32(w >> 8) * 2^-24`, exact, in `[0, 1 - 2^-24]` (§6.1).
    @inlinable
    public static func uniform01(_ w: UInt32) -> Float {
        Float(w >> 8) * 0x1p-24
    }

    /// `binary32((w >> 8) - 2^23) * 2^-23`, exact, in `[-1, 1 - 2^-23]`;
    /// equals `2 * uniform01(w) - 1` (§6.1).
    @inlinable
    public static func symmetricUniform(_ w: UInt32) -> Float {
        Float(Int32(bitPattern: w >> 8) &- 0x80_0000) * 0x1p-23
    }

    /// The Glorot (Xavier) uniform limit `sqrt(6 / (fanIn + fanOut))`,
    /// computed with correctly rounded binary32 operations only (§6.3).
    @inlinable
    public static func glorotUniformLimit(fanIn: Int, fanOut: Int) -> Float {
        precondition(fanIn >= 0 && fanOut >= 0 && fanIn + fanOut > 0, "fan-in \(fanIn), fan-out \(fanOut)")
        return correctlyRoundedSquareRoot(Float(6) / Float(fanIn + fanOut))
    }

    /// The binary32 square root rounded to nearest, as IEEE 754 requires of
    /// `sqrt`, in integer arithmetic: the same bits as `Float.squareRoot()`,
    /// which on Linux references libm's `sqrtf` and so would make this module
    /// need `-lm` to link.
    ///
    /// - Precondition: `x` is finite and not negative.
    @inlinable
    internal static func correctlyRoundedSquareRoot(_ x: Float) -> Float {
        precondition(x.isFinite && x >= 0, "square root of \(x)")
        if x == 0 { return x }
        // x = m * 2^e exactly.
        var m = UInt64(x.significandBitPattern)
        var e: Int
        if x.exponentBitPattern == 0 {
            e = -149  // subnormal
        } else {
            m |= 1 << 23
            e = Int(x.exponentBitPattern) - 150
        }
        if e & 1 != 0 {  // make the exponent even
            m <<= 1
            e -= 1
        }
        var s = 0  // m * 4^s in [2^50, 2^52), so its root has 26 bits
        while m < 1 << 50 {
            m <<= 2
            s += 1
        }
        // Digit-by-digit integer square root: root = floor(sqrt(m)), rest = m - root^2.
        var rest = m
        var root: UInt64 = 0
        var bit: UInt64 = 1 << 50
        while bit != 0 {
            if rest >= root + bit {
                rest -= root + bit
                root = (root >> 1) + bit
            } else {
                root >>= 1
            }
            bit >>= 2
        }
        // Keep 24 bits, round to nearest, ties to even (a tie cannot occur for a square root).
        var q = root >> 2
        let low = root & 3
        if low == 3 || (low == 2 && (rest != 0 || q & 1 == 1)) { q += 1 }
        return Float(sign: .plus, exponent: e / 2 - s + 2, significand: Float(q))
    }

    /// The uniform draw `v(layer, row, column)` in `[-1, 1)` of one weight;
    /// depends only on (seed, layer, row, column) (§6.2).
    @inlinable
    public func initUniform(layer: Int, row: Int, column: Int) -> Float {
        Self.symmetricUniform(weightInitRow(layer: layer, row: row).word(column))
    }

    /// One initial weight, `v(layer, row, column) * limit` rounded once to
    /// binary32 (§6.3). Equals the element of
    /// ``uniformInit(layer:outputs:inputs:limit:into:)``.
    @inlinable
    public func uniformInitWeight(layer: Int, row: Int, column: Int, limit: Float) -> Float {
        initUniform(layer: layer, row: row, column: column) * limit
    }

    /// Fills the row-major `[outputs, inputs]` weight matrix of `layer` with
    /// `v(layer, i, j) * limit` (element `(i, j)` at `i * inputs + j`).
    ///
    /// - Precondition: `buffer.count >= outputs * inputs`.
    @inlinable
    public func uniformInit(
        layer: Int, outputs: Int, inputs: Int, limit: Float,
        into buffer: UnsafeMutableBufferPointer<Float>
    ) {
        precondition(outputs >= 0 && outputs <= StreamLayout.unitLimit, "outputs \(outputs)")
        precondition(inputs >= 0 && inputs <= StreamLayout.unitLimit, "inputs \(inputs)")
        let (count, overflow) = outputs.multipliedReportingOverflow(by: inputs)
        precondition(
            !overflow && buffer.count >= count,
            "weight buffer holds \(buffer.count) values, \(outputs) x \(inputs) needed")
        guard let base = buffer.baseAddress else { return }
        for i in 0..<outputs {
            let out = base + i * inputs
            weightInitRow(layer: layer, row: i).forEachWord(count: inputs) { j, w in
                out[j] = Self.symmetricUniform(w) * limit
            }
        }
    }

    /// Fills the row-major `[outputs, inputs]` weight matrix of `layer` with
    /// Glorot uniform weights, the version-1 initialisation (§6.3):
    /// `limit = glorotUniformLimit(fanIn: inputs, fanOut: outputs)`.
    @inlinable
    public func glorotUniformInit(
        layer: Int, outputs: Int, inputs: Int, into buffer: UnsafeMutableBufferPointer<Float>
    ) {
        uniformInit(
            layer: layer, outputs: outputs, inputs: inputs,
            limit: Self.glorotUniformLimit(fanIn: inputs, fanOut: outputs), into: buffer)
    }

    // MARK: Epoch shuffle (§7)

    /// A uniform integer in `0 ..< upperBound` for shuffle position
    /// `position` of epoch `epoch`: Lemire's multiply-shift with exact
    /// rejection, candidates read in word order from blocks `r = 0, 1, ...`.
    @inlinable
    internal func bounded(epoch e: UInt32, position k: UInt32, upperBound s: UInt32) -> UInt32 {
        let t = (0 &- s) % s  // 2^32 mod s
        let c3 = Self.high(.epochShuffle, e)
        var r: UInt32 = 0
        while true {
            let x = Philox4x32_10.block(counter: SIMD4(k, r, 0, c3), key: key)
            for q in 0..<4 {
                let m = x[q].multipliedFullWidth(by: s)
                if m.low >= t { return m.high }
            }
            r += 1  // Traps after 2^32 rejected blocks: probability < 2^(-2^34).
        }
    }

    /// The index `j` in `0 ... position` swapped with `position` by the
    /// Fisher-Yates shuffle of epoch `epoch` (§7). Independent of the number
    /// of examples shuffled.
    ///
    /// - Precondition: `1 <= position < 2^32 - 1`.
    @inlinable
    public func shuffleSwapIndex(epoch: Int, position: Int) -> Int {
        let e = Self.field(epoch, below: StreamLayout.epochLimit, "epoch")
        precondition(position >= 1 && position < StreamLayout.shuffleCountLimit - 1, "shuffle position \(position)")
        let k = UInt32(truncatingIfNeeded: position)
        return Int(bounded(epoch: e, position: k, upperBound: k + 1))
    }

    /// The order in which epoch `epoch` visits examples `0 ..< count`:
    /// element `q` is the example at position `q` (§7).
    ///
    /// Complexity: O(count) time, about one Philox block per example.
    @inlinable
    public func epochPermutation(epoch: Int, count: Int) -> [Int] {
        let e = Self.field(epoch, below: StreamLayout.epochLimit, "epoch")
        precondition(
            count >= 0 && count < StreamLayout.shuffleCountLimit, "shuffle count \(count) is out of range 0 ..< 2^32")
        var a = Array(0..<count)
        var k = count - 1
        while k >= 1 {
            let kw = UInt32(truncatingIfNeeded: k)
            let j = Int(bounded(epoch: e, position: kw, upperBound: kw + 1))
            a.swapAt(k, j)
            k -= 1
        }
        return a
    }
}
