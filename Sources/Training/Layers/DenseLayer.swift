import BundleFormat
import Kernels

/// A dense layer in the engine: the products of Specs/determinism.md §4 through ``Gemm``
/// (every output one fused multiply-add chain over the inputs in order; threads split rows or
/// columns of the result, never a sum).
struct DenseLayer: EngineLayer {
    let info: LayerInfo
    var inputCount: Int { info.inputs }
    var outputCount: Int { info.outputs }

    func forward(
        _ x: UnsafePointer<Float>, rows: Int, weight: UnsafeBufferPointer<Float>, bias: UnsafeBufferPointer<Float>,
        into z: UnsafeMutablePointer<Float>, threads: Int
    ) {
        let (inputs, outputs) = (info.inputs, info.outputs)
        for r in 0..<rows { for o in 0..<outputs { z[r * outputs + o] = bias[o] } }
        Gemm.multiply(
            transA: false, transB: true, m: rows, n: outputs, k: inputs,
            a: x, lda: inputs, b: weight.baseAddress!, ldb: inputs,
            c: z, ldc: outputs, accumulate: true, threads: threads)
    }

    func backwardInput(
        _ dz: UnsafePointer<Float>, rows: Int, weight: UnsafeBufferPointer<Float>,
        into dx: UnsafeMutablePointer<Float>, threads: Int
    ) {
        let (inputs, outputs) = (info.inputs, info.outputs)
        Gemm.multiply(
            transA: false, transB: false, m: rows, n: inputs, k: outputs,
            a: dz, lda: outputs, b: weight.baseAddress!, ldb: inputs,
            c: dx, ldc: inputs, accumulate: false, threads: threads)
    }

    func biasGradient(_ dz: UnsafePointer<Float>, rows: Int, into gb: UnsafeMutableBufferPointer<Float>) {
        let outputs = info.outputs
        for o in 0..<outputs {
            var s: Float = 0
            for r in 0..<rows { s += dz[r * outputs + o] }
            gb[o] = s
        }
    }

    func weightGradient(
        _ dz: UnsafePointer<Float>, _ x: UnsafePointer<Float>, rows: Int, into g: UnsafeMutablePointer<Float>,
        threads: Int
    ) {
        let (inputs, outputs) = (info.inputs, info.outputs)
        Gemm.multiply(
            transA: true, transB: false, m: outputs, n: inputs, k: rows,
            a: dz, lda: outputs, b: x, ldb: inputs,
            c: g, ldc: inputs, accumulate: false, threads: threads)
    }

    func updateWeights(
        _ dz: UnsafePointer<Float>, _ x: UnsafePointer<Float>, rows: Int,
        weight: UnsafeMutablePointer<Float>, velocity: UnsafeMutablePointer<Float>,
        mu: Float, lr: Float, l2: Float, threads: Int
    ) {
        let (inputs, outputs) = (info.inputs, info.outputs)
        Gemm.multiplyUpdate(
            transA: true, transB: false, m: outputs, n: inputs, k: rows,
            a: dz, lda: outputs, b: x, ldb: inputs,
            update: Gemm.Update(w: weight, v: velocity, ld: inputs, mu: mu, lr: lr, l2: l2),
            threads: threads)
    }
}
