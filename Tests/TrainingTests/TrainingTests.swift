import BundleFormat
import DropoutRandom
import Foundation
import Testing
import TestSupport
import Training
import TrainingData

// MARK: - Helpers

/// Synthetic labelled data: `count` rows of `features` values in [-scale, scale), labels cycling
/// through `classes`.
func syntheticExamples(count: Int, features: Int, classes: Int, seed: UInt64, scale: Float = 1) -> LabeledExamples {
    var rng = FixtureRandom(seed: seed)
    let inputs = (0..<(count * features)).map { _ in rng.float() * scale }
    let labels = (0..<count).map { UInt8($0 % classes) }
    return LabeledExamples(count: count, features: features, classes: classes, inputs: inputs, labels: labels)
}

/// `clusters` well-separated Gaussian-ish clusters in `features` dimensions: cluster c is centred
/// at 3 on coordinate c and 0 elsewhere; the noise is a sum of three uniforms in [-0.4, 0.4)
/// (roughly bell-shaped).
func clusterExamples(count: Int, features: Int, clusters: Int, seed: UInt64) -> LabeledExamples {
    var rng = FixtureRandom(seed: seed)
    var inputs: [Float] = []
    var labels: [UInt8] = []
    inputs.reserveCapacity(count * features)
    for _ in 0..<count {
        let c = Int(rng.next() % UInt64(clusters))
        for j in 0..<features {
            let noise = (rng.float() + rng.float() + rng.float()) * 0.4
            inputs.append((j == c ? 3 : 0) + noise)
        }
        labels.append(UInt8(c))
    }
    return LabeledExamples(count: count, features: features, classes: clusters, inputs: inputs, labels: labels)
}

func randomParameters(_ sizes: [Int], seed: UInt64, scale: Float = 1) -> [Parameters] {
    var rng = FixtureRandom(seed: seed)
    return (0..<(sizes.count - 1)).map { l in
        Parameters(
            weight: (0..<(sizes[l] * sizes[l + 1])).map { _ in rng.float() * scale },
            bias: (0..<sizes[l + 1]).map { _ in rng.float() * 0.3 })
    }
}

func bits(_ a: [Float]) -> [UInt32] { a.map(\.bitPattern) }

func bits(_ p: [Parameters]) -> [[UInt32]] { p.flatMap { [bits($0.weight), bits($0.bias)] } }

func bits(_ g: [[Float]]) -> [[UInt32]] { g.map(bits) }

/// The forward pass of `Specs/determinism.md` §4.2 in float64, with the masks of
/// `RandomStreams`: the hidden pre-activations (per layer, row-major `[rows, out]`) and the
/// summed cross-entropy.
func referenceForward(
    recipe: Recipe, seed: UInt64, parameters: [Parameters], data: LabeledExamples, epoch: Int, step: Int,
    examples: [Int]
) -> (hiddenZ: [[Double]], loss: Double) {
    let streams = RandomStreams(seed: seed)
    let layers = recipe.layerInfos
    var x: [[Double]] = examples.map { ex in (0..<data.features).map { Double(data.inputs[ex * data.features + $0]) } }
    var hiddenZ: [[Double]] = []
    var loss = 0.0
    for (l, layer) in layers.enumerated() {
        let kept = recipe.convention == .classic ? 1.0 : Double(Float(1 / layer.keepProb))
        var z: [[Double]] = []
        for r in x.indices {
            let m = (0..<layer.inputs).map {
                streams.isKept(
                    epoch: epoch, step: step, layer: l, example: r, unit: $0, keepProbability: layer.keepProb)
                    ? kept : 0
            }
            z.append(
                (0..<layer.outputs).map { o in
                    var acc = Double(parameters[l].bias[o])
                    for j in 0..<layer.inputs {
                        acc += Double(parameters[l].weight[o * layer.inputs + j]) * x[r][j] * m[j]
                    }
                    return acc
                })
        }
        if l < layers.count - 1 {
            hiddenZ.append(z.flatMap { $0 })
            x = z.map { row in
                row.map { v in
                    switch layer.activation {
                    case .relu: return max(v, 0)
                    case .logistic: return 1 / (1 + Foundation.exp(-v))
                    case .tanh: return Foundation.tanh(v)
                    default: return v
                    }
                }
            }
        } else {
            for (r, ex) in examples.enumerated() {
                let mx = z[r].max()!
                let s = z[r].reduce(0.0) { $0 + Foundation.exp($1 - mx) }
                loss += Foundation.log(s) - (z[r][Int(data.labels[ex])] - mx)
            }
        }
    }
    return (hiddenZ, loss)
}

// MARK: - 1, 2. Gradients

struct GradientCase: Sendable, CustomTestStringConvertible {
    var activation: Activation
    var convention: DropoutConvention
    var testDescription: String { "\(activation.rawValue), \(convention.rawValue)" }

    static let all: [GradientCase] = [Activation.relu, .logistic, .tanh, .linear].flatMap { a in
        DropoutConvention.allCases.map { GradientCase(activation: a, convention: $0) }
    }
}

@Suite("Trainer gradients")
struct GradientTests {
    static let sizes = [5, 4, 3, 3]
    static let keep = [0.8, 0.6, 0.7]

    static func trainer(
        _ activation: Activation, _ convention: DropoutConvention, keep: [Double] = keep, batch: Int = 4,
        seed: UInt64 = 11
    ) -> Trainer {
        let recipe = Recipe(
            layers: sizes, keep: keep, activation: activation, convention: convention, epochs: 1, batchSize: batch,
            learningRate: 0.1)
        let train = syntheticExamples(count: 6, features: 5, classes: 3, seed: 3)
        let data = DataSplit(train: train, test: nil, description: "synthetic")
        return Trainer(
            recipe: recipe, seed: seed, data: data, initial: randomParameters(sizes, seed: 3, scale: 0.9), threads: 1)
    }

