import BundleFormat
import Kernels

/// A dense layer in the engine: the products of Specs/determinism.md §4 through ``Gemm``
/// (every output one fused multiply-add chain over the inputs in order; threads split rows or
/// columns of the result, never a sum). Stateless.
final class DenseLayer: EngineLayer {
    let info: LayerInfo
    let inputShape: TensorShape
    let outputShape: TensorShape

    init(info: LayerInfo) {
        self.info = info
        inputShape = .flat(info.inputs)
        outputShape = .flat(info.outputs)
    }

    func forward(
        _ x: UnsafeBufferPointer<Float>, rows: Int, weight: UnsafeBufferPointer<Float>,
        bias: UnsafeBufferPointer<Float>, into z: UnsafeMutableBufferPointer<Float>, threads: Int
    ) {
        _ = forward(x, rows: rows, weight: weight, bias: bias, into: z, activation: .linear, threads: threads)
    }

    /// ``forward(_:rows:weight:bias:into:threads:)`` with the activation fused into the product's
    /// epilogue where the kernels have it: relu is applied to each output as its chain completes,
    /// and linear needs nothing. Returns whether `activation` has been applied (false for
    /// logistic, tanh and softmax, which the caller applies as before). The same bits as the
    /// product followed by ``activate(_:_:)``.
    func forward(
        _ x: UnsafeBufferPointer<Float>, rows: Int, weight: UnsafeBufferPointer<Float>,
        bias: UnsafeBufferPointer<Float>, into z: UnsafeMutableBufferPointer<Float>, activation: Activation,
        threads: Int
    ) -> Bool {
        forward(x, rows: rows, weight: weight, bias: bias, into: z, activation: activation, threads: threads) { _, _ in
        }
    }

    /// ``forward(_:rows:weight:bias:into:activation:threads:)``, then `afterBlock(rows, units)`
    /// for each block of z as soon as it is final (activation applied when this returns true),
    /// on the thread that computed it (``Gemm``'s `afterBlock`): a pass over the outputs, such as
    /// the dropout of the layer above, joins the product's parallel region.
    ///
    /// Z = bias broadcast to every row, Z += X·Wᵀ (each output one FMA chain over the inputs in
    /// order, started from its bias: Specs/determinism.md §4.2), then relu if asked, all in the
    /// product's register tiles (``Gemm`` with `bias:relu:`).
    func forward(
        _ x: UnsafeBufferPointer<Float>, rows: Int, weight: UnsafeBufferPointer<Float>,
        bias: UnsafeBufferPointer<Float>, into z: UnsafeMutableBufferPointer<Float>, activation: Activation,
        threads: Int, afterBlock: (_ rows: Range<Int>, _ units: Range<Int>) -> Void
    ) -> Bool {
        let (inputs, outputs) = (info.inputs, info.outputs)
        let relu = activation == .relu
        if rows > 0, let xs = x.baseAddress, let w = weight.baseAddress, let zs = z.baseAddress {
            precondition(bias.count >= outputs, "dense layer: \(bias.count) biases for \(outputs) outputs")
            Gemm.multiply(
                transA: false, transB: true, m: rows, n: outputs, k: inputs,
                a: xs, lda: inputs, b: w, ldb: inputs,
                c: zs, ldc: outputs, bias: bias.baseAddress, relu: relu, threads: threads, afterBlock: afterBlock)
        }
        return relu || activation == .linear
    }

    func backwardInput(
        _ dz: UnsafeBufferPointer<Float>, rows: Int, weight: UnsafeBufferPointer<Float>,
        into dx: UnsafeMutableBufferPointer<Float>, threads: Int
    ) {
        backwardInput(dz, rows: rows, weight: weight, into: dx, threads: threads) { _, _ in }
    }

    /// ``backwardInput(_:rows:weight:into:threads:)``, then `afterBlock(rows, inputs)` for each
    /// block of dx as soon as it is final, on the thread that computed it: the mask and the
    /// activation derivative of the layer below join the product's parallel region and find the
    /// block still in cache.
    func backwardInput(
        _ dz: UnsafeBufferPointer<Float>, rows: Int, weight: UnsafeBufferPointer<Float>,
        into dx: UnsafeMutableBufferPointer<Float>, threads: Int,
        afterBlock: (_ rows: Range<Int>, _ inputs: Range<Int>) -> Void
    ) {
        let (inputs, outputs) = (info.inputs, info.outputs)
        guard rows > 0, let d = dz.baseAddress, let w = weight.baseAddress, let out = dx.baseAddress else { return }
        Gemm.multiply(
            transA: false, transB: false, m: rows, n: inputs, k: outputs,
            a: d, lda: outputs, b: w, ldb: inputs,
            c: out, ldc: inputs, threads: threads, afterBlock: afterBlock)
    }

