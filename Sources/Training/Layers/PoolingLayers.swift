import BundleFormat
import Kernels

/// The pooling geometry of a `max_pool2d` or `avg_pool2d` layer.
private func poolingGeometry(_ info: LayerInfo) -> Pooling.Geometry {
    let (h, w, c) = declaredImage(info)
    guard let win = info.window else { preconditionFailure("layer '\(info.name)' declares no pool window") }
    do {
        return try Pooling.Geometry(
            inputHeight: h, inputWidth: w, channels: c, poolHeight: win.height, poolWidth: win.width,
            strideHeight: win.strideHeight, strideWidth: win.strideWidth,
            padding: win.padding == .same ? .same : .valid)
    } catch {
        preconditionFailure("\(info.kind.rawValue) layer '\(info.name)': \(error)")
    }
}

/// A `max_pool2d` layer: ``Kernels/Pooling/maxForward(_:batch:input:output:argmax:threads:kernel:)``
/// (the first maximum of each window in row-major order wins; Specs/determinism.md §8.5), whose
/// argmax indices are kept for the backward pass of the same batch (`dX = +0`, then
/// `dX[argmax] += dY` for outputs in increasing order). Images are split between threads.
///
/// The argmax buffer (`Int32`, one per output) grows to the largest batch seen and is reused.
final class MaxPoolLayer: WeightlessEngineLayer {
    let info: LayerInfo
    let geometry: Pooling.Geometry
    let inputShape: TensorShape
    let outputShape: TensorShape
    private var argmax: [Int32] = []
    /// The batch size ``forward`` last recorded argmax indices for.
    private var recordedRows = -1

    init(info: LayerInfo) {
        self.info = info
        geometry = poolingGeometry(info)
        inputShape = .image(height: geometry.inputHeight, width: geometry.inputWidth, channels: geometry.channels)
        outputShape = .image(height: geometry.outputHeight, width: geometry.outputWidth, channels: geometry.channels)
    }

    func forward(
        _ x: UnsafeBufferPointer<Float>, rows: Int, weight: UnsafeBufferPointer<Float>,
        bias: UnsafeBufferPointer<Float>, into z: UnsafeMutableBufferPointer<Float>, threads: Int
    ) {
        let needed = rows * geometry.outputCount
        if argmax.count < needed { argmax = [Int32](repeating: 0, count: needed) }
        argmax.withUnsafeMutableBufferPointer { a in
            kernelCall {
                try Pooling.maxForward(geometry, batch: rows, input: x, output: z, argmax: a, threads: threads)
            }
        }
        recordedRows = rows
    }

    func backwardInput(
        _ dz: UnsafeBufferPointer<Float>, rows: Int, weight: UnsafeBufferPointer<Float>,
        into dx: UnsafeMutableBufferPointer<Float>, threads: Int
    ) {
        precondition(rows == recordedRows, "max pooling's backward pass needs the forward pass of the same batch")
        argmax.withUnsafeBufferPointer { a in
            kernelCall {
                try Pooling.maxBackward(
                    geometry, batch: rows, outputGradient: dz, argmax: a, into: dx, threads: threads)
            }
        }
    }
}

/// An `avg_pool2d` layer: ``Kernels/Pooling/averageForward(_:batch:input:output:threads:kernel:)``
/// (the in-image elements of each window summed in row-major order from +0, divided by their
/// count) and its backward pass (each in-image element `+= dY / count`, outputs in increasing
/// order). Images are split between threads. Stateless.
final class AvgPoolLayer: WeightlessEngineLayer {
    let info: LayerInfo
    let geometry: Pooling.Geometry
    let inputShape: TensorShape
    let outputShape: TensorShape

    init(info: LayerInfo) {
        self.info = info
        geometry = poolingGeometry(info)
        inputShape = .image(height: geometry.inputHeight, width: geometry.inputWidth, channels: geometry.channels)
        outputShape = .image(height: geometry.outputHeight, width: geometry.outputWidth, channels: geometry.channels)
    }