    @Test("analytic gradients of the mean loss match central finite differences", arguments: GradientCase.all)
    func finiteDifferences(_ c: GradientCase) throws {
        let trainer = Self.trainer(c.activation, c.convention)
        let examples = [4, 0, 2, 1]
        let epoch = 2, step = 3
        let analytic = trainer.gradients(epoch: epoch, step: step, examples: examples)
        #expect(analytic.loss.isFinite && analytic.loss > 0)
        // The loss is that of the masks of RandomStreams (float64 reference of §4.2).
        let reference = referenceForward(
            recipe: trainer.recipe, seed: 11, parameters: trainer.network.parameters, data: trainer.data.train,
            epoch: epoch, step: step, examples: examples)
        #expect(
            abs(analytic.loss - reference.loss) <= 1e-5 * reference.loss,
            "loss \(analytic.loss), reference \(reference.loss)")
        // The fixture keeps every hidden pre-activation away from the relu kink, farther than a
        // perturbation of h = 1e-3 can move it, and most units active.
        if c.activation == .relu {
            let hidden = reference.hiddenZ.joined()
            try #require(hidden.allSatisfy { abs($0) > 0.05 }, "fixture: a pre-activation is near 0")
            #expect(hidden.filter { $0 > 0 }.count >= hidden.count * 3 / 4)
        }
        let base = trainer.network.parameters
        let n = Double(examples.count)
        let h: Float = c.activation == .relu ? 1e-3 : 1e-2

        func meanLoss(_ p: [Parameters]) -> Double {
            trainer.setParameters(p)
            return trainer.gradients(epoch: epoch, step: step, examples: examples).loss / n
        }
        func fd(_ perturb: (inout [Parameters], Float) -> Float) -> Double {
            var plus = base
            let xp = perturb(&plus, h)
            var minus = base
            let xm = perturb(&minus, -h)
            return (meanLoss(plus) - meanLoss(minus)) / (Double(xp) - Double(xm))
        }

        var checked = 0
        var mismatches: [String] = []
        for l in base.indices {
            for i in base[l].weight.indices {
                let numeric = fd { p, d in
                    p[l].weight[i] += d; return p[l].weight[i]
                }
                let g = Double(analytic.weight[l][i])
                checked += 1
                if abs(g - numeric) > 2e-3 + 2e-2 * abs(numeric) {
                    mismatches.append("layer \(l) weight \(i): analytic \(g), finite difference \(numeric)")
                }
            }
            for i in base[l].bias.indices {
                let numeric = fd { p, d in
                    p[l].bias[i] += d; return p[l].bias[i]
                }
                let g = Double(analytic.bias[l][i])
                checked += 1
                if abs(g - numeric) > 2e-3 + 2e-2 * abs(numeric) {
                    mismatches.append("layer \(l) bias \(i): analytic \(g), finite difference \(numeric)")
                }
            }
        }
        trainer.setParameters(base)
        #expect(checked == 51)
        #expect(mismatches.isEmpty, "\(mismatches.joined(separator: "\n"))")
        // The gradients are not all zero (so the comparison above means something).
        #expect(analytic.weight.joined().contains { abs($0) > 1e-3 })
        // Computing them again gives the same bits (gradients() does not update anything).
        let again = trainer.gradients(epoch: epoch, step: step, examples: examples)
        #expect(bits(again.weight) == bits(analytic.weight))
        #expect(bits(again.bias) == bits(analytic.bias))
        #expect(again.loss.bitPattern == analytic.loss.bitPattern)
    }

    @Test("with keep 1 everywhere the gradients do not depend on epoch or step", arguments: DropoutConvention.allCases)
    func noMasks(_ convention: DropoutConvention) {
        let trainer = Self.trainer(.tanh, convention, keep: [1, 1, 1])
        let examples = [0, 1, 2, 3]
        let a = trainer.gradients(epoch: 0, step: 0, examples: examples)
        for (e, t) in [(0, 1), (0, 7), (5, 0), (9, 3)] {
            let b = trainer.gradients(epoch: e, step: t, examples: examples)
            #expect(bits(a.weight) == bits(b.weight), "epoch \(e) step \(t)")
            #expect(bits(a.bias) == bits(b.bias), "epoch \(e) step \(t)")
            #expect(a.loss.bitPattern == b.loss.bitPattern)
        }
    }

    @Test("with keep < 1 the masks of different steps and epochs differ", arguments: DropoutConvention.allCases)
    func masksMatter(_ convention: DropoutConvention) {
        let trainer = Self.trainer(.tanh, convention)
        let examples = [0, 1, 2, 3]
        let a = trainer.gradients(epoch: 0, step: 0, examples: examples)
        let sameAgain = trainer.gradients(epoch: 0, step: 0, examples: examples)
        #expect(bits(a.weight) == bits(sameAgain.weight))
        for (e, t) in [(0, 1), (1, 0), (3, 2)] {
            let b = trainer.gradients(epoch: e, step: t, examples: examples)
            #expect(bits(a.weight) != bits(b.weight), "epoch \(e) step \(t) gave the gradients of epoch 0 step 0")
        }
        // A different seed gives different masks for the same (epoch, step).
        let other = Self.trainer(.tanh, convention, seed: 12)
        #expect(bits(other.gradients(epoch: 0, step: 0, examples: examples).weight) != bits(a.weight))
    }

    @Test("a dropped unit gets zero gradient on its outgoing weights; masks are RandomStreams' masks")
    func droppedUnitsGetNoGradient() {
        let sizes = Self.sizes
        for convention in DropoutConvention.allCases {
            let trainer = Self.trainer(.tanh, convention, keep: [0.5, 0.5, 0.5])
            let streams = RandomStreams(seed: 11)
            var sawDropped = 0, sawKept = 0
            for step in 0..<6 {
                // One example per batch, so each weight column belongs to one mask entry.
                let g = trainer.gradients(epoch: 1, step: step, examples: [step % 6])
                for l in 0..<(sizes.count - 1) {
                    let inputs = sizes[l], outputs = sizes[l + 1]
                    for j in 0..<inputs {
                        let kept = streams.isKept(
                            epoch: 1, step: step, layer: l, example: 0, unit: j, keepProbability: 0.5)
                        let column = (0..<outputs).map { g.weight[l][$0 * inputs + j] }
                        if !kept {
                            sawDropped += 1
                            #expect(
                                column.allSatisfy { $0 == 0 }, "\(convention) step \(step) layer \(l) unit \(j) dropped"
                            )
                        } else if l == sizes.count - 2 {
                            // Output layer: its delta (softmax - onehot) is never zero, and the
                            // kept input (a tanh output) is almost surely not zero either.
                            sawKept += 1
                            #expect(column.contains { $0 != 0 }, "\(convention) step \(step) layer \(l) unit \(j) kept")
                        }
                    }
                }
            }
            #expect(sawDropped > 0 && sawKept > 0)
        }
    }
}

