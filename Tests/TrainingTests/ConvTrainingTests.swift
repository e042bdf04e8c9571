import BundleFormat
import DropoutRandom
import Testing
import TestSupport
import Training
import TrainingData

// The engine on convolutional networks (issue 12): gradients of every layer kind and dropout
// mode against central finite differences, bit-identical training for any thread count, and the
// weight-scaling rule against Monte-Carlo averages per mode.

enum ConvNets {
    static func image(_ h: Int, _ w: Int, _ c: Int) -> TensorShape { .image(height: h, width: w, channels: c) }

    /// `mode` where the layer allows it; element on a dense layer that does not follow a flatten
    /// (channel mode needs channels).
    static func flatMode(_ mode: DropoutMode) -> DropoutMode { mode == .channel ? .element : mode }

    /// 6x6x2 → conv 3x3x3 valid → max pool 2 (stride 2) → flatten → dense 12→3.
    static func pooled(_ mode: DropoutMode, activation: Activation = .tanh) -> [LayerInfo] {
        [
            .conv2d(
                name: "conv", input: image(6, 6, 2), window: Window(height: 3, width: 3), filters: 3,
                activation: activation, keepProb: 0.8, dropoutMode: mode),
            .weightless(
                .maxPool2d, name: "pool", input: image(4, 4, 3),
                window: Window(height: 2, width: 2, strideHeight: 2, strideWidth: 2)),
            .weightless(.flatten, name: "flatten", input: image(2, 2, 3)),
            LayerInfo(name: "output", inputs: 12, outputs: 3, activation: .softmax, keepProb: 0.7, dropoutMode: mode),
        ]
    }

    /// 7x6x2 → conv 3x3x4 same stride 2 (4x3x4) → avg pool 3x3 same stride 2 (2x2x4) → global
    /// average (4) → dense 4→3.
    static func averaged(_ mode: DropoutMode) -> [LayerInfo] {
        [
            .conv2d(
                name: "conv", input: image(7, 6, 2),
                window: Window(height: 3, width: 3, strideHeight: 2, strideWidth: 2, padding: .same), filters: 4,
                activation: .tanh, keepProb: 0.9, dropoutMode: mode),
            .weightless(
                .avgPool2d, name: "pool", input: image(4, 3, 4),
                window: Window(height: 3, width: 3, strideHeight: 2, strideWidth: 2, padding: .same)),
            .weightless(.globalAvgPool2d, name: "gap", input: image(2, 2, 4)),
            LayerInfo(
                name: "output", inputs: 4, outputs: 3, activation: .softmax, keepProb: 0.8,
                dropoutMode: flatMode(mode)),
        ]
    }

    /// 5x5x2 → conv 3x3x3 same (5x5x3) → conv 2x2x2 valid stride 2 (2x2x2) → flatten (8) →
    /// dense 8→4 (channel mode: channel = feature mod 2) → dense 4→3.
    static func stacked(_ mode: DropoutMode) -> [LayerInfo] {
        [
            .conv2d(
                name: "conv1", input: image(5, 5, 2), window: Window(height: 3, width: 3, padding: .same), filters: 3,
                activation: .logistic, keepProb: 0.8, dropoutMode: mode),
            .conv2d(
                name: "conv2", input: image(5, 5, 3),
                window: Window(height: 2, width: 2, strideHeight: 2, strideWidth: 2),
                filters: 2, activation: .tanh, keepProb: 0.7, dropoutMode: mode),
            .weightless(.flatten, name: "flatten", input: image(2, 2, 2)),
            LayerInfo(name: "hidden", inputs: 8, outputs: 4, activation: .tanh, keepProb: 0.9, dropoutMode: mode),
            LayerInfo(
                name: "output", inputs: 4, outputs: 3, activation: .softmax, keepProb: 0.75,
                dropoutMode: flatMode(mode)),
        ]
    }

