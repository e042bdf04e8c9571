import CKernels

/// Deterministic 2-D convolution (Specs/determinism.md, "Convolution and pooling").
///
/// Layouts: activations NHWC (example n's element (h, w, c) at `((h·W + w)·C + c)`, channels
/// fastest, like Keras's channels_last, so Flatten's order is H, then W, then C); weights
/// `[F, KH, KW, C]`, row f being filter f's incoming weights in patch order
/// `k = (i·KW + j)·C + c` (the dense rule: row u = unit u's incoming weights); bias `[F]`.
/// A convolution is then a dense layer over the im2col patches, R = N·OH·OW rows of K = KH·KW·C:
///
///     forward         Y[r, f]  = bias[f], then for k in order: acc = fma(P[r, k], W[f, k], acc)
///     weight gradient dW[f, k] = +0, then for r in order:      acc = fma(dY[r, f], P[r, k], acc)
///     bias gradient   db[f]    = +0, then for r in order:      acc = acc + dY[r, f]
///     input gradient  dP[r, k] = +0, then for f in order:      acc = fma(dY[r, f], W[f, k], acc)
///                     dX[n, h, w, c] = +0, then + dP[r, k] for every (r, k) that read it, r increasing
///
/// where `P[r, k]` is the input element patch k of row r reads, or +0 where it falls in the
/// padding (the zero term stays in the chain). Every kernel path and every thread count gives
/// these bits: threads split outputs (rows of Y, tiles of dW, images of dX), never a sum.
///
/// The fast kernels never write the patch matrix: a register tile reads its patch values
/// straight from the (padded) image ("implicit GEMM", CKernels conv.c). `ConvolutionReference`
/// is the definition above as plain loops.
public enum Convolution {
    /// How windows meet the border (TensorFlow's rule; Keras's `padding` argument).
    public enum Padding: String, Sendable, Hashable, CaseIterable {
        /// No padding: every window lies inside the input; output = (input - window) / stride + 1.
        case valid
        /// output = ceil(input / stride); total padding max((output - 1)·stride + window - input, 0)
        /// per axis, the odd pixel at the end (bottom, right).
        case same
    }

    /// One convolution layer's sizes, validated: every size positive, every tensor within
    /// ``ShapeError/maximumElements``, computed without overflow.
    public struct Geometry: Sendable, Hashable {
        public let inputHeight: Int, inputWidth: Int, channels: Int
        public let kernelHeight: Int, kernelWidth: Int
        public let strideHeight: Int, strideWidth: Int
        public let padding: Padding
        public let filters: Int

        public let outputHeight: Int, outputWidth: Int
        /// Padding rows above and below, columns left and right (all 0 for `.valid`).
        public let padTop: Int, padBottom: Int, padLeft: Int, padRight: Int
        /// K = kernelHeight·kernelWidth·channels: one patch, one row of the weights.
        public let patchSize: Int
        /// Elements of one example's input (H·W·C) and output (OH·OW·F).
        public let inputCount: Int, outputCount: Int
        /// Elements of the weights, F·K.
        public let weightCount: Int
        /// Elements of one padded input image, (H + top + bottom)·(W + left + right)·C.
        let paddedCount: Int