// MARK: - Update rule

@Suite("Update rule")
struct UpdateTests {
    struct UpdateCase: Sendable, CustomTestStringConvertible {
        var convention: DropoutConvention
        var l2: Double
        var testDescription: String { "\(convention.rawValue), l2 \(l2)" }
    }

    /// Two one-step epochs recomputed by hand from `gradients(...)` (Specs/determinism.md §4.1,
    /// §4.6): the epoch's shuffle, stream epoch E - 1, v = mu*v - lr*(g + l2*w), w = w + v.
    @Test(
        "trainEpoch applies momentum SGD to the gradients of the epoch's masks and order",
        arguments: [
            UpdateCase(convention: .classic, l2: 0), UpdateCase(convention: .inverted, l2: 0),
            UpdateCase(convention: .classic, l2: 0.01), UpdateCase(convention: .inverted, l2: 0.01),
        ])
    func oneStepEpochs(_ c: UpdateCase) {
        let n = 8
        let recipe = Recipe(
            layers: [5, 4, 3], keep: [0.8, 0.5], activation: .tanh, convention: c.convention, epochs: 2, batchSize: n,
            learningRate: 0.1, lrDecay: 0.9, momentum: 0.5, momentumFinal: 0.9, momentumRampEpochs: 3, l2: c.l2)
        let data = DataSplit(
            train: syntheticExamples(count: n, features: 5, classes: 3, seed: 8), test: nil, description: "x")
        let seed: UInt64 = 99
        let initial = recipe.initialParameters(seed: seed)
        let trained = Trainer(recipe: recipe, seed: seed, data: data, initial: initial, threads: 1)
        let byHand = Trainer(recipe: recipe, seed: seed, data: data, initial: initial, threads: 1)
        let streams = RandomStreams(seed: seed)
        let l2 = Float(c.l2)

        var w = initial
        var vW = initial.map { [Float](repeating: 0, count: $0.weight.count) }
        var vB = initial.map { [Float](repeating: 0, count: $0.bias.count) }
        for epoch in 1...2 {
            let metrics = trained.trainEpoch(epoch)
            byHand.setParameters(w)
            let order = streams.epochPermutation(epoch: epoch - 1, count: n)
            let g = byHand.gradients(epoch: epoch - 1, step: 0, examples: order)
            let lr = byHand.learningRate(epoch: epoch), mu = byHand.momentum(epoch: epoch)
            for l in w.indices {
                for i in w[l].weight.indices {
                    if l2 > 0 {
                        vW[l][i] = mu * vW[l][i] - lr * (g.weight[l][i] + l2 * w[l].weight[i])
                    } else {
                        vW[l][i] = mu * vW[l][i] - lr * g.weight[l][i]
                    }
                    w[l].weight[i] = w[l].weight[i] + vW[l][i]
                }
                for i in w[l].bias.indices {
                    vB[l][i] = mu * vB[l][i] - lr * g.bias[l][i]
                    w[l].bias[i] = w[l].bias[i] + vB[l][i]
                }
            }
            #expect(bits(trained.network.parameters) == bits(w), "epoch \(epoch)")
            #expect(metrics.loss == g.loss / Double(n), "epoch \(epoch)")
            #expect(metrics.weightsSHA256 == WeightDigest.sha256(w))
        }
        #expect(bits(w) != bits(initial))
    }
}

// MARK: - 3. Determinism

@Suite("Training determinism", .tags(.slow))
struct DeterminismTests {
    static func run(seed: UInt64, threads: Int, convention: DropoutConvention = .classic) -> (Trainer, [EpochMetrics]) {
        // Large enough that the matrix products really are split between threads (Gemm runs
        // products under 2^21 flops on one thread): 2·128·256·192 ≈ 12.6M flops.
        let recipe = Recipe(
            layers: [256, 192, 64, 10], keep: [0.8, 0.5, 0.5], activation: .relu, convention: convention, epochs: 2,
            batchSize: 128, learningRate: 0.05, momentum: 0.5, momentumFinal: 0.9, momentumRampEpochs: 3, maxNorm: 2,
            l2: 1e-4)
        let data = DataSplit(
            train: syntheticExamples(count: 300, features: 256, classes: 10, seed: 21),
            test: syntheticExamples(count: 200, features: 256, classes: 10, seed: 22), description: "synthetic")
        let trainer = Trainer(
            recipe: recipe, seed: seed, data: data, initial: recipe.initialParameters(seed: seed), threads: threads)
        let metrics = (1...2).map { trainer.trainEpoch($0) }
        return (trainer, metrics)
    }