    /// Random weights for every weighted layer, empty parameters for the others.
    static func parameters(_ layers: [LayerInfo], seed: UInt64, scale: Float = 0.5) -> [Parameters] {
        var rng = FixtureRandom(seed: seed)
        return layers.map { layer in
            guard let s = layer.parameterShapes else { return Parameters(weight: [], bias: []) }
            return Parameters(
                weight: (0..<(s.rows * s.rowLength)).map { _ in rng.float() * scale },
                bias: (0..<s.rows).map { _ in rng.float() * 0.2 })
        }
    }

    static func inputCount(_ layers: [LayerInfo]) -> Int { layers[0].declaredInputShape!.count }

    static func trainer(
        _ layers: [LayerInfo], convention: DropoutConvention, examples: Int = 6, batch: Int = 4, threads: Int = 1,
        seed: UInt64 = 11, maxNorm: Double? = nil, l2: Double = 0, test: Int = 0
    ) -> Trainer {
        let features = inputCount(layers)
        let classes = layers.last!.outputs
        let recipe = Recipe(
            layers: [features, classes], keep: [1], convention: convention, epochs: 1, batchSize: batch,
            learningRate: 0.05, momentum: 0.5, momentumFinal: 0.9, momentumRampEpochs: 3, maxNorm: maxNorm, l2: l2)
        let data = DataSplit(
            train: syntheticExamples(count: examples, features: features, classes: classes, seed: 3),
            test: test > 0 ? syntheticExamples(count: test, features: features, classes: classes, seed: 4) : nil,
            description: "synthetic")
        return Trainer(
            recipe: recipe, layers: layers, seed: seed, data: data, initial: parameters(layers, seed: 5),
            threads: threads)
    }
}

struct ConvGradientCase: Sendable, CustomTestStringConvertible {
    var network: String
    var mode: DropoutMode
    var convention: DropoutConvention
    var testDescription: String { "\(network), \(mode.rawValue), \(convention.rawValue)" }

    var layers: [LayerInfo] {
        switch network {
        case "pooled": return ConvNets.pooled(mode)
        case "averaged": return ConvNets.averaged(mode)
        default: return ConvNets.stacked(mode)
        }
    }

    static let all: [ConvGradientCase] = ["pooled", "averaged", "stacked"].flatMap { n in
        DropoutMode.allCases.flatMap { m in
            DropoutConvention.allCases.map { ConvGradientCase(network: n, mode: m, convention: $0) }
        }
    }
}

@Suite("Convolutional trainer gradients")
struct ConvGradientTests {
    /// Every weight and bias of conv valid/same/stride 2, max pooling, average pooling (same),
    /// global average pooling, flatten and dense after flatten, for every dropout mode and both
    /// conventions: the analytic gradient of the mean loss against central differences of the
    /// engine's own forward pass with the same masks (same epoch and step).
    @Test("analytic gradients match central finite differences", arguments: ConvGradientCase.all)
    func finiteDifferences(_ c: ConvGradientCase) {
        let trainer = ConvNets.trainer(c.layers, convention: c.convention)
        let examples = [4, 0, 2, 5]
        let (epoch, step) = (1, 2)
        let analytic = trainer.gradients(epoch: epoch, step: step, examples: examples)
        #expect(analytic.loss.isFinite && analytic.loss > 0)
        let base = trainer.network.parameters
        let n = Double(examples.count)
        // Max pooling's gradient is that of the window's winner; a step that changes a winner
        // crosses a kink, so the pooled network takes smaller steps (its nearest winners are
        // within 1e-3: larger steps measured a mixture of two winners' slopes).
        let h: Float = c.network == "pooled" ? 2.5e-4 : 1e-3

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
        var mismatches: [String] = []
        var checked = 0
        for l in base.indices {
            #expect(analytic.weight[l].count == base[l].weight.count)
            #expect(analytic.bias[l].count == base[l].bias.count)
            for i in base[l].weight.indices {
                let numeric = fd { p, d in
                    p[l].weight[i] += d; return p[l].weight[i]
                }
                let g = Double(analytic.weight[l][i])
                checked += 1
                if abs(g - numeric) > 1e-3 + 2e-2 * abs(numeric) {
                    mismatches.append("layer \(l) weight \(i): analytic \(g), finite difference \(numeric)")
                }
            }
            for i in base[l].bias.indices {
                let numeric = fd { p, d in
                    p[l].bias[i] += d; return p[l].bias[i]
                }
                let g = Double(analytic.bias[l][i])
                checked += 1
                if abs(g - numeric) > 1e-3 + 2e-2 * abs(numeric) {
                    mismatches.append("layer \(l) bias \(i): analytic \(g), finite difference \(numeric)")
                }
            }
        }
        trainer.setParameters(base)
        #expect(checked == base.reduce(0) { $0 + $1.weight.count + $1.bias.count })
        #expect(mismatches.isEmpty, "\(mismatches.prefix(12).joined(separator: "\n"))")
        // Every weighted layer's gradient is not all zero (so the comparison means something).
        for l in base.indices where !base[l].weight.isEmpty {
            #expect(analytic.weight[l].contains { abs($0) > 1e-4 }, "layer \(l)")
        }
        // gradients() changes nothing: the same bits again.
        let again = trainer.gradients(epoch: epoch, step: step, examples: examples)
        #expect(bits(again.weight) == bits(analytic.weight))
        #expect(bits(again.bias) == bits(analytic.bias))
    }

