// Bit-exactness and correctness tests of the convolution and pooling kernels against
// Specs/determinism.md "Convolution and pooling". `ConvolutionReference` is the definition as
// plain loops; every kernel path and thread count must reproduce its bits (no tolerances). The
// gradients themselves are checked against central finite differences of a float64 forward pass.

import Kernels
import Testing
import TestRandom

// MARK: - Helpers

/// One convolution test case.
struct ConvCase: Sendable, CustomTestStringConvertible {
    var h: Int, w: Int, c: Int, kh: Int, kw: Int, sh: Int, sw: Int
    var padding: Convolution.Padding
    var f: Int, batch: Int

    var geometry: Convolution.Geometry {
        get throws {
            try Convolution.Geometry(
                inputHeight: h, inputWidth: w, channels: c, kernelHeight: kh, kernelWidth: kw,
                strideHeight: sh, strideWidth: sw, padding: padding, filters: f)
        }
    }
    var testDescription: String {
        "\(batch)x\(h)x\(w)x\(c) k\(kh)x\(kw) s\(sh)x\(sw) \(padding.rawValue) F\(f)"
    }
}

/// Odd sizes, strides 1-3, same and valid, 1x1 kernels, kernels larger than the input (same),
/// C = 1 and C > 1, F below, at and above the 16-filter panel, batch 1 and ragged batches.
private let convCases: [ConvCase] = [
    // the benchmark's first layer
    ConvCase(h: 28, w: 28, c: 1, kh: 3, kw: 3, sh: 1, sw: 1, padding: .valid, f: 16, batch: 3),
    ConvCase(h: 13, w: 13, c: 16, kh: 3, kw: 3, sh: 1, sw: 1, padding: .valid, f: 32, batch: 2),  // and its second
    ConvCase(h: 7, w: 5, c: 3, kh: 3, kw: 2, sh: 2, sw: 1, padding: .same, f: 5, batch: 5),
    ConvCase(h: 9, w: 11, c: 2, kh: 3, kw: 3, sh: 3, sw: 2, padding: .valid, f: 17, batch: 1),
    ConvCase(h: 8, w: 7, c: 4, kh: 1, kw: 1, sh: 1, sw: 1, padding: .valid, f: 33, batch: 2),
    ConvCase(h: 6, w: 6, c: 5, kh: 1, kw: 1, sh: 2, sw: 3, padding: .same, f: 3, batch: 7),
    // kernel larger than the input
    ConvCase(h: 3, w: 2, c: 2, kh: 5, kw: 4, sh: 1, sw: 1, padding: .same, f: 3, batch: 2),
    ConvCase(h: 2, w: 5, c: 1, kh: 7, kw: 3, sh: 2, sw: 3, padding: .same, f: 16, batch: 3),
    ConvCase(h: 10, w: 9, c: 1, kh: 5, kw: 5, sh: 1, sw: 1, padding: .same, f: 1, batch: 4),
    ConvCase(h: 11, w: 12, c: 7, kh: 4, kw: 3, sh: 3, sw: 3, padding: .same, f: 9, batch: 3),
    ConvCase(h: 6, w: 5, c: 16, kh: 2, kw: 2, sh: 2, sw: 2, padding: .valid, f: 16, batch: 2),
    ConvCase(h: 5, w: 5, c: 1, kh: 5, kw: 5, sh: 1, sw: 1, padding: .valid, f: 2, batch: 3),  // one output pixel
    ConvCase(h: 12, w: 4, c: 3, kh: 3, kw: 1, sh: 1, sw: 2, padding: .same, f: 24, batch: 1),
    ConvCase(h: 1, w: 1, c: 9, kh: 3, kw: 3, sh: 1, sw: 1, padding: .same, f: 7, batch: 6),  // 1x1 image, 3x3 kernel
]

/// The results of one convolution on one path.
private struct ConvResults: Sendable {
    var y: [Float], dw: [Float], db: [Float], dx: [Float]
    /// dW and db from one call of weightGradient(into:biasGradient:) (the bias as a product column).
    var dwFused: [Float], dbFused: [Float]

    /// Per result, how many elements differ from `other` (only those that differ).
    func differences(from other: ConvResults) -> [String: Int] {
        [
            "forward": mismatches(y, other.y), "weightGradient": mismatches(dw, other.dw),
            "biasGradient": mismatches(db, other.db), "inputGradient": mismatches(dx, other.dx),
            "weightGradient(biasGradient:)": mismatches(dwFused, other.dwFused),
            "biasGradient (fused)": mismatches(dbFused, other.dbFused),
        ].filter { $0.value != 0 }
    }
}

private struct ConvData: Sendable {
    var x: [Float], w: [Float], b: [Float], dy: [Float]
    init(_ g: Convolution.Geometry, batch: Int, rng: inout SplitMix64) {
        x = rng.values(batch * g.inputCount)
        w = rng.values(g.weightCount)
        b = rng.values(g.filters)
        dy = rng.values(batch * g.outputCount)
    }

    func reference(_ g: Convolution.Geometry, batch: Int) -> ConvResults {
        let dw = ConvolutionReference.weightGradient(g, batch: batch, input: x, outputGradient: dy)
        let db = ConvolutionReference.biasGradient(g, batch: batch, outputGradient: dy)
        return ConvResults(
            y: ConvolutionReference.forward(g, batch: batch, input: x, weights: w, bias: b), dw: dw, db: db,
            dx: ConvolutionReference.inputGradient(g, batch: batch, outputGradient: dy, weights: w),
            dwFused: dw, dbFused: db)
    }