    @Test("threads 1 and 3 give bit-identical weights and metrics", arguments: DropoutConvention.allCases)
    func threadsDoNotMatter(_ convention: DropoutConvention) {
        let (a, ma) = Self.run(seed: 7, threads: 1, convention: convention)
        let (b, mb) = Self.run(seed: 7, threads: 3, convention: convention)
        #expect(bits(a.network.parameters) == bits(b.network.parameters))
        #expect(ma.count == 2 && mb.count == 2)
        for (x, y) in zip(ma, mb) {
            #expect(x.epoch == y.epoch)
            #expect(x.loss.bitPattern == y.loss.bitPattern)
            #expect(x.trainError.bitPattern == y.trainError.bitPattern)
            #expect(x.testError.bitPattern == y.testError.bitPattern)
            #expect(x.weightsSHA256 == y.weightsSHA256)
            #expect(x == y)
        }
        // The metrics describe what happened.
        #expect(ma.map(\.epoch) == [1, 2])
        #expect(ma[1].weightsSHA256 == WeightDigest.sha256(a.network.parameters))
        #expect(ma[0].weightsSHA256 != ma[1].weightsSHA256)
        for m in ma {
            #expect(m.loss.isFinite && m.loss > 0)
            #expect((0...1).contains(m.trainError))
            #expect((0...1).contains(m.testError))
        }
        // Training changed the weights.
        let initial = a.recipe.initialParameters(seed: 7)
        #expect(bits(a.network.parameters) != bits(initial))
    }

    @Test("a different seed gives different weights")
    func seedMatters() {
        let (a, ma) = Self.run(seed: 7, threads: 1)
        let (b, mb) = Self.run(seed: 8, threads: 1)
        #expect(bits(a.network.parameters) != bits(b.network.parameters))
        #expect(ma[1].weightsSHA256 != mb[1].weightsSHA256)
    }

    @Test("the same seed and threads again gives the same bits")
    func repeatable() {
        let (a, ma) = Self.run(seed: 9, threads: 2)
        let (b, mb) = Self.run(seed: 9, threads: 2)
        #expect(bits(a.network.parameters) == bits(b.network.parameters))
        #expect(ma == mb)
    }

    @Test("without a test set the test error is NaN")
    func noTestSet() {
        let recipe = Recipe(layers: [5, 4, 3], keep: [0.8, 0.5], epochs: 1, batchSize: 4)
        let data = DataSplit(
            train: syntheticExamples(count: 10, features: 5, classes: 3, seed: 1), test: nil, description: "x")
        let trainer = Trainer(
            recipe: recipe, seed: 1, data: data, initial: recipe.initialParameters(seed: 1), threads: 1)
        #expect(trainer.stepsPerEpoch == 3)
        var calls: [(Int, Int)] = []
        let m = trainer.trainEpoch(1) { calls.append(($0, $1)) }
        #expect(m.testError.isNaN)
        #expect(calls.map(\.0) == [1, 2, 3])
        #expect(calls.allSatisfy { $0.1 == 3 })
    }
}

// MARK: - 4. Schedules

@Suite("Learning-rate and momentum schedules")
struct ScheduleTests {
    static func trainer(_ recipe: Recipe) -> Trainer {
        let data = DataSplit(
            train: syntheticExamples(count: 4, features: 3, classes: 2, seed: 1), test: nil, description: "x")
        return Trainer(recipe: recipe, seed: 1, data: data, initial: recipe.initialParameters(seed: 1), threads: 1)
    }

    @Test("learning rate is lr * decay^(e-1)", arguments: [1, 2, 3, 10, 50])
    func learningRate(_ e: Int) {
        let t = Self.trainer(Recipe(layers: [3, 2], keep: [1], learningRate: 0.1, lrDecay: 0.9))
        var expected = 0.1
        for _ in 1..<e { expected *= 0.9 }
        #expect(t.learningRate(epoch: e) == Float(expected))
        let closedForm = 0.1 * Foundation.pow(0.9, Double(e - 1))
        #expect(abs(Double(t.learningRate(epoch: e)) - closedForm) <= 1e-6 * closedForm)
        // No decay: constant.
        let flat = Self.trainer(Recipe(layers: [3, 2], keep: [1], learningRate: 0.25, lrDecay: 1))
        #expect(flat.learningRate(epoch: e) == 0.25)
    }

    @Test("lr_momentum_scaling multiplies the epoch's rate by 1 - momentum", arguments: [1, 2, 6, 11, 40])
    func learningRateMomentumScaling(_ e: Int) throws {
        var r = Recipe(
            layers: [3, 2], keep: [1], learningRate: 2, lrDecay: 0.95, momentum: 0.5, momentumFinal: 0.9,
            momentumRampEpochs: 11)
        r.lrMomentumScaling = true
        var decayed = 2.0
        for _ in 1..<e { decayed *= 0.95 }
        let m = 0.5 + 0.4 * min(1, Double(e - 1) / 10)
        #expect(r.learningRate(epoch: e) == Float(decayed * (1 - m)))
        // The schedule is part of the recipe: written only when on, and read back.
        #expect(r.json().contains("\"lr_momentum_scaling\":true"))
        #expect(try Recipe.decode(json: r.json()) == r)
        r.lrMomentumScaling = false
        #expect(!r.json().contains("lr_momentum_scaling"))
        #expect(r.learningRate(epoch: e) == Float(decayed))
        // A momentum of 1 would make every step 0: refused.
        r.lrMomentumScaling = true
        r.momentumFinal = 1
        #expect(r.problems().contains { $0.contains("--lr-momentum-scaling") })
    }

    struct MomentumCase: Sendable, CustomTestStringConvertible {
        var start: Double, final: Double, ramp: Int, epoch: Int, expected: Double
        var testDescription: String { "\(start)->\(final) over \(ramp), epoch \(epoch): \(expected)" }
    }

