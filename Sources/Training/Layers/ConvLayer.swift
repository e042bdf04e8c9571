import BundleFormat
import Kernels

/// A `conv2d` layer in the engine: ``Kernels/Convolution`` (Specs/determinism.md §8.3, §8.4):
/// forward from the bias, one FMA chain per output over the patch in (i, j, c) order; the input
/// gradient as dP = dY·W then col2im in increasing patch row; the weight gradient one FMA chain
/// per weight over the patch rows (n, oh, ow) in order, with the momentum update fused into it;
/// the bias gradient per filter over the rows in order. Threads split output rows, weight tiles
/// or images, never a sum.
///
/// Holds its ``Kernels/Convolution/Workspace`` (the padded input and packed weights), reused
/// from call to call.
final class ConvLayer: EngineLayer {
    let info: LayerInfo
    let geometry: Convolution.Geometry
    let inputShape: TensorShape
    let outputShape: TensorShape
    private let workspace = Convolution.Workspace()

    init(info: LayerInfo) {
        self.info = info
        let (h, w, c) = declaredImage(info)
        guard let win = info.window else { preconditionFailure("conv2d layer '\(info.name)' declares no kernel") }
        do {
            geometry = try Convolution.Geometry(
                inputHeight: h, inputWidth: w, channels: c, kernelHeight: win.height, kernelWidth: win.width,
                strideHeight: win.strideHeight, strideWidth: win.strideWidth,
                padding: win.padding == .same ? .same : .valid, filters: info.filters)
        } catch {
            preconditionFailure("conv2d layer '\(info.name)': \(error)")
        }
        inputShape = .image(height: h, width: w, channels: c)
        outputShape = .image(height: geometry.outputHeight, width: geometry.outputWidth, channels: info.filters)
    }

    func forward(
        _ x: UnsafeBufferPointer<Float>, rows: Int, weight: UnsafeBufferPointer<Float>,
        bias: UnsafeBufferPointer<Float>, into z: UnsafeMutableBufferPointer<Float>, threads: Int
    ) {
        kernelCall {
            try Convolution.forward(
                geometry, batch: rows, input: x, weights: weight, bias: bias, output: z, workspace: workspace,
                threads: threads)
        }
    }

    func backwardInput(
        _ dz: UnsafeBufferPointer<Float>, rows: Int, weight: UnsafeBufferPointer<Float>,
        into dx: UnsafeMutableBufferPointer<Float>, threads: Int
    ) {
        kernelCall {
            try Convolution.inputGradient(
                geometry, batch: rows, outputGradient: dz, weights: weight, into: dx, workspace: workspace,
                threads: threads)
        }
    }

    func biasGradient(
        _ dz: UnsafeBufferPointer<Float>, rows: Int, into gb: UnsafeMutableBufferPointer<Float>, threads: Int
    ) {
        kernelCall {
            try Convolution.biasGradient(geometry, batch: rows, outputGradient: dz, into: gb, threads: threads)
        }
    }

    func weightGradient(
        _ dz: UnsafeBufferPointer<Float>, _ x: UnsafeBufferPointer<Float>, rows: Int,
        into g: UnsafeMutableBufferPointer<Float>, threads: Int
    ) {
        kernelCall {
            try Convolution.weightGradient(
                geometry, batch: rows, input: x, outputGradient: dz, into: g, workspace: workspace, threads: threads)
        }
    }

    func updateWeights(
        _ dz: UnsafeBufferPointer<Float>, _ x: UnsafeBufferPointer<Float>, rows: Int,
        weight: UnsafeMutableBufferPointer<Float>, velocity: UnsafeMutableBufferPointer<Float>,
        mu: Float, lr: Float, l2: Float, threads: Int
    ) {
        updateWeights(
            dz, x, rows: rows, weight: weight, velocity: velocity, biasGradient: nil, mu: mu, lr: lr, l2: l2,
            threads: threads)
    }

    var biasGradientInUpdate: Bool { true }

    func updateWeights(
        _ dz: UnsafeBufferPointer<Float>, _ x: UnsafeBufferPointer<Float>, rows: Int,
        weight: UnsafeMutableBufferPointer<Float>, velocity: UnsafeMutableBufferPointer<Float>,
        biasGradient gb: UnsafeMutableBufferPointer<Float>?, mu: Float, lr: Float, l2: Float, threads: Int
    ) {
        precondition(weight.count >= geometry.weightCount && velocity.count >= geometry.weightCount)
        guard let w = weight.baseAddress, let v = velocity.baseAddress else { return }
        kernelCall {
            try Convolution.weightGradient(
                geometry, batch: rows, input: x, outputGradient: dz,
                update: Gemm.Update(w: w, v: v, ld: geometry.patchSize, mu: mu, lr: lr, l2: l2), biasGradient: gb,
                workspace: workspace, threads: threads)
        }
    }
}