    /// The bias gradient of the outputs in `units` only, on the calling thread: the same sums,
    /// in the same order, as ``biasGradient(_:rows:into:threads:)`` gives them.
    func biasGradient(
        _ dz: UnsafeBufferPointer<Float>, rows: Int, units: Range<Int>, into gb: UnsafeMutableBufferPointer<Float>
    ) {
        let outputs = info.outputs
        guard !units.isEmpty, let g = gb.baseAddress else { return }
        precondition(units.upperBound <= outputs && gb.count >= outputs, "dense layer: bias gradient out of range")
        (g + units.lowerBound).update(repeating: 0, count: units.count)
        guard rows > 0, let d = dz.baseAddress else { return }
        for r in 0..<rows {
            let row = d + r * outputs
            for o in units { g[o] += row[o] }
        }
    }

    /// gb[o] = +0 + dz[0][o] + dz[1][o] + ... (rows in order, unfused). Rows outer, outputs
    /// inner: every gb[o] sees the same additions in the same order as a loop over the column,
    /// but dz is read sequentially (a column walk strides by the row length, which for 1,024
    /// outputs maps every row to the same L1 set). Threads split the outputs, never a sum.
    func biasGradient(
        _ dz: UnsafeBufferPointer<Float>, rows: Int, into gb: UnsafeMutableBufferPointer<Float>, threads: Int
    ) {
        Parallel.forEachRange(count: info.outputs, threads: threads, minimumCount: 256) { range in
            biasGradient(dz, rows: rows, units: range, into: gb)
        }
    }

    func weightGradient(
        _ dz: UnsafeBufferPointer<Float>, _ x: UnsafeBufferPointer<Float>, rows: Int,
        into g: UnsafeMutableBufferPointer<Float>, threads: Int
    ) {
        let (inputs, outputs) = (info.inputs, info.outputs)
        guard let gs = g.baseAddress else { return }
        guard rows > 0, let d = dz.baseAddress, let xs = x.baseAddress else {
            gs.update(repeating: 0, count: inputs * outputs)
            return
        }
        Gemm.multiply(
            transA: true, transB: false, m: outputs, n: inputs, k: rows,
            a: d, lda: outputs, b: xs, ldb: inputs,
            c: gs, ldc: inputs, accumulate: false, threads: threads)
    }

    func updateWeights(
        _ dz: UnsafeBufferPointer<Float>, _ x: UnsafeBufferPointer<Float>, rows: Int,
        weight: UnsafeMutableBufferPointer<Float>, velocity: UnsafeMutableBufferPointer<Float>,
        mu: Float, lr: Float, l2: Float, threads: Int
    ) {
        let (inputs, outputs) = (info.inputs, info.outputs)
        guard rows > 0, let d = dz.baseAddress, let xs = x.baseAddress, let w = weight.baseAddress,
            let v = velocity.baseAddress
        else { return }
        Gemm.multiplyUpdate(
            transA: true, transB: false, m: outputs, n: inputs, k: rows,
            a: d, lda: outputs, b: xs, ldb: inputs,
            update: Gemm.Update(w: w, v: v, ld: inputs, mu: mu, lr: lr, l2: l2),
            threads: threads)
    }

    /// ``updateWeights(_:_:rows:weight:velocity:mu:lr:l2:threads:)``, then `afterUnits(range)`
    /// for disjoint ranges of units covering all outputs, each once the weight rows of its units
    /// are updated: on the thread that updated them when the product's blocks are whole rows
    /// (``Gemm/blocksAreWholeRows(m:n:k:threads:kernel:minimumParallelFlops:)``), so max-norm and
    /// the bias step join the update's parallel region and find the rows still in cache;
    /// otherwise split over `threads` after the update. Which thread runs a range never matters
    /// for the bits when `afterUnits` keeps each unit's arithmetic within its range.
    func updateWeights(
        _ dz: UnsafeBufferPointer<Float>, _ x: UnsafeBufferPointer<Float>, rows: Int,
        weight: UnsafeMutableBufferPointer<Float>, velocity: UnsafeMutableBufferPointer<Float>,
        mu: Float, lr: Float, l2: Float, threads: Int, afterUnits: (Range<Int>) -> Void
    ) {
        let (inputs, outputs) = (info.inputs, info.outputs)
        guard rows > 0, let d = dz.baseAddress, let xs = x.baseAddress, let w = weight.baseAddress,
            let v = velocity.baseAddress
        else {
            Parallel.forEachRange(count: outputs, threads: threads, minimumCount: 64, afterUnits)
            return
        }
        let wholeRows = Gemm.blocksAreWholeRows(m: outputs, n: inputs, k: rows, threads: threads)
        Gemm.multiplyUpdate(
            transA: true, transB: false, m: outputs, n: inputs, k: rows, a: d, lda: outputs, b: xs, ldb: inputs,
            update: Gemm.Update(w: w, v: v, ld: inputs, mu: mu, lr: lr, l2: l2), threads: threads
        ) { units, _ in if wholeRows { afterUnits(units) } }
        if !wholeRows { Parallel.forEachRange(count: outputs, threads: threads, minimumCount: 64, afterUnits) }
    }
}