    func fast(
        _ g: Convolution.Geometry, batch: Int, kernel: Gemm.Kernel, threads: Int,
        workspace: Convolution.Workspace = Convolution.Workspace()
    ) throws -> ConvResults {
        var y = [Float](repeating: .nan, count: batch * g.outputCount)
        var dw = [Float](repeating: .nan, count: g.weightCount)
        var db = [Float](repeating: .nan, count: g.filters)
        var dx = [Float](repeating: .nan, count: batch * g.inputCount)
        var dwFused = [Float](repeating: .nan, count: g.weightCount)
        var dbFused = [Float](repeating: .nan, count: g.filters)
        try x.withUnsafeBufferPointer { x in
            try w.withUnsafeBufferPointer { w in
                try dy.withUnsafeBufferPointer { dy in
                    try b.withUnsafeBufferPointer { b in
                        try y.withUnsafeMutableBufferPointer { y in
                            try Convolution.forward(
                                g, batch: batch, input: x, weights: w, bias: b, output: y,
                                workspace: workspace, threads: threads, kernel: kernel,
                                minimumParallelFlops: 0)
                        }
                    }
                    try dw.withUnsafeMutableBufferPointer { dw in
                        try Convolution.weightGradient(
                            g, batch: batch, input: x, outputGradient: dy, into: dw,
                            workspace: workspace, threads: threads, kernel: kernel,
                            minimumParallelFlops: 0)
                    }
                    try dwFused.withUnsafeMutableBufferPointer { dw in
                        try dbFused.withUnsafeMutableBufferPointer { db in
                            try Convolution.weightGradient(
                                g, batch: batch, input: x, outputGradient: dy, into: dw,
                                biasGradient: db, workspace: workspace, threads: threads,
                                kernel: kernel, minimumParallelFlops: 0)
                        }
                    }
                    try db.withUnsafeMutableBufferPointer { db in
                        try Convolution.biasGradient(
                            g, batch: batch, outputGradient: dy, into: db, threads: threads,
                            kernel: kernel, minimumParallelFlops: 0)
                    }
                    try dx.withUnsafeMutableBufferPointer { dx in
                        try Convolution.inputGradient(
                            g, batch: batch, outputGradient: dy, weights: w, into: dx,
                            workspace: workspace, threads: threads, kernel: kernel,
                            minimumParallelFlops: 0)
                    }
                }
            }
        }
        return ConvResults(y: y, dw: dw, db: db, dx: dx, dwFused: dwFused, dbFused: dbFused)
    }
}

// MARK: - Fixtures and float64 helpers

struct PoolCase: Sendable, CustomTestStringConvertible {
    var h: Int, w: Int, c: Int, ph: Int, pw: Int, sh: Int?, sw: Int?
    var padding: Convolution.Padding
    var batch: Int
    var geometry: Pooling.Geometry {
        get throws {
            try Pooling.Geometry(
                inputHeight: h, inputWidth: w, channels: c, poolHeight: ph, poolWidth: pw,
                strideHeight: sh, strideWidth: sw, padding: padding)
        }
    }
    var testDescription: String {
        """
        \(batch)x\(h)x\(w)x\(c) pool\(ph)x\(pw) s\(sh.map(String.init) ?? "=")x\(sw.map(String.init) ?? "=") \
        \(padding.rawValue)
        """
    }
}

private let poolCases: [PoolCase] = [
    PoolCase(h: 26, w: 26, c: 16, ph: 2, pw: 2, sh: nil, sw: nil, padding: .valid, batch: 3),  // the benchmark's
    // odd size: last row/column dropped
    PoolCase(h: 11, w: 11, c: 32, ph: 2, pw: 2, sh: nil, sw: nil, padding: .valid, batch: 2),
    PoolCase(h: 7, w: 9, c: 3, ph: 3, pw: 3, sh: 2, sw: 2, padding: .same, batch: 4),  // overlapping windows
    PoolCase(h: 5, w: 6, c: 9, ph: 3, pw: 2, sh: 1, sw: 1, padding: .same, batch: 2),  // 8 lanes + a tail
    PoolCase(h: 2, w: 3, c: 1, ph: 5, pw: 4, sh: 1, sw: 2, padding: .same, batch: 3),  // window larger than the input
    PoolCase(h: 8, w: 5, c: 17, ph: 2, pw: 3, sh: 3, sw: 1, padding: .valid, batch: 1),
    PoolCase(h: 6, w: 6, c: 8, ph: 1, pw: 1, sh: 2, sw: 2, padding: .same, batch: 5),
    // gaps between windows, a channel tail
    PoolCase(h: 9, w: 7, c: 11, ph: 2, pw: 3, sh: 3, sw: 3, padding: .same, batch: 2),
    // same padding, channels only in the tail
    PoolCase(h: 7, w: 7, c: 3, ph: 2, pw: 2, sh: nil, sw: nil, padding: .same, batch: 2),
]

/// The forward pass in float64 (no rounding to speak of), for central differences.

private func forward64(_ g: Convolution.Geometry, batch: Int, x: [Double], w: [Double], b: [Double]) -> [Double] {
    var y = [Double](repeating: 0, count: batch * g.outputCount)
    for n in 0..<batch {
        for oh in 0..<g.outputHeight {
            for ow in 0..<g.outputWidth {
                for f in 0..<g.filters {
                    var acc = b[f]
                    for i in 0..<g.kernelHeight {
                        for j in 0..<g.kernelWidth {
                            let h = oh * g.strideHeight - g.padTop + i, ww = ow * g.strideWidth - g.padLeft + j
                            guard h >= 0, h < g.inputHeight, ww >= 0, ww < g.inputWidth else { continue }
                            for c in 0..<g.channels {
                                acc +=
                                    x[n * g.inputCount + (h * g.inputWidth + ww) * g.channels + c]
                                    * w[f * g.patchSize + (i * g.kernelWidth + j) * g.channels + c]
                            }
                        }
                    }
                    y[n * g.outputCount + (oh * g.outputWidth + ow) * g.filters + f] = acc
                }
            }
        }
    }
    return y
}

/// ∂L/∂θ_i for L = Σ G·Y by central differences of `loss` (float64), with step `h`.

private func centralDifference(_ theta: [Double], _ i: Int, h: Double, _ loss: ([Double]) -> Double) -> Double {
    var plus = theta, minus = theta
    plus[i] += h
    minus[i] -= h
    return (loss(plus) - loss(minus)) / (2 * h)
}

