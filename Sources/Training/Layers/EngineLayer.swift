package import BundleFormat
import Kernels

/// One layer as the engine runs it: the linear part of its forward pass, its backward pass to
/// its inputs and its weight update, on whole minibatches in the bundle's layouts (activations
/// row-major `[rows, TensorShape.count]`, NHWC for images; weights as rows of fan-in).
///
/// What stays outside, shared by every kind (Trainer, Predictor, Evaluation): dropout of a
/// weighted layer's inputs (``DropoutNoise``, the one place masks and noise are drawn), the
/// activation and its derivative, the loss, max-norm over weight rows and the bias update.
/// Callers hold one engine layer per layer and make a few calls per layer per step; a
/// conformer's loops are its own concrete code (no dynamic dispatch per element).
///
/// Conformers are classes because some kinds keep state between calls, allocated once and
/// reused (no allocation per step once the largest batch has run): max pooling records each
/// output's argmax in ``forward`` for ``backwardInput`` of the same batch, and a convolution
/// keeps its ``Kernels/Convolution/Workspace`` (padded input, packed weights). So an engine
/// layer belongs to ONE caller (a trainer, a predictor) and is not thread-safe; the calls
/// themselves split their work over `threads` (images, output rows or tiles, never a sum), so
/// the bits do not depend on `threads`.
///
/// Buffers are passed with their counts (`rows · inputCount` and so on, or more); a kind without
/// weights receives empty weight and bias buffers and never reads them. Each conformer keeps the
/// arithmetic order its kind's section of Specs/determinism.md states; a kind is added by one
/// conformer in this folder and one entry in ``LayerKind/engineLayer(_:)``.
package protocol EngineLayer: AnyObject {
    var info: LayerInfo { get }
    /// The shape of one example's input and output.
    var inputShape: TensorShape { get }
    var outputShape: TensorShape { get }

    /// `z = f(x; W, b)` for `rows` examples, before the activation: `x` is `[rows, inputCount]`
    /// (already masked), `z` `[rows, outputCount]`. A kind that keeps per-batch state for its
    /// backward pass (max pooling) records it here.
    func forward(
        _ x: UnsafeBufferPointer<Float>, rows: Int, weight: UnsafeBufferPointer<Float>,
        bias: UnsafeBufferPointer<Float>, into z: UnsafeMutableBufferPointer<Float>, threads: Int)

    /// `dX = ∂z/∂x · dZ` (`[rows, inputCount]`), with the weights as they were in the forward
    /// pass (and, for max pooling, after ``forward`` of the same batch); the caller applies the
    /// mask and the activation derivative of the layer below.
    func backwardInput(
        _ dz: UnsafeBufferPointer<Float>, rows: Int, weight: UnsafeBufferPointer<Float>,
        into dx: UnsafeMutableBufferPointer<Float>, threads: Int)

    /// The bias gradient: each output's (filter's) sum of `dz` over the batch (and pixels), in
    /// the kind's order. Nothing for a kind without weights.
    func biasGradient(
        _ dz: UnsafeBufferPointer<Float>, rows: Int, into gb: UnsafeMutableBufferPointer<Float>, threads: Int)

    /// The weight gradient, weight-shaped (for gradient checks). Nothing for a kind without
    /// weights.
    func weightGradient(
        _ dz: UnsafeBufferPointer<Float>, _ x: UnsafeBufferPointer<Float>, rows: Int,
        into g: UnsafeMutableBufferPointer<Float>, threads: Int)

    /// The momentum step on the weights with the weight gradient fused into its product
    /// (``Kernels/Gemm/multiplyUpdate``, ``Kernels/Convolution/weightGradient(_:batch:input:outputGradient:update:biasGradient:workspace:threads:kernel:minimumParallelFlops:)``):
    /// `v = mu*v - lr*(g + l2*w); w = w + v`, the gradient never stored. The same bits as
    /// ``weightGradient`` then the update. Nothing for a kind without weights.
    func updateWeights(
        _ dz: UnsafeBufferPointer<Float>, _ x: UnsafeBufferPointer<Float>, rows: Int,
        weight: UnsafeMutableBufferPointer<Float>, velocity: UnsafeMutableBufferPointer<Float>,
        mu: Float, lr: Float, l2: Float, threads: Int)

    /// Whether ``updateWeights(_:_:rows:weight:velocity:biasGradient:mu:lr:l2:threads:)`` computes
    /// the bias gradient in the update's own pass over `dz` (false by default: the caller runs
    /// ``biasGradient(_:rows:into:threads:)`` first).
    var biasGradientInUpdate: Bool { get }

    /// ``updateWeights(_:_:rows:weight:velocity:mu:lr:l2:threads:)`` that also writes the bias
    /// gradient `gb`, when given, (the same bits as ``biasGradient(_:rows:into:threads:)``) when
    /// ``biasGradientInUpdate``: a convolution's weight-gradient tiles carry the bias as one more
    /// column, so the sum over the batch runs split between the threads with the tiles instead of
    /// as a pass of its own. The default (and a kind without the fused form) updates only.
    func updateWeights(
        _ dz: UnsafeBufferPointer<Float>, _ x: UnsafeBufferPointer<Float>, rows: Int,
        weight: UnsafeMutableBufferPointer<Float>, velocity: UnsafeMutableBufferPointer<Float>,
        biasGradient gb: UnsafeMutableBufferPointer<Float>?, mu: Float, lr: Float, l2: Float, threads: Int)
}

