public import BundleFormat
public import DropoutRandom
public import TrainingData
import Foundation
import Kernels

/// What one epoch of training measured.
public struct EpochMetrics: Sendable, Equatable {
    public var epoch: Int
    /// Mean cross-entropy (natural log) of the thinned networks over the epoch's examples.
    public var loss: Double
    /// Fraction of the epoch's training examples the thinned network misclassified.
    public var trainError: Double
    /// Fraction of test examples the deterministic network misclassifies; NaN without a test set.
    public var testError: Double
    public var weightsSHA256: [UInt8]
    /// Fraction of the held-out validation examples the deterministic network misclassifies;
    /// nil without a validation set.
    public var validationError: Double? = nil
}

/// Trains a dropout network (dense, convolutional and pooling layers; any valid layer list)
/// with minibatch SGD, momentum and max-norm, bit for bit reproducibly: every step is a pure
/// function of (layers, recipe, seed, data, epoch, step).
///
/// The arithmetic is defined in `Specs/determinism.md`; random draws in
/// `Specs/random-streams.md`. Threads split matrix products by output rows or columns, and the
/// convolution and pooling kernels by output rows, tiles or images, never a sum, so the result
/// does not depend on `threads`.
public final class Trainer {
    public let recipe: Recipe
    public let streams: RandomStreams
    public let data: DataSplit
    public let threads: Int
    /// The ranks this trainer works with (MPI), nil for one process: each computes its block of
    /// the recipe's shards (``ShardTree``) and every rank applies the same update.
    public let group: (any TrainingGroup)?
    public private(set) var network: Network
    /// How each layer runs (its kind's ``EngineLayer``); the loops below go through these.
    private let engine: [any EngineLayer]
    /// The channel count of each layer's channel-mode dropout (``DropoutNoise/channelCounts(_:)``).
    private let channels: [Int?]
    /// Whether layer l's inputs are multiplied by dropout noise (a weighted layer with keep < 1).
    private let masked: [Bool]
    /// dropoutInBlocks[l]: layer l's dropout runs inside layer l-1's forward product, on each
    /// block of its output as it completes (element dropout above a dense layer whose
    /// activation the product applies: relu or linear).
    private let dropoutInBlocks: [Bool]
    /// Whether the backward pass computes layer l's input gradient: l > 0 and a weighted layer
    /// lies below it.
    private let needsInputGradient: [Bool]

    private var velocityW: [[Float]]
    private var velocityB: [[Float]]
    private var gradW: [[Float]]
    private var gradB: [[Float]]
    // Scratch for one batch, allocated once (B = the batch size):
    /// masks[l]: layer l's dropout multipliers [B, in_l] (empty where not masked).
    private let masks: [UnsafeMutableBufferPointer<Float>]
    /// inputs[l]: the (masked) input of layer l [B, in_l]; for an unmasked layer above the
    /// first, the same memory as outputs[l - 1].
    private let inputs: [UnsafeMutableBufferPointer<Float>]
    /// outputs[l]: the activation of layer l [B, out_l].
    private let outputs: [UnsafeMutableBufferPointer<Float>]
    /// deltas[l]: dLoss/dZ of layer l [B, out_l].
    private let deltas: [UnsafeMutableBufferPointer<Float>]
    /// The input gradient of the layer being back-propagated [B, max in_l].
    private let backInput: UnsafeMutableBufferPointer<Float>
    /// Each example's loss in the batch being trained (float64), and whether it was misclassified.
    private let rowLoss: UnsafeMutableBufferPointer<Double>
    private let rowWrong: UnsafeMutableBufferPointer<Bool>
    /// With shards (recipe.shards > 1 or a group): the summation tree, this rank's block of it,
    /// each weighted layer's place (weight, bias) in a shard's flat gradient, and one flat
    /// gradient per shard of the block.
    private let tree: ShardTree
    private let block: Range<Int>
    private let gradientOffsets: [(weight: Int, bias: Int)]
    private let gradientCount: Int
    private let shardGradients: [UnsafeMutableBufferPointer<Float>]
    /// With ranks: the bytes this rank sends each step (its nodes) and those it receives (every
    /// rank's nodes, in rank order): ``exchange(_:group:)``.
    private let sendBuffer: UnsafeMutableRawBufferPointer
    private let receiveBuffer: UnsafeMutableRawBufferPointer
    private var owned: [UnsafeMutableBufferPointer<Float>] = []

    /// A trainer of the recipe's dense layers (``Recipe/layerInfos``).
    ///
    /// - Parameters:
    ///   - initial: starting weights (the recipe's seeded initialisation, or a bundle's).
    public convenience init(
        recipe: Recipe, seed: UInt64, data: DataSplit, initial: [Parameters], threads: Int,
        group: (any TrainingGroup)? = nil
    ) {
        self.init(
            recipe: recipe, layers: recipe.layerInfos, seed: seed, data: data, initial: initial, threads: threads,
            group: group)
    }