    @Test(
        "the noise of each mode depends on (epoch, step); keep 1 everywhere does not", arguments: DropoutMode.allCases)
    func masksMatter(_ mode: DropoutMode) {
        let trainer = ConvNets.trainer(ConvNets.stacked(mode), convention: .inverted)
        let examples = [0, 1, 2, 3]
        let a = trainer.gradients(epoch: 0, step: 0, examples: examples)
        #expect(bits(trainer.gradients(epoch: 0, step: 0, examples: examples).weight) == bits(a.weight))
        for (e, t) in [(0, 1), (1, 0)] {
            #expect(bits(trainer.gradients(epoch: e, step: t, examples: examples).weight) != bits(a.weight))
        }
        var layers = ConvNets.stacked(mode)
        for l in layers.indices { layers[l].keepProb = 1 }
        let plain = ConvNets.trainer(layers, convention: .inverted)
        let b = plain.gradients(epoch: 0, step: 0, examples: examples)
        #expect(bits(plain.gradients(epoch: 3, step: 5, examples: examples).weight) == bits(b.weight))
    }
}

@Suite("Training uses DropoutNoise's channel masks")
struct ConvChannelMaskTests {
    /// One example per step: a channel the mask drops feeds every conv weight that reads it
    /// nothing, so those weights get zero gradient, and the kept channels' weights do not.
    @Test("a dropped input channel gives its conv weights zero gradient", arguments: DropoutConvention.allCases)
    func droppedChannels(_ convention: DropoutConvention) {
        var layers = ConvNets.pooled(.channel)
        layers[0].keepProb = 0.5
        let trainer = ConvNets.trainer(layers, convention: convention)
        let streams = RandomStreams(seed: 11)
        let (channels, patch) = (2, 9)  // conv 3x3 over 2 channels, 3 filters
        var dropped = 0, kept = 0
        for step in 0..<8 {
            let g = trainer.gradients(epoch: 2, step: step, examples: [step % 6])
            var m = [Float](repeating: .nan, count: 72)
            m.withUnsafeMutableBufferPointer {
                DropoutNoise.fill(
                    layer: 0, layers[0], units: 72, channels: channels, convention: convention,
                    draw: .training(epoch: 2, step: step, example: 0), streams: streams, into: $0)
            }
            for c in 0..<channels {
                let column = (0..<3).flatMap { f in (0..<patch).map { k in g.weight[0][(f * patch + k) * channels + c] }
                }
                if m[c] == 0 {
                    dropped += 1
                    #expect(column.allSatisfy { $0 == 0 }, "step \(step) channel \(c) dropped")
                } else {
                    kept += 1
                    #expect(column.contains { $0 != 0 }, "step \(step) channel \(c) kept")
                }
            }
        }
        #expect(dropped > 0 && kept > 0)
    }
}

