import BundleFormat
import DropoutRandom
import Testing
import TestSupport
import Training
import TrainingData

// Evaluation.thinnedProbabilities (issue 13: activation and noise fused into one pass per layer,
// split over threads by rows) gives bit for bit what Predictor.probabilities with a noise
// closure gives (the arrangement before issue 13), for every dropout mode and convention, on an
// MLP and on CNNs with every layer kind, with 1, 2 and 3 threads and a partial last batch.

enum MonteCarloReference {
    /// The thinned network's probabilities through Predictor and a per-row noise closure.
    static func probabilities(
        _ e: Evaluation, _ set: LabeledExamples, sample: Int, streams: RandomStreams
    ) -> [Float] {
        let layers = e.network.layers
        let widths = layers.map { $0.kind.engineLayer($0).inputCount }
        let channels = DropoutNoise.channelCounts(layers)
        var row = [Float](repeating: 0, count: widths.max() ?? 0)
        return set.inputs.withUnsafeBufferPointer { inputs in
            Predictor(network: e.network, threads: 1).probabilities(inputs, count: set.count) { l, first, rows, x in
                let layer = layers[l]
                let width = widths[l]
                if !layer.hasWeights || DropoutNoise.isIdentity(layer) { return }
                row.withUnsafeMutableBufferPointer { m in
                    let mask = UnsafeMutableBufferPointer(rebasing: m[0..<width])
                    for r in 0..<rows {
                        DropoutNoise.fill(
                            layer: l, layer, units: width, channels: channels[l], convention: e.convention,
                            baked: e.baked, draw: .monteCarlo(sample: sample, example: first + r), streams: streams,
                            into: mask)
                        for j in 0..<width { x[r * width + j] = x[r * width + j] * mask[j] }
                    }
                }
            }
        }
    }

    static func examples(count: Int, features: Int, classes: Int, seed: UInt64) -> LabeledExamples {
        var rng = FixtureRandom(seed: seed)
        let inputs = (0..<(count * features)).map { _ in rng.float() }
        return LabeledExamples(
            count: count, features: features, classes: classes, inputs: inputs,
            labels: (0..<count).map { UInt8($0 % classes) })
    }

    static func mlp(mode: DropoutMode) -> Network {
        let sizes = [20, 16, 12, 5]
        let keep = [0.8, 0.5, 0.6]
        let layers = (0..<3).map { l in
            LayerInfo(
                name: l == 2 ? "output" : "hidden\(l + 1)", inputs: sizes[l], outputs: sizes[l + 1],
                activation: l == 2 ? .softmax : .relu, keepProb: keep[l],
                dropoutMode: mode == .channel ? .element : mode)
        }
        return Network(layers: layers, parameters: ConvNets.parameters(layers, seed: 3))
    }
}

@Suite("Monte-Carlo fast path equals the Predictor path")
struct MonteCarloFastPathTests {
    struct Case: Sendable, CustomTestStringConvertible {
        var net: String
        var mode: DropoutMode
        var convention: DropoutConvention
        var baked: Bool
        var testDescription: String { "\(net), \(mode.rawValue), \(convention.rawValue), baked \(baked)" }
        static let all = ["mlp", "pooled", "averaged", "stacked"].flatMap { n in
            DropoutMode.allCases.flatMap { m in
                DropoutConvention.allCases.flatMap { c in
                    [false, true].map { Case(net: n, mode: m, convention: c, baked: $0) }
                }
            }
        }
    }

    static func network(_ c: Case) -> Network {
        switch c.net {
        case "pooled":
            let l = ConvNets.pooled(c.mode, activation: .relu)
            return Network(layers: l, parameters: ConvNets.parameters(l, seed: 4))
        case "averaged":
            let l = ConvNets.averaged(c.mode)
            return Network(layers: l, parameters: ConvNets.parameters(l, seed: 5))
        case "stacked":
            let l = ConvNets.stacked(c.mode)
            return Network(layers: l, parameters: ConvNets.parameters(l, seed: 6))
        default: return MonteCarloReference.mlp(mode: c.mode)
        }
    }

    @Test(arguments: Case.all)
    func bitIdentical(_ c: Case) {
        let net = Self.network(c)
        let features = net.layers[0].kind.engineLayer(net.layers[0]).inputCount
        // 1,003 examples: one full batch of 1,000 and a partial one of 3.
        let set = MonteCarloReference.examples(count: 1003, features: features, classes: net.outputs, seed: 9)
        let streams = RandomStreams(seed: 77)
        for sample in [0, 5] {
            let want = MonteCarloReference.probabilities(
                Evaluation(network: net, convention: c.convention, baked: c.baked), set, sample: sample,
                streams: streams)
            for threads in [1, 2, 3] {
                let got = Evaluation(network: net, convention: c.convention, baked: c.baked, threads: threads)
                    .thinnedProbabilities(set, sample: sample, streams: streams)
                #expect(got.map(\.bitPattern) == want.map(\.bitPattern), "sample \(sample), \(threads) threads")
            }
        }
    }
}
