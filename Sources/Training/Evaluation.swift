public import BundleFormat
public import DropoutRandom
public import TrainingData
import Kernels

/// Test error of the deterministic (weight-scaled) network and of Monte-Carlo model averaging
/// over sampled thinned networks (JMLR Sec. 7.5).
public struct Evaluation {
    public let network: Network
    public let convention: DropoutConvention
    public let baked: Bool
    public let threads: Int

    public init(network: Network, convention: DropoutConvention, baked: Bool, threads: Int = 1) {
        self.network = network
        self.convention = convention
        self.baked = baked
        self.threads = max(1, threads)
    }

    /// One line of the Monte-Carlo table.
    public struct MonteCarloRow: Sendable, Equatable {
        public var k: Int
        public var meanError: Double
        public var stdError: Double
        /// The error of each repeat.
        public var errors: [Double]
    }

    /// Misclassified fraction of `set` by class scores `probs` (first maximum wins).
    static func error<T: BinaryFloatingPoint>(_ probs: [T], _ set: LabeledExamples, classes: Int) -> Double {
        var wrong = 0
        for i in 0..<set.count {
            let s = i * classes
            var best = 0
            for c in 1..<classes where probs[s + c] > probs[s + best] { best = c }
            if best != Int(set.labels[i]) { wrong += 1 }
        }
        return Double(wrong) / Double(set.count)
    }

    /// Class probabilities of the deterministic network: weight scaling applied on the fly to a
    /// classic unbaked model; a baked or inverted model as it is.
    public func deterministicProbabilities(_ set: LabeledExamples) -> [Float] {
        let net = network.forInference(convention: convention, baked: baked)
        return set.inputs.withUnsafeBufferPointer {
            Predictor(network: net, threads: threads).probabilities($0, count: set.count)
        }
    }

    public func weightScalingError(_ set: LabeledExamples) -> Double {
        Self.error(deterministicProbabilities(set), set, classes: network.outputs)
    }