        public init(
            inputHeight: Int, inputWidth: Int, channels: Int,
            kernelHeight: Int, kernelWidth: Int,
            strideHeight: Int = 1, strideWidth: Int = 1,
            padding: Padding = .valid, filters: Int
        ) throws(ShapeError) {
            self.inputHeight = try Sizes.positive(inputHeight, "inputHeight")
            self.inputWidth = try Sizes.positive(inputWidth, "inputWidth")
            self.channels = try Sizes.positive(channels, "channels")
            self.kernelHeight = try Sizes.positive(kernelHeight, "kernelHeight")
            self.kernelWidth = try Sizes.positive(kernelWidth, "kernelWidth")
            self.strideHeight = try Sizes.positive(strideHeight, "strideHeight")
            self.strideWidth = try Sizes.positive(strideWidth, "strideWidth")
            self.filters = try Sizes.positive(filters, "filters")
            self.padding = padding
            let v = try Sizes.axis(
                input: inputHeight, window: kernelHeight, stride: strideHeight, padding: padding,
                names: ("kernelHeight", "height"))
            let h = try Sizes.axis(
                input: inputWidth, window: kernelWidth, stride: strideWidth, padding: padding,
                names: ("kernelWidth", "width"))
            (outputHeight, padTop, padBottom) = v
            (outputWidth, padLeft, padRight) = h
            inputCount = try Sizes.product([inputHeight, inputWidth, channels], "input")
            outputCount = try Sizes.product([outputHeight, outputWidth, filters], "output")
            patchSize = try Sizes.product([kernelHeight, kernelWidth, channels], "patch")
            weightCount = try Sizes.product([filters, patchSize], "weights")
            paddedCount = try Sizes.product(
                [inputHeight + padTop + padBottom, inputWidth + padLeft + padRight, channels], "padded input")
            // The packed copies the kernels read: weights in panels of 16 filters (forward) and
            // rows padded to 16 patch elements (input gradient).
            _ = try Sizes.product([(filters + 15) / 16 * 16, patchSize], "packed weights")
            _ = try Sizes.product([filters, (patchSize + 15) / 16 * 16], "packed weights")
        }

        var isPadded: Bool { padTop + padBottom + padLeft + padRight > 0 }

        /// The C kernels' view of `batch` images of the padded input.
        func dims(batch: Int) -> dm_conv_dims {
            dm_conv_dims(
                n: batch, h: inputHeight + padTop + padBottom, w: inputWidth + padLeft + padRight, c: channels,
                kh: kernelHeight, kw: kernelWidth, sh: strideHeight, sw: strideWidth,
                oh: outputHeight, ow: outputWidth, f: filters)
        }

        /// Checks a batch size against every tensor the batched functions touch.
        func checkBatch(_ batch: Int) throws(ShapeError) {
            _ = try Sizes.batch(batch)
            _ = try Sizes.product([batch, inputCount], "input")
            _ = try Sizes.product([batch, outputCount], "output")
            if isPadded { _ = try Sizes.product([batch, paddedCount], "padded input") }
        }
    }

    /// Memory the functions reuse from call to call (padded input, packed weights, per-thread
    /// buffers), so a training step allocates nothing once the largest layer has run. Grows to
    /// the largest size asked for; never shrinks. Not thread-safe: one workspace per caller that
    /// runs convolutions concurrently (the functions themselves split work over the pool).
    public final class Workspace {
        private var slots: [(pointer: UnsafeMutableRawPointer, bytes: Int)] = []

        public init() {}

        deinit {
            for slot in slots { slot.pointer.deallocate() }
        }

        /// Slot `index`'s memory, at least `count` elements of `T`, 64-byte aligned. The contents
        /// are unspecified (whatever an earlier call left).
        func buffer<T>(_ index: Int, _ count: Int, as _: T.Type = T.self) -> UnsafeMutablePointer<T> {
            while slots.count <= index {
                slots.append((UnsafeMutableRawPointer.allocate(byteCount: 64, alignment: 64), 64))
            }
            // `count` is bounded by the caller's validated sizes (at most a few times
            // maximumElements floats), far from overflowing Int.
            let bytes = max(64, (count * MemoryLayout<T>.stride + 63) & ~63)
            if slots[index].bytes < bytes {
                slots[index].pointer.deallocate()
                slots[index] = (UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64), bytes)
            }
            return slots[index].pointer.bindMemory(to: T.self, capacity: count)
        }

