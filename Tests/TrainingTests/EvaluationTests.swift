import DropModelBase
import BundleFormat
import DropoutRandom
import Testing
import TestSupport
import Training
import TrainingData

// Tests of Sources/Training/Evaluation.swift against the theory of dropout at test time
// (reference: "Test time: the weight-scaling rule", "Monte-Carlo model averaging", "Dropout on
// linear regression is ridge regression") and Specs/bake.md.

// MARK: - Helpers (namespaced: TrainingTests.swift defines module-level helpers)

private enum EV {
    /// Random weights in [-scale, scale) and biases in [-scale/10, scale/10) for `sizes`.
    static func network(
        sizes: [Int], keep: [Double], hidden: Activation = .relu, output: Activation = .softmax, seed: UInt64,
        scale: Float = 1
    ) -> Network {
        var rng = FixtureRandom(seed: seed)
        var layers: [LayerInfo] = []
        var params: [Parameters] = []
        for l in 0..<(sizes.count - 1) {
            let last = l == sizes.count - 2
            layers.append(
                LayerInfo(
                    name: last ? "output" : "hidden\(l + 1)", inputs: sizes[l], outputs: sizes[l + 1],
                    activation: last ? output : hidden, keepProb: keep[l]))
            let w = (0..<(sizes[l] * sizes[l + 1])).map { _ in rng.float() * scale }
            let b = (0..<sizes[l + 1]).map { _ in rng.float() * scale / 10 }
            params.append(Parameters(weight: w, bias: b))
        }
        return Network(layers: layers, parameters: params)
    }

    /// The Fixtures model of the brief as a Network.
    static func fixtureNetwork(
        sizes: [Int] = [12, 9, 7, 4], keep: [Double] = [0.8, 0.5, 0.5], seed: UInt64 = 5
    ) -> Network {
        let model = Fixtures.model(sizes: sizes, keep: keep, seed: seed)
        return Network(layers: model.info.layers, parameters: model.parameters)
    }

    /// `count` random examples in [-scale, scale), labels cycling through `classes`.
    static func examples(count: Int, features: Int, classes: Int, seed: UInt64, scale: Float = 1) -> LabeledExamples {
        var rng = FixtureRandom(seed: seed)
        let inputs = (0..<(count * features)).map { _ in rng.float() * scale }
        let labels = (0..<count).map { UInt8($0 % classes) }
        return LabeledExamples(count: count, features: features, classes: classes, inputs: inputs, labels: labels)
    }

    /// Baking as `dropmodel bake` writes it: `Bake.scale(w, keep: Float(p))` per weight, biases as they are.
    static func baked(_ network: Network) -> Network {
        var out = network
        for l in network.layers.indices {
            let p = Float(network.layers[l].keepProb)
            out.parameters[l].weight = network.parameters[l].weight.map { Bake.scale($0, keep: p) }
        }
        return out
    }

    static func predict(_ network: Network, _ inputs: [Float], count: Int) -> [Float] {
        inputs.withUnsafeBufferPointer { Predictor(network: network).probabilities($0, count: count) }
    }

    /// One example through `network` in float64; `masks[l]` multiplies layer l's inputs (nil: none).
    static func forward(_ network: Network, _ x: [Double], masks: [[Double]?]) -> [Double] {
        var a = x
        for (l, layer) in network.layers.enumerated() {
            if let m = masks[l] { for j in 0..<layer.inputs { a[j] *= m[j] } }
            let p = network.parameters[l]
            var z = [Double](repeating: 0, count: layer.outputs)
            for o in 0..<layer.outputs {
                var s = Double(p.bias[o])
                for j in 0..<layer.inputs { s += Double(p.weight[o * layer.inputs + j]) * a[j] }
                z[o] = s
            }
            switch layer.activation {
            case .linear: break
            case .relu: z = z.map { max(0, $0) }
            case .logistic: z = z.map { 1 / (1 + exp64(-$0)) }
            case .tanh: z = z.map { (exp64(2 * $0) - 1) / (exp64(2 * $0) + 1) }
            case .softmax:
                let m = z.max()!
                let e = z.map { exp64($0 - m) }
                let s = e.reduce(0, +)
                z = e.map { $0 / s }
            }
            a = z
        }
        return a
    }