    /// A trainer of any valid layer list (Schema rules: shapes chain, the last layer is the
    /// softmax output, weightless layers keep 1). The recipe gives the optimisation (batch size,
    /// schedules, convention, max-norm, L2); its `layers` and `keep` are not read.
    ///
    /// - Parameters:
    ///   - initial: starting weights, one per layer (empty for a layer without weights).
    ///   - group: the ranks training together (MPI), nil for this process alone.
    /// - Precondition: the training data has the first layer's input count of features; the
    ///   group's size divides the recipe's shards.
    public init(
        recipe: Recipe, layers: [LayerInfo], seed: UInt64, data: DataSplit, initial: [Parameters], threads: Int,
        group: (any TrainingGroup)? = nil
    ) {
        self.recipe = recipe
        self.group = group
        self.streams = RandomStreams(seed: seed)
        self.data = data
        self.threads = max(1, threads)
        self.network = Network(layers: layers, parameters: initial)
        let engine = network.engineLayers
        self.engine = engine
        precondition(
            data.train.features == engine.first?.inputCount,
            "the training data has \(data.train.features) features; the network reads \(engine.first?.inputCount ?? 0)")
        channels = DropoutNoise.channelCounts(layers)
        masked = layers.map { $0.hasWeights && !DropoutNoise.isIdentity($0) }
        dropoutInBlocks = layers.indices.map { [masked] l in
            l > 0 && masked[l] && layers[l].dropoutMode == .element && layers[l - 1].kind == .dense
                && [.relu, .linear].contains(layers[l - 1].activation)
        }
        needsInputGradient = layers.indices.map { l in l > 0 && layers[0..<l].contains { $0.hasWeights } }
        let b = recipe.batchSize
        // Weight- and bias-shaped state by the kind's parameter shapes (rows of fan-in); empty
        // for a kind without weights.
        let weights = layers.map { $0.parameterShapes.map { $0.rows * $0.rowLength } ?? 0 }
        let biases = layers.map { $0.parameterShapes?.rows ?? 0 }
        velocityW = weights.map { [Float](repeating: 0, count: $0) }
        // Every step streams the weights and velocities through the update and the products:
        // 2 MiB pages spare a TLB miss per row (a hint; the values are not touched).
        for l in velocityW.indices { HugePages.advise(&velocityW[l]) }
        for l in network.parameters.indices { HugePages.advise(&network.parameters[l].weight) }
        velocityB = biases.map { [Float](repeating: 0, count: $0) }
        gradW = weights.map { [Float](repeating: 0, count: $0) }
        gradB = biases.map { [Float](repeating: 0, count: $0) }

        var owned: [UnsafeMutableBufferPointer<Float>] = []
        func allocate(_ count: Int) -> UnsafeMutableBufferPointer<Float> {
            let buffer = UnsafeMutableBufferPointer<Float>.allocate(capacity: count)
            buffer.initialize(repeating: 0)
            owned.append(buffer)
            return buffer
        }
        var masks: [UnsafeMutableBufferPointer<Float>] = []
        var inputs: [UnsafeMutableBufferPointer<Float>] = []
        var outputs: [UnsafeMutableBufferPointer<Float>] = []
        var deltas: [UnsafeMutableBufferPointer<Float>] = []
        for l in layers.indices {
            let inCount = engine[l].inputCount, outCount = engine[l].outputCount
            masks.append(allocate(masked[l] ? b * inCount : 0))
            inputs.append(l == 0 || masked[l] ? allocate(b * inCount) : outputs[l - 1])
            outputs.append(allocate(b * outCount))
            deltas.append(allocate(b * outCount))
        }
        self.masks = masks
        self.inputs = inputs
        self.outputs = outputs
        self.deltas = deltas
        backInput = allocate(b * (engine.map(\.inputCount).max() ?? 0))
        rowLoss = .allocate(capacity: b)
        rowLoss.initialize(repeating: 0)
        rowWrong = .allocate(capacity: b)
        rowWrong.initialize(repeating: false)
        tree = ShardTree(shards: recipe.shards)
        block = tree.block(rank: group?.rank ?? 0, ranks: group?.size ?? 1)
        var offsets: [(weight: Int, bias: Int)] = []
        var count = 0
        for l in layers.indices {
            offsets.append((count, count + weights[l]))
            count += weights[l] + biases[l]
        }
        gradientOffsets = offsets
        gradientCount = count
        shardGradients = recipe.shards > 1 || group != nil ? block.map { _ in allocate(count) } : []
        let ranks = group?.size ?? 1
        let nodeBytes = count * 4 + 16
        let shardTree = tree
        let sent = ranks > 1 ? shardTree.nodes(inside: block).count * nodeBytes : 0
        let received =
            ranks > 1
            ? (0..<ranks).map { shardTree.nodes(inside: shardTree.block(rank: $0, ranks: ranks)).count }.reduce(0, +)
            : 0
        sendBuffer = .allocate(byteCount: sent, alignment: 64)
        receiveBuffer = .allocate(byteCount: received * nodeBytes, alignment: 64)
        self.owned = owned
    }

    deinit {
        for buffer in owned { buffer.deallocate() }
        rowLoss.deallocate()
        rowWrong.deallocate()
        sendBuffer.deallocate()
        receiveBuffer.deallocate()
    }

    /// Whether steps run sharded (Specs/determinism.md §4.7): more than one shard, or ranks.
    private var sharded: Bool { !shardGradients.isEmpty }
    /// The number of minibatches in an epoch (the last may be smaller).
    public var stepsPerEpoch: Int { (data.train.count + recipe.batchSize - 1) / recipe.batchSize }

    /// Learning rate of epoch `e` (1-based): ``Recipe/learningRate(epoch:)``.
    public func learningRate(epoch e: Int) -> Float { recipe.learningRate(epoch: e) }

    /// Momentum of epoch `e` (1-based): linear from `momentum` at epoch 1 to `momentumFinal` at
    /// epoch `momentumRampEpochs`, constant after; float64, then rounded to float32.
    public func momentum(epoch e: Int) -> Float { recipe.momentum(epoch: e) }

    /// Trains epoch `e` (1-based) and returns its metrics. `progress` is called after every
    /// step with (steps done, steps in the epoch).
    public func trainEpoch(_ e: Int, progress: ((Int, Int) -> Void)? = nil) -> EpochMetrics {
        finishEpoch(e, trainSteps(e, from: EpochPosition(), progress: progress))
    }