    func forward(
        _ x: UnsafeBufferPointer<Float>, rows: Int, weight: UnsafeBufferPointer<Float>,
        bias: UnsafeBufferPointer<Float>, into z: UnsafeMutableBufferPointer<Float>, threads: Int
    ) {
        kernelCall { try Pooling.averageForward(geometry, batch: rows, input: x, output: z, threads: threads) }
    }

    func backwardInput(
        _ dz: UnsafeBufferPointer<Float>, rows: Int, weight: UnsafeBufferPointer<Float>,
        into dx: UnsafeMutableBufferPointer<Float>, threads: Int
    ) {
        kernelCall {
            try Pooling.averageBackward(geometry, batch: rows, outputGradient: dz, into: dx, threads: threads)
        }
    }
}

/// A `global_avg_pool2d` layer: H×W×C → C, each channel `(+0 + every pixel in row-major order) /
/// Float(H·W)`; backward assigns `dY / Float(H·W)` to every pixel of the channel. Images are
/// split between threads. Stateless.
final class GlobalAvgPoolLayer: WeightlessEngineLayer {
    let info: LayerInfo
    let inputShape: TensorShape
    let outputShape: TensorShape
    private let image: (height: Int, width: Int, channels: Int)

    init(info: LayerInfo) {
        self.info = info
        image = declaredImage(info)
        inputShape = .image(height: image.height, width: image.width, channels: image.channels)
        outputShape = .flat(image.channels)
    }

    func forward(
        _ x: UnsafeBufferPointer<Float>, rows: Int, weight: UnsafeBufferPointer<Float>,
        bias: UnsafeBufferPointer<Float>, into z: UnsafeMutableBufferPointer<Float>, threads: Int
    ) {
        kernelCall {
            try Pooling.globalAverageForward(
                height: image.height, width: image.width, channels: image.channels, batch: rows, input: x, output: z,
                threads: threads)
        }
    }

    func backwardInput(
        _ dz: UnsafeBufferPointer<Float>, rows: Int, weight: UnsafeBufferPointer<Float>,
        into dx: UnsafeMutableBufferPointer<Float>, threads: Int
    ) {
        kernelCall {
            try Pooling.globalAverageBackward(
                height: image.height, width: image.width, channels: image.channels, batch: rows, outputGradient: dz,
                into: dx, threads: threads)
        }
    }
}

/// A `flatten` layer: H×W×C → H·W·C features in NHWC order, which is the order the engine's
/// buffers already hold, so forward and backward are copies (no arithmetic). Stateless.
final class FlattenLayer: WeightlessEngineLayer {
    let info: LayerInfo
    let inputShape: TensorShape
    let outputShape: TensorShape

    init(info: LayerInfo) {
        self.info = info
        let (h, w, c) = declaredImage(info)
        inputShape = .image(height: h, width: w, channels: c)
        outputShape = .flat(inputShape.count)
    }

    func forward(
        _ x: UnsafeBufferPointer<Float>, rows: Int, weight: UnsafeBufferPointer<Float>,
        bias: UnsafeBufferPointer<Float>, into z: UnsafeMutableBufferPointer<Float>, threads: Int
    ) {
        let n = rows * inputShape.count
        precondition(x.count >= n && z.count >= n)
        guard n > 0, let src = x.baseAddress, let dst = z.baseAddress else { return }
        dst.update(from: src, count: n)
    }

    func backwardInput(
        _ dz: UnsafeBufferPointer<Float>, rows: Int, weight: UnsafeBufferPointer<Float>,
        into dx: UnsafeMutableBufferPointer<Float>, threads: Int
    ) {
        let n = rows * inputShape.count
        precondition(dz.count >= n && dx.count >= n)
        guard n > 0, let src = dz.baseAddress, let dst = dx.baseAddress else { return }
        dst.update(from: src, count: n)
    }
}