    /// e^x in float64 without Foundation (series after range reduction; ~1e-15 relative).
    static func exp64(_ x: Double) -> Double {
        if x < -700 { return 0 }
        let k = (x / 0.6931471805599453).rounded()
        let r = x - k * 0.6931471805599453
        var term = 1.0, sum = 1.0
        for n in 1...25 {
            term *= r / Double(n)
            sum += term
        }
        return sum * pow2(Int(k))
    }

    static func pow2(_ k: Int) -> Double { Double(sign: .plus, exponent: k, significand: 1) }

    /// First-maximum argmax error of class scores against labels.
    static func error<T: BinaryFloatingPoint>(_ scores: [T], _ set: LabeledExamples, classes: Int) -> Double {
        var wrong = 0
        for i in 0..<set.count {
            var best = 0
            for c in 1..<classes where scores[i * classes + c] > scores[i * classes + best] { best = c }
            if best != Int(set.labels[i]) { wrong += 1 }
        }
        return Double(wrong) / Double(set.count)
    }

    static func relativeClose(_ a: Double, _ b: Double, _ rel: Double, floor: Double = 1e-30) -> Bool {
        abs(a - b) <= rel * max(abs(a), abs(b), floor)
    }

    /// Index of the first pair of elements not within `rel`, or nil.
    static func firstMismatch(_ a: [Float], _ b: [Double], rel: Double, floor: Double = 1e-30) -> Int? {
        precondition(a.count == b.count)
        return a.indices.first { !relativeClose(Double(a[$0]), b[$0], rel, floor: floor) }
    }

    static func bitsOf(_ a: [Float]) -> [UInt32] { a.map(\.bitPattern) }
}

// MARK: - Tests

@Suite("Evaluation")
struct EvaluationTests {
    // MARK: 1. Linear network: weight scaling is the exact expectation over all masks

    static let linearKeep = [0.8, 0.6]

    static func linearNetwork() -> Network {
        EV.network(sizes: [3, 2, 2], keep: linearKeep, hidden: .linear, output: .linear, seed: 21)
    }

    static let linearInputs: [[Float]] = [
        [1, 2, -1], [0.5, -0.25, 3], [-2, 1.5, 0.75], [4, -3, 0.125],
    ]

    /// Exact E[output] over all 2^(3+2) masks, kept unit value `kept(p)`, in float64.
    static func exactExpectation(_ network: Network, _ x: [Float], kept: (Double) -> Double) -> [Double] {
        let n0 = network.layers[0].inputs, n1 = network.layers[1].inputs
        let p0 = network.layers[0].keepProb, p1 = network.layers[1].keepProb
        var sum = [Double](repeating: 0, count: network.outputs)
        var totalProbability = 0.0
        for m0 in 0..<(1 << n0) {
            for m1 in 0..<(1 << n1) {
                var prob = 1.0
                let mask0 = (0..<n0).map { j -> Double in
                    let on = m0 >> j & 1 == 1
                    prob *= on ? p0 : 1 - p0
                    return on ? kept(p0) : 0
                }
                let mask1 = (0..<n1).map { j -> Double in
                    let on = m1 >> j & 1 == 1
                    prob *= on ? p1 : 1 - p1
                    return on ? kept(p1) : 0
                }
                let y = EV.forward(network, x.map(Double.init), masks: [mask0, mask1])
                for c in sum.indices { sum[c] += prob * y[c] }
                totalProbability += prob
            }
        }
        #expect(abs(totalProbability - 1) < 1e-12)
        return sum
    }