private func dot(_ a: [Double], _ b: [Float]) -> Double { zip(a, b).reduce(0) { $0 + $1.0 * Double($1.1) } }

/// |analytic - numeric| within float32 accumulation error.

private func close(_ analytic: Float, _ numeric: Double, scale: Double) -> Bool {
    abs(Double(analytic) - numeric) <= 1e-4 * max(1, abs(numeric), scale)
}

private func pool64(_ g: Pooling.Geometry, batch: Int, x: [Double], max isMax: Bool) -> [Double] {
    var y = [Double](repeating: 0, count: batch * g.outputCount)
    for n in 0..<batch {
        for oh in 0..<g.outputHeight {
            for ow in 0..<g.outputWidth {
                let (rows, cols) = ConvolutionReference.window(g, oh: oh, ow: ow)
                for c in 0..<g.channels {
                    var m = -Double.infinity, s = 0.0
                    for h in rows {
                        for w in cols {
                            let v = x[n * g.inputCount + (h * g.inputWidth + w) * g.channels + c]
                            m = max(m, v)
                            s += v
                        }
                    }
                    y[n * g.outputCount + (oh * g.outputWidth + ow) * g.channels + c] =
                        isMax ? m : s / Double(rows.count * cols.count)
                }
            }
        }
    }
    return y
}

/// The tests (a suite, so `swift test --filter ConvolutionTests` selects them).
@Suite struct ConvolutionTests {
    // MARK: - Convolution: bit identity with the reference

    @Test(
        "convolution forward, weight, bias and input gradients equal the reference bit for bit: every path, threads",
        arguments: convCases)
    func convolutionMatchesReference(_ c: ConvCase) throws {
        let g = try c.geometry
        var rng = SplitMix64(state: UInt64(c.h * 1_000_003 + c.w * 10_007 + c.c * 101 + c.kh * 13 + c.f))
        let data = ConvData(g, batch: c.batch, rng: &rng)
        let expected = data.reference(g, batch: c.batch)
        let workspace = Convolution.Workspace()  // reused across paths and thread counts, as in training
        for kernel in kernels {
            for threads in 1...3 {
                let got = try data.fast(g, batch: c.batch, kernel: kernel, threads: threads, workspace: workspace)
                let bad = got.differences(from: expected)
                #expect(bad.isEmpty, "\(c.testDescription) kernel=\(kernel) threads=\(threads): \(bad)")
            }
        }
    }

    @Test(
        """
        the benchmark's layers at batch 100 (conv 3x3x1->16 and 3x3x16->32): paths and threads agree; sampled elements \
        equal the reference
        """)
    func convolutionTrainingShapes() throws {
        var rng = SplitMix64(state: 0xC0_2025)
        for c in [
            ConvCase(h: 28, w: 28, c: 1, kh: 3, kw: 3, sh: 1, sw: 1, padding: .valid, f: 16, batch: 100),
            ConvCase(h: 13, w: 13, c: 16, kh: 3, kw: 3, sh: 1, sw: 1, padding: .same, f: 32, batch: 100),
        ] {
            let g = try c.geometry
            let data = ConvData(g, batch: c.batch, rng: &rng)
            let first = try data.fast(g, batch: c.batch, kernel: .scalar, threads: 1)
            // The whole reference is slow in a debug build: check the scalar path element-wise on a
            // sample (the scalar path is checked in full by the test above).
            let reference = data.reference(g, batch: 1)
            #expect(mismatches(Array(first.y[0..<g.outputCount]), reference.y) == 0)
            #expect(mismatches(Array(first.dx[0..<g.inputCount]), reference.dx) == 0)
            for kernel in kernels where kernel != .scalar {
                for threads in [1, 2, 3] {
                    let bad = try data.fast(g, batch: c.batch, kernel: kernel, threads: threads).differences(
                        from: first)
                    #expect(bad.isEmpty, "\(c.testDescription) kernel=\(kernel) threads=\(threads): \(bad)")
                }
            }
            // dW over all 100 images, element by element for a few (f, k).
            for _ in 0..<6 {
                let f = rng.below(g.filters), k = rng.below(g.patchSize)
                var acc: Float = 0
                for n in 0..<c.batch {
                    for oh in 0..<g.outputHeight {
                        for ow in 0..<g.outputWidth {
                            let d = data.dy[n * g.outputCount + (oh * g.outputWidth + ow) * g.filters + f]
                            acc = acc.addingProduct(
                                d, ConvolutionReference.patch(g, data.x, n: n, oh: oh, ow: ow, k: k))
                        }
                    }
                }
                #expect(first.dw[f * g.patchSize + k].bitPattern == acc.bitPattern, "dW[\(f), \(k)]")
            }
        }
    }

    @Test("batch 0: forward and input gradient write nothing; weight and bias gradients are +0")
    func emptyBatch() throws {
        let g = try ConvCase(h: 5, w: 4, c: 2, kh: 3, kw: 3, sh: 1, sw: 1, padding: .same, f: 3, batch: 0).geometry
        var rng = SplitMix64(state: 5)
        let data = ConvData(g, batch: 0, rng: &rng)
        for kernel in kernels {
            let got = try data.fast(g, batch: 0, kernel: kernel, threads: 2)
            #expect(got.y.isEmpty && got.dx.isEmpty)
            #expect(got.dw.allSatisfy { $0.bitPattern == 0 } && got.db.allSatisfy { $0.bitPattern == 0 })
        }
    }

