import CKernels

/// Deterministic 2-D pooling over NHWC activations (Specs/determinism.md, "Convolution and
/// pooling"). Windows are clipped to the image: padding is never a value, only a position.
///
///     max      the first in-image element of the window (row-major) starts; a later one
///              replaces it only if strictly greater (first maximum wins; NaN never replaces);
///              backward: dX = +0, then dX[argmax] += dY for outputs in increasing order
///     average  (+0 + the in-image elements, row-major, unfused) / count of in-image elements;
///              backward: dX = +0, then each in-image element += dY / count (one quotient per
///              output), outputs in increasing order
///     global   (+0 + every pixel, row-major) / Float(H·W) per channel;
///              backward: every element = dY / Float(H·W) (assigned)
///
/// Images are split between `threads` workers; every kernel path gives the same bits (pooling
/// has no multiply-add: comparisons are exact, and each sum's order is the one above).
public enum Pooling {
    /// One pooling layer's sizes, validated like ``Convolution/Geometry``.
    public struct Geometry: Sendable, Hashable {
        public let inputHeight: Int, inputWidth: Int, channels: Int
        public let poolHeight: Int, poolWidth: Int
        public let strideHeight: Int, strideWidth: Int
        public let padding: Convolution.Padding
        public let outputHeight: Int, outputWidth: Int
        /// Padding rows above and below, columns left and right (all 0 for `.valid`).
        public let padTop: Int, padBottom: Int, padLeft: Int, padRight: Int
        /// Elements of one example's input (H·W·C) and output (OH·OW·C).
        public let inputCount: Int, outputCount: Int

        /// The largest window area: average pooling divides by the count of in-image elements
        /// as a float, exact up to 2^24.
        public static let maximumWindow = 1 << 24

        /// Strides default to the pool size (Keras's `strides=None`).
        public init(
            inputHeight: Int, inputWidth: Int, channels: Int, poolHeight: Int, poolWidth: Int,
            strideHeight: Int? = nil, strideWidth: Int? = nil, padding: Convolution.Padding = .valid
        ) throws(ShapeError) {
            self.inputHeight = try Sizes.positive(inputHeight, "inputHeight")
            self.inputWidth = try Sizes.positive(inputWidth, "inputWidth")
            self.channels = try Sizes.positive(channels, "channels")
            self.poolHeight = try Sizes.positive(poolHeight, "poolHeight")
            self.poolWidth = try Sizes.positive(poolWidth, "poolWidth")
            self.strideHeight = try Sizes.positive(strideHeight ?? poolHeight, "strideHeight")
            self.strideWidth = try Sizes.positive(strideWidth ?? poolWidth, "strideWidth")
            self.padding = padding
            let area = try Sizes.product([poolHeight, poolWidth], "pool")
            guard area <= Self.maximumWindow else {
                throw ShapeError(
                    .tooLarge, "pool",
                    "a window of \(poolHeight) x \(poolWidth) exceeds the limit of \(Self.maximumWindow) elements")
            }
            let v = try Sizes.axis(
                input: inputHeight, window: poolHeight, stride: self.strideHeight, padding: padding,
                names: ("poolHeight", "height"))
            let h = try Sizes.axis(
                input: inputWidth, window: poolWidth, stride: self.strideWidth, padding: padding,
                names: ("poolWidth", "width"))
            (outputHeight, padTop, padBottom) = v
            (outputWidth, padLeft, padRight) = h
            inputCount = try Sizes.product([inputHeight, inputWidth, channels], "input")
            outputCount = try Sizes.product([outputHeight, outputWidth, channels], "output")
        }

        var dims: dm_pool_dims {
            dm_pool_dims(
                n: 0, h: inputHeight, w: inputWidth, c: channels, ph: poolHeight, pw: poolWidth,
                sh: strideHeight, sw: strideWidth, pt: padTop, pl: padLeft, oh: outputHeight, ow: outputWidth)
        }

        func checkBatch(_ batch: Int) throws(ShapeError) {
            _ = try Sizes.batch(batch)
            _ = try Sizes.product([batch, inputCount], "input")
            _ = try Sizes.product([batch, outputCount], "output")
        }
    }

