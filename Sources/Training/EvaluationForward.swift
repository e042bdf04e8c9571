import BundleFormat
import DropoutRandom
import Kernels
import Synchronization

/// The forward pass of Monte-Carlo evaluation (``Evaluation/thinnedProbabilities(_:sample:streams:)``,
/// ``Evaluation/monteCarlo(_:ks:repeats:seed:progress:)``): thinned network `sample` on a batch
/// of consecutive examples, run by ONE thread (every product on the calling thread), so that the
/// threads of an evaluation each run whole batches and never wait for one another.
///
/// The arithmetic is Specs/determinism.md §9.4's, element by element, as ``Predictor`` with a
/// noise closure does it (`MonteCarloFastPathTests` compares the bits):
/// * a dense layer's product is ``Gemm``'s `multiply` with `bias:relu:` (on one thread):
///   each output one FMA chain started from its bias, then relu (`z > 0 ? z : +0`, the bits of
///   ``activate(_:_:)``) in the same register tile when the layer's activation is relu; linear
///   needs nothing. Other kinds run their engine layer and their activation as a separate pass.
/// * element-mode noise: ``PhiloxRows/dropout(_:units:threshold:kept:source:mask:output:kernel:)``
///   on the example's Monte-Carlo row (Specs/random-streams.md §8, the same key and counter words
///   as ``DropoutRandom/RandomStreams/monteCarloRow(sample:example:layer:)``): the words, the
///   comparison with T(p) and `x · (kept ? k : 0)` in one vectorised pass, in place; layer 0
///   reads the data set's rows and writes the masked copy. Channel and Gaussian noise fill a
///   multiplier row (``DropoutNoise/fill(layer:_:units:channels:convention:baked:draw:streams:into:)``)
///   and multiply.
/// * the last layer: softmax per row (``softmaxRows(_:rows:cols:)``) or its activation.
struct ThinnedForward {
    let network: Network
    let streams: RandomStreams
    let kernel: Gemm.Kernel
    let convention: DropoutConvention
    let baked: Bool
    let channels: [Int?]
    /// Per layer: the threshold T(p) and kept value of element-mode noise; nil for other modes.
    let element: [(threshold: UInt64, kept: Float)?]
    /// Per layer: whether its inputs are multiplied by noise (weighted, keep probability < 1).
    let noisy: [Bool]
    /// Per layer: whether its activation is applied in its product's epilogue (dense relu, or
    /// linear, which is nothing).
    let fused: [Bool]
    let features: Int, classes: Int
    /// The widest input or output of a layer (one example).
    let widest: Int

    init(_ e: Evaluation, streams: RandomStreams) {
        network = e.network
        self.streams = streams
        kernel = e.kernel
        (convention, baked) = (e.convention, e.baked)
        let layers = e.network.layers
        let engine = e.network.engineLayers
        channels = DropoutNoise.channelCounts(layers)
        element = layers.map { layer in
            guard layer.dropoutMode == .element else { return nil }
            let p = layer.keepProb
            return (
                KeepThreshold(keepProbability: p).value,
                DropoutNoise.keptValue(keepProbability: p, convention: e.convention, baked: e.baked)
            )
        }
        noisy = layers.map { $0.hasWeights && !DropoutNoise.isIdentity($0) }
        fused = zip(layers, engine).map { layer, engine in
            engine is DenseLayer && (layer.activation == .relu || layer.activation == .linear)
        }
        (features, classes) = (engine.first?.inputCount ?? 0, engine.last?.outputCount ?? 0)
        widest = engine.map { max($0.inputCount, $0.outputCount) }.max() ?? 0
    }

    /// One thread's engine layers and buffers for batches of up to `batch` examples.
    final class Worker {
        let engine: [any EngineLayer]
        let batch: Int
        let bufA: UnsafeMutableBufferPointer<Float>
        let bufB: UnsafeMutableBufferPointer<Float>
        /// One example's multipliers (channel and Gaussian modes).
        let noise: UnsafeMutableBufferPointer<Float>

        init(_ f: ThinnedForward, batch: Int) {
            engine = f.network.engineLayers
            self.batch = batch
            bufA = .allocate(capacity: max(1, batch * f.widest))
            bufB = .allocate(capacity: max(1, batch * f.widest))
            noise = .allocate(capacity: max(1, f.widest))
        }

        deinit {
            bufA.deallocate()
            bufB.deallocate()
            noise.deallocate()
        }
    }