@Suite("Convolutional training determinism")
struct ConvDeterminismTests {
    /// Large enough that the convolution and pooling kernels split their work between threads.
    static func layers() -> [LayerInfo] {
        let image = ConvNets.image
        return [
            .conv2d(
                name: "conv1", input: image(12, 12, 3), window: Window(height: 3, width: 3, padding: .same),
                filters: 16, activation: .relu, keepProb: 0.9),
            .weightless(
                .maxPool2d, name: "pool1", input: image(12, 12, 16),
                window: Window(height: 2, width: 2, strideHeight: 2, strideWidth: 2)),
            .conv2d(
                name: "conv2", input: image(6, 6, 16), window: Window(height: 3, width: 3), filters: 8,
                activation: .relu, keepProb: 0.8, dropoutMode: .channel),
            .weightless(
                .avgPool2d, name: "pool2", input: image(4, 4, 8),
                window: Window(height: 2, width: 2, strideHeight: 2, strideWidth: 2)),
            .weightless(.flatten, name: "flatten", input: image(2, 2, 8)),
            LayerInfo(
                name: "hidden", inputs: 32, outputs: 16, activation: .relu, keepProb: 0.5, dropoutMode: .channel),
            LayerInfo(
                name: "output", inputs: 16, outputs: 5, activation: .softmax, keepProb: 0.7, dropoutMode: .gaussian),
        ]
    }

    static func run(threads: Int, convention: DropoutConvention) -> (Trainer, [EpochMetrics]) {
        let trainer = ConvNets.trainer(
            layers(), convention: convention, examples: 90, batch: 40, threads: threads, maxNorm: 1, l2: 1e-4,
            test: 50)
        return (trainer, (1...2).map { trainer.trainEpoch($0) })
    }

    @Test("threads 1, 2 and 3 give bit-identical weights and metrics", arguments: DropoutConvention.allCases)
    func threadsDoNotMatter(_ convention: DropoutConvention) {
        let (a, ma) = Self.run(threads: 1, convention: convention)
        for threads in [2, 3] {
            let (b, mb) = Self.run(threads: threads, convention: convention)
            #expect(bits(a.network.parameters) == bits(b.network.parameters), "\(threads) threads")
            #expect(ma == mb, "\(threads) threads")
        }
        #expect(bits(a.network.parameters) != bits(ConvNets.parameters(Self.layers(), seed: 5)))
        #expect(ma.allSatisfy { $0.loss.isFinite && (0...1).contains($0.testError) })
    }

    @Test("max-norm bounds every conv filter's and hidden unit's row of fan-in")
    func maxNorm() {
        let (trainer, _) = Self.run(threads: 2, convention: .classic)
        let layers = trainer.network.layers
        for l in layers.indices.dropLast() {
            guard let s = layers[l].parameterShapes else { continue }
            let w = trainer.network.parameters[l].weight
            for u in 0..<s.rows {
                let norm = w[(u * s.rowLength)..<((u + 1) * s.rowLength)].reduce(0.0) { $0 + Double($1) * Double($1) }
                #expect(norm.squareRoot() <= 1 + 1e-5, "layer \(l) row \(u)")
            }
        }
    }
}

@Suite("Weight scaling and Monte-Carlo averaging per dropout mode")
struct ConvInferenceTests {
    /// A linear network (no softmax), so the expectation over the noise is exactly the
    /// weight-scaling rule: 4x4x2 → conv 2x2x3 → flatten (27) → dense 27→3.
    static func network(_ mode: DropoutMode) -> Network {
        let layers: [LayerInfo] = [
            .conv2d(
                name: "conv", input: ConvNets.image(4, 4, 2), window: Window(height: 2, width: 2), filters: 3,
                activation: .linear, keepProb: 0.6, dropoutMode: mode),
            .weightless(.flatten, name: "flatten", input: ConvNets.image(3, 3, 3)),
            LayerInfo(name: "output", inputs: 27, outputs: 3, activation: .linear, keepProb: 0.7, dropoutMode: mode),
        ]
        return Network(layers: layers, parameters: ConvNets.parameters(layers, seed: 8))
    }