    /// Max pooling: `output [batch, OH, OW, C]`, and `argmax` (same shape) the index within its
    /// image, (h·W + w)·C + c, of the element each output took (the first maximum in row-major
    /// order within the window), for ``maxBackward``.
    public static func maxForward(
        _ g: Geometry, batch: Int, input: UnsafeBufferPointer<Float>,
        output: UnsafeMutableBufferPointer<Float>, argmax: UnsafeMutableBufferPointer<Int32>,
        threads: Int, kernel: Gemm.Kernel = .automatic
    ) throws(ShapeError) {
        try g.checkBatch(batch)
        try Sizes.buffer(input.count, batch * g.inputCount, "input")
        try Sizes.buffer(output.count, batch * g.outputCount, "output")
        try Sizes.buffer(argmax.count, batch * g.outputCount, "argmax")
        guard batch > 0, let x = input.baseAddress, let y = output.baseAddress, let a = argmax.baseAddress else {
            return
        }
        let code = kernel.code
        let workers = workerCount(threads: threads, units: batch, flops: Double(batch * g.inputCount), minimum: 1 << 15)
        withUnsafePointer(to: g.dims) { d in
            split(workers) { part in
                dm_maxpool_forward(code, d, x, y, a, batch * part / workers, batch * (part + 1) / workers)
            }
        }
    }

    /// Max pooling's backward: `inputGradient` = +0, then for outputs in increasing
    /// (n, oh, ow, c) order, `inputGradient[argmax] += outputGradient` (unfused). An index
    /// outside its image (an `argmax` not written by ``maxForward`` for this geometry) is
    /// refused: the function throws ``ShapeError/Code/invalidIndex`` after skipping it.
    public static func maxBackward(
        _ g: Geometry, batch: Int, outputGradient: UnsafeBufferPointer<Float>,
        argmax: UnsafeBufferPointer<Int32>, into inputGradient: UnsafeMutableBufferPointer<Float>,
        threads: Int, kernel: Gemm.Kernel = .automatic
    ) throws(ShapeError) {
        try g.checkBatch(batch)
        try Sizes.buffer(outputGradient.count, batch * g.outputCount, "outputGradient")
        try Sizes.buffer(argmax.count, batch * g.outputCount, "argmax")
        try Sizes.buffer(inputGradient.count, batch * g.inputCount, "inputGradient")
        guard batch > 0, let dy = outputGradient.baseAddress, let a = argmax.baseAddress,
            let dx = inputGradient.baseAddress
        else { return }
        let code = kernel.code
        let workers = workerCount(threads: threads, units: batch, flops: Double(batch * g.inputCount), minimum: 1 << 15)
        var bad = [Int](repeating: 0, count: workers)
        bad.withUnsafeMutableBufferPointer { bad in
            withUnsafePointer(to: g.dims) { d in
                split(workers) { part in
                    bad[part] = dm_maxpool_backward(
                        code, d, dy, a, dx, batch * part / workers, batch * (part + 1) / workers)
                }
            }
        }
        let invalid = bad.reduce(0, +)
        guard invalid == 0 else {
            throw ShapeError(
                .invalidIndex, "argmax", "\(invalid) indices lie outside their image of \(g.inputCount) elements")
        }
    }

    /// Average pooling: each output = (+0 + the window's in-image elements in row-major order,
    /// unfused) / their count (one float32 division; with "same" padding only in-image pixels
    /// count, as in Keras).
    public static func averageForward(
        _ g: Geometry, batch: Int, input: UnsafeBufferPointer<Float>,
        output: UnsafeMutableBufferPointer<Float>, threads: Int, kernel: Gemm.Kernel = .automatic
    ) throws(ShapeError) {
        try g.checkBatch(batch)
        try Sizes.buffer(input.count, batch * g.inputCount, "input")
        try Sizes.buffer(output.count, batch * g.outputCount, "output")
        guard batch > 0, let x = input.baseAddress, let y = output.baseAddress else { return }
        let code = kernel.code
        let workers = workerCount(threads: threads, units: batch, flops: Double(batch * g.inputCount), minimum: 1 << 15)
        withUnsafePointer(to: g.dims) { d in
            split(workers) { part in
                dm_avgpool_forward(code, d, x, y, batch * part / workers, batch * (part + 1) / workers)
            }
        }
    }

