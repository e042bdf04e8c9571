import BundleFormat
import DropoutRandom
import Testing
import TestSupport
import Training
import TrainingData

// The engine's generic path (Predictor, Evaluation through `EngineLayer`) against
// Specs/determinism.md written out as plain loops: the same bits as before the layer-kind
// abstraction, on more than one thread and across batch boundaries.

private enum Ref {
    static func network(_ sizes: [Int], _ activations: [Activation], keep: [Double], seed: UInt64) -> Network {
        var rng = FixtureRandom(seed: seed)
        var layers: [LayerInfo] = []
        var params: [Parameters] = []
        for l in 0..<(sizes.count - 1) {
            layers.append(
                LayerInfo(
                    name: "l\(l)", inputs: sizes[l], outputs: sizes[l + 1], activation: activations[l],
                    keepProb: keep[l]))
            params.append(
                Parameters(
                    weight: (0..<(sizes[l] * sizes[l + 1])).map { _ in rng.float() },
                    bias: (0..<sizes[l + 1]).map { _ in rng.float() / 10 }))
        }
        return Network(layers: layers, parameters: params)
    }

    /// §4.2 for one example: z = b, then one FMA chain over the inputs in order; activation;
    /// softmax (max subtracted, exp, summed left to right, divided) on a softmax layer.
    /// `mask(l, x)` multiplies layer l's inputs in place.
    static func forward(_ net: Network, _ input: [Float], mask: (Int, inout [Float]) -> Void) -> [Float] {
        var x = input
        for (l, layer) in net.layers.enumerated() {
            mask(l, &x)
            let p = net.parameters[l]
            var z = [Float](repeating: 0, count: layer.outputs)
            for o in 0..<layer.outputs {
                var acc = p.bias[o]
                for j in 0..<layer.inputs { acc = acc.addingProduct(x[j], p.weight[o * layer.inputs + j]) }
                z[o] = acc
            }
            switch layer.activation {
            case .relu: z = z.map { $0 > 0 ? $0 : 0 }
            case .logistic: z = z.map(DeterministicMath.logistic)
            case .tanh: z = z.map(DeterministicMath.tanh)
            case .linear: break
            case .softmax:
                var m = z[0]
                for v in z where v > m { m = v }
                var sum: Float = 0
                for i in z.indices { z[i] = DeterministicMath.exp(z[i] - m); sum += z[i] }
                z = z.map { $0 / sum }
            }
            x = z
        }
        return x
    }

    static func bits(_ a: [Float]) -> [UInt32] { a.map(\.bitPattern) }
}

@Suite("Engine layers")
struct EngineLayerTests {
    let net = Ref.network(
        [13, 11, 9, 7, 5], [.relu, .logistic, .tanh, .softmax], keep: [0.8, 0.5, 0.6, 0.5], seed: 11)

    func examples(_ count: Int) -> LabeledExamples {
        var rng = FixtureRandom(seed: 3)
        return LabeledExamples(
            count: count, features: 13, classes: 5, inputs: (0..<(count * 13)).map { _ in rng.float() * 2 },
            labels: (0..<count).map { UInt8($0 % 5) })
    }

    /// A valid layer of each kind (the image kinds read a 6x5x2 image).
    static func validLayer(_ kind: LayerKind) -> LayerInfo {
        let image = TensorShape.image(height: 6, width: 5, channels: 2)
        switch kind {
        case .dense: return LayerInfo(name: "x", kind: kind, inputs: 6, outputs: 4, activation: .relu, keepProb: 1)
        case .conv2d:
            return .conv2d(
                name: "x", input: image, window: Window(height: 3, width: 2), filters: 4, activation: .relu, keepProb: 1
            )
        case .maxPool2d, .avgPool2d:
            return .weightless(kind, name: "x", input: image, window: Window(height: 2, width: 2, padding: .same))
        case .globalAvgPool2d, .flatten: return .weightless(kind, name: "x", input: image)
        }
    }

    @Test("every LayerKind has an engine layer of its kind, sized by its shapes")
    func registry() {
        for kind in LayerKind.allCases {
            let info = Self.validLayer(kind)
            let layer = kind.engineLayer(info)
            #expect(layer.info.kind == kind)
            let input = info.declaredInputShape!
            #expect(layer.inputShape == input)
            #expect(layer.outputShape == info.outputShape(input: input))
            #expect(layer.inputCount == input.count)
            #expect(layer.outputCount == info.outputShape(input: input).count)
        }
    }

    @Test("Predictor through EngineLayer: the bits of §4.2, on 1 and 2 threads, across batches", arguments: [1, 2])
    func predictor(_ threads: Int) {
        let set = examples(23)
        let probs = set.inputs.withUnsafeBufferPointer {
            Predictor(network: net, threads: threads).probabilities($0, count: set.count, batch: 7)
        }
        var expected: [Float] = []
        for e in 0..<set.count {
            expected += Ref.forward(net, Array(set.inputs[(e * 13)..<((e + 1) * 13)])) { _, _ in }
        }
        #expect(Ref.bits(probs) == Ref.bits(expected))
    }

    @Test(
        "Monte-Carlo thinned networks: masks drawn per (sample, example, layer), same bits",
        arguments: [(DropoutConvention.classic, false), (.classic, true), (.inverted, false)])
    func monteCarlo(_ convention: DropoutConvention, _ baked: Bool) {
        let set = examples(9)
        let streams = RandomStreams(seed: 77)
        let eval = Evaluation(network: net, convention: convention, baked: baked, threads: 2)
        let probs = eval.thinnedProbabilities(set, sample: 4, streams: streams)
        var expected: [Float] = []
        for e in 0..<set.count {
            expected += Ref.forward(net, Array(set.inputs[(e * 13)..<((e + 1) * 13)])) { l, x in
                let layer = net.layers[l]
                let kept: Float = convention == .classic && !baked ? 1 : Float(1 / layer.keepProb)
                var mask = [Float](repeating: 0, count: x.count)
                mask.withUnsafeMutableBufferPointer {
                    streams.monteCarloKeepMask(
                        sample: 4, example: e, layer: l, units: x.count, keepProbability: layer.keepProb,
                        keptValue: kept, into: $0)
                }
                for j in x.indices { x[j] = x[j] * mask[j] }
            }
        }
        #expect(Ref.bits(probs) == Ref.bits(expected))
    }
}