    @Test("linear network, classic: the weight-scaled output is the exact expectation over all 2^5 masks")
    func linearClassicExpectation() throws {
        let net = Self.linearNetwork()
        let inputs = Self.linearInputs.flatMap { $0 }
        let count = Self.linearInputs.count
        let scaled = EV.predict(net.weightScaled(), inputs, count: count)
        let unscaled = EV.predict(net, inputs, count: count)
        var expected: [Double] = []
        for x in Self.linearInputs { expected += Self.exactExpectation(net, x, kept: { _ in 1 }) }
        let bad = EV.firstMismatch(scaled, expected, rel: 1e-5)
        #expect(
            bad == nil,
            """
            output \(bad ?? -1): weight-scaled \(bad.map { scaled[$0] } ?? 0) vs exact \
            \(bad.map { expected[$0] } ?? 0)
            """)
        // The test discriminates: the unscaled network is not the expectation.
        #expect(zip(unscaled, expected).contains { abs(Double($0) - $1) > 1e-2 })
        // Evaluation applies the same rule on the fly to a classic unbaked network...
        let set = LabeledExamples(count: count, features: 3, classes: 2, inputs: inputs, labels: [0, 1, 0, 1])
        let eval = Evaluation(network: net, convention: .classic, baked: false).deterministicProbabilities(set)
        #expect(EV.bitsOf(eval) == EV.bitsOf(scaled))
        // ...and so does a baked network evaluated as it is.
        let bakedEval = Evaluation(network: EV.baked(net), convention: .classic, baked: true)
            .deterministicProbabilities(set)
        #expect(EV.bitsOf(bakedEval) == EV.bitsOf(scaled))
    }

    @Test("linear network, inverted: kept value 1/p makes the stored network the exact expectation")
    func linearInvertedExpectation() throws {
        let net = Self.linearNetwork()
        let inputs = Self.linearInputs.flatMap { $0 }
        let count = Self.linearInputs.count
        let inference = net.forInference(convention: .inverted, baked: false)
        #expect(inference == net, "an inverted network must not be scaled")
        let out = EV.predict(inference, inputs, count: count)
        var expected: [Double] = []
        for x in Self.linearInputs { expected += Self.exactExpectation(net, x, kept: { 1 / $0 }) }
        let bad = EV.firstMismatch(out, expected, rel: 1e-5)
        #expect(
            bad == nil,
            "output \(bad ?? -1): network \(bad.map { out[$0] } ?? 0) vs exact \(bad.map { expected[$0] } ?? 0)")
        // Scaling an inverted network (the keras#5357 error) is not the expectation.
        let wrong = EV.predict(net.weightScaled(), inputs, count: count)
        #expect(zip(wrong, expected).contains { abs(Double($0) - $1) > 1e-2 })
        let set = LabeledExamples(count: count, features: 3, classes: 2, inputs: inputs, labels: [0, 1, 0, 1])
        let eval = Evaluation(network: net, convention: .inverted, baked: false).deterministicProbabilities(set)
        #expect(EV.bitsOf(eval) == EV.bitsOf(out))
    }

    // MARK: 2. Dropout on linear regression is ridge regression (JMLR Sec. 9.1)

    struct Ridge {
        let n = 3, d = 3
        let p = 0.7
        var x: [[Double]] = []  // n x d
        var y: [Double] = []
        var w: [Double] = []

        init() {
            var rng = FixtureRandom(seed: 91)
            x = (0..<n).map { _ in (0..<d).map { _ in Double(rng.float()) * 2 } }
            y = (0..<n).map { _ in Double(rng.float()) * 3 }
            w = (0..<d).map { _ in Double(rng.float()) * 1.5 }
        }

        /// ||y - (R∘X) w||² for a mask `keep(i, j)`.
        func loss(_ keep: (Int, Int) -> Bool) -> Double {
            var s = 0.0
            for i in 0..<n {
                var pred = 0.0
                for j in 0..<d where keep(i, j) { pred += x[i][j] * w[j] }
                s += (y[i] - pred) * (y[i] - pred)
            }
            return s
        }

        /// diag(XᵀX)_j = Σ_i X_ij².
        var gammaSquared: [Double] { (0..<d).map { j in (0..<n).map { x[$0][j] * x[$0][j] }.reduce(0, +) } }

        /// ||y - p X w||² + p(1-p) ||Γ w||².
        var closedForm: Double {
            var s = 0.0
            for i in 0..<n {
                let pred = p * (0..<d).map { x[i][$0] * w[$0] }.reduce(0, +)
                s += (y[i] - pred) * (y[i] - pred)
            }
            let ridge = zip(gammaSquared, w).map { $0 * $1 * $1 }.reduce(0, +)
            return s + p * (1 - p) * ridge
        }

        /// ||y - X w̃||² + ((1-p)/p) ||Γ w̃||² with w̃ = p w.
        var closedFormTilde: Double {
            let wt = w.map { p * $0 }
            var s = 0.0
            for i in 0..<n {
                let pred = (0..<d).map { x[i][$0] * wt[$0] }.reduce(0, +)
                s += (y[i] - pred) * (y[i] - pred)
            }
            let ridge = zip(gammaSquared, wt).map { $0 * $1 * $1 }.reduce(0, +)
            return s + (1 - p) / p * ridge
        }

        /// E over all 2^(n·d) masks.
        var exhaustive: Double {
            var e = 0.0
            for m in 0..<(1 << (n * d)) {
                let kept = m.nonzeroBitCount
                var prob = 1.0
                for _ in 0..<kept { prob *= p }
                for _ in 0..<(n * d - kept) { prob *= 1 - p }
                e += prob * loss { i, j in m >> (i * d + j) & 1 == 1 }
            }
            return e
        }
    }

    @Test("ridge identity: exhaustive expectation over 2^9 masks equals both closed forms")
    func ridgeExhaustive() {
        let r = Ridge()
        let exact = r.exhaustive
        let a = r.closedForm, b = r.closedFormTilde
        #expect(EV.relativeClose(exact, a, 1e-9), "exhaustive \(exact) vs ||y - pXw||² + p(1-p)||Γw||² = \(a)")
        #expect(EV.relativeClose(exact, b, 1e-9), "exhaustive \(exact) vs w̃ form \(b)")
        // Not trivially satisfied: the ridge term matters.
        #expect(abs(exact - r.loss { _, _ in true }) > 1e-3)
        #expect(r.p * (1 - r.p) * zip(r.gammaSquared, r.w).map { $0 * $1 * $1 }.reduce(0, +) > 1e-2)
    }

    @Test("ridge identity holds in expectation over dropmodel's Monte-Carlo masks (5σ)")
    func ridgeSampled() {
        let r = Ridge()
        let streams = RandomStreams(seed: 0xD40_9017)
        let samples = 20_000
        var sum = 0.0, sumSquares = 0.0
        var keptCount = 0
        for s in 0..<samples {
            var keep = [Bool](repeating: false, count: r.n * r.d)
            for i in 0..<r.n {
                for j in 0..<r.d {
                    keep[i * r.d + j] = streams.monteCarloIsKept(
                        sample: s, example: i, layer: 0, unit: j, keepProbability: r.p)
                }
            }
            keptCount += keep.filter { $0 }.count
            let l = r.loss { i, j in keep[i * r.d + j] }
            sum += l
            sumSquares += l * l
        }
        let n = Double(samples)
        let mean = sum / n
        let variance = (sumSquares - n * mean * mean) / (n - 1)
        let se = (variance / n).squareRoot()
        let exact = r.closedForm
        #expect(se > 0)
        #expect(abs(mean - exact) < 5 * se, "sampled mean \(mean) vs closed form \(exact), standard error \(se)")
        // The keep rate itself.
        let draws = Double(samples * r.n * r.d)
        let rate = Double(keptCount) / draws
        #expect(abs(rate - r.p) < 5 * (r.p * (1 - r.p) / draws).squareRoot(), "keep rate \(rate)")
        // monteCarloIsKept agrees with the mask rows used by Evaluation.
        var mask = [Float](repeating: -1, count: r.d)
        for s in [0, 1, 12_345] {
            for i in 0..<r.n {
                mask.withUnsafeMutableBufferPointer {
                    streams.monteCarloKeepMask(
                        sample: s, example: i, layer: 0, units: r.d, keepProbability: r.p, into: $0)
                }
                for j in 0..<r.d {
                    let kept = streams.monteCarloIsKept(sample: s, example: i, layer: 0, unit: j, keepProbability: r.p)
                    #expect(mask[j] == (kept ? 1 : 0))
                }
            }
        }
    }

    // MARK: 3. Baked = weight scaling, bit for bit

    @Test("a network baked with Bake.scale evaluates bit for bit like its unbaked parent with weight scaling")
    func bakedEqualsWeightScaling() {
        let original = EV.fixtureNetwork()
        let baked = EV.baked(original)
        for l in original.layers.indices {
            #expect(EV.bitsOf(baked.parameters[l].bias) == EV.bitsOf(original.parameters[l].bias))
            #expect(EV.bitsOf(baked.parameters[l].weight) == EV.bitsOf(original.weightScaled().parameters[l].weight))
        }
        let set = EV.examples(count: 50, features: 12, classes: 4, seed: 33)
        let fromBaked = Evaluation(network: baked, convention: .classic, baked: true).deterministicProbabilities(set)
        let fromOriginal = Evaluation(network: original, convention: .classic, baked: false).deterministicProbabilities(
            set)
        #expect(fromBaked.count == 50 * 4)
        #expect(EV.bitsOf(fromBaked) == EV.bitsOf(fromOriginal))
        #expect(fromBaked.allSatisfy { $0.isFinite && $0 >= 0 && $0 <= 1 })
        #expect(
            Evaluation(network: baked, convention: .classic, baked: true).weightScalingError(set)
                == Evaluation(network: original, convention: .classic, baked: false).weightScalingError(set))
        // Baking twice (a baked network treated as unbaked) gives different predictions.
        let twice = Evaluation(network: baked, convention: .classic, baked: false).deterministicProbabilities(set)
        #expect(EV.bitsOf(twice) != EV.bitsOf(fromOriginal))
    }

    // MARK: 4. Monte-Carlo model averaging

    @Test("with every keep probability 1, every MC error is the weight-scaling error and std is 0")
    func monteCarloWithoutDropout() {
        let net = EV.fixtureNetwork(keep: [1, 1, 1])
        let set = EV.examples(count: 40, features: 12, classes: 4, seed: 34)
        for (convention, baked) in [(DropoutConvention.classic, false), (.classic, true), (.inverted, false)] {
            let eval = Evaluation(network: net, convention: convention, baked: baked)
            let ws = eval.weightScalingError(set)
            #expect(ws > 0, "choose data where the network errs")
            let rows = eval.monteCarlo(set, ks: [1, 2, 5], repeats: 3, seed: 8)
            #expect(rows.map(\.k) == [1, 2, 5])
            for row in rows {
                #expect(row.meanError == ws, "\(convention) baked \(baked) k \(row.k)")
                #expect(row.stdError == 0, "\(convention) baked \(baked) k \(row.k)")
                #expect(row.errors == [ws, ws, ws], "\(convention) baked \(baked) k \(row.k)")
            }
            // Every thinned network is the deterministic one.
            let thinned = eval.thinnedProbabilities(set, sample: 3, streams: RandomStreams(seed: 8))
            #expect(EV.bitsOf(thinned) == EV.bitsOf(eval.deterministicProbabilities(set)))
        }
    }

    static func noisyNetwork() -> Network { EV.fixtureNetwork(keep: [0.8, 0.5, 0.5], seed: 6) }

    @Test("Monte-Carlo: same seed gives identical rows, another seed different errors")
    func monteCarloSeeds() {
        let eval = Evaluation(network: Self.noisyNetwork(), convention: .classic, baked: false)
        let set = EV.examples(count: 60, features: 12, classes: 4, seed: 35)
        let a = eval.monteCarlo(set, ks: [1, 2], repeats: 3, seed: 100)
        let b = eval.monteCarlo(set, ks: [1, 2], repeats: 3, seed: 100)
        let c = eval.monteCarlo(set, ks: [1, 2], repeats: 3, seed: 101)
        #expect(a == b)
        #expect(a.count == 2 && c.count == 2)
        let all = a.flatMap(\.errors)
        #expect(all.contains { $0 > 0 }, "errors must not all be 0 for the seed comparison to mean anything")
        #expect(a.flatMap(\.errors) != c.flatMap(\.errors), "seeds 100 and 101 gave identical errors: \(all)")
    }

    @Test("Monte-Carlo rows: sorted by k, duplicates removed, one error per repeat, mean and std of them")
    func monteCarloRowShape() throws {
        let eval = Evaluation(network: Self.noisyNetwork(), convention: .classic, baked: false)
        let set = EV.examples(count: 30, features: 12, classes: 4, seed: 36)
        let rows = eval.monteCarlo(set, ks: [5, 1, 3, 1, 5], repeats: 4, seed: 9)
        #expect(rows.map(\.k) == [1, 3, 5])
        for row in rows {
            #expect(row.errors.count == 4)
            #expect(row.errors.allSatisfy { $0 >= 0 && $0 <= 1 })
            let mean = row.errors.reduce(0, +) / 4
            #expect(abs(row.meanError - mean) < 1e-12)
            let sd = (row.errors.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / 3).squareRoot()
            #expect(abs(row.stdError - sd) < 1e-12)
        }
        let single = eval.monteCarlo(set, ks: [2], repeats: 1, seed: 9)
        let one = try #require(single.first)
        #expect(single.count == 1 && one.errors.count == 1 && one.stdError == 0 && !one.stdError.isNaN)
        #expect(eval.monteCarlo(set, ks: [], repeats: 3, seed: 9).isEmpty)
        #expect(eval.monteCarlo(set, ks: [1], repeats: 0, seed: 9).isEmpty)
    }

    @Test("Monte-Carlo nesting: repeat r uses samples r·kmax ..< r·kmax + k, averaged cumulatively")
    func monteCarloNesting() {
        let eval = Evaluation(network: Self.noisyNetwork(), convention: .classic, baked: false)
        let set = EV.examples(count: 40, features: 12, classes: 4, seed: 37)
        let seed: UInt64 = 77
        let ks = [1, 3, 5], kmax = 5, repeats = 3
        let rows = eval.monteCarlo(set, ks: ks, repeats: repeats, seed: seed)
        #expect(rows.map(\.k) == ks)
        let streams = RandomStreams(seed: seed)
        for r in 0..<repeats {
            var sum = [Double](repeating: 0, count: set.count * 4)
            for j in 0..<kmax {
                let probs = eval.thinnedProbabilities(set, sample: r * kmax + j, streams: streams)
                if j == 0 {
                    #expect(rows[0].errors[r] == EV.error(probs, set, classes: 4), "repeat \(r), k = 1")
                }
                for i in sum.indices { sum[i] += Double(probs[i]) }
                if let index = ks.firstIndex(of: j + 1) {
                    #expect(rows[index].errors[r] == EV.error(sum, set, classes: 4), "repeat \(r), k = \(j + 1)")
                }
            }
        }
    }

    @Test("thinned networks: a baked classic network equals its unbaked parent for the same sample")
    func thinnedBakedMatchesUnbaked() {
        let original = Self.noisyNetwork()
        let set = EV.examples(count: 50, features: 12, classes: 4, seed: 38)
        let unbaked = Evaluation(network: original, convention: .classic, baked: false)
        let baked = Evaluation(network: EV.baked(original), convention: .classic, baked: true)
        let streams = RandomStreams(seed: 55)
        for sample in [0, 1, 17] {
            let a = unbaked.thinnedProbabilities(set, sample: sample, streams: streams)
            let b = baked.thinnedProbabilities(set, sample: sample, streams: streams)
            let bad = EV.firstMismatch(b, a.map(Double.init), rel: 1e-5)
            #expect(
                bad == nil,
                """
                sample \(sample), value \(bad ?? -1): baked \(bad.map { b[$0] } ?? 0) vs unbaked \
                \(bad.map { a[$0] } ?? 0)
                """)
        }
        // The thinned networks really differ from the deterministic one and between samples.
        let t0 = unbaked.thinnedProbabilities(set, sample: 0, streams: streams)
        let t1 = unbaked.thinnedProbabilities(set, sample: 1, streams: streams)
        #expect(EV.bitsOf(t0) != EV.bitsOf(t1))
        #expect(EV.bitsOf(t0) != EV.bitsOf(unbaked.deterministicProbabilities(set)))
    }

    @Test("thinned networks of a classic unbaked model: kept value 1, dropped units contribute nothing")
    func thinnedUnbakedManualForward() {
        let net = Self.noisyNetwork()
        // More than one Predictor batch (1000), so the mask's example index must be global.
        let set = EV.examples(count: 1_100, features: 12, classes: 4, seed: 39)
        let eval = Evaluation(network: net, convention: .classic, baked: false)
        let streams = RandomStreams(seed: 4242)
        let sample = 6
        let probs = eval.thinnedProbabilities(set, sample: sample, streams: streams)
        var masks = [[[Double]]]()  // [example][layer][unit]
        var mismatches: [String] = []
        for i in 0..<set.count {
            var layerMasks: [[Double]] = []
            for (l, layer) in net.layers.enumerated() {
                var m = [Float](repeating: -1, count: layer.inputs)
                m.withUnsafeMutableBufferPointer {
                    streams.monteCarloKeepMask(
                        sample: sample, example: i, layer: l, units: layer.inputs, keepProbability: layer.keepProb,
                        keptValue: 1, into: $0)
                }
                layerMasks.append(m.map(Double.init))
            }
            masks.append(layerMasks)
            let x = (0..<12).map { Double(set.inputs[i * 12 + $0]) }
            let expected = EV.forward(net, x, masks: layerMasks.map { Optional($0) })
            for c in 0..<4 where !EV.relativeClose(Double(probs[i * 4 + c]), expected[c], 1e-5) {
                mismatches.append("example \(i) class \(c): \(probs[i * 4 + c]) vs manual \(expected[c])")
            }
        }
        #expect(mismatches.isEmpty, "\(mismatches.count) mismatches, first: \(mismatches.prefix(3))")
        // Sanity of the masks: some units dropped in every layer, the rates near p.
        for (l, layer) in net.layers.enumerated() {
            let units = masks.flatMap { $0[l] }
            let rate = Double(units.filter { $0 == 1 }.count) / Double(units.count)
            #expect(units.allSatisfy { $0 == 0 || $0 == 1 })
            #expect(abs(rate - layer.keepProb) < 0.03, "layer \(l) keep rate \(rate)")
        }
        // Changing dropped input features changes nothing (bit for bit); changing kept ones does.
        var droppedChanged = set.inputs, keptChanged = set.inputs
        for i in 0..<set.count {
            for j in 0..<12 {
                if masks[i][0][j] == 0 {
                    droppedChanged[i * 12 + j] = 1_000 + Float(j)
                } else {
                    keptChanged[i * 12 + j] += 0.5
                }
            }
        }
        func with(_ inputs: [Float]) -> LabeledExamples {
            LabeledExamples(count: set.count, features: 12, classes: 4, inputs: inputs, labels: set.labels)
        }
        let afterDropped = eval.thinnedProbabilities(with(droppedChanged), sample: sample, streams: streams)
        #expect(EV.bitsOf(afterDropped) == EV.bitsOf(probs))
        let afterKept = eval.thinnedProbabilities(with(keptChanged), sample: sample, streams: streams)
        #expect(EV.bitsOf(afterKept) != EV.bitsOf(probs))
    }

    @Test("thinned networks of an inverted model carry kept units times fl32(1/p)")
    func thinnedInvertedManualForward() {
        let net = Self.noisyNetwork()
        let set = EV.examples(count: 40, features: 12, classes: 4, seed: 40)
        let eval = Evaluation(network: net, convention: .inverted, baked: false)
        let streams = RandomStreams(seed: 4243)
        let sample = 2
        let probs = eval.thinnedProbabilities(set, sample: sample, streams: streams)
        var bad = 0
        for i in 0..<set.count {
            let masks: [[Double]?] = net.layers.enumerated().map { l, layer in
                (0..<layer.inputs).map { u in
                    streams.monteCarloIsKept(
                        sample: sample, example: i, layer: l, unit: u, keepProbability: layer.keepProb)
                        ? Double(Float(1 / layer.keepProb)) : 0
                }
            }
            let x = (0..<12).map { Double(set.inputs[i * 12 + $0]) }
            let expected = EV.forward(net, x, masks: masks)
            for c in 0..<4 where !EV.relativeClose(Double(probs[i * 4 + c]), expected[c], 1e-5) { bad += 1 }
        }
        #expect(bad == 0)
    }

    /// A hand-made network that separates `classes` clusters (class c: features 3c..3c+2 near
    /// 2), with redundant hidden units so that dropout noise is real but averageable.
    static func separableProblem() -> (Network, LabeledExamples) {
        let classes = 4, features = 12, hidden = 16
        var rng = FixtureRandom(seed: 61)
        var inputs: [Float] = []
        var labels: [UInt8] = []
        for n in 0..<200 {
            let c = n % classes
            for j in 0..<features { inputs.append((j / 3 == c ? 2 : 0) + rng.float() * 0.3) }
            labels.append(UInt8(c))
        }
        let set = LabeledExamples(count: 200, features: features, classes: classes, inputs: inputs, labels: labels)
        var w1 = [Float](repeating: 0, count: hidden * features)
        for h in 0..<hidden {
            for j in 0..<features { w1[h * features + j] = (j / 3 == h % classes ? 1 : -0.2) + rng.float() * 0.05 }
        }
        var w2 = [Float](repeating: 0, count: classes * hidden)
        for c in 0..<classes {
            for h in 0..<hidden { w2[c * hidden + h] = (h % classes == c ? 1.5 : -0.3) + rng.float() * 0.05 }
        }
        let net = Network(
            layers: [
                LayerInfo(name: "hidden1", inputs: features, outputs: hidden, activation: .relu, keepProb: 0.8),
                LayerInfo(name: "output", inputs: hidden, outputs: classes, activation: .softmax, keepProb: 0.5),
            ],
            parameters: [
                Parameters(weight: w1, bias: [Float](repeating: 0, count: hidden)),
                Parameters(weight: w2, bias: [Float](repeating: 0, count: classes)),
            ])
        return (net, set)
    }

    @Test("Monte-Carlo averaging approaches the weight-scaling error as k grows")
    func monteCarloApproachesWeightScaling() throws {
        let (net, set) = Self.separableProblem()
        let eval = Evaluation(network: net, convention: .classic, baked: false)
        let ws = eval.weightScalingError(set)
        #expect(ws < 0.05, "the hand-made network should separate the clusters (weight-scaling error \(ws))")
        // Real dropout noise: thinned networks disagree with each other.
        let streams = RandomStreams(seed: 3)
        let t0 = eval.thinnedProbabilities(set, sample: 0, streams: streams)
        let t1 = eval.thinnedProbabilities(set, sample: 1, streams: streams)
        #expect(EV.bitsOf(t0) != EV.bitsOf(t1))
        let rows = eval.monteCarlo(set, ks: [1, 10, 30], repeats: 2, seed: 3)
        let last = try #require(rows.last)
        #expect(last.k == 30)
        #expect(abs(last.meanError - ws) < 0.1, "MC k=30 \(last.meanError) vs weight scaling \(ws); rows \(rows)")
    }

    // MARK: 5. Threads

    @Test("threads 1 and 3 give bit-identical deterministic probabilities, thinned networks and MC rows")
    func threadsIdentical() {
        // Products above Gemm's parallel threshold (2^20 flops), so 3 threads really split.
        let net = EV.network(sizes: [64, 64, 48, 10], keep: [0.8, 0.5, 0.5], seed: 71, scale: 0.3)
        let set = EV.examples(count: 300, features: 64, classes: 10, seed: 72)
        for (convention, baked) in [(DropoutConvention.classic, false), (.inverted, false)] {
            let one = Evaluation(network: net, convention: convention, baked: baked, threads: 1)
            let three = Evaluation(network: net, convention: convention, baked: baked, threads: 3)
            #expect(three.threads == 3)
            #expect(EV.bitsOf(one.deterministicProbabilities(set)) == EV.bitsOf(three.deterministicProbabilities(set)))
            let streams = RandomStreams(seed: 12)
            #expect(
                EV.bitsOf(one.thinnedProbabilities(set, sample: 4, streams: streams))
                    == EV.bitsOf(three.thinnedProbabilities(set, sample: 4, streams: streams)))
            let a = one.monteCarlo(set, ks: [1, 3], repeats: 2, seed: 12)
            let b = three.monteCarlo(set, ks: [1, 3], repeats: 2, seed: 12)
            #expect(a == b, "\(convention)")
            #expect(a.count == 2)
        }
    }
}