    @Test("concurrent callers (each with its own workspace, sharing the thread pool) get the reference bits")
    func concurrentCallers() async throws {
        let cases = [convCases[2], convCases[9], convCases[10], convCases[6]]
        var inputs: [(Convolution.Geometry, ConvCase, ConvData, ConvResults)] = []
        for (i, c) in cases.enumerated() {
            let g = try c.geometry
            var rng = SplitMix64(state: 0xC0C0 + UInt64(i))
            let data = ConvData(g, batch: c.batch, rng: &rng)
            inputs.append((g, c, data, data.reference(g, batch: c.batch)))
        }
        let work = inputs
        try await withThrowingTaskGroup(of: Int.self) { group in
            for round in 0..<3 {
                for (g, c, data, expected) in work {
                    group.addTask {
                        let kernel: Gemm.Kernel = round == 1 ? .scalar : .automatic
                        let got = try data.fast(g, batch: c.batch, kernel: kernel, threads: 2)
                        return got.differences(from: expected).values.reduce(0, +)
                    }
                }
            }
            for try await bad in group {
                #expect(bad == 0)
            }
        }
    }

    // MARK: - The tests can tell

    @Test(
        """
        padding terms stay in the chain: bias -0 plus -0 products stays -0 inside, becomes +0 where a +0 padding term \
        is added
        """)
    func paddingZerosStayInTheChain() throws {
        let c = ConvCase(h: 4, w: 5, c: 2, kh: 3, kw: 3, sh: 1, sw: 1, padding: .same, f: 3, batch: 2)
        let g = try c.geometry
        var rng = SplitMix64(state: 9)
        var data = ConvData(g, batch: c.batch, rng: &rng)
        data.x = data.x.map { _ in -0.0 }  // every product -0 · w (w > 0) is -0
        data.w = data.w.map { abs($0) + 0.25 }
        data.b = data.b.map { _ in -0.0 }
        let expected = data.reference(g, batch: c.batch).y
        var interior = 0, border = 0
        for n in 0..<c.batch {
            for oh in 0..<g.outputHeight {
                for ow in 0..<g.outputWidth {
                    let touchesPadding = oh == 0 || ow == 0 || oh == g.outputHeight - 1 || ow == g.outputWidth - 1
                    for f in 0..<g.filters {
                        let bits = expected[n * g.outputCount + (oh * g.outputWidth + ow) * g.filters + f].bitPattern
                        #expect(bits == (touchesPadding ? 0 : 0x8000_0000))
                        if touchesPadding { border += 1 } else { interior += 1 }
                    }
                }
            }
        }
        #expect(interior > 0 && border > 0)
        for kernel in kernels {
            for threads in [1, 2] {
                #expect(mismatches(try data.fast(g, batch: c.batch, kernel: kernel, threads: threads).y, expected) == 0)
            }
        }
    }

    @Test(
        """
        on the test data an unfused forward, and col2im in reverse row order, give different bits: the comparisons \
        have teeth
        """)
    func testsHaveTeeth() throws {
        let c = ConvCase(h: 9, w: 8, c: 5, kh: 3, kw: 3, sh: 1, sw: 1, padding: .same, f: 12, batch: 2)
        let g = try c.geometry
        var rng = SplitMix64(state: 0x7EE7)
        let data = ConvData(g, batch: c.batch, rng: &rng)
        let expected = data.reference(g, batch: c.batch)
        // Unfused: acc = acc + p·w.
        var unfused = [Float](repeating: 0, count: expected.y.count)
        for n in 0..<c.batch {
            for oh in 0..<g.outputHeight {
                for ow in 0..<g.outputWidth {
                    for f in 0..<g.filters {
                        var acc = data.b[f]
                        for k in 0..<g.patchSize {
                            acc =
                                acc + ConvolutionReference.patch(g, data.x, n: n, oh: oh, ow: ow, k: k)
                                * data.w[f * g.patchSize + k]
                        }
                        unfused[n * g.outputCount + (oh * g.outputWidth + ow) * g.filters + f] = acc
                    }
                }
            }
        }
        #expect(mismatches(unfused, expected.y) > unfused.count / 2)
        // col2im with the rows of each image taken in decreasing order.
        var reversed = [Float](repeating: 0, count: expected.dx.count)
        for n in 0..<c.batch {
            for oh in stride(from: g.outputHeight - 1, through: 0, by: -1) {
                for ow in stride(from: g.outputWidth - 1, through: 0, by: -1) {
                    let r = (n * g.outputHeight + oh) * g.outputWidth + ow
                    for k in 0..<g.patchSize {
                        var acc: Float = 0
                        for f in 0..<g.filters {
                            acc = acc.addingProduct(data.dy[r * g.filters + f], data.w[f * g.patchSize + k])
                        }
                        let cc = k % g.channels, j = (k / g.channels) % g.kernelWidth,
                            i = k / (g.channels * g.kernelWidth)
                        let h = oh - g.padTop + i, w = ow - g.padLeft + j
                        guard h >= 0, h < g.inputHeight, w >= 0, w < g.inputWidth else { continue }
                        let e = n * g.inputCount + (h * g.inputWidth + w) * g.channels + cc
                        reversed[e] = reversed[e] + acc
                    }
                }
            }
        }
        #expect(mismatches(reversed, expected.dx) > reversed.count / 4)
        let fast = try data.fast(g, batch: c.batch, kernel: .automatic, threads: 2)
        #expect(fast.differences(from: expected).isEmpty)
    }

    // MARK: - Fused momentum update