    /// Trains epoch `e` (1-based) from `position` (a resumed run's: its steps are already done)
    /// until its last step, or until `stop` (asked after every step) says to stop: then the
    /// returned position is before the epoch's end. The steps are the same whatever the
    /// position: every draw is a function of (seed, epoch, step).
    public func trainSteps(
        _ e: Int, from position: EpochPosition, progress: ((Int, Int) -> Void)? = nil, stop: (() -> Bool)? = nil
    ) -> EpochPosition {
        let n = data.train.count
        let order = streams.epochPermutation(epoch: e - 1, count: n)
        let lr = learningRate(epoch: e)
        let mu = momentum(epoch: e)
        var at = position
        let steps = stepsPerEpoch
        while at.step < steps {
            let t = at.step
            let first = t * recipe.batchSize
            let rows = min(recipe.batchSize, n - first)
            let batch = order[first..<(first + rows)]
            let (l, err) =
                sharded
                ? shardedStep(epoch: e - 1, step: t, examples: batch, lr: lr, mu: mu)
                : forwardBackward(epoch: e - 1, step: t, examples: batch, sink: .update(lr: lr, mu: mu))
            at.lossSum += l
            at.errors += err
            at.step += 1
            progress?(t + 1, steps)
            if at.step < steps, stop?() == true { break }
        }
        return at
    }

    /// The metrics of epoch `e` once all its steps are done (`position.step == stepsPerEpoch`).
    public func finishEpoch(_ e: Int, _ position: EpochPosition) -> EpochMetrics {
        precondition(position.step == stepsPerEpoch, "epoch \(e) is not finished")
        let n = data.train.count
        let testError = data.test.map { self.testError($0) } ?? .nan
        // The deterministic network, like the test error: no random draw is consumed.
        let validationError = data.validation.map { self.testError($0) }
        return EpochMetrics(
            epoch: e, loss: position.lossSum / Double(n), trainError: Double(position.errors) / Double(n),
            testError: testError, weightsSHA256: WeightDigest.sha256(network.parameters),
            validationError: validationError)
    }

    /// Test error of the deterministic network (weight scaling for the classic convention).
    public func testError(_ set: LabeledExamples) -> Double {
        let net = network.forInference(convention: recipe.convention, baked: false)
        let probs = set.inputs.withUnsafeBufferPointer {
            Predictor(network: net, threads: threads).probabilities($0, count: set.count)
        }
        let predicted = Predictor.argmax(probs, classes: net.outputs)
        var wrong = 0
        for i in 0..<set.count where predicted[i] != Int(set.labels[i]) { wrong += 1 }
        return Double(wrong) / Double(set.count)
    }

    /// The summed loss of one minibatch and the gradients of the MEAN loss, with the masks of
    /// (epoch, step) (`epoch` 0-based as in the random streams), without updating anything.
    /// For gradient checks.
    package func gradients(epoch: Int, step: Int, examples: [Int]) -> (loss: Double, weight: [[Float]], bias: [[Float]])
    {
        precondition(examples.count <= recipe.batchSize)
        let (loss, _) = forwardBackward(epoch: epoch, step: step, examples: examples[...], sink: .store)
        return (loss, gradW, gradB)
    }

    /// Replaces the weights (for gradient checks).
    package func setParameters(_ parameters: [Parameters]) {
        network.parameters = parameters
        for l in network.parameters.indices { HugePages.advise(&network.parameters[l].weight) }
    }

