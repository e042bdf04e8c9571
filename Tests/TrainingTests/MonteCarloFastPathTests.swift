import BundleFormat
import DropoutRandom
import Kernels
import Testing
import TestSupport
import Training
import TrainingData

// Evaluation.thinnedProbabilities (issue 13: each thread runs whole batches through the network,
// relu in the product's epilogue, element noise from vectorised Philox) gives bit for bit what
// Predictor.probabilities with a noise closure gives (the arrangement before issue 13), for every
// dropout mode and convention, on an MLP and on CNNs with every layer kind, with 1, 2 and 3
// threads, several batch sizes (partial last batches) and every kernel path the CPU has
// (scalar, avx2, avx512: the products and the Philox rows). Evaluation.monteCarlo (batches of
// examples through all samples of a repeat) gives the errors of the sample-by-sample sums of
// those probabilities.

enum MonteCarloReference {
    /// The kernel paths this CPU can run (scalar always).
    static let paths: [Gemm.Kernel] = [.scalar, .avx2, .avx512].filter { Gemm.isAvailable($0) }

    /// Monte-Carlo rows as they were computed before issue 13: sample after sample over the whole
    /// set (Predictor path), probabilities summed in float64 in sample order, the error read at
    /// each k (first maximum wins).
    static func monteCarlo(
        _ e: Evaluation, _ set: LabeledExamples, ks: [Int], repeats: Int, seed: UInt64
    ) -> [Row] {
        let kmax = ks.max()!
        let streams = RandomStreams(seed: seed)
        let classes = e.network.outputs
        var errors = [[Double]](repeating: [], count: ks.count)
        for r in 0..<repeats {
            var sum = [Double](repeating: 0, count: set.count * classes)
            for j in 0..<kmax {
                let probs = probabilities(e, set, sample: r * kmax + j, streams: streams)
                for i in sum.indices { sum[i] += Double(probs[i]) }
                guard let at = ks.firstIndex(of: j + 1) else { continue }
                var wrong = 0
                for x in 0..<set.count {
                    var best = 0
                    for c in 1..<classes where sum[x * classes + c] > sum[x * classes + best] { best = c }
                    if best != Int(set.labels[x]) { wrong += 1 }
                }
                errors[at].append(Double(wrong) / Double(set.count))
            }
        }
        return zip(ks, errors).map { k, e in
            var mean = 0.0
            for (i, x) in e.enumerated() { mean += (x - mean) / Double(i + 1) }
            let variance = e.count > 1 ? e.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(e.count - 1) : 0
            return Row(k: k, meanError: mean, stdError: variance.squareRoot(), errors: e)
        }
    }

    /// The fields of Evaluation.MonteCarloRow.
    struct Row: Equatable {
        var k: Int, meanError: Double, stdError: Double, errors: [Double]
        init(k: Int, meanError: Double, stdError: Double, errors: [Double]) {
            (self.k, self.meanError, self.stdError, self.errors) = (k, meanError, stdError, errors)
        }
        init(_ r: Evaluation.MonteCarloRow) {
            self.init(k: r.k, meanError: r.meanError, stdError: r.stdError, errors: r.errors)
        }
    }

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

    /// An MLP ("wide": hidden layers wider than the 14 x 32 register tile of the AVX-512 path).
    static func mlp(mode: DropoutMode, sizes: [Int] = [20, 16, 12, 5]) -> Network {
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
        static let all = ["mlp", "wide", "pooled", "averaged", "stacked"].flatMap { n in
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
        case "wide": return MonteCarloReference.mlp(mode: c.mode, sizes: [20, 40, 24, 5])
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
            // Every kernel path, with small batches (many items, a partial last batch).
            for kernel in MonteCarloReference.paths {
                for (threads, batch) in [(1, 64), (2, 7)] {
                    var e = Evaluation(network: net, convention: c.convention, baked: c.baked, threads: threads)
                    e.kernel = kernel
                    e.batch = batch
                    let got = e.thinnedProbabilities(set, sample: sample, streams: streams)
                    #expect(
                        got.map(\.bitPattern) == want.map(\.bitPattern),
                        "sample \(sample), \(kernel), \(threads) threads, batch \(batch)")
                }
            }
        }
    }

    /// monteCarlo runs batches of examples through every sample of a repeat; its errors equal
    /// those of whole-set samples summed one after another, for every thread count, batch size
    /// and kernel path; progress counts thinned networks over the whole set up to the total.
    @Test(arguments: Case.all.filter { $0.net == "mlp" || (["wide", "pooled"].contains($0.net) && !$0.baked) })
    func monteCarloEqualsSampleBySample(_ c: Case) {
        let net = Self.network(c)
        let features = net.layers[0].kind.engineLayer(net.layers[0]).inputCount
        let set = MonteCarloReference.examples(count: 203, features: features, classes: net.outputs, seed: 11)
        let (ks, repeats, seed): ([Int], Int, UInt64) = ([1, 2, 3, 5], 2, 77)
        let want = MonteCarloReference.monteCarlo(
            Evaluation(network: net, convention: c.convention, baked: c.baked), set, ks: ks, repeats: repeats,
            seed: seed)
        #expect(want.count == ks.count)
        let settings =
            [(1, 1000, Gemm.Kernel.automatic), (2, 1000, .automatic), (3, 16, .automatic)]
            + MonteCarloReference.paths.map { (2, 50, $0) }
        for (threads, batch, kernel) in settings {
            var e = Evaluation(network: net, convention: c.convention, baked: c.baked, threads: threads)
            e.kernel = kernel
            e.batch = batch
            final class Calls: @unchecked Sendable { var done: [Int] = [] }
            let calls = Calls()
            let got = e.monteCarlo(set, ks: [5, 2, 1, 3, 2], repeats: repeats, seed: seed) { done, total in
                #expect(total == repeats * 5)
                calls.done.append(done)
            }
            #expect(got.map(MonteCarloReference.Row.init) == want, "\(threads) threads, batch \(batch), \(kernel)")
            #expect(calls.done == Array(1...(repeats * 5)), "progress, \(threads) threads, batch \(batch)")
        }
    }
}