    @Test(
        """
        weightGradient(update:) equals the reference gradient followed by the update loop: every path, threads 1-3, l2 \
        on/off
        """,
        arguments: [Float(0), Float(0.001)])
    func fusedUpdate(l2: Float) throws {
        var rng = SplitMix64(state: l2 == 0 ? 21 : 22)
        for c in [convCases[0], convCases[2], convCases[9]] {
            let g = try c.geometry
            let data = ConvData(g, batch: c.batch, rng: &rng)
            let gradient = ConvolutionReference.weightGradient(
                g, batch: c.batch, input: data.x, outputGradient: data.dy)
            let ld = g.patchSize + 3  // a padded row stride: the padding must stay untouched
            let w0 = rng.values(g.filters * ld), v0 = rng.values(g.filters * ld)
            let (mu, lr): (Float, Float) = (0.9, 0.05)
            var w = w0, v = v0
            for f in 0..<g.filters {
                for k in 0..<g.patchSize {
                    let e = f * ld + k
                    let gg = l2 != 0 ? gradient[f * g.patchSize + k] + l2 * w[e] : gradient[f * g.patchSize + k]
                    v[e] = mu * v[e] - lr * gg
                    w[e] = w[e] + v[e]
                }
            }
            let bias = ConvolutionReference.biasGradient(g, batch: c.batch, outputGradient: data.dy)
            for kernel in kernels {
                for threads in 1...3 {
                    for withBias in [false, true] {
                        var fw = w0, fv = v0
                        var db = [Float](repeating: .nan, count: g.filters)
                        try data.x.withUnsafeBufferPointer { x in
                            try data.dy.withUnsafeBufferPointer { dy in
                                try fw.withUnsafeMutableBufferPointer { pw in
                                    try fv.withUnsafeMutableBufferPointer { pv in
                                        try db.withUnsafeMutableBufferPointer { db in
                                            try Convolution.weightGradient(
                                                g, batch: c.batch, input: x, outputGradient: dy,
                                                update: Gemm.Update(
                                                    w: pw.baseAddress!, v: pv.baseAddress!, ld: ld, mu: mu, lr: lr,
                                                    l2: l2),
                                                biasGradient: withBias ? db : nil,
                                                workspace: Convolution.Workspace(), threads: threads, kernel: kernel,
                                                minimumParallelFlops: 0)
                                        }
                                    }
                                }
                            }
                        }
                        #expect(
                            mismatches(fw, w) == 0 && mismatches(fv, v) == 0,
                            "\(c.testDescription) kernel=\(kernel) threads=\(threads) bias=\(withBias)")
                        if withBias { #expect(mismatches(db, bias) == 0) }
                    }
                }
            }
        }
    }

    // MARK: - Pooling

    @Test(
        "max and average pooling, forward and backward, equal the reference bit for bit: every path, threads 1-3",
        arguments: poolCases)
    func poolingMatchesReference(_ c: PoolCase) throws {
        let g = try c.geometry
        var rng = SplitMix64(state: UInt64(c.h * 7919 + c.w * 31 + c.c))
        var x = rng.values(c.batch * g.inputCount)
        // Some ties, zeros of both signs and NaNs, so the first-maximum and NaN rules are exercised.
        for i in x.indices where i % 7 == 3 { x[i] = x[i - 1] }
        for i in x.indices where i % 13 == 5 { x[i] = i % 2 == 0 ? 0 : -0.0 }
        for i in x.indices where i % 29 == 11 { x[i] = .nan }
        let dy = rng.values(c.batch * g.outputCount)
        let (my, ma) = ConvolutionReference.maxForward(g, batch: c.batch, input: x)
        let mdx = ConvolutionReference.maxBackward(g, batch: c.batch, outputGradient: dy, argmax: ma)
        let ay = ConvolutionReference.averageForward(g, batch: c.batch, input: x)
        let adx = ConvolutionReference.averageBackward(g, batch: c.batch, outputGradient: dy)
        for kernel in kernels {
            for threads in 1...3 {
                var y = [Float](repeating: 1, count: my.count), a = [Int32](repeating: -1, count: ma.count)
                var dx = [Float](repeating: 1, count: mdx.count)
                var avg = [Float](repeating: 1, count: ay.count), adxFast = [Float](repeating: 1, count: adx.count)
                try x.withUnsafeBufferPointer { x in
                    try y.withUnsafeMutableBufferPointer { y in
                        try a.withUnsafeMutableBufferPointer { a in
                            try Pooling.maxForward(
                                g, batch: c.batch, input: x, output: y, argmax: a, threads: threads, kernel: kernel)
                        }
                    }
                    try avg.withUnsafeMutableBufferPointer { avg in
                        try Pooling.averageForward(
                            g, batch: c.batch, input: x, output: avg, threads: threads, kernel: kernel)
                    }
                }
                try dy.withUnsafeBufferPointer { dy in
                    try a.withUnsafeBufferPointer { a in
                        try dx.withUnsafeMutableBufferPointer { dx in
                            try Pooling.maxBackward(
                                g, batch: c.batch, outputGradient: dy, argmax: a, into: dx,
                                threads: threads, kernel: kernel)
                        }
                    }
                    try adxFast.withUnsafeMutableBufferPointer { dx in
                        try Pooling.averageBackward(
                            g, batch: c.batch, outputGradient: dy, into: dx, threads: threads, kernel: kernel)
                    }
                }
                let label = "\(c.testDescription) kernel=\(kernel) threads=\(threads)"
                #expect(mismatches(y, my) == 0, "max forward \(label)")
                #expect(a == ma, "argmax \(label)")
                #expect(mismatches(dx, mdx) == 0, "max backward \(label)")
                #expect(mismatches(avg, ay) == 0, "average forward \(label)")
                #expect(mismatches(adxFast, adx) == 0, "average backward \(label)")
            }
        }
    }

    @Test(
        "global average pooling equals the reference bit for bit: every path, threads 1-3",
        arguments: [(1, 1, 1, 3), (5, 7, 3, 4), (4, 4, 40, 2), (13, 3, 9, 1)])
    func globalAveragePooling(h: Int, w: Int, c: Int, batch: Int) throws {
        var rng = SplitMix64(state: UInt64(h * 100 + w * 10 + c))
        let x = rng.values(batch * h * w * c), dy = rng.values(batch * c)
        let ey = ConvolutionReference.globalAverageForward(height: h, width: w, channels: c, batch: batch, input: x)
        let edx = ConvolutionReference.globalAverageBackward(
            height: h, width: w, channels: c, batch: batch, outputGradient: dy)
        for kernel in kernels {
            for threads in 1...3 {
                var y = [Float](repeating: .nan, count: ey.count), dx = [Float](repeating: .nan, count: edx.count)
                try x.withUnsafeBufferPointer { x in
                    try y.withUnsafeMutableBufferPointer { y in
                        try Pooling.globalAverageForward(
                            height: h, width: w, channels: c, batch: batch, input: x, output: y,
                            threads: threads, kernel: kernel)
                    }
                }
                try dy.withUnsafeBufferPointer { dy in
                    try dx.withUnsafeMutableBufferPointer { dx in
                        try Pooling.globalAverageBackward(
                            height: h, width: w, channels: c, batch: batch, outputGradient: dy,
                            into: dx, threads: threads, kernel: kernel)
                    }
                }
                #expect(mismatches(y, ey) == 0 && mismatches(dx, edx) == 0, "kernel=\(kernel) threads=\(threads)")
            }
        }
    }