    /// Class probabilities of thinned network `sample`: each weighted layer's inputs multiplied
    /// by the noise of its dropout mode (``DropoutNoise``, Monte-Carlo streams:
    /// Specs/random-streams.md §8), the one place Monte-Carlo sampling draws noise. A kept unit
    /// carries the value that makes the network the one training saw: 1 for classic unbaked
    /// weights, 1/p for inverted weights and for baked classic weights (which already hold
    /// p·W); Gaussian noise is the same in every case.
    ///
    /// The same arithmetic as ``Predictor/probabilities(_:count:batch:mask:)`` with a mask (each
    /// element: the layer below's activation, then the product with its noise; each output one
    /// product of the layer's kind), arranged for speed: in batches of 1000 examples, one pass
    /// per layer over the batch's rows applies the activation of the layer below and this
    /// layer's noise together, and that pass, the noise and the softmax are split over the
    /// threads by rows (each example's noise is a pure function of (sample, example, layer), so
    /// no bit depends on the split).
    public func thinnedProbabilities(_ set: LabeledExamples, sample: Int, streams: RandomStreams) -> [Float] {
        let layers = network.layers
        let engine = network.engineLayers
        let channels = DropoutNoise.channelCounts(layers)
        let (convention, baked, threads) = (self.convention, self.baked, self.threads)
        let elementNoise: [(KeepThreshold, Float)?] = layers.map { layer in
            guard layer.dropoutMode == .element else { return nil }
            let p = layer.keepProb
            return (
                KeepThreshold(keepProbability: p),
                DropoutNoise.keptValue(keepProbability: p, convention: convention, baked: baked)
            )
        }
        let count = set.count
        let (features, classes) = (engine.first?.inputCount ?? 0, engine.last?.outputCount ?? 0)
        precondition(set.inputs.count >= count * features, "\(set.inputs.count) inputs for \(count) examples")
        var out = [Float](repeating: 0, count: count * classes)
        let batch = max(1, min(1000, count))
        let widest = engine.map { max($0.inputCount, $0.outputCount) }.max() ?? 0
        let bufA = UnsafeMutableBufferPointer<Float>.allocate(capacity: max(1, batch * widest))
        let bufB = UnsafeMutableBufferPointer<Float>.allocate(capacity: max(1, batch * widest))
        defer {
            bufA.deallocate()
            bufB.deallocate()
        }
        set.inputs.withUnsafeBufferPointer { inputs in
            out.withUnsafeMutableBufferPointer { out in
                var (x, z) = (bufA, bufB)
                var start = 0
                while start < count {
                    let n = min(batch, count - start)
                    for (l, layer) in layers.enumerated() {
                        let width = engine[l].inputCount
                        let noisy = layer.hasWeights && !DropoutNoise.isIdentity(layer)
                        let below: Activation? = l > 0 ? layers[l - 1].activation : nil
                        // The layer's input rows: the batch's examples (first layer) or the
                        // activation of the layer below, then times this layer's noise.
                        Parallel.forEachRange(count: n, threads: threads, minimumCount: 2) { part in
                            let mask = UnsafeMutableBufferPointer<Float>.allocate(capacity: max(1, width))
                            defer { mask.deallocate() }
                            for r in part {
                                let row = UnsafeMutableBufferPointer(rebasing: x[(r * width)..<((r + 1) * width)])
                                if let below {
                                    activate(below, row)
                                } else {
                                    for j in 0..<width { row[j] = inputs[(start + r) * width + j] }
                                }
                                guard noisy else { continue }
                                if let (threshold, kept) = elementNoise[l] {
                                    // Element mode: each input times its noise as the word is drawn
                                    // (the values DropoutNoise.fill would write, without the buffer).
                                    streams.monteCarloRow(sample: sample, example: start + r, layer: l)
                                        .forEachWord(count: width) { u, w in
                                            row[u] = row[u] * (threshold.keeps(w) ? kept : 0)
                                        }
                                    continue
                                }
                                DropoutNoise.fill(
                                    layer: l, layer, units: width, channels: channels[l], convention: convention,
                                    baked: baked, draw: .monteCarlo(sample: sample, example: start + r),
                                    streams: streams, into: mask)
                                for j in 0..<width { row[j] = row[j] * mask[j] }
                            }
                        }
                        let p = network.parameters[l]
                        p.weight.withUnsafeBufferPointer { w in
                            p.bias.withUnsafeBufferPointer { bias in
                                engine[l].forward(
                                    UnsafeBufferPointer(rebasing: x[0..<(n * width)]), rows: n, weight: w, bias: bias,
                                    into: UnsafeMutableBufferPointer(rebasing: z[0..<(n * engine[l].outputCount)]),
                                    threads: threads)
                            }
                        }
                        swap(&x, &z)
                    }
                    // The last layer's activation (softmax: per row), into the result.
                    let last = layers[layers.count - 1].activation
                    Parallel.forEachRange(count: n, threads: threads, minimumCount: 2) { part in
                        let rows = UnsafeMutableBufferPointer(
                            rebasing: x[(part.lowerBound * classes)..<(part.upperBound * classes)])
                        if last == .softmax {
                            softmaxRows(rows, rows: part.count, cols: classes)
                        } else {
                            activate(last, rows)
                        }
                        for i in 0..<rows.count { out[(start + part.lowerBound) * classes + i] = rows[i] }
                    }
                    start += n
                }
            }
        }
        return out
    }

    /// Monte-Carlo model averaging: for each repeat `r`, thinned networks
    /// `r·kmax ..< (r+1)·kmax` (kmax = the largest k) are sampled once and their probabilities
    /// averaged cumulatively (summed in sample order, float64), so the k-network average of a
    /// repeat extends its (k-1)-network average. Returns one row per k, ascending.
    public func monteCarlo(
        _ set: LabeledExamples, ks: [Int], repeats: Int, seed: UInt64, progress: ((Int, Int) -> Void)? = nil
    ) -> [MonteCarloRow] {
        let ks = Array(Set(ks)).sorted()
        guard let kmax = ks.last, kmax > 0, repeats > 0 else { return [] }
        let streams = RandomStreams(seed: seed)
        let classes = network.outputs
        var errors = [[Double]](repeating: [], count: ks.count)
        for r in 0..<repeats {
            var sum = [Double](repeating: 0, count: set.count * classes)
            var next = 0
            for j in 0..<kmax {
                let probs = thinnedProbabilities(set, sample: r * kmax + j, streams: streams)
                for i in sum.indices { sum[i] += Double(probs[i]) }
                progress?(r * kmax + j + 1, repeats * kmax)
                while next < ks.count && ks[next] == j + 1 {
                    // argmax of the sum = argmax of the mean.
                    errors[next].append(Self.error(sum, set, classes: classes))
                    next += 1
                }
            }
        }
        return zip(ks, errors).map { k, e in
            // Running mean: exact when every repeat gives the same error (then std is exactly 0).
            var mean = 0.0
            for (i, x) in e.enumerated() { mean += (x - mean) / Double(i + 1) }
            let variance = e.count > 1 ? e.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(e.count - 1) : 0
            return MonteCarloRow(k: k, meanError: mean, stdError: variance.squareRoot(), errors: e)
        }
    }
}
