public import BundleFormat
public import DropoutRandom
public import TrainingData
package import Kernels
import Synchronization

/// Test error of the deterministic (weight-scaled) network and of Monte-Carlo model averaging
/// over sampled thinned networks (JMLR Sec. 7.5).
public struct Evaluation {
    public let network: Network
    public let convention: DropoutConvention
    public let baked: Bool
    public let threads: Int
    /// The matrix-product and Philox path of Monte-Carlo evaluation (tests compare the paths).
    package var kernel: Gemm.Kernel = .automatic
    /// The most examples one thread runs through the network at once in Monte-Carlo
    /// evaluation: a multiple of the register tiles' heights (14 rows on AVX-512, 6 on AVX2), so
    /// full batches run no partial tile. Changes no bit (tests use small batches).
    package var batch = 1008

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
    /// product of the layer's kind), arranged for speed (``ThinnedForward``): the examples are
    /// cut into batches of at most ``batch``, and each thread runs whole batches through the
    /// network on its own (products on one thread, relu in the product's epilogue, element noise
    /// from vectorised Philox in one pass). Each example's noise is a pure function of (sample,
    /// example, layer) and rows are independent, so no bit depends on the batches or the threads.
    public func thinnedProbabilities(_ set: LabeledExamples, sample: Int, streams: RandomStreams) -> [Float] {
        let forward = ThinnedForward(self, streams: streams)
        let (count, features, classes) = (set.count, forward.features, forward.classes)
        precondition(set.inputs.count >= count * features, "\(set.inputs.count) inputs for \(count) examples")
        var out = [Float](repeating: 0, count: count * classes)
        let batch = Self.batchSize(count: count, threads: threads, largest: self.batch)
        let batches = (count + batch - 1) / batch
        set.inputs.withUnsafeBufferPointer { inputs in
            out.withUnsafeMutableBufferPointer { out in
                forward.forEachItem(count: batches, threads: threads, batch: batch) { worker, b in
                    let first = b * batch
                    let n = min(batch, count - first)
                    let probs = forward.probabilities(inputs, first: first, rows: n, sample: sample, worker: worker)
                    for i in 0..<(n * classes) { out[first * classes + i] = probs[i] }
                }
            }
        }
        return out
    }

    /// The examples of one batch: at most `largest`, and small enough that every thread gets
    /// some (the last batch may be shorter). Changes no bit.
    static func batchSize(count: Int, threads: Int, largest: Int) -> Int {
        max(1, min(largest, (count + threads - 1) / threads))
    }

    /// Monte-Carlo model averaging: for each repeat `r`, thinned networks
    /// `r·kmax ..< (r+1)·kmax` (kmax = the largest k) are sampled once and their probabilities
    /// averaged cumulatively (summed in sample order, float64), so the k-network average of a
    /// repeat extends its (k-1)-network average. Returns one row per k, ascending.
    ///
    /// Work is split by examples: each thread takes a batch of examples of one repeat and runs
    /// all kmax thinned networks on it in sample order, summing each example's probabilities and
    /// counting the batch's misclassified examples at each k; a repeat's error at k is the sum of
    /// its batches' counts over the set's size. Each example's sum is the same sequence of
    /// float64 additions as when whole samples ran one after another, so the errors are the same
    /// for every thread count and batch size. `progress(done, total)` counts thinned networks
    /// over the whole set (`total = repeats · kmax`); it is called from the worker threads, one
    /// call at a time, whenever `done` grows.
    public func monteCarlo(
        _ set: LabeledExamples, ks: [Int], repeats: Int, seed: UInt64, progress: ((Int, Int) -> Void)? = nil
    ) -> [MonteCarloRow] {
        let ks = Array(Set(ks)).sorted()
        guard let kmax = ks.last, kmax > 0, repeats > 0 else { return [] }
        let forward = ThinnedForward(self, streams: RandomStreams(seed: seed))
        let (count, features, classes) = (set.count, forward.features, forward.classes)
        precondition(set.inputs.count >= count * features, "\(set.inputs.count) inputs for \(count) examples")
        let batch = Self.batchSize(count: count, threads: threads, largest: self.batch)
        let batches = (count + batch - 1) / batch
        let items = repeats * batches
        // wrong[(item · ks.count) + i]: misclassified examples of item's batch at k = ks[i].
        let wrong = UnsafeMutableBufferPointer<Int>.allocate(capacity: max(1, items * ks.count))
        wrong.initialize(repeating: 0)
        defer { wrong.deallocate() }
        let total = repeats * kmax
        // Example passes done, and the `done` last reported.
        let reported = Mutex<(passes: Int, done: Int)>((0, 0))
        set.inputs.withUnsafeBufferPointer { inputs in
            set.labels.withUnsafeBufferPointer { labels in
                forward.forEachItem(count: items, threads: threads, batch: batch) { worker, item in
                    let (r, b) = item.quotientAndRemainder(dividingBy: batches)
                    let first = b * batch
                    let n = min(batch, count - first)
                    var sum = [Double](repeating: 0, count: n * classes)
                    var next = 0
                    for j in 0..<kmax {
                        let probs = forward.probabilities(
                            inputs, first: first, rows: n, sample: r * kmax + j, worker: worker)
                        for i in 0..<(n * classes) { sum[i] += Double(probs[i]) }
                        while next < ks.count && ks[next] == j + 1 {
                            // argmax of the sum = argmax of the mean (first maximum wins).
                            var misses = 0
                            for e in 0..<n {
                                let s = e * classes
                                var best = 0
                                for c in 1..<max(1, classes) where sum[s + c] > sum[s + best] { best = c }
                                if best != Int(labels[first + e]) { misses += 1 }
                            }
                            wrong[item * ks.count + next] = misses
                            next += 1
                        }
                        guard let progress else { continue }
                        reported.withLock { state in
                            state.passes += n
                            let done = state.passes / max(1, count)
                            if done > state.done {
                                state.done = done
                                progress(done, total)
                            }
                        }
                    }
                }
            }
        }
        if count == 0 { progress?(total, total) }
        let errors = ks.indices.map { i in
            (0..<repeats).map { r in
                let misses = (0..<batches).reduce(0) { $0 + wrong[(r * batches + $1) * ks.count + i] }
                return Double(misses) / Double(count)
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