extension EngineLayer {
    package var biasGradientInUpdate: Bool { false }

    package func updateWeights(
        _ dz: UnsafeBufferPointer<Float>, _ x: UnsafeBufferPointer<Float>, rows: Int,
        weight: UnsafeMutableBufferPointer<Float>, velocity: UnsafeMutableBufferPointer<Float>,
        biasGradient gb: UnsafeMutableBufferPointer<Float>?, mu: Float, lr: Float, l2: Float, threads: Int
    ) {
        updateWeights(dz, x, rows: rows, weight: weight, velocity: velocity, mu: mu, lr: lr, l2: l2, threads: threads)
    }

    /// Elements of one example's input and output (``TensorShape/count``).
    package var inputCount: Int { inputShape.count }
    package var outputCount: Int { outputShape.count }
    /// Whether the layer has weights (and so dropout on its inputs, a bias and an update).
    package var hasWeights: Bool { info.hasWeights }
}

/// The default of the weight functions for kinds without weights: nothing to compute.
package protocol WeightlessEngineLayer: EngineLayer {}

extension WeightlessEngineLayer {
    package func biasGradient(
        _ dz: UnsafeBufferPointer<Float>, rows: Int, into gb: UnsafeMutableBufferPointer<Float>, threads: Int
    ) {}

    package func weightGradient(
        _ dz: UnsafeBufferPointer<Float>, _ x: UnsafeBufferPointer<Float>, rows: Int,
        into g: UnsafeMutableBufferPointer<Float>, threads: Int
    ) {}

    package func updateWeights(
        _ dz: UnsafeBufferPointer<Float>, _ x: UnsafeBufferPointer<Float>, rows: Int,
        weight: UnsafeMutableBufferPointer<Float>, velocity: UnsafeMutableBufferPointer<Float>,
        mu: Float, lr: Float, l2: Float, threads: Int
    ) {}
}

extension LayerKind {
    /// The registry of engine layers: a new instance of the conformer that runs a layer of this
    /// kind, sized by the layer's declared shapes.
    ///
    /// - Precondition: `info` is a valid layer of this kind (Schema rules: the window fits the
    ///   image); an invalid one traps.
    package func engineLayer(_ info: LayerInfo) -> any EngineLayer {
        switch self {
        case .dense: return DenseLayer(info: info)
        case .conv2d: return ConvLayer(info: info)
        case .maxPool2d: return MaxPoolLayer(info: info)
        case .avgPool2d: return AvgPoolLayer(info: info)
        case .globalAvgPool2d: return GlobalAvgPoolLayer(info: info)
        case .flatten: return FlattenLayer(info: info)
        }
    }
}

extension Network {
    /// One new engine layer per layer, in order (each caller takes its own: layers hold scratch).
    package var engineLayers: [any EngineLayer] { layers.map { $0.kind.engineLayer($0) } }
}

/// The image a spatial layer declares (`input_shape`).
func declaredImage(_ info: LayerInfo) -> (height: Int, width: Int, channels: Int) {
    guard case .image(let h, let w, let c)? = info.inputShape else {
        preconditionFailure("layer '\(info.name)' (\(info.kind.rawValue)) declares no image input")
    }
    return (h, w, c)
}

/// Runs a kernel call whose shapes the layer validated when it was made: a `ShapeError` here is a
/// programming error (a buffer smaller than the batch), so it traps with the kernel's message.
@inline(__always)
func kernelCall(_ body: () throws -> Void) {
    do { try body() } catch { preconditionFailure("kernel refused its arguments: \(error)") }
}
