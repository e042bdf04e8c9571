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
        let (inputs, outputs) = (info.inputs, info.outputs)
        guard rows > 0, let xs = x.baseAddress, let w = weight.baseAddress, let zs = z.baseAddress else { return }
        for r in 0..<rows { for o in 0..<outputs { zs[r * outputs + o] = bias[o] } }
        Gemm.multiply(
            transA: false, transB: true, m: rows, n: outputs, k: inputs,
            a: xs, lda: inputs, b: w, ldb: inputs,
            c: zs, ldc: outputs, accumulate: true, threads: threads)
    }

    func backwardInput(
        _ dz: UnsafeBufferPointer<Float>, rows: Int, weight: UnsafeBufferPointer<Float>,
        into dx: UnsafeMutableBufferPointer<Float>, threads: Int
    ) {
        let (inputs, outputs) = (info.inputs, info.outputs)
        guard rows > 0, let d = dz.baseAddress, let w = weight.baseAddress, let out = dx.baseAddress else { return }
        Gemm.multiply(
            transA: false, transB: false, m: rows, n: inputs, k: outputs,
            a: d, lda: outputs, b: w, ldb: inputs,
            c: out, ldc: inputs, accumulate: false, threads: threads)
    }

    /// gb[o] = +0 + dz[0][o] + dz[1][o] + ... (rows in order, unfused).
    func biasGradient(
        _ dz: UnsafeBufferPointer<Float>, rows: Int, into gb: UnsafeMutableBufferPointer<Float>, threads: Int
    ) {
        let outputs = info.outputs
        for o in 0..<outputs {
            var s: Float = 0
            for r in 0..<rows { s += dz[r * outputs + o] }
            gb[o] = s
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
}