    @Test(
        "momentum ramps linearly, then stays at its final value",
        arguments: [
            MomentumCase(start: 0.5, final: 0.99, ramp: 5, epoch: 1, expected: 0.5),
            MomentumCase(start: 0.5, final: 0.99, ramp: 5, epoch: 2, expected: 0.6225),
            MomentumCase(start: 0.5, final: 0.99, ramp: 5, epoch: 3, expected: 0.745),
            MomentumCase(start: 0.5, final: 0.99, ramp: 5, epoch: 5, expected: 0.99),
            MomentumCase(start: 0.5, final: 0.99, ramp: 5, epoch: 6, expected: 0.99),
            MomentumCase(start: 0.5, final: 0.99, ramp: 5, epoch: 100, expected: 0.99),
            MomentumCase(start: 0.5, final: 0.99, ramp: 500, epoch: 251, expected: 0.5 + 0.49 * 250 / 499),
            MomentumCase(start: 0.9, final: 0.5, ramp: 3, epoch: 2, expected: 0.7),
            MomentumCase(start: 0.5, final: 0.5, ramp: 10, epoch: 4, expected: 0.5),
            MomentumCase(start: 0.5, final: 0.99, ramp: 1, epoch: 1, expected: 0.99),
            MomentumCase(start: 0.5, final: 0.99, ramp: 0, epoch: 3, expected: 0.99),
        ])
    func momentum(_ c: MomentumCase) {
        let t = Self.trainer(
            Recipe(layers: [3, 2], keep: [1], momentum: c.start, momentumFinal: c.final, momentumRampEpochs: c.ramp))
        let m = t.momentum(epoch: c.epoch)
        #expect(abs(Double(m) - c.expected) <= 1e-6, "momentum(epoch: \(c.epoch)) = \(m)")
    }

    @Test("momentum is monotone along the ramp")
    func monotone() {
        let t = Self.trainer(
            Recipe(layers: [3, 2], keep: [1], momentum: 0.5, momentumFinal: 0.99, momentumRampEpochs: 20))
        let values = (1...30).map { t.momentum(epoch: $0) }
        #expect(zip(values, values.dropFirst()).allSatisfy { $0 <= $1 })
        #expect(values[0] == 0.5)
        #expect(values[19...].allSatisfy { $0 == Float(0.99) })
    }
}

// MARK: - 5. Max-norm

@Suite("Max-norm")
struct MaxNormTests {
    static func rowNorms(_ p: Parameters, inputs: Int) -> [Double] {
        stride(from: 0, to: p.weight.count, by: inputs).map { s in
            p.weight[s..<(s + inputs)].reduce(0.0) { $0 + Double($1) * Double($1) }.squareRoot()
        }
    }

    @Test(
        "after an epoch every hidden row's norm is at most c; the output layer is not constrained",
        arguments: [Activation.relu, .tanh])
    func constrained(_ activation: Activation) {
        let c = 0.5
        let sizes = [8, 16, 12, 3]
        let recipe = Recipe(
            layers: sizes, keep: [0.8, 0.5, 0.5], activation: activation, epochs: 1, batchSize: 10, learningRate: 0.1,
            maxNorm: c)
        let data = DataSplit(
            train: clusterExamples(count: 60, features: 8, clusters: 3, seed: 4), test: nil, description: "x")
        let initial = recipe.initialParameters(seed: 3)
        // The constraint has something to do: initial rows are longer than c.
        #expect(Self.rowNorms(initial[0], inputs: 8).contains { $0 > c })
        #expect(Self.rowNorms(initial[1], inputs: 16).contains { $0 > c })
        let trainer = Trainer(recipe: recipe, seed: 3, data: data, initial: initial, threads: 1)
        _ = trainer.trainEpoch(1)
        let p = trainer.network.parameters
        for l in 0..<2 {
            let norms = Self.rowNorms(p[l], inputs: sizes[l])
            #expect(norms.count == sizes[l + 1])
            for (u, n) in norms.enumerated() {
                #expect(n <= c * (1 + 1e-6), "hidden layer \(l) unit \(u) has norm \(n)")
            }
            // Rows that hit the constraint sit on the sphere.
            #expect(norms.contains { abs($0 - c) <= 1e-5 })
        }
        // The output layer keeps its longer rows.
        #expect(Self.rowNorms(p[2], inputs: 12).contains { $0 > c * 1.01 })
    }

    @Test("without max-norm hidden rows are not rescaled")
    func unconstrained() {
        let sizes = [8, 16, 3]
        let recipe = Recipe(layers: sizes, keep: [0.8, 0.5], epochs: 1, batchSize: 10, learningRate: 0.1)
        let data = DataSplit(
            train: clusterExamples(count: 60, features: 8, clusters: 3, seed: 4), test: nil, description: "x")
        let trainer = Trainer(
            recipe: recipe, seed: 3, data: data, initial: recipe.initialParameters(seed: 3), threads: 1)
        _ = trainer.trainEpoch(1)
        #expect(Self.rowNorms(trainer.network.parameters[0], inputs: 8).contains { $0 > 0.5 * 1.01 })
    }
}

// MARK: - 6. Learning

@Suite("Training learns", .tags(.slow))
struct LearningTests {
    @Test("loss and error fall on separable clusters; test error < 0.2", arguments: DropoutConvention.allCases)
    func learns(_ convention: DropoutConvention) throws {
        let data = DataSplit(
            train: clusterExamples(count: 300, features: 8, clusters: 3, seed: 31),
            test: clusterExamples(count: 150, features: 8, clusters: 3, seed: 32), description: "clusters")
        let recipe = Recipe(
            layers: [8, 16, 3], keep: [0.8, 0.5], activation: .relu, convention: convention, epochs: 5, batchSize: 20,
            learningRate: 0.05, momentum: 0.5, momentumFinal: 0.9, momentumRampEpochs: 5, maxNorm: 3)
        let trainer = Trainer(
            recipe: recipe, seed: 2024, data: data, initial: recipe.initialParameters(seed: 2024), threads: 2)
        let metrics = (1...5).map { trainer.trainEpoch($0) }
        let first = try #require(metrics.first), last = try #require(metrics.last)
        #expect(last.loss < first.loss, "losses \(metrics.map(\.loss))")
        #expect(last.trainError < first.trainError, "train errors \(metrics.map(\.trainError))")
        #expect(last.testError < 0.2, "test errors \(metrics.map(\.testError))")
        // Independent check of the reported test error with the deterministic network.
        #expect(trainer.testError(data.test!) == last.testError)
    }
}

// MARK: - 7, 8. Network and Predictor