    /// One minibatch: forward with dropout, softmax cross-entropy, backward into `gradW` and
    /// `gradB`. Returns (summed loss, misclassified count).
    ///
    /// With `update` (learning rate, momentum), each layer's weights are updated as soon as its
    /// backward step no longer needs them: the weight gradient is never stored, the update is
    /// fused into its product (``Gemm/multiplyUpdate``, ``Convolution`` likewise), then max-norm
    /// and the bias update run. The same bits as computing every gradient first and updating
    /// after (``gradients``).
    ///
    /// `examples` are rows `rowOffset ..< rowOffset + examples.count` of a batch of `batchRows`
    /// (a rank's block of shards; the masks are those of the rows' places in the batch, the
    /// output delta is divided by `batchRows`). With `.shards`, each shard's weight and bias
    /// gradients go to its flat gradient in `shardGradients` (nothing is updated); the loss and
    /// misclassification of every row are left in `rowLoss` and `rowWrong` in any case.
    private func forwardBackward(
        epoch: Int, step: Int, examples: ArraySlice<Int>, rowOffset: Int = 0, batchRows: Int? = nil,
        sink: GradientSink
    ) -> (Double, Int) {
        let layers = network.layers
        let rows = examples.count
        let update: (lr: Float, mu: Float)? = if case .update(let lr, let mu) = sink { (lr, mu) } else { nil }

        let last = layers.count - 1
        let classes = engine[last].outputCount
        let scale = Float(batchRows ?? rows)
        // Whether the loss rows ran inside the output layer's product (blocks of whole rows).
        var lossDone = false

        // Forward: mask each weighted layer's inputs, run the layer, then its activation.
        for (l, layer) in layers.enumerated() {
            // Layer l's dropout ran inside layer l-1's product (`dropoutInBlocks`) or runs here.
            if !(l > 0 && dropoutInBlocks[l]) {
                dropInputs(layer: l, epoch: epoch, step: step, examples: examples, rowOffset: rowOffset)
            }
            let (inputCount, outputCount) = (engine[l].inputCount, engine[l].outputCount)
            let x = UnsafeBufferPointer(rebasing: inputs[l][0..<(rows * inputCount)])
            let z = UnsafeMutableBufferPointer(rebasing: outputs[l][0..<(rows * outputCount)])
            // A dense layer applies relu in its product's epilogue (DenseLayer); the others, and
            // logistic and tanh, run the activation as a pass of its own.
            let activated = network.parameters[l].weight.withUnsafeBufferPointer { w in
                network.parameters[l].bias.withUnsafeBufferPointer { b in
                    if let dense = engine[l] as? DenseLayer {
                        // What runs on each block of z as soon as the product has finished it.
                        let afterBlock: (Range<Int>, Range<Int>) -> Void
                        if l == last, layer.activation == .softmax,
                            Gemm.blocksAreWholeRows(m: rows, n: outputCount, k: inputCount, threads: threads)
                        {
                            // The output layer's loss and output gradient, row by row (its
                            // softmax reads z as the product left it).
                            lossDone = true
                            afterBlock = { rowBlock, _ in
                                self.lossRows(rowBlock, examples: examples, classes: classes, scale: scale)
                            }
                        } else if l + 1 < layers.count, dropoutInBlocks[l + 1] {
                            // The layer above's dropout.
                            afterBlock = { rowBlock, units in
                                self.dropInputs(
                                    layer: l + 1, epoch: epoch, step: step, rowOffset: rowOffset, rows: rowBlock,
                                    units: units)
                            }
                        } else {
                            afterBlock = { _, _ in }
                        }
                        return dense.forward(
                            x, rows: rows, weight: w, bias: b, into: z, activation: layer.activation, threads: threads,
                            afterBlock: afterBlock)
                    }
                    engine[l].forward(x, rows: rows, weight: w, bias: b, into: z, threads: threads)
                    return false
                }
            }
            if layer.activation != .softmax && !activated {
                Parallel.forEachRange(count: rows, threads: threads, minimumCount: 8) { range in
                    activate(
                        layer.activation,
                        UnsafeMutableBufferPointer(
                            rebasing: z[(range.lowerBound * outputCount)..<(range.upperBound * outputCount)]))
                }
            }
        }

        // Loss and output delta: dZ = (softmax(z) - onehot) / rows; the sums in row order.
        if !lossDone { lossRows(0..<rows, examples: examples, classes: classes, scale: scale) }
        var lossSum = 0.0
        var wrong = 0
        for r in 0..<rows {
            lossSum += rowLoss[r]
            if rowWrong[r] { wrong += 1 }
        }

        // Backward.
        for l in stride(from: last, through: 0, by: -1) {
            let layer = engine[l]
            let dz = UnsafeBufferPointer(rebasing: deltas[l][0..<(rows * layer.outputCount)])
            let x = UnsafeBufferPointer(rebasing: inputs[l][0..<(rows * layer.inputCount)])
            if let update, let dense = layer as? DenseLayer {
                backwardDense(dense, l, dz: dz, x: x, rows: rows, lr: update.lr, mu: update.mu)
                continue
            }
            // With the update, a kind that can computes the bias gradient inside it (below).
            let biasInUpdate = update != nil && layer.biasGradientInUpdate
            if case .shards(let bounds) = sink {
                if layer.hasWeights { shardGradients(layer: l, dz: dz, x: x, bounds: bounds) }
            } else if layer.hasWeights && !biasInUpdate {
                // db = the sum of dZ over the batch (and pixels), in the kind's order.
                gradB[l].withUnsafeMutableBufferPointer { gb in
                    layer.biasGradient(dz, rows: rows, into: gb, threads: threads)
                }
            }
            if needsInputGradient[l] {
                // dX (rows x inputs), with this layer's weights before their update, then
                // through the mask and the activation of the layer below.
                let width = layer.inputCount
                let dx = UnsafeMutableBufferPointer(rebasing: backInput[0..<(rows * width)])
                network.parameters[l].weight.withUnsafeBufferPointer { w in
                    layer.backwardInput(dz, rows: rows, weight: w, into: dx, threads: threads)
                }
                Parallel.forEachRange(count: rows, threads: threads, minimumCount: 8) { range in
                    inputGradientBelow(l, rows: range, columns: 0..<width)
                }
            }
            guard layer.hasWeights else { continue }
            // dW: into gradW, or straight into the update (with shards: done above).
            if case .shards = sink { continue }
            if let update {
                updateLayer(l, lr: update.lr, mu: update.mu, dz: dz, x: x, rows: rows, biasGradient: biasInUpdate)
            } else {
                gradW[l].withUnsafeMutableBufferPointer { g in
                    layer.weightGradient(dz, x, rows: rows, into: g, threads: threads)
                }
            }
        }

        return (lossSum, wrong)
    }

    /// The loss, misclassification and output gradient `(softmax(z) - onehot) / scale` of the
    /// batch rows in `range` (into `rowLoss`, `rowWrong` and the output layer's deltas), from the
    /// output layer's z. Each row on its own: any split gives the same bits.
    private func lossRows(_ range: Range<Int>, examples: ArraySlice<Int>, classes: Int, scale: Float) {
        let last = outputs.count - 1
        let z = outputs[last], d = deltas[last]
        for r in range {
            let label = Int(data.train.labels[examples[examples.startIndex + r]])
            let row = r * classes
            var m = z[row]
            var best = 0
            for c in 1..<classes where z[row + c] > m { m = z[row + c]; best = c }
            rowWrong[r] = best != label
            var sum: Float = 0
            for c in 0..<classes {
                let e = DeterministicMath.exp(z[row + c] - m)
                d[row + c] = e
                sum += e
            }
            // loss = log(sum) - (z_label - m), in float64 for reporting.
            rowLoss[r] = Foundation.log(Double(sum)) - Double(z[row + label] - m)
            for c in 0..<classes {
                let p = d[row + c] / sum
                d[row + c] = ((c == label ? p - 1 : p)) / scale
            }
        }
    }