    /// The class probabilities of thinned network `sample` for examples `first ..< first + rows`
    /// of `inputs` (row-major, `features` per example): `rows · classes` values in one of the
    /// worker's buffers, valid until its next call.
    func probabilities(
        _ inputs: UnsafeBufferPointer<Float>, first: Int, rows n: Int, sample: Int, worker: Worker
    ) -> UnsafeBufferPointer<Float> {
        precondition(n >= 1 && n <= worker.batch, "batch of \(n) rows for a worker of \(worker.batch)")
        let layers = network.layers
        let engine = worker.engine
        // The layer's input rows: the data set's (layer 0; read in place when not noisy), or the
        // activation of the layer below in `x`; noise writes `x` (in place above layer 0).
        var source = UnsafeBufferPointer(rebasing: inputs[(first * features)..<((first + n) * features)])
        var (x, z) = (worker.bufA, worker.bufB)
        for (l, layer) in layers.enumerated() {
            let width = engine[l].inputCount
            if l > 0 {
                if !fused[l - 1] {
                    activate(layers[l - 1].activation, UnsafeMutableBufferPointer(rebasing: x[0..<(n * width)]))
                }
                source = UnsafeBufferPointer(rebasing: x[0..<(n * width)])
            }
            if noisy[l] {
                let src = source.baseAddress!
                for r in 0..<n {
                    let row = x.baseAddress! + r * width
                    if let (threshold, kept) = element[l] {
                        let s = streams.monteCarloRow(sample: sample, example: first + r, layer: l)
                        PhiloxRows.dropout(
                            PhiloxRows.Row(
                                k0: s.key[0], k1: s.key[1], c1: s.baseCounter[1], c2: s.baseCounter[2],
                                c3: s.baseCounter[3]),
                            units: width, threshold: threshold, kept: kept, source: src + r * width, mask: nil,
                            output: row, kernel: kernel)
                        continue
                    }
                    let m = UnsafeMutableBufferPointer(rebasing: worker.noise[0..<width])
                    DropoutNoise.fill(
                        layer: l, layer, units: width, channels: channels[l], convention: convention, baked: baked,
                        draw: .monteCarlo(sample: sample, example: first + r), streams: streams, into: m)
                    for j in 0..<width { row[j] = src[r * width + j] * m[j] }
                }
                source = UnsafeBufferPointer(rebasing: x[0..<(n * width)])
            }
            let outputs = engine[l].outputCount
            let out = UnsafeMutableBufferPointer(rebasing: z[0..<(n * outputs)])
            let p = network.parameters[l]
            p.weight.withUnsafeBufferPointer { w in
                p.bias.withUnsafeBufferPointer { bias in
                    let relu = fused[l] && layer.activation == .relu
                    if fused[l] {
                        precondition(bias.count >= outputs, "dense layer: \(bias.count) biases for \(outputs) outputs")
                        Gemm.multiply(
                            transA: false, transB: true, m: n, n: outputs, k: width, a: source.baseAddress!,
                            lda: width, b: w.baseAddress!, ldb: width, c: out.baseAddress!, ldc: outputs,
                            bias: bias.baseAddress, relu: relu, threads: 1, kernel: kernel)
                    } else {
                        engine[l].forward(source, rows: n, weight: w, bias: bias, into: out, threads: 1)
                    }
                }
            }
            swap(&x, &z)
        }
        // The last layer's activation (softmax: per row).
        let rows = UnsafeMutableBufferPointer(rebasing: x[0..<(n * classes)])
        let last = layers[layers.count - 1]
        if last.activation == .softmax {
            softmaxRows(rows, rows: n, cols: classes)
        } else if !fused[layers.count - 1] {
            activate(last.activation, rows)
        }
        return UnsafeBufferPointer(rows)
    }

    /// Runs `body(worker, item)` for every item in `0 ..< count` on up to `threads` threads, each
    /// with its own ``Worker``; a thread takes the next item when it finishes one (so a thread
    /// that the machine slows down takes fewer). Items must write disjoint data: which thread
    /// runs which item is not fixed, and no bit may depend on it.
    func forEachItem(count: Int, threads: Int, batch: Int, _ body: (Worker, Int) -> Void) {
        let workers = max(1, min(threads, count))
        let next = Atomic<Int>(0)
        withoutActuallyEscaping(body) { body in
            Parallel.forEachRange(count: workers, threads: workers, minimumCount: 1) { range in
                let worker = Worker(self, batch: batch)
                for _ in range {
                    while true {
                        let item = next.wrappingAdd(1, ordering: .relaxed).oldValue
                        guard item < count else { break }
                        body(worker, item)
                    }
                }
            }
        }
    }
}