@Suite("Network and Predictor")
struct NetworkTests {
    static func network(keep: [Double] = [0.8, 0.5, 1.0]) -> Network {
        let model = Fixtures.model(sizes: [6, 5, 4, 3], keep: keep, seed: 17)
        return Network(layers: model.info.layers, parameters: model.parameters)
    }

    @Test("weightScaled multiplies every weight by Float(p) exactly and leaves biases")
    func weightScaled() {
        let net = Self.network()
        let scaled = net.weightScaled()
        #expect(scaled.layers == net.layers)
        for l in net.layers.indices {
            let p = Float(net.layers[l].keepProb)
            #expect(bits(scaled.parameters[l].weight) == bits(net.parameters[l].weight.map { p * $0 }), "layer \(l)")
            #expect(bits(scaled.parameters[l].bias) == bits(net.parameters[l].bias), "layer \(l)")
        }
        // Scaling changed the layers with p < 1 and not the one with p = 1.
        #expect(bits(scaled.parameters[0].weight) != bits(net.parameters[0].weight))
        #expect(bits(scaled.parameters[2].weight) == bits(net.parameters[2].weight))
        // Keep 0.3 is not a power of two: Float(0.3) * w, not Float(0.3 * Double(w)).
        let odd = Self.network(keep: [0.3, 0.7, 0.9]).weightScaled()
        let base = Self.network(keep: [0.3, 0.7, 0.9])
        for l in 0..<3 {
            let p = Float(base.layers[l].keepProb)
            #expect(bits(odd.parameters[l].weight) == bits(base.parameters[l].weight.map { p * $0 }))
        }
    }

    struct InferenceCase: Sendable, CustomTestStringConvertible {
        var convention: DropoutConvention, baked: Bool, scaled: Bool
        var testDescription: String { "\(convention.rawValue), baked \(baked)" }
    }

    @Test(
        "forInference scales only classic, unbaked models",
        arguments: [
            InferenceCase(convention: .classic, baked: false, scaled: true),
            InferenceCase(convention: .classic, baked: true, scaled: false),
            InferenceCase(convention: .inverted, baked: false, scaled: false),
            InferenceCase(convention: .inverted, baked: true, scaled: false),
        ])
    func forInference(_ c: InferenceCase) {
        let net = Self.network()
        let out = net.forInference(convention: c.convention, baked: c.baked)
        let expected = c.scaled ? net.weightScaled() : net
        #expect(bits(out.parameters) == bits(expected.parameters))
        #expect(out.layers == net.layers)
    }

    static func softmaxReference(_ z: [Double]) -> [Double] {
        let m = z.max()!
        let e = z.map { Foundation.exp($0 - m) }
        let s = e.reduce(0, +)
        return e.map { $0 / s }
    }

    @Test("a linear network's probabilities are softmax(Wx + b)", arguments: [1, 2, 1000])
    func linearSoftmax(batch: Int) {
        let inputs = 4, classes = 3, count = 5
        var rng = FixtureRandom(seed: 77)
        let w = (0..<(inputs * classes)).map { _ in rng.float() * 2 }
        let b = (0..<classes).map { _ in rng.float() }
        let x = (0..<(count * inputs)).map { _ in rng.float() * 3 }
        let net = Network(
            layers: [LayerInfo(name: "output", inputs: inputs, outputs: classes, activation: .softmax, keepProb: 1)],
            parameters: [Parameters(weight: w, bias: b)])
        let probs = x.withUnsafeBufferPointer { Predictor(network: net).probabilities($0, count: count, batch: batch) }
        #expect(probs.count == count * classes)
        for r in 0..<count {
            let z = (0..<classes).map { o in
                Double(b[o]) + (0..<inputs).reduce(0.0) { $0 + Double(w[o * inputs + $1]) * Double(x[r * inputs + $1]) }
            }
            let expected = Self.softmaxReference(z)
            for o in 0..<classes {
                #expect(abs(Double(probs[r * classes + o]) - expected[o]) <= 1e-6, "example \(r) class \(o)")
            }
        }
    }

    @Test("a hidden linear layer composes: softmax(W2 (W1 x + b1) + b2)")
    func twoLinearLayers() {
        var rng = FixtureRandom(seed: 78)
        let sizes = [3, 5, 4]
        let p = (0..<2).map { l in
            Parameters(
                weight: (0..<(sizes[l] * sizes[l + 1])).map { _ in rng.float() },
                bias: (0..<sizes[l + 1]).map { _ in rng.float() })
        }
        let net = Network(
            layers: [
                LayerInfo(name: "hidden1", inputs: 3, outputs: 5, activation: .linear, keepProb: 1),
                LayerInfo(name: "output", inputs: 5, outputs: 4, activation: .softmax, keepProb: 1),
            ], parameters: p)
        let x: [Float] = [0.5, -1, 2, 1, 1, 1]
        let probs = x.withUnsafeBufferPointer { Predictor(network: net, threads: 2).probabilities($0, count: 2) }
        for r in 0..<2 {
            var a = (0..<3).map { Double(x[r * 3 + $0]) }
            for l in 0..<2 {
                let n = sizes[l], m = sizes[l + 1]
                a = (0..<m).map { o in
                    Double(p[l].bias[o]) + (0..<n).reduce(0.0) { $0 + Double(p[l].weight[o * n + $1]) * a[$1] }
                }
            }
            let expected = Self.softmaxReference(a)
            for o in 0..<4 { #expect(abs(Double(probs[r * 4 + o]) - expected[o]) <= 1e-6) }
            #expect(abs(probs[(r * 4)..<(r * 4 + 4)].reduce(0, +) - 1) <= 1e-6)
        }
    }

    @Test("argmax picks the first maximum")
    func argmax() {
        #expect(
            Predictor.argmax([0.2, 0.4, 0.4, 0.5, 0.5, 0.0, 0.1, 0.1, 0.8, 0.3, 0.3, 0.3], classes: 3) == [1, 0, 2, 0])
        #expect(Predictor.argmax([0.9, 0.1], classes: 2) == [0])
        #expect(Predictor.argmax([], classes: 4) == [])
    }
}