    /// Layer l-1's output gradient from layer l's input gradient (in `backInput`) over the block
    /// `rows` x `columns`: through layer l's mask and layer l-1's activation derivative, into
    /// `deltas[l - 1]`. Element-wise, so any split of the blocks gives the same bits.
    private func inputGradientBelow(_ l: Int, rows: Range<Int>, columns: Range<Int>) {
        let width = engine[l].inputCount
        let below = network.layers[l - 1].activation
        let m = masks[l], isMasked = masked[l]
        let dx = backInput, a = outputs[l - 1], dzBelow = deltas[l - 1]
        for r in rows {
            let span = (r * width + columns.lowerBound)..<(r * width + columns.upperBound)
            // One loop per (mask, activation): the choice is made once, not per element.
            // Each loop computes g for every element and then selects, so it compiles to
            // branch-free vector code (a branch on the sign of y mispredicts half the time).
            if isMasked {
                switch below {
                case .relu:
                    for i in span {
                        let g = dx[i] * m[i]
                        dzBelow[i] = a[i] > 0 ? g : 0
                    }
                case .logistic: for i in span { let y = a[i]; dzBelow[i] = (dx[i] * m[i]) * (y * (1 - y)) }
                case .tanh: for i in span { let y = a[i]; dzBelow[i] = (dx[i] * m[i]) * (1 - y * y) }
                case .linear, .softmax: for i in span { dzBelow[i] = dx[i] * m[i] }
                }
            } else {
                switch below {
                case .relu:
                    for i in span {
                        let g = dx[i]
                        dzBelow[i] = a[i] > 0 ? g : 0
                    }
                case .logistic: for i in span { let y = a[i]; dzBelow[i] = dx[i] * (y * (1 - y)) }
                case .tanh: for i in span { let y = a[i]; dzBelow[i] = dx[i] * (1 - y * y) }
                case .linear, .softmax: for i in span { dzBelow[i] = dx[i] }
                }
            }
        }
    }

    /// A dense layer's backward pass and update in two parallel regions (Specs/determinism.md
    /// §4.5, §4.6): the input gradient's product with the mask and activation derivative of the layer
    /// below run on each block as it completes; then the fused weight update with, for each
    /// block of whole units it updated, their max-norm, bias gradient and bias step. The same
    /// operations on the same values as the unfused order (bias gradient, input gradient, mask
    /// pass, update, max-norm, bias step), which never mixes units or elements, so the same bits.
    private func backwardDense(
        _ dense: DenseLayer, _ l: Int, dz: UnsafeBufferPointer<Float>, x: UnsafeBufferPointer<Float>, rows: Int,
        lr: Float, mu: Float
    ) {
        if needsInputGradient[l] {
            let dx = UnsafeMutableBufferPointer(rebasing: backInput[0..<(rows * dense.inputCount)])
            network.parameters[l].weight.withUnsafeBufferPointer { w in
                dense.backwardInput(dz, rows: rows, weight: w, into: dx, threads: threads) { rowBlock, columns in
                    inputGradientBelow(l, rows: rowBlock, columns: columns)
                }
            }
        }
        let l2 = Float(recipe.l2)
        let fanIn = dense.inputCount
        let maxNorm = l < network.layers.count - 1 ? recipe.maxNorm.map { Float($0) } : nil
        // The layer's parameters and state, taken out of their arrays for the update (moved, not
        // copied) so that weights and biases can be written in one region.
        var p = network.parameters[l], v = velocityW[l], vb = velocityB[l], gb = gradB[l]
        network.parameters[l] = Parameters(weight: [], bias: [])
        (velocityW[l], velocityB[l], gradB[l]) = ([], [], [])
        defer { (network.parameters[l], velocityW[l], velocityB[l], gradB[l]) = (p, v, vb, gb) }
        p.weight.withUnsafeMutableBufferPointer { w in
            p.bias.withUnsafeMutableBufferPointer { b in
                v.withUnsafeMutableBufferPointer { v in
                    vb.withUnsafeMutableBufferPointer { vb in
                        gb.withUnsafeMutableBufferPointer { gb in
                            dense.updateWeights(
                                dz, x, rows: rows, weight: w, velocity: v, mu: mu, lr: lr, l2: l2, threads: threads
                            ) { units in
                                if let c = maxNorm { Self.maxNorm(w, units: units, fanIn: fanIn, limit: c) }
                                dense.biasGradient(dz, rows: rows, units: units, into: gb)
                                for i in units { vb[i] = mu * vb[i] - lr * gb[i]; b[i] = b[i] + vb[i] }
                            }
                        }
                    }
                }
            }
        }
    }

    /// Max-norm on the weight rows of `units` (rows of `fanIn` weights): each row's sum of
    /// squares in order, unfused (RowSums, several rows at a time), then the row scaled by
    /// `limit / norm` where the norm exceeds `limit` (Specs/determinism.md §4.6).
    private static func maxNorm(_ w: UnsafeMutableBufferPointer<Float>, units: Range<Int>, fanIn: Int, limit c: Float) {
        guard !units.isEmpty else { return }
        withUnsafeTemporaryAllocation(of: Float.self, capacity: units.count) { sums in
            RowSums.sumOfSquares(
                w.baseAddress! + units.lowerBound * fanIn, rows: units.count, length: fanIn, ld: fanIn,
                into: sums.baseAddress!)
            for u in units {
                let norm = sums[u - units.lowerBound].squareRoot()
                guard norm > c else { continue }
                let s = c / norm
                let row = UnsafeMutableBufferPointer(rebasing: w[(u * fanIn)..<((u + 1) * fanIn)])
                for i in row.indices { row[i] = row[i] * s }
            }
        }
    }

