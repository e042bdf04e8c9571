public import BundleFormat
import Kernels

/// A network's layers and weights in the engine's layout (the bundle's: weights as rows of
/// fan-in); each layer runs through its kind's ``EngineLayer``.
public struct Network: Sendable, Equatable {
    public var layers: [LayerInfo]
    public var parameters: [Parameters]

    public init(layers: [LayerInfo], parameters: [Parameters]) {
        precondition(layers.count == parameters.count)
        self.layers = layers
        self.parameters = parameters
    }

    /// Features per example in, classes out (the first layer's input, the last layer's output).
    public var inputs: Int { inputShape.count }
    public var outputs: Int { layers.last.map { $0.kind.engineLayer($0).outputCount } ?? 0 }

    /// The shape of one example the network reads (the first layer's input).
    public var inputShape: TensorShape {
        guard let first = layers.first else { return .flat(0) }
        return first.declaredInputShape ?? .flat(first.inputs)
    }

    /// The network with the weight-scaling rule applied, for deterministic inference of a
    /// classic (unbaked) model: every weight `w` of a weighted layer whose inputs were dropped
    /// with probability 1 - p by element or channel dropout becomes `Float(p) * w` (one float32
    /// rounding; Specs/bake.md): the expected input of each unit is the same as in training.
    /// Gaussian dropout's noise has mean 1, so its layers are left as they are. Biases are
    /// unchanged.
    public func weightScaled() -> Network {
        var out = self
        for l in layers.indices where layers[l].hasWeights && layers[l].dropoutMode != .gaussian {
            let p = Float(layers[l].keepProb)
            if p == 1 { continue }
            out.parameters[l].weight = parameters[l].weight.map { p * $0 }
        }
        return out
    }

    /// The network to use for deterministic inference, given a bundle's convention and
    /// baked flag: classic and not baked -> weight-scaled; otherwise as stored.
    public func forInference(convention: DropoutConvention, baked: Bool) -> Network {
        convention == .classic && !baked ? weightScaled() : self
    }
}

/// Applies an activation in place.
@inline(__always)
package func activate(_ a: Activation, _ z: UnsafeMutableBufferPointer<Float>) {
    switch a {
    // A select and a store for every element (z > 0 ? z : +0, so -0 and NaN become +0), not a
    // store under a branch: it compiles to vector code, where a branch on the sign mispredicts
    // half the time.
    case .relu: for i in z.indices { z[i] = z[i] > 0 ? z[i] : 0 }
    case .logistic: for i in z.indices { z[i] = DeterministicMath.logistic(z[i]) }
    case .tanh: for i in z.indices { z[i] = DeterministicMath.tanh(z[i]) }
    case .linear: break
    case .softmax: preconditionFailure("softmax is applied with the loss")
    }
}

/// Row-wise softmax in place over `rows x cols`: subtract the row max, exponentiate, divide by
/// the sum (summed left to right).
func softmaxRows(_ z: UnsafeMutableBufferPointer<Float>, rows: Int, cols: Int) {
    for r in 0..<rows {
        let row = UnsafeMutableBufferPointer(rebasing: z[(r * cols)..<((r + 1) * cols)])
        var m = row[0]
        for v in row where v > m { m = v }
        var sum: Float = 0
        for i in row.indices {
            row[i] = DeterministicMath.exp(row[i] - m)
            sum += row[i]
        }
        for i in row.indices { row[i] = row[i] / sum }
    }
}

/// Deterministic inference: class probabilities for `count` examples.
public struct Predictor {
    public let network: Network
    public let threads: Int

    public init(network: Network, threads: Int = 1) {
        self.network = network
        self.threads = max(1, threads)
    }

    /// Probabilities `[count x classes]` for row-major inputs `[count x inputs]` (NHWC images),
    /// in batches of `batch` examples (rows are independent: the batch size changes no bit).
    /// `mask`, if given, is called per (layer, first example, rows, buffer) to multiply each
    /// layer's inputs by its dropout noise (Monte-Carlo dropout); nil for the deterministic
    /// network.
    public func probabilities(
        _ inputs: UnsafeBufferPointer<Float>, count: Int, batch: Int = 1000,
        mask: ((_ layer: Int, _ firstExample: Int, _ rows: Int, _ buffer: UnsafeMutableBufferPointer<Float>) -> Void)? =
            nil
    ) -> [Float] {
        let layers = network.layers
        let engine = network.engineLayers
        let (features, classes) = (engine.first?.inputCount ?? 0, engine.last?.outputCount ?? 0)
        precondition(inputs.count >= count * features, "\(inputs.count) inputs for \(count) examples of \(features)")
        var out = [Float](repeating: 0, count: count * classes)
        let batch = max(1, min(batch, count))
        let widest = engine.map { max($0.inputCount, $0.outputCount) }.max() ?? 0
        var bufA = [Float](repeating: 0, count: batch * widest)
        var bufB = [Float](repeating: 0, count: batch * widest)
        var start = 0
        while start < count {
            let n = min(batch, count - start)
            bufA.withUnsafeMutableBufferPointer { a in
                for i in 0..<(n * features) { a[i] = inputs[start * features + i] }
            }
            for (l, layer) in layers.enumerated() {
                let (inputCount, outputCount) = (engine[l].inputCount, engine[l].outputCount)
                bufA.withUnsafeMutableBufferPointer { a in
                    bufB.withUnsafeMutableBufferPointer { b in
                        let x = UnsafeMutableBufferPointer(rebasing: a[0..<(n * inputCount)])
                        let z = UnsafeMutableBufferPointer(rebasing: b[0..<(n * outputCount)])
                        if let mask { mask(l, start, n, x) }
                        let p = network.parameters[l]
                        // A dense relu layer applies relu in its product's epilogue (DenseLayer).
                        let activated = p.weight.withUnsafeBufferPointer { w in
                            p.bias.withUnsafeBufferPointer { bias in
                                if let dense = engine[l] as? DenseLayer {
                                    return dense.forward(
                                        UnsafeBufferPointer(x), rows: n, weight: w, bias: bias, into: z,
                                        activation: layer.activation, threads: threads)
                                }
                                engine[l].forward(
                                    UnsafeBufferPointer(x), rows: n, weight: w, bias: bias, into: z, threads: threads)
                                return false
                            }
                        }
                        if layer.activation == .softmax {
                            softmaxRows(z, rows: n, cols: outputCount)
                        } else if !activated {
                            activate(layer.activation, z)
                        }
                    }
                }
                swap(&bufA, &bufB)
            }
            for i in 0..<(n * classes) { out[start * classes + i] = bufA[i] }
            start += n
        }
        return out
    }

    /// Predicted class of each example (first maximum).
    public static func argmax(_ probs: [Float], classes: Int) -> [Int] {
        stride(from: 0, to: probs.count, by: classes).map { s in
            var best = 0
            for c in 1..<classes where probs[s + c] > probs[s + best] { best = c }
            return best
        }
    }
}