    /// Average pooling's backward: `inputGradient` = +0, then for outputs in increasing
    /// (oh, ow) order, each in-image element of the window += dY / count (the same quotient for
    /// every element of one window), unfused.
    public static func averageBackward(
        _ g: Geometry, batch: Int, outputGradient: UnsafeBufferPointer<Float>,
        into inputGradient: UnsafeMutableBufferPointer<Float>, threads: Int, kernel: Gemm.Kernel = .automatic
    ) throws(ShapeError) {
        try g.checkBatch(batch)
        try Sizes.buffer(outputGradient.count, batch * g.outputCount, "outputGradient")
        try Sizes.buffer(inputGradient.count, batch * g.inputCount, "inputGradient")
        guard batch > 0, let dy = outputGradient.baseAddress, let dx = inputGradient.baseAddress else { return }
        let code = kernel.code
        let workers = workerCount(threads: threads, units: batch, flops: Double(batch * g.inputCount), minimum: 1 << 15)
        withUnsafePointer(to: g.dims) { d in
            split(workers) { part in
                dm_avgpool_backward(code, d, dy, dx, batch * part / workers, batch * (part + 1) / workers)
            }
        }
    }

    /// Global average pooling: `output [batch, C]`, per channel (+0 + the H·W pixels in
    /// row-major order, unfused) / Float(H·W).
    public static func globalAverageForward(
        height: Int, width: Int, channels: Int, batch: Int, input: UnsafeBufferPointer<Float>,
        output: UnsafeMutableBufferPointer<Float>, threads: Int, kernel: Gemm.Kernel = .automatic
    ) throws(ShapeError) {
        let (hw, c) = try globalSizes(height: height, width: width, channels: channels, batch: batch)
        try Sizes.buffer(input.count, batch * hw * c, "input")
        try Sizes.buffer(output.count, batch * c, "output")
        guard batch > 0, let x = input.baseAddress, let y = output.baseAddress else { return }
        let code = kernel.code, divisor = Float(hw)
        let workers = workerCount(threads: threads, units: batch, flops: Double(batch * hw * c), minimum: 1 << 15)
        split(workers) { part in
            dm_global_avgpool_forward(code, hw, c, divisor, x, y, batch * part / workers, batch * (part + 1) / workers)
        }
    }

    /// Global average pooling's backward: every element of `inputGradient [batch, H, W, C]` is
    /// assigned dY[n, c] / Float(H·W) (one quotient per image and channel).
    public static func globalAverageBackward(
        height: Int, width: Int, channels: Int, batch: Int, outputGradient: UnsafeBufferPointer<Float>,
        into inputGradient: UnsafeMutableBufferPointer<Float>, threads: Int, kernel: Gemm.Kernel = .automatic
    ) throws(ShapeError) {
        let (hw, c) = try globalSizes(height: height, width: width, channels: channels, batch: batch)
        try Sizes.buffer(outputGradient.count, batch * c, "outputGradient")
        try Sizes.buffer(inputGradient.count, batch * hw * c, "inputGradient")
        guard batch > 0, let dy = outputGradient.baseAddress, let dx = inputGradient.baseAddress else { return }
        let code = kernel.code, divisor = Float(hw)
        let workers = workerCount(threads: threads, units: batch, flops: Double(batch * hw * c), minimum: 1 << 15)
        split(workers) { part in
            dm_global_avgpool_backward(
                code, hw, c, divisor, dy, dx, batch * part / workers, batch * (part + 1) / workers)
        }
    }

    private static func globalSizes(height: Int, width: Int, channels: Int, batch: Int) throws(ShapeError) -> (Int, Int)
    {
        let h = try Sizes.positive(height, "height"), w = try Sizes.positive(width, "width")
        let c = try Sizes.positive(channels, "channels")
        let hw = try Sizes.product([h, w], "input")
        _ = try Sizes.product([hw, c], "input")
        _ = try Sizes.batch(batch)
        _ = try Sizes.product([batch, hw, c], "input")
        return (hw, c)
    }
}