    /// Layer l's update: v = mu*v - lr*(g + l2*w); w = w + v with the weight gradient g fused
    /// into its product; then max-norm on hidden weighted layers (each row of fan-in's sum in
    /// order, on one thread: a dense unit's or a conv filter's incoming weights); then the
    /// bias: v = mu*v - lr*g; b = b + v. A kind without weights has nothing to update.
    private func updateLayer(
        _ l: Int, lr: Float, mu: Float, dz: UnsafeBufferPointer<Float>, x: UnsafeBufferPointer<Float>, rows: Int,
        biasGradient: Bool = false
    ) {
        let l2 = Float(recipe.l2)
        updateLayer(l, lr: lr, mu: mu) { w, v in
            // With biasGradient: gradB[l], which the bias step after this reads, written by the
            // update's own pass.
            gradB[l].withUnsafeMutableBufferPointer { gb in
                engine[l].updateWeights(
                    dz, x, rows: rows, weight: w, velocity: v, biasGradient: biasGradient ? gb : nil, mu: mu, lr: lr,
                    l2: l2, threads: threads)
            }
        }
    }

    /// Layer l's update as ``updateLayer(_:lr:mu:dz:x:rows:)``, the weight step by `weightStep`
    /// (weights, velocities).
    private func updateLayer(
        _ l: Int, lr: Float, mu: Float,
        weightStep: (UnsafeMutableBufferPointer<Float>, UnsafeMutableBufferPointer<Float>) -> Void
    ) {
        let layers = network.layers
        guard let shapes = layers[l].parameterShapes else { return }
        let (units, fanIn) = (shapes.rows, shapes.rowLength)
        network.parameters[l].weight.withUnsafeMutableBufferPointer { w in
            velocityW[l].withUnsafeMutableBufferPointer { v in weightStep(w, v) }
            guard let c = recipe.maxNorm.map({ Float($0) }), l < layers.count - 1 else { return }
            Parallel.forEachRange(count: units, threads: threads, minimumCount: 64) { units in
                Self.maxNorm(w, units: units, fanIn: fanIn, limit: c)
            }
        }
        network.parameters[l].bias.withUnsafeMutableBufferPointer { b in
            velocityB[l].withUnsafeMutableBufferPointer { v in
                gradB[l].withUnsafeBufferPointer { g in
                    for i in b.indices { v[i] = mu * v[i] - lr * g[i]; b[i] = b[i] + v[i] }
                }
            }
        }
    }

    /// Element dropout on the block `rows` x `units` of layer `l`'s inputs, from layer l-1's
    /// outputs (already activated), run by the thread that computed the block in layer l-1's
    /// product: each row's mask words for those units only (``PhiloxRows/dropout(_:units:threshold:kept:source:mask:output:kernel:)``),
    /// the same values as ``dropInputs(layer:epoch:step:examples:rowOffset:)`` gives them.
    private func dropInputs(layer l: Int, epoch: Int, step: Int, rowOffset: Int, rows: Range<Int>, units: Range<Int>) {
        let layer = network.layers[l]
        let width = engine[l].inputCount
        let threshold = KeepThreshold(keepProbability: layer.keepProb).value
        let kept = DropoutNoise.keptValue(keepProbability: layer.keepProb, convention: recipe.convention)
        let a = outputs[l - 1], m = masks[l], x = inputs[l]
        for r in rows {
            let base = r * width
            PhiloxRows.dropout(
                dropoutRow(layer: l, epoch: epoch, step: step, example: rowOffset + r), units: units,
                threshold: threshold, kept: kept, source: a.baseAddress! + base, mask: m.baseAddress! + base,
                output: x.baseAddress! + base)
        }
    }

    /// The Philox row of layer `l`'s element dropout for one example (Specs/random-streams.md §5).
    private func dropoutRow(layer l: Int, epoch: Int, step: Int, example: Int) -> PhiloxRows.Row {
        let row = streams.dropoutRow(epoch: epoch, step: step, layer: l, example: example)
        return PhiloxRows.Row(
            k0: row.key[0], k1: row.key[1], c1: row.baseCounter[1], c2: row.baseCounter[2], c3: row.baseCounter[3])
    }