// MARK: - 9. Deterministic math

@Suite("DeterministicMath")
struct DeterministicMathTests {
    @Test("exp is within 3e-7 relative of the float64 exp over [-87, 88], and monotone")
    func expSweep() {
        let n = 200_000
        var worst = 0.0, worstX: Float = 0
        var previous: Float = 0
        var nonMonotone: [Float] = []
        for i in 0...n {
            let x = Float(-87 + 175 * Double(i) / Double(n))
            let y = DeterministicMath.exp(x)
            let ref = Foundation.exp(Double(x))
            let rel = abs(Double(y) - ref) / ref
            if rel > worst { worst = rel; worstX = x }
            if y < previous && nonMonotone.count < 5 { nonMonotone.append(x) }
            previous = y
        }
        #expect(worst < 3e-7, "worst relative error \(worst) at x = \(worstX)")
        #expect(nonMonotone.isEmpty, "exp decreases at \(nonMonotone)")
    }

    @Test(
        "exp special values",
        arguments: [
            (Float(0), Float(1)), (-200, 0), (100, .infinity), (-104, 0), (89, .infinity), (.infinity, .infinity),
            (-.infinity, 0),
        ] as [(Float, Float)])
    func expSpecial(_ x: Float, _ expected: Float) {
        #expect(DeterministicMath.exp(x) == expected)
    }

    @Test("exp of NaN is NaN")
    func expNaN() {
        #expect(DeterministicMath.exp(.nan).isNaN)
        #expect(DeterministicMath.logistic(.nan).isNaN)
    }

    @Test("exp near the ends of its range", arguments: [Float(88.5), 88.72, -87.5, -90, -95, -100, -103])
    func expEdges(_ x: Float) {
        let y = DeterministicMath.exp(x)
        let ref = Foundation.exp(Double(x))
        // Normal results: 3e-7 relative; subnormal ones: within 2 units of the smallest subnormal.
        let tolerance = max(3e-7 * ref, 2 * Double(Float.leastNonzeroMagnitude))
        #expect(abs(Double(y) - ref) <= tolerance, "exp(\(x)) = \(y), reference \(ref)")
        #expect(y.isFinite && y > 0)
    }

    @Test("logistic and tanh")
    func logisticTanh() {
        #expect(DeterministicMath.logistic(0) == 0.5)
        #expect(DeterministicMath.tanh(0) == 0)
        #expect(DeterministicMath.tanh(20) == 1 && DeterministicMath.tanh(-20) == -1)
        for i in 0...4000 {
            let x = Float(-20 + Double(i) / 100)
            let t = DeterministicMath.tanh(x)
            #expect(abs(t) <= 1, "tanh(\(x)) = \(t)")
            #expect(abs(t + DeterministicMath.tanh(-x)) <= 1e-6, "tanh is not odd at \(x)")
            #expect(abs(Double(t) - Foundation.tanh(Double(x))) <= 1e-6, "tanh(\(x)) = \(t)")
            let s = DeterministicMath.logistic(x)
            #expect((0...1).contains(s))
            #expect(abs(Double(s) - 1 / (1 + Foundation.exp(-Double(x)))) <= 1e-6, "logistic(\(x)) = \(s)")
        }
    }
}

// MARK: - 10. Recipe

@Suite("Recipe")
struct RecipeTests {
    static let base = Recipe(
        layers: [784, 100, 50, 10], keep: [0.8, 0.5, 0.5], activation: .tanh, convention: .inverted, epochs: 20,
        batchSize: 64, learningRate: 0.05, lrDecay: 0.98, momentum: 0.5, momentumFinal: 0.95, momentumRampEpochs: 10,
        maxNorm: 3.5, l2: 1e-5, data: "/data/x.h5", limit: 1000, testLimit: 200)

    @Test(
        "JSON round trip",
        arguments: [
            base,
            Recipe(layers: [2, 2], keep: [1]),
            Recipe(layers: [10, 3, 3], keep: [0.1, 1], maxNorm: nil, limit: nil, testLimit: nil),
        ])
    func roundTrip(_ recipe: Recipe) throws {
        let json = recipe.json()
        let back = try Recipe.decode(json: json)
        #expect(back == recipe)
        #expect(back.json() == json)
    }

    @Test("JSON is canonical: sorted snake_case keys, the same bytes for the same recipe")
    func canonical() throws {
        let a = Self.base
        var b = Recipe(layers: [1, 1], keep: [1])
        // Built in a different order, equal in value.
        b.testLimit = 200
        b.limit = 1000
        b.data = "/data/x.h5"
        b.l2 = 1e-5
        b.maxNorm = 3.5
        b.momentumRampEpochs = 10
        b.momentumFinal = 0.95
        b.momentum = 0.5
        b.lrDecay = 0.98
        b.learningRate = 0.05
        b.batchSize = 64
        b.epochs = 20
        b.convention = .inverted
        b.activation = .tanh
        b.keep = [0.8, 0.5, 0.5]
        b.layers = [784, 100, 50, 10]
        #expect(a == b)
        #expect(a.json() == b.json())
        #expect(a.json() == a.json())
        let object = try #require(try JSONSerialization.jsonObject(with: Data(a.json().utf8)) as? [String: Any])
        #expect(object["batch_size"] as? Int == 64)
        #expect(object["lr_decay"] as? Double == 0.98)
        #expect(object["momentum_ramp_epochs"] as? Int == 10)
        #expect(object["max_norm"] as? Double == 3.5)
        #expect(object["test_limit"] as? Int == 200)
        #expect(object["init"] as? String == "glorot-uniform")
        #expect(object["convention"] as? String == "inverted")
        // Keys appear in sorted order.
        let json = a.json()
        let keys = [
            "activation", "batch_size", "convention", "data", "epochs", "init", "keep", "l2", "layers",
            "learning_rate", "limit", "lr_decay", "max_norm", "momentum", "momentum_final",
            "momentum_ramp_epochs", "test_limit",
        ]
        let positions = keys.map { json.range(of: "\"\($0)\":")?.lowerBound }
        #expect(positions.allSatisfy { $0 != nil }, "\(json)")
        let found = positions.compactMap { $0 }
        #expect(found == found.sorted(), "\(json)")
        // A different recipe is different bytes.
        var c = a
        c.learningRate = 0.06
        #expect(c.json() != a.json())
    }