        enum Slot: Int {
            case padded = 0, packedWeights, packedBias, offsets, scratch
        }
    }

    // MARK: - Forward

    /// `output [batch, OH, OW, F]` = the convolution of `input [batch, H, W, C]` with
    /// `weights [F, KH, KW, C]` plus `bias [F]`: each element one FMA chain starting at the bias,
    /// over the patch in order k = (i·KW + j)·C + c (padding contributes +0 terms). Output rows
    /// (pixels) are split between `threads` workers in tiles of 6; products of fewer than
    /// `minimumParallelFlops` run on the calling thread. Same bits for every thread count and
    /// kernel path.
    public static func forward(
        _ g: Geometry, batch: Int,
        input: UnsafeBufferPointer<Float>, weights: UnsafeBufferPointer<Float>, bias: UnsafeBufferPointer<Float>,
        output: UnsafeMutableBufferPointer<Float>,
        workspace: Workspace, threads: Int, kernel: Gemm.Kernel = .automatic,
        minimumParallelFlops: Int = Gemm.defaultMinimumParallelFlops
    ) throws(ShapeError) {
        try g.checkBatch(batch)
        try Sizes.buffer(input.count, batch * g.inputCount, "input")
        try Sizes.buffer(weights.count, g.weightCount, "weights")
        try Sizes.buffer(bias.count, g.filters, "bias")
        try Sizes.buffer(output.count, batch * g.outputCount, "output")
        guard batch > 0, let out = output.baseAddress, let w = weights.baseAddress, let b = bias.baseAddress,
            let inputBase = input.baseAddress
        else { return }

        let x = paddedInput(g, batch: batch, input: inputBase, workspace: workspace, threads: threads)
        let K = g.patchSize, F = g.filters, panels = (F + 15) / 16
        // Weights as panels of 16 filters, [K][16] each, zero-filled past F; bias likewise.
        let wp = workspace.buffer(Workspace.Slot.packedWeights.rawValue, panels * K * 16, as: Float.self)
        let bp = workspace.buffer(Workspace.Slot.packedBias.rawValue, panels * 16, as: Float.self)
        for p in 0..<panels {
            for q in 0..<16 {
                let f = p * 16 + q
                bp[p * 16 + q] = f < F ? b[f] : 0
                let panel = wp + p * K * 16
                if f < F {
                    for k in 0..<K { panel[k * 16 + q] = w[f * K + k] }
                } else {
                    for k in 0..<K { panel[k * 16 + q] = 0 }
                }
            }
        }
        let offsets = patchOffsets(g, workspace: workspace)
        let rows = batch * g.outputHeight * g.outputWidth
        let tiles = (rows + 5) / 6
        let workers = workerCount(
            threads: threads, units: tiles, flops: 2.0 * Double(rows) * Double(F) * Double(K),
            minimum: minimumParallelFlops)
        let code = kernel.code
        withUnsafePointer(to: g.dims(batch: batch)) { dims in
            split(workers) { part in
                let r0 = min(rows, tiles * part / workers * 6)
                let r1 = min(rows, tiles * (part + 1) / workers * 6)
                dm_conv_forward(code, dims, x, offsets, wp, bp, out, r0, r1)
            }
        }
    }

    // MARK: - Gradients

    /// `weightGradient [F, K]` (row stride `K`) = dYᵀ · P: each element one FMA chain over the
    /// rows r = (n, oh, ow) in increasing order, from +0 (padding terms included). dW is cut into
    /// tiles of at most 6 patch elements x 16 filters, split between `threads` workers; each
    /// tile's chain over all rows runs on one worker.
    ///
    /// With `biasGradient`, the bias gradient (the bits of
    /// ``biasGradient(_:batch:outputGradient:into:threads:kernel:minimumParallelFlops:)``)
    /// comes out of the same pass over dY: it is one more column of the product whose patch value
    /// is 1, and `fma(dy, 1, acc)` rounds exactly like the unfused `acc + dy`.
    public static func weightGradient(
        _ g: Geometry, batch: Int,
        input: UnsafeBufferPointer<Float>, outputGradient: UnsafeBufferPointer<Float>,
        into weightGradient: UnsafeMutableBufferPointer<Float>,
        biasGradient: UnsafeMutableBufferPointer<Float>? = nil,
        workspace: Workspace, threads: Int, kernel: Gemm.Kernel = .automatic,
        minimumParallelFlops: Int = Gemm.defaultMinimumParallelFlops
    ) throws(ShapeError) {
        try Sizes.buffer(weightGradient.count, g.weightCount, "weightGradient")
        guard let dw = weightGradient.baseAddress else { return }
        try runWeightGradient(
            g, batch: batch, input: input, outputGradient: outputGradient, dw: dw, update: nil,
            biasGradient: biasGradient, workspace: workspace, threads: threads, kernel: kernel,
            minimumParallelFlops: minimumParallelFlops)
    }

    /// The momentum-SGD update fused into the weight-gradient product, as dense layers do
    /// (``Gemm/multiplyUpdate``, `dm_sgemm_update_path`): each element g of dW (the chain of
    /// the `weightGradient` that writes into a buffer)
    /// is consumed, as soon as its tile's chain is complete, by `v = mu·v - lr·(g + l2·w)`
    /// (`v = mu·v - lr·g` when l2 is 0), then `w = w + v`, every operation rounded, at
    /// `update.w[f·update.ld + k]` and `update.v[...]`; dW is never stored. The same bits as the
    /// gradient followed by that update as a loop. `update.w` and `update.v` must hold F rows of
    /// `update.ld ≥ K` elements; the weights the caller still needs (the input gradient reads
    /// W before its update) must be used first. `biasGradient`, if given, receives the bias
    /// gradient (not updated: the caller updates biases, as for dense layers).
    public static func weightGradient(
        _ g: Geometry, batch: Int,
        input: UnsafeBufferPointer<Float>, outputGradient: UnsafeBufferPointer<Float>,
        update: Gemm.Update, biasGradient: UnsafeMutableBufferPointer<Float>? = nil,
        workspace: Workspace, threads: Int, kernel: Gemm.Kernel = .automatic,
        minimumParallelFlops: Int = Gemm.defaultMinimumParallelFlops
    ) throws(ShapeError) {
        guard update.ld >= g.patchSize else {
            throw ShapeError(
                .bufferTooSmall, "update.ld", "is \(update.ld), needs at least the patch size \(g.patchSize)")
        }
        try runWeightGradient(
            g, batch: batch, input: input, outputGradient: outputGradient, dw: nil, update: update,
            biasGradient: biasGradient, workspace: workspace, threads: threads, kernel: kernel,
            minimumParallelFlops: minimumParallelFlops)
    }

    private static func runWeightGradient(
        _ g: Geometry, batch: Int,
        input: UnsafeBufferPointer<Float>, outputGradient: UnsafeBufferPointer<Float>,
        dw: UnsafeMutablePointer<Float>?, update: Gemm.Update?, biasGradient: UnsafeMutableBufferPointer<Float>?,
        workspace: Workspace, threads: Int, kernel: Gemm.Kernel, minimumParallelFlops: Int
    ) throws(ShapeError) {
        try g.checkBatch(batch)
        try Sizes.buffer(input.count, batch * g.inputCount, "input")
        try Sizes.buffer(outputGradient.count, batch * g.outputCount, "outputGradient")
        if let biasGradient { try Sizes.buffer(biasGradient.count, g.filters, "biasGradient") }
        let db = biasGradient?.baseAddress
        let rows = batch * g.outputHeight * g.outputWidth
        // With no rows every chain is empty: dW = +0 (and the update sees g = +0); the kernel
        // then reads neither x nor dy, which may be this dummy.
        let x: UnsafePointer<Float>, dy: UnsafePointer<Float>
        if let inputBase = input.baseAddress, let dyBase = outputGradient.baseAddress, batch > 0 {
            x = paddedInput(g, batch: batch, input: inputBase, workspace: workspace, threads: threads)
            dy = dyBase
        } else {
            x = UnsafePointer(Self.nothing)
            dy = UnsafePointer(Self.nothing)
        }
        let offsets = patchOffsets(g, workspace: workspace)
        let dims = g.dims(batch: batch)
        let tiles = withUnsafePointer(to: dims) { dm_conv_weight_grad_tiles($0, db == nil ? 0 : 1) }
        let scratch = workspace.buffer(Workspace.Slot.scratch.rawValue, tiles * 96, as: Float.self)
        let workers = workerCount(
            threads: threads, units: tiles,
            flops: 2.0 * Double(rows) * Double(g.filters) * Double(g.patchSize), minimum: minimumParallelFlops)
        let code = kernel.code
        let u = update.map { dm_update(w: $0.w, v: $0.v, ld: $0.ld, mu: $0.mu, lr: $0.lr, l2: $0.l2) }
        withUnsafePointer(to: dims) { dims in
            withUnsafePointer(to: u ?? dm_update()) { up in
                let up = u == nil ? nil : up
                split(workers) { part in
                    let t0 = tiles * part / workers, t1 = tiles * (part + 1) / workers
                    dm_conv_weight_grad(code, dims, x, offsets, dy, t0, t1, scratch + t0 * 96, dw, g.patchSize, up, db)
                }
            }
        }
    }

    /// `biasGradient [F]`: db[f] = +0, then + dY[r, f] for the rows r in increasing order
    /// (float32, unfused). Columns are split between workers in blocks of 32.
    public static func biasGradient(
        _ g: Geometry, batch: Int, outputGradient: UnsafeBufferPointer<Float>,
        into biasGradient: UnsafeMutableBufferPointer<Float>,
        threads: Int, kernel: Gemm.Kernel = .automatic,
        minimumParallelFlops: Int = Gemm.defaultMinimumParallelFlops
    ) throws(ShapeError) {
        try g.checkBatch(batch)
        try Sizes.buffer(outputGradient.count, batch * g.outputCount, "outputGradient")
        try Sizes.buffer(biasGradient.count, g.filters, "biasGradient")
        guard let db = biasGradient.baseAddress else { return }
        let rows = batch * g.outputHeight * g.outputWidth, F = g.filters
        guard let dy = outputGradient.baseAddress, rows > 0 else {
            db.update(repeating: 0, count: F)
            return
        }
        let blocks = (F + 31) / 32
        let workers = workerCount(
            threads: threads, units: blocks, flops: Double(rows) * Double(F),
            minimum: minimumParallelFlops)
        let code = kernel.code
        split(workers) { part in
            let f0 = min(F, blocks * part / workers * 32), f1 = min(F, blocks * (part + 1) / workers * 32)
            if f1 > f0 { dm_conv_bias_grad(code, rows, F, dy, db, f0, f1) }
        }
    }

    /// `inputGradient [batch, H, W, C]`: dP = dY · W (each element one FMA chain over the filters
    /// in order, from +0), then col2im: each input element = +0 plus the dP[r, k] that read it,
    /// added in increasing r (one patch reads an element at most once). Images are split between
    /// workers; dP is computed 6 rows at a time into a per-worker buffer and never stored whole.
    public static func inputGradient(
        _ g: Geometry, batch: Int,
        outputGradient: UnsafeBufferPointer<Float>, weights: UnsafeBufferPointer<Float>,
        into inputGradient: UnsafeMutableBufferPointer<Float>,
        workspace: Workspace, threads: Int, kernel: Gemm.Kernel = .automatic,
        minimumParallelFlops: Int = Gemm.defaultMinimumParallelFlops
    ) throws(ShapeError) {
        try g.checkBatch(batch)
        try Sizes.buffer(outputGradient.count, batch * g.outputCount, "outputGradient")
        try Sizes.buffer(weights.count, g.weightCount, "weights")
        try Sizes.buffer(inputGradient.count, batch * g.inputCount, "inputGradient")
        guard batch > 0, let dx = inputGradient.baseAddress, let dy = outputGradient.baseAddress,
            let w = weights.baseAddress
        else { return }
        let K = g.patchSize, F = g.filters, kp = (K + 15) / 16 * 16
        // Weights with rows padded to a multiple of 16 patch elements (zeros).
        let wpad = workspace.buffer(Workspace.Slot.packedWeights.rawValue, F * kp, as: Float.self)
        for f in 0..<F {
            (wpad + f * kp).update(from: w + f * K, count: K)
            (wpad + f * kp + K).update(repeating: 0, count: kp - K)
        }
        let workers = workerCount(
            threads: threads, units: batch,
            flops: 2.0 * Double(batch * g.outputHeight * g.outputWidth) * Double(F) * Double(K),
            minimum: minimumParallelFlops)
        // Per worker: 6 rows of dP, and a padded image to add into when there is padding.
        let perWorker = (6 * kp + (g.isPadded ? g.paddedCount : 0) + 15) / 16 * 16
        let scratch = workspace.buffer(Workspace.Slot.scratch.rawValue, workers * perWorker, as: Float.self)
        let code = kernel.code
        withUnsafePointer(to: g.dims(batch: batch)) { dims in
            split(workers) { part in
                let n0 = batch * part / workers, n1 = batch * (part + 1) / workers
                dm_conv_input_grad(
                    code, dims, dy, wpad, kp, g.padTop, g.padLeft, g.inputHeight, g.inputWidth,
                    dx, n0, n1, scratch + part * perWorker)
            }
        }
    }

    // MARK: - Helpers

    /// A valid address for an operand that is not read (a batch of 0 examples).
    nonisolated(unsafe) private static let nothing = UnsafeMutablePointer<Float>.allocate(capacity: 1)

    /// The input with its padding as zeros (a copy in the workspace), or the input itself when
    /// there is no padding. Images are split between workers (moves only).
    private static func paddedInput(
        _ g: Geometry, batch: Int, input: UnsafePointer<Float>, workspace: Workspace, threads: Int
    ) -> UnsafePointer<Float> {
        guard g.isPadded else { return input }
        let hp = g.inputHeight + g.padTop + g.padBottom, wp = g.inputWidth + g.padLeft + g.padRight
        let c = g.channels
        let x = workspace.buffer(Workspace.Slot.padded.rawValue, batch * g.paddedCount, as: Float.self)
        let workers = workerCount(
            threads: threads, units: batch, flops: Double(batch * g.paddedCount),
            minimum: 1 << 16)
        split(workers) { part in
            for n in (batch * part / workers)..<(batch * (part + 1) / workers) {
                let dst = x + n * g.paddedCount, src = input + n * g.inputCount
                for h in 0..<hp {
                    let row = dst + h * wp * c
                    let inside = h >= g.padTop && h < g.padTop + g.inputHeight
                    guard inside else {
                        row.update(repeating: 0, count: wp * c)
                        continue
                    }
                    row.update(repeating: 0, count: g.padLeft * c)
                    (row + g.padLeft * c).update(from: src + (h - g.padTop) * g.inputWidth * c, count: g.inputWidth * c)
                    (row + (g.padLeft + g.inputWidth) * c).update(repeating: 0, count: g.padRight * c)
                }
            }
        }
        return UnsafePointer(x)
    }

    /// offsets[k] for k = (i·KW + j)·C + c: (i·Wp + j)·C + c, patch element k's distance from
    /// the patch's first element in the padded input.
    private static func patchOffsets(_ g: Geometry, workspace: Workspace) -> UnsafeMutablePointer<Int> {
        let wp = g.inputWidth + g.padLeft + g.padRight, c = g.channels
        let offsets = workspace.buffer(Workspace.Slot.offsets.rawValue, g.patchSize, as: Int.self)
        for i in 0..<g.kernelHeight {
            for j in 0..<g.kernelWidth {
                for cc in 0..<c { offsets[(i * g.kernelWidth + j) * c + cc] = (i * wp + j) * c + cc }
            }
        }
        return offsets
    }
}

/// How many workers share `units` independent pieces of work: at most `threads` and `units`,
/// and 1 below `minimum` floating-point operations (dispatch would cost more than it saves).
/// Never changes a result.
func workerCount(threads: Int, units: Int, flops: Double, minimum: Int) -> Int {
    if flops < Double(minimum) { return 1 }
    return max(1, min(threads, units))
}

/// Runs `body(part)` for part in 0 ..< parts on the kernels' pool (CKernels `dm_parallel_for`);
/// inline when parts is 1. Parts must write disjoint memory.
func split(_ parts: Int, _ body: (Int) -> Void) {
    if parts <= 1 {
        body(0)
        return
    }
    withoutActuallyEscaping(body) { body in
        let job = SplitJob(body: body)
        withUnsafePointer(to: job) { job in
            dm_parallel_for(
                parts,
                { context, i in
                    context!.assumingMemoryBound(to: SplitJob.self).pointee.body(i)
                }, UnsafeMutableRawPointer(mutating: job))
        }
    }
}

private struct SplitJob {
    let body: (Int) -> Void
}