    /// Dropout on layer `l`'s inputs for one minibatch: draws each example's multipliers
    /// (``DropoutNoise``: the layer's mode, Specs/random-streams.md) into `masks[l]` and writes
    /// the masked input into `inputs[l]` (from the data for layer 0, from the layer below
    /// otherwise). Layer 0 without dropout gathers its rows from the data; a layer above without
    /// dropout reads the layer below's output in place and needs nothing here.
    ///
    /// One example (row) per unit of work: rows are independent, so any split between threads
    /// gives the same bits.
    ///
    /// `rowOffset`: the place in the batch of the first of `examples` (a rank's block of shards),
    /// which selects the rows' masks.
    private func dropInputs(layer l: Int, epoch: Int, step: Int, examples: ArraySlice<Int>, rowOffset: Int) {
        guard l == 0 || masked[l] else { return }
        let layer = network.layers[l]
        let rows = examples.count
        let features = data.train.features
        let width = engine[l].inputCount
        let isMasked = masked[l]
        let m = masks[l], x = inputs[l]
        let convention = recipe.convention
        let channelCount = channels[l]
        let streams = self.streams
        // Element dropout: the mask row's words (vectorised Philox, CKernels), the mask and the
        // masked input in one pass (PhiloxRows); the same bits as DropoutNoise.fill followed by
        // the multiplication (Specs/random-streams.md §5).
        let element = isMasked && layer.dropoutMode == .element
        // The mask is read only by the input gradient (`inputGradientBelow`): layer 0's, computed
        // by nothing, need not be stored.
        let keepMask = needsInputGradient[l]
        let threshold = KeepThreshold(keepProbability: layer.keepProb).value
        let kept = DropoutNoise.keptValue(keepProbability: layer.keepProb, convention: convention)
        func prepare(_ rowRange: Range<Int>, _ source: (Int) -> UnsafePointer<Float>) {
            for r in rowRange {
                let src = source(r)
                let base = r * width
                guard isMasked else {
                    (x.baseAddress! + base).update(from: src, count: width)
                    continue
                }
                if element {
                    PhiloxRows.dropout(
                        dropoutRow(layer: l, epoch: epoch, step: step, example: rowOffset + r), units: width,
                        threshold: threshold, kept: kept, source: src,
                        mask: keepMask ? m.baseAddress! + base : nil,
                        output: x.baseAddress! + base)
                    continue
                }
                let mrow = UnsafeMutableBufferPointer(rebasing: m[base..<(base + width)])
                DropoutNoise.fill(
                    layer: l, layer, units: width, channels: channelCount, convention: convention,
                    draw: .training(epoch: epoch, step: step, example: rowOffset + r), streams: streams, into: mrow)
                for j in 0..<width { x[base + j] = src[j] * mrow[j] }
            }
        }
        if l == 0 {
            data.train.inputs.withUnsafeBufferPointer { src in
                Parallel.forEachRange(count: rows, threads: threads, minimumCount: 8) { range in
                    prepare(range) { r in src.baseAddress! + examples[examples.startIndex + r] * features }
                }
            }
        } else {
            let a = outputs[l - 1]
            Parallel.forEachRange(count: rows, threads: threads, minimumCount: 8) { range in
                prepare(range) { r in UnsafePointer(a.baseAddress! + r * width) }
            }
        }
    }
}

/// Where a step's weight and bias gradients go.
private enum GradientSink {
    /// Into `gradW` and `gradB` (gradient checks).
    case store
    /// Straight into the update, fused into the weight-gradient product.
    case update(lr: Float, mu: Float)
    /// Into one flat gradient per shard (`shardGradients`); `bounds`: the shards' first rows in
    /// the rows given, and the row count last.
    case shards(bounds: [Int])
}

// Shards and ranks (issue 16, Specs/determinism.md §4.7).
extension Trainer {
    /// Layer l's weight and bias gradients of each shard of the rows given (`bounds` as in
    /// ``GradientSink/shards(bounds:)``) into the shard's flat gradient: each shard's product is
    /// one FMA chain over its own rows (§3), its bias sum rows in order; an empty shard's are 0.
    private func shardGradients(
        layer l: Int, dz: UnsafeBufferPointer<Float>, x: UnsafeBufferPointer<Float>, bounds: [Int]
    ) {
        let layer = engine[l]
        let (inCount, outCount) = (layer.inputCount, layer.outputCount)
        let (weightAt, biasAt) = gradientOffsets[l]
        let weights = biasAt - weightAt
        let biases = network.parameters[l].bias.count
        for i in 0..<(bounds.count - 1) {
            let (a, b) = (bounds[i], bounds[i + 1])
            let gw = UnsafeMutableBufferPointer(rebasing: shardGradients[i][weightAt..<(weightAt + weights)])
            let gb = UnsafeMutableBufferPointer(rebasing: shardGradients[i][biasAt..<(biasAt + biases)])
            guard b > a else {
                gw.update(repeating: 0)
                gb.update(repeating: 0)
                continue
            }
            let d = UnsafeBufferPointer(rebasing: dz[(a * outCount)..<(b * outCount)])
            let xs = UnsafeBufferPointer(rebasing: x[(a * inCount)..<(b * inCount)])
            layer.biasGradient(d, rows: b - a, into: gb, threads: threads)
            layer.weightGradient(d, xs, rows: b - a, into: gw, threads: threads)
        }
    }