    @Test("the base recipe has no problems")
    func valid() {
        #expect(Self.base.problems() == [])
        #expect(Recipe(layers: [784, 1024, 1024, 10], keep: [0.8, 0.5, 0.5]).problems() == [])
    }

    struct BadCase: Sendable, CustomTestStringConvertible {
        var name: String
        var recipe: Recipe
        var mentions: String
        var testDescription: String { name }

        init(_ name: String, _ mentions: String, _ change: (inout Recipe) -> Void) {
            self.name = name
            self.mentions = mentions
            var r = RecipeTests.base
            change(&r)
            recipe = r
        }
    }

    @Test(
        "problems() reports each bad field",
        arguments: [
            BadCase("keep 0", "outside (0, 1]") { $0.keep[1] = 0 },
            BadCase("keep above 1", "outside (0, 1]") { $0.keep[0] = 1.5 },
            BadCase("keep negative", "outside (0, 1]") { $0.keep[2] = -0.5 },
            BadCase("keep NaN", "outside (0, 1]") { $0.keep[0] = .nan },
            BadCase("too few keep values", "one keep probability per weighted layer") { $0.keep = [0.8, 0.5] },
            BadCase("too many keep values", "one keep probability per weighted layer") {
                $0.keep = [0.8, 0.5, 0.5, 0.5]
            },
            BadCase("one layer size", "at least two sizes") {
                $0.layers = [784]; $0.keep = []
            },
            BadCase("zero layer size", "every layer size") { $0.layers = [784, 0, 50, 10] },
            BadCase("batch 0", "--batch-size") { $0.batchSize = 0 },
            BadCase("negative epochs", "--epochs") { $0.epochs = -1 },
            BadCase("learning rate 0", "--learning-rate") { $0.learningRate = 0 },
            BadCase("learning rate infinite", "--learning-rate") { $0.learningRate = .infinity },
            BadCase("lr_decay > 1", "--lr-decay") { $0.lrDecay = 1.01 },
            BadCase("lr_decay 0", "--lr-decay") { $0.lrDecay = 0 },
            BadCase("momentum > 1", "momentum must be in [0, 1]") { $0.momentum = 1.2 },
            BadCase("momentum_final < 0", "momentum must be in [0, 1]") { $0.momentumFinal = -0.1 },
            BadCase("negative ramp", "--momentum-ramp-epochs") { $0.momentumRampEpochs = -1 },
            BadCase("max_norm 0", "--max-norm") { $0.maxNorm = 0 },
            BadCase("max_norm NaN", "--max-norm") { $0.maxNorm = .nan },
            BadCase("negative l2", "--l2") { $0.l2 = -1e-3 },
            BadCase("limit 0", "--limit") { $0.limit = 0 },
            BadCase("test_limit 0", "--test-limit") { $0.testLimit = 0 },
            BadCase("unknown init", "init 'he-normal' is not known") { $0.initialization = "he-normal" },
        ])
    func problems(_ c: BadCase) {
        let problems = c.recipe.problems()
        #expect(problems.count == 1, "\(problems)")
        #expect(problems.contains { $0.contains(c.mentions) }, "\(problems)")
    }

    @Test("several bad fields are all reported")
    func several() {
        var r = Self.base
        r.batchSize = 0
        r.epochs = -3
        r.lrDecay = 2
        r.keep = [0.5]
        #expect(r.problems().count == 4, "\(r.problems())")
    }

    @Test("initialParameters is a pure function of the seed: Glorot uniform weights, zero biases")
    func initialParameters() {
        let recipe = Recipe(layers: [30, 20, 10, 5], keep: [0.8, 0.5, 0.5])
        let a = recipe.initialParameters(seed: 42)
        let b = recipe.initialParameters(seed: 42)
        let c = recipe.initialParameters(seed: 43)
        #expect(bits(a) == bits(b))
        #expect(a.count == 3)
        for l in 0..<3 {
            let fanIn = recipe.layers[l], fanOut = recipe.layers[l + 1]
            #expect(a[l].weight.count == fanIn * fanOut)
            #expect(a[l].bias == [Float](repeating: 0, count: fanOut))
            #expect(a[l].bias.allSatisfy { $0.bitPattern == 0 })  // +0, not -0
            let limit = RandomStreams.glorotUniformLimit(fanIn: fanIn, fanOut: fanOut)
            #expect(abs(Double(limit) - (6.0 / Double(fanIn + fanOut)).squareRoot()) <= 1e-6)
            #expect(a[l].weight.allSatisfy { abs($0) <= limit }, "layer \(l)")
            // The draws fill the range (not, say, a tenth of it) and are not all one sign.
            #expect(a[l].weight.map { abs($0) }.max()! > 0.8 * limit)
            #expect(a[l].weight.contains { $0 < 0 } && a[l].weight.contains { $0 > 0 })
            #expect(bits(a[l].weight) != bits(c[l].weight), "layer \(l)")
            // Element (i, j) is the streams' draw (Specs/random-streams.md §6).
            let streams = RandomStreams(seed: 42)
            for (i, j) in [(0, 0), (fanOut - 1, fanIn - 1), (fanOut / 2, 3)] {
                #expect(
                    a[l].weight[i * fanIn + j].bitPattern
                        == streams.uniformInitWeight(layer: l, row: i, column: j, limit: limit).bitPattern)
            }
        }
        // The initial weights do not depend on keep, activation or the other hyper-parameters.
        var other = recipe
        other.keep = [1, 1, 1]
        other.activation = .logistic
        other.learningRate = 0.5
        #expect(bits(other.initialParameters(seed: 42)) == bits(a))
    }
}
