package import BundleFormat

/// One layer as the engine runs it: the linear part of its forward pass, its backward pass and
/// its weight update, on whole minibatches in the bundle's layouts (activations row-major
/// `[rows, features]`; weights as rows of fan-in).
///
/// What stays outside, shared by every kind (Trainer, Predictor, Evaluation): dropout masking of
/// a layer's inputs (one place each for training and Monte-Carlo masks: where a dropout mode
/// will be chosen), the activation and its derivative, the loss, max-norm over weight rows and
/// the bias update. Callers hold one `any EngineLayer` per layer and make a few calls per layer
/// per step; a conformer's loops are its own concrete code (no dynamic dispatch per element),
/// and it allocates nothing: every buffer is the caller's.
///
/// Each conformer keeps the arithmetic order its kind's section of Specs/determinism.md states;
/// a kind is added by one conformer in this folder and one entry in ``LayerKind/engineLayer(_:)``.
package protocol EngineLayer: Sendable {
    var info: LayerInfo { get }
    /// Elements of one example's input and output (``TensorShape/count``).
    var inputCount: Int { get }
    var outputCount: Int { get }

    /// `z = x·Wᵀ + b` for `rows` examples, before the activation: `x` is `[rows, inputCount]`
    /// (already masked), `z` `[rows, outputCount]`.
    func forward(
        _ x: UnsafePointer<Float>, rows: Int, weight: UnsafeBufferPointer<Float>, bias: UnsafeBufferPointer<Float>,
        into z: UnsafeMutablePointer<Float>, threads: Int)

    /// `dX = dZ·W` (`[rows, inputCount]`), with the weights as they were in the forward pass;
    /// the caller applies the mask and the activation derivative of the layer below.
    func backwardInput(
        _ dz: UnsafePointer<Float>, rows: Int, weight: UnsafeBufferPointer<Float>,
        into dx: UnsafeMutablePointer<Float>, threads: Int)

    /// The bias gradient: each output's sum of `dz` over the batch, rows in order.
    func biasGradient(_ dz: UnsafePointer<Float>, rows: Int, into gb: UnsafeMutableBufferPointer<Float>)

    /// `dW = dZᵀ·X`, weight-shaped (for gradient checks).
    func weightGradient(
        _ dz: UnsafePointer<Float>, _ x: UnsafePointer<Float>, rows: Int, into g: UnsafeMutablePointer<Float>,
        threads: Int)

    /// The momentum step on the weights with `dW = dZᵀ·X` fused into its product
    /// (``Kernels/Gemm/multiplyUpdate``): `v = mu*v - lr*(g + l2*w); w = w + v`, the gradient
    /// never stored. The same bits as ``weightGradient`` then the update.
    func updateWeights(
        _ dz: UnsafePointer<Float>, _ x: UnsafePointer<Float>, rows: Int,
        weight: UnsafeMutablePointer<Float>, velocity: UnsafeMutablePointer<Float>,
        mu: Float, lr: Float, l2: Float, threads: Int)
}

extension LayerKind {
    /// The registry of engine layers: the conformer that runs a layer of this kind.
    package func engineLayer(_ info: LayerInfo) -> any EngineLayer {
        switch self {
        case .dense: return DenseLayer(info: info)
        default: preconditionFailure("issue 12: the engine has no \(self.rawValue) layer yet")
        }
    }
}

extension Network {
    /// One engine layer per layer, in order.
    package var engineLayers: [any EngineLayer] { layers.map { $0.kind.engineLayer($0) } }
}