    @Test(
        """
        max pooling ties: the first maximum in row-major order wins and gets the gradient; NaN never replaces; +0 and \
        -0 tie
        """)
    func maxPoolingTies() throws {
        // One image 2x4, 2 channels, pool 2x2 stride 2: two windows per channel.
        let g = try Pooling.Geometry(inputHeight: 2, inputWidth: 4, channels: 2, poolHeight: 2, poolWidth: 2)
        // Element (h, w, c) at (h*4 + w)*2 + c.
        var x = [Float](repeating: -5, count: 16)
        func at(_ h: Int, _ w: Int, _ c: Int) -> Int { (h * 4 + w) * 2 + c }
        // Window 0, channel 0: three equal maxima at (0,1), (1,0), (1,1): (0,1) must win.
        x[at(0, 1, 0)] = 3; x[at(1, 0, 0)] = 3; x[at(1, 1, 0)] = 3
        // Window 0, channel 1: NaN first, then larger values: NaN stays (nothing is greater than NaN).
        x[at(0, 0, 1)] = .nan; x[at(0, 1, 1)] = 7; x[at(1, 1, 1)] = 9
        // Window 1, channel 0: a later NaN never replaces the maximum 2 at (0,3).
        x[at(0, 3, 0)] = 2; x[at(1, 2, 0)] = .nan
        // Window 1, channel 1: -0 first, then +0: equal, so -0 (the first) wins.
        x[at(0, 2, 1)] = -0.0; x[at(0, 3, 1)] = 0; x[at(1, 2, 1)] = -1; x[at(1, 3, 1)] = -0.0
        let dy: [Float] = [1, 2, 4, 8]
        for kernel in kernels {
            var y = [Float](repeating: 0, count: 4), a = [Int32](repeating: 0, count: 4),
                dx = [Float](repeating: 7, count: 16)
            try x.withUnsafeBufferPointer { x in
                try y.withUnsafeMutableBufferPointer { y in
                    try a.withUnsafeMutableBufferPointer { a in
                        try Pooling.maxForward(g, batch: 1, input: x, output: y, argmax: a, threads: 1, kernel: kernel)
                    }
                }
            }
            try dy.withUnsafeBufferPointer { dy in
                try a.withUnsafeBufferPointer { a in
                    try dx.withUnsafeMutableBufferPointer { dx in
                        try Pooling.maxBackward(
                            g, batch: 1, outputGradient: dy, argmax: a, into: dx, threads: 1, kernel: kernel)
                    }
                }
            }
            #expect(
                a == [Int32(at(0, 1, 0)), Int32(at(0, 0, 1)), Int32(at(0, 3, 0)), Int32(at(0, 2, 1))],
                "kernel=\(kernel)")
            #expect(y[0] == 3 && y[1].isNaN && y[2] == 2 && y[3].bitPattern == (-0.0 as Float).bitPattern)
            var expected = [Float](repeating: 0, count: 16)
            expected[at(0, 1, 0)] = 1; expected[at(0, 0, 1)] = 2; expected[at(0, 3, 0)] = 4; expected[at(0, 2, 1)] = 8
            #expect(mismatches(dx, expected) == 0, "kernel=\(kernel): \(dx)")
        }
    }

    @Test(
        """
        max pooling backward with in-image indices outside their window (not from maxForward) still follows the \
        definition
        """,
        arguments: [poolCases[0], poolCases[1], poolCases[5]])
    func maxPoolingForeignIndices(_ c: PoolCase) throws {
        let g = try c.geometry
        var rng = SplitMix64(state: 0xF0 + UInt64(c.c))
        let x = rng.values(c.batch * g.inputCount), dy = rng.values(c.batch * g.outputCount)
        var argmax = ConvolutionReference.maxForward(g, batch: c.batch, input: x).argmax
        // A few outputs point at elements of other windows (or at elements two outputs share).
        for _ in 0..<5 {
            let o = rng.below(argmax.count)
            argmax[o] = Int32(rng.below(g.inputCount))
        }
        let expected = ConvolutionReference.maxBackward(g, batch: c.batch, outputGradient: dy, argmax: argmax)
        for kernel in kernels {
            for threads in [1, 2] {
                var dx = [Float](repeating: .nan, count: expected.count)
                try dy.withUnsafeBufferPointer { dy in
                    try argmax.withUnsafeBufferPointer { a in
                        try dx.withUnsafeMutableBufferPointer { dx in
                            try Pooling.maxBackward(
                                g, batch: c.batch, outputGradient: dy, argmax: a, into: dx,
                                threads: threads, kernel: kernel)
                        }
                    }
                }
                #expect(mismatches(dx, expected) == 0, "\(c.testDescription) kernel=\(kernel) threads=\(threads)")
            }
        }
    }

    @Test("max pooling backward refuses indices outside the image")
    func maxPoolingInvalidIndex() throws {
        let g = try Pooling.Geometry(inputHeight: 4, inputWidth: 4, channels: 1, poolHeight: 2, poolWidth: 2)
        let dy = [Float](repeating: 1, count: 4)
        for bad in [Int32(16), Int32(-1)] {
            let a: [Int32] = [0, 2, bad, 10]
            var dx = [Float](repeating: 0, count: 16)
            #expect(throws: ShapeError(.invalidIndex, "argmax", "1 indices lie outside their image of 16 elements")) {
                try dy.withUnsafeBufferPointer { dy in
                    try a.withUnsafeBufferPointer { a in
                        try dx.withUnsafeMutableBufferPointer { dx in
                            try Pooling.maxBackward(g, batch: 1, outputGradient: dy, argmax: a, into: dx, threads: 1)
                        }
                    }
                }
            }
        }
    }

    // MARK: - Gradients against finite differences (float64)

    @Test(
        "convolution gradients (weights, bias, input) agree with central differences of a float64 forward pass",
        arguments: [convCases[2], convCases[6], convCases[9], convCases[3]])
    func convolutionFiniteDifferences(_ c: ConvCase) throws {
        let g = try c.geometry
        var rng = SplitMix64(state: UInt64(c.f * 977 + c.h))
        let data = ConvData(g, batch: c.batch, rng: &rng)  // dy plays G, the loss's weights
        let fast = try data.fast(g, batch: c.batch, kernel: .automatic, threads: 2)
        let x = data.x.map(Double.init), w = data.w.map(Double.init), b = data.b.map(Double.init)
        let scale = Double(g.patchSize)
        for i in Set((0..<24).map { _ in rng.below(w.count) }) {
            let numeric = centralDifference(w, i, h: 1e-3) {
                dot(forward64(g, batch: c.batch, x: x, w: $0, b: b), data.dy)
            }
            #expect(close(fast.dw[i], numeric, scale: scale), "dW[\(i)] = \(fast.dw[i]), numeric \(numeric)")
        }
        for i in b.indices {
            let numeric = centralDifference(b, i, h: 1e-3) {
                dot(forward64(g, batch: c.batch, x: x, w: w, b: $0), data.dy)
            }
            #expect(close(fast.db[i], numeric, scale: scale), "db[\(i)] = \(fast.db[i]), numeric \(numeric)")
        }
        for i in Set((0..<24).map { _ in rng.below(x.count) }) {
            let numeric = centralDifference(x, i, h: 1e-3) {
                dot(forward64(g, batch: c.batch, x: $0, w: w, b: b), data.dy)
            }
            #expect(close(fast.dx[i], numeric, scale: scale), "dX[\(i)] = \(fast.dx[i]), numeric \(numeric)")
        }
    }

    @Test(
        "max and average pooling gradients agree with central differences of a float64 forward pass",
        arguments: [poolCases[2], poolCases[3], poolCases[4], poolCases[1]])
    func poolingFiniteDifferences(_ c: PoolCase) throws {
        let g = try c.geometry
        var rng = SplitMix64(state: UInt64(c.h * 31 + c.c))
        let x = rng.values(c.batch * g.inputCount)  // distinct values: no ties, so max is differentiable
        let dy = rng.values(c.batch * g.outputCount)
        var a = [Int32](repeating: 0, count: dy.count), y = [Float](repeating: 0, count: dy.count)
        var maxDx = [Float](repeating: 0, count: x.count), avgDx = [Float](repeating: 0, count: x.count)
        try x.withUnsafeBufferPointer { x in
            try y.withUnsafeMutableBufferPointer { y in
                try a.withUnsafeMutableBufferPointer { a in
                    try Pooling.maxForward(g, batch: c.batch, input: x, output: y, argmax: a, threads: 2)
                }
            }
        }
        try dy.withUnsafeBufferPointer { dy in
            try a.withUnsafeBufferPointer { a in
                try maxDx.withUnsafeMutableBufferPointer { dx in
                    try Pooling.maxBackward(g, batch: c.batch, outputGradient: dy, argmax: a, into: dx, threads: 2)
                }
            }
            try avgDx.withUnsafeMutableBufferPointer { dx in
                try Pooling.averageBackward(g, batch: c.batch, outputGradient: dy, into: dx, threads: 2)
            }
        }
        let x64 = x.map(Double.init)
        // Every element of small inputs, a sample of large ones (each difference is a full forward pass).
        for i in x.count <= 400 ? Array(x.indices) : (0..<300).map({ _ in rng.below(x.count) }) {
            let m = centralDifference(x64, i, h: 1e-7) { dot(pool64(g, batch: c.batch, x: $0, max: true), dy) }
            #expect(close(maxDx[i], m, scale: 1), "max dX[\(i)] = \(maxDx[i]), numeric \(m)")
            let s = centralDifference(x64, i, h: 1e-3) { dot(pool64(g, batch: c.batch, x: $0, max: false), dy) }
            #expect(close(avgDx[i], s, scale: 1), "average dX[\(i)] = \(avgDx[i]), numeric \(s)")
        }
    }

    // MARK: - Validation

    @Test("geometry validation refuses bad sizes with the code and the parameter at fault, without trapping")
    func geometryValidation() {
        func conv(
            h: Int = 8, w: Int = 8, c: Int = 3, kh: Int = 3, kw: Int = 3, sh: Int = 1, sw: Int = 1,
            padding: Convolution.Padding = .valid, f: Int = 4
        ) -> ShapeError? {
            do {
                _ = try Convolution.Geometry(
                    inputHeight: h, inputWidth: w, channels: c, kernelHeight: kh, kernelWidth: kw,
                    strideHeight: sh, strideWidth: sw, padding: padding, filters: f)
                return nil
            } catch { return error }
        }
        let cases: [(ShapeError?, ShapeError.Code, String)] = [
            (conv(h: 0), .notPositive, "inputHeight"),
            (conv(w: -3), .notPositive, "inputWidth"),
            (conv(c: 0), .notPositive, "channels"),
            (conv(kh: 0), .notPositive, "kernelHeight"),
            (conv(kw: -1), .notPositive, "kernelWidth"),
            (conv(sh: 0), .notPositive, "strideHeight"),
            (conv(sw: Int.min), .notPositive, "strideWidth"),
            (conv(f: 0), .notPositive, "filters"),
            (conv(kh: 9), .emptyOutput, "kernelHeight"),  // valid, kernel taller than the input
            (conv(w: 2, kw: 3), .emptyOutput, "kernelWidth"),
            (conv(h: Int.max), .tooLarge, "inputHeight"),
            (conv(h: 1 << 16, w: 1 << 16, c: 1), .tooLarge, "input"),  // 2^32 elements per image
            (conv(h: 4096, w: 4096, c: 128, kh: 1, kw: 1), .tooLarge, "input"),  // 2^31 elements
            (conv(c: 1, kh: 1, kw: 1, f: 1 << 30), .tooLarge, "output"),
            (conv(h: 1, w: 1, c: 1 << 16, kh: 1 << 12, kw: 1 << 4, padding: .same, f: 1), .tooLarge, "patch"),
            (conv(c: 1 << 12, kh: 8, kw: 8, f: 1 << 20), .tooLarge, "weights"),  // 2^38
            (conv(h: 1, w: 1, c: 1 << 15, kh: 1, kw: 1, f: 1 << 16), .tooLarge, "weights"),  // 2^31
            // padded height
            (conv(h: (1 << 30) + 5, w: 1, c: 1, kh: 1 << 30, kw: 1, padding: .same, f: 1), .tooLarge, "kernelHeight"),
            (conv(h: 1, w: 1, c: 1, kh: 1 << 30, kw: 1 << 30, padding: .same, f: 1), .tooLarge, "patch"),  // 2^60
        ]
        for (error, code, parameter) in cases {
            #expect(
                error?.code == code && error?.parameter == parameter,
                "expected \(code) on \(parameter), got \(String(describing: error))")
        }
        #expect(conv(kh: 8, kw: 8) == nil)
        #expect(conv(h: 1, w: 1, kh: 5, kw: 5, padding: .same) == nil)

        func pool(
            h: Int = 8, w: Int = 8, c: Int = 3, ph: Int = 2, pw: Int = 2, sh: Int? = nil,
            padding: Convolution.Padding = .valid
        ) -> ShapeError? {
            do {
                _ = try Pooling.Geometry(
                    inputHeight: h, inputWidth: w, channels: c, poolHeight: ph, poolWidth: pw,
                    strideHeight: sh, padding: padding)
                return nil
            } catch { return error }
        }
        let poolCases: [(ShapeError?, ShapeError.Code, String)] = [
            (pool(ph: 0), .notPositive, "poolHeight"),
            (pool(sh: 0), .notPositive, "strideHeight"),
            (pool(ph: 9), .emptyOutput, "poolHeight"),
            (pool(ph: 1 << 13, pw: 1 << 13, padding: .same), .tooLarge, "pool"),
            (pool(h: 1 << 20, w: 1 << 12), .tooLarge, "input"),
        ]
        for (error, code, parameter) in poolCases {
            #expect(
                error?.code == code && error?.parameter == parameter,
                "expected \(code) on \(parameter), got \(String(describing: error))")
        }
        #expect(pool(h: 2, w: 3, ph: 5, pw: 4, padding: .same) == nil)
    }

    @Test("batched calls refuse a negative or overflowing batch and buffers that are too small")
    func batchValidation() throws {
        let g = try Convolution.Geometry(
            inputHeight: 6, inputWidth: 6, channels: 2, kernelHeight: 3, kernelWidth: 3,
            padding: .same, filters: 4)
        let x = [Float](repeating: 1, count: 2 * g.inputCount), w = [Float](repeating: 1, count: g.weightCount)
        let b = [Float](repeating: 0, count: g.filters)
        let y = [Float](repeating: 0, count: 2 * g.outputCount)
        func forward(batch: Int, input: ArraySlice<Float>, weights: ArraySlice<Float>, output: Int) -> ShapeError? {
            var out = [Float](repeating: 0, count: output)
            do {
                try input.withUnsafeBufferPointer { x in
                    try weights.withUnsafeBufferPointer { w in
                        try b.withUnsafeBufferPointer { b in
                            try out.withUnsafeMutableBufferPointer { y in
                                try Convolution.forward(
                                    g, batch: batch, input: x, weights: w, bias: b, output: y,
                                    workspace: Convolution.Workspace(), threads: 2)
                            }
                        }
                    }
                }
                return nil
            } catch { return error as? ShapeError }
        }
        #expect(forward(batch: -1, input: x[...], weights: w[...], output: y.count)?.code == .notPositive)
        #expect(forward(batch: Int.max, input: x[...], weights: w[...], output: y.count)?.code == .tooLarge)
        #expect(forward(batch: 1 << 30, input: x[...], weights: w[...], output: y.count)?.parameter == "input")
        #expect(
            forward(batch: 2, input: x.dropLast(), weights: w[...], output: y.count)
                == ShapeError(.bufferTooSmall, "input", "holds \(x.count - 1) elements, needs \(x.count)"))
        #expect(forward(batch: 2, input: x[...], weights: w.dropLast(), output: y.count)?.parameter == "weights")
        #expect(forward(batch: 2, input: x[...], weights: w[...], output: y.count - 1)?.parameter == "output")
        #expect(forward(batch: 2, input: x[...], weights: w[...], output: y.count) == nil)
        // The fused update checks its row stride.
        var v = [Float](repeating: 0, count: g.weightCount), ww = w
        #expect(throws: ShapeError.self) {
            try x.withUnsafeBufferPointer { x in
                try y.withUnsafeBufferPointer { dy in
                    try ww.withUnsafeMutableBufferPointer { pw in
                        try v.withUnsafeMutableBufferPointer { pv in
                            try Convolution.weightGradient(
                                g, batch: 2, input: x, outputGradient: dy,
                                update: Gemm.Update(
                                    w: pw.baseAddress!, v: pv.baseAddress!, ld: g.patchSize - 1, mu: 0.9, lr: 0.1, l2: 0
                                ),
                                workspace: Convolution.Workspace(), threads: 1)
                        }
                    }
                }
            }
        }
    }
}