    struct Case: Sendable, CustomTestStringConvertible {
        var mode: DropoutMode
        var convention: DropoutConvention
        var testDescription: String { "\(mode.rawValue), \(convention.rawValue)" }
        static let all = DropoutMode.allCases.flatMap { m in
            DropoutConvention.allCases.map { Case(mode: m, convention: $0) }
        }
    }

    @Test("the deterministic network is the mean of the thinned networks", arguments: Case.all)
    func expectation(_ c: Case) {
        let net = Self.network(c.mode)
        let set = syntheticExamples(count: 3, features: 32, classes: 3, seed: 9)
        let deterministic = net.forInference(convention: c.convention, baked: false)
        if c.mode == .gaussian {
            // Gaussian noise has mean 1: nothing is scaled in either convention.
            #expect(bits(net.weightScaled().parameters) == bits(net.parameters))
        } else if c.convention == .classic {
            #expect(bits(deterministic.parameters[0].weight) == bits(net.parameters[0].weight.map { Float(0.6) * $0 }))
        }
        let expected = set.inputs.withUnsafeBufferPointer {
            Predictor(network: deterministic).probabilities($0, count: set.count)
        }
        let eval = Evaluation(network: net, convention: c.convention, baked: false)
        let streams = RandomStreams(seed: 21)
        let k = 3000
        var sum = [Double](repeating: 0, count: expected.count)
        var sumSq = sum
        for s in 0..<k {
            let out = eval.thinnedProbabilities(set, sample: s, streams: streams)
            for i in out.indices {
                sum[i] += Double(out[i])
                sumSq[i] += Double(out[i]) * Double(out[i])
            }
        }
        for i in expected.indices {
            let mean = sum[i] / Double(k)
            let sd = (sumSq[i] / Double(k) - mean * mean).squareRoot()
            #expect(sd > 0.01, "output \(i) does not vary: the noise is missing")
            #expect(
                abs(mean - Double(expected[i])) <= 5 * sd / Double(k).squareRoot() + 1e-4,
                "output \(i): Monte-Carlo mean \(mean) ± \(sd / Double(k).squareRoot()), deterministic \(expected[i])")
        }
    }
}

@Suite("The Fashion-MNIST CNN shape", .tags(.slow))
struct ConvFashionShapeTests {
    /// 28x28x1 → conv 3x3x16 → max pool 2 → conv 3x3x32 → max pool 2 → flatten → 128 → 10, the
    /// network issue 12 trains on Fashion-MNIST, with dropout of every mode on the way.
    static func layers() -> [LayerInfo] {
        let image = ConvNets.image
        let pool = Window(height: 2, width: 2, strideHeight: 2, strideWidth: 2)
        return [
            .conv2d(
                name: "conv1", input: image(28, 28, 1), window: Window(height: 3, width: 3), filters: 16,
                activation: .relu, keepProb: 0.9),
            .weightless(.maxPool2d, name: "pool1", input: image(26, 26, 16), window: pool),
            .conv2d(
                name: "conv2", input: image(13, 13, 16), window: Window(height: 3, width: 3), filters: 32,
                activation: .relu, keepProb: 0.75, dropoutMode: .channel),
            .weightless(.maxPool2d, name: "pool2", input: image(11, 11, 32), window: pool),
            .weightless(.flatten, name: "flatten", input: image(5, 5, 32)),
            LayerInfo(
                name: "hidden", inputs: 800, outputs: 128, activation: .relu, keepProb: 0.5, dropoutMode: .gaussian),
            LayerInfo(name: "output", inputs: 128, outputs: 10, activation: .softmax, keepProb: 0.5),
        ]
    }

    @Test("one epoch of 500 examples: threads 1 and 2 give the same digest")
    func threads() {
        func run(_ threads: Int) -> (EpochMetrics, [Parameters]) {
            let trainer = ConvNets.trainer(
                Self.layers(), convention: .inverted, examples: 500, batch: 100, threads: threads, maxNorm: 3,
                test: 200)
            return (trainer.trainEpoch(1), trainer.network.parameters)
        }
        let (a, pa) = run(1)
        let (b, pb) = run(2)
        #expect(a == b)
        #expect(bits(pa) == bits(pb))
        #expect(a.loss.isFinite)
    }
}