    /// One sharded minibatch (Specs/determinism.md §4.7): this rank's block of shards forward and
    /// backward, each shard's gradient, loss and error count; the block's nodes of the tree summed
    /// and exchanged with the other ranks; the whole tree summed on every rank in the same order;
    /// then every layer updated from the sum (§4.6, unfused), max-norm and the bias as always.
    /// Returns the batch's summed loss and misclassified count.
    private func shardedStep(epoch: Int, step: Int, examples: ArraySlice<Int>, lr: Float, mu: Float) -> (Double, Int) {
        let bounds = tree.bounds(rows: examples.count)
        let (first, end) = (bounds[block.lowerBound], bounds[block.upperBound])
        let local = examples[(examples.startIndex + first)..<(examples.startIndex + end)]
        let localBounds = bounds[block.lowerBound...block.upperBound].map { $0 - first }
        _ = forwardBackward(
            epoch: epoch, step: step, examples: local, rowOffset: first, batchRows: examples.count,
            sink: .shards(bounds: localBounds))
        // The leaves: each shard's gradient, its loss (rows in order, from +0) and errors. A node's
        // sum is made in place, in the memory of its leftmost known node.
        var known: [Range<Int>: ShardSum] = [:]
        for (i, s) in block.enumerated() {
            var loss = 0.0
            var errors = 0
            for r in localBounds[i]..<localBounds[i + 1] {
                loss += rowLoss[r]
                if rowWrong[r] { errors += 1 }
            }
            known[s..<(s + 1)] = ShardSum(gradient: shardGradients[i].baseAddress!, loss: loss, errors: errors)
        }
        if let group, group.size > 1 {
            // This rank's largest nodes, summed here; every rank's, gathered in rank order.
            let mine = tree.nodes(inside: block).map { sum($0, known: known) }
            known = exchange(mine, group: group)
        }
        let total = sum(0..<tree.shards, known: known)
        // The update from the summed gradient, layer by layer (§4.6, every operation rounded).
        let l2 = Float(recipe.l2)
        let threads = self.threads
        do {
            let g = UnsafeBufferPointer(start: total.gradient, count: gradientCount)
            for l in engine.indices where engine[l].hasWeights {
                let (weightAt, biasAt) = gradientOffsets[l]
                gradB[l].withUnsafeMutableBufferPointer { gb in
                    gb.baseAddress!.update(from: g.baseAddress! + biasAt, count: gb.count)
                }
                let gw = g.baseAddress! + weightAt
                updateLayer(l, lr: lr, mu: mu) { w, v in
                    Parallel.forEachRange(count: w.count, threads: threads, minimumCount: 1 << 14) { range in
                        for i in range {
                            let gg = l2 != 0 ? gw[i] + l2 * w[i] : gw[i]
                            let nv = mu * v[i] - lr * gg
                            v[i] = nv
                            w[i] = w[i] + nv
                        }
                    }
                }
            }
        }
        return (total.loss, total.errors)
    }

    /// The value of `node` (``ShardTree/evaluate(_:known:add:)``) from the `known` nodes below it,
    /// summed in place in the memory of its leftmost known node: the gradient element by element
    /// (float32, one rounding each) in blocks of 4,096 elements, each block's whole tree while it
    /// is in cache (every element still sees the tree's order, so neither the blocks nor the
    /// threads change a bit); the loss (float64) and errors in the same tree.
    private func sum(_ node: Range<Int>, known: [Range<Int>: ShardSum]) -> ShardSum {
        let pointers = known.mapValues(\.gradient)
        let tree = self.tree
        Parallel.forEachRange(count: gradientCount, threads: threads, minimumCount: 1 << 15) { range in
            var start = range.lowerBound
            while start < range.upperBound {
                let block = start..<min(start + 4096, range.upperBound)
                _ = tree.evaluate(node, known: pointers) { a, b in for i in block { a[i] = a[i] + b[i] } }
                start = block.upperBound
            }
        }
        return ShardSum(
            gradient: tree.evaluate(node, known: pointers) { _, _ in },  // the leftmost known node's memory
            loss: tree.evaluate(node, known: known.mapValues(\.loss)) { $0 += $1 },
            errors: tree.evaluate(node, known: known.mapValues(\.errors)) { $0 += $1 })
    }

    /// Every rank's nodes (``ShardTree/nodes(inside:)`` of its block), by an all-gather of their
    /// bytes: each node's flat gradient (float32, native byte order), then its loss (float64) and
    /// errors (int64). The nodes' values are left in `receiveBuffer`.
    private func exchange(_ mine: [ShardSum], group: any TrainingGroup) -> [Range<Int>: ShardSum] {
        let gradientBytes = gradientCount * 4
        let nodeBytes = gradientBytes + 16
        let nodes = (0..<group.size).map { tree.nodes(inside: tree.block(rank: $0, ranks: group.size)) }
        let counts = nodes.map { $0.count * nodeBytes }
        let out = sendBuffer
        for (k, node) in mine.enumerated() {
            let base = k * nodeBytes
            out.baseAddress!.advanced(by: base).copyMemory(from: node.gradient, byteCount: gradientBytes)
            out.storeBytes(of: node.loss, toByteOffset: base + gradientBytes, as: Double.self)
            out.storeBytes(of: Int64(node.errors), toByteOffset: base + gradientBytes + 8, as: Int64.self)
        }
        group.allGather(UnsafeRawBufferPointer(out), counts: counts, into: receiveBuffer)
        var known: [Range<Int>: ShardSum] = [:]
        var base = 0
        for node in nodes.joined() {
            let all = receiveBuffer
            // Offsets are multiples of 4 from a 64-byte aligned buffer: the floats are aligned.
            let gradient = (all.baseAddress! + base).bindMemory(to: Float.self, capacity: gradientCount)
            let loss = all.loadUnaligned(fromByteOffset: base + gradientBytes, as: Double.self)
            let errors = all.loadUnaligned(fromByteOffset: base + gradientBytes + 8, as: Int64.self)
            known[node] = ShardSum(gradient: gradient, loss: loss, errors: Int(errors))
            base += nodeBytes
        }
        return known
    }
}

/// A node of the shard tree: its summed flat gradient (`gradientCount` floats in memory the
/// trainer owns), the summed loss and misclassified count of its shards.
private struct ShardSum {
    var gradient: UnsafeMutablePointer<Float>
    var loss: Double
    var errors: Int
}

// Checkpoints (issue 15): the momentum velocities are the optimizer's only state.
extension Trainer {
    /// Each layer's momentum velocities, shaped like its weight and bias (empty without weights).
    package var velocities: [Parameters] {
        get { zip(velocityW, velocityB).map { Parameters(weight: $0, bias: $1) } }
        set {
            precondition(newValue.map(\.weight.count) == velocityW.map(\.count))
            precondition(newValue.map(\.bias.count) == velocityB.map(\.count))
            velocityW = newValue.map(\.weight)
            for l in velocityW.indices { HugePages.advise(&velocityW[l]) }
            velocityB = newValue.map(\.bias)
        }
    }
}
