// Bit-exactness tests of the matrix kernels against the contract of Specs/determinism.md:
// every element of C is one fused multiply-add chain in increasing p, starting from C
// (accumulate) or +0. `ReferenceGemm` is that contract as a plain triple loop; every kernel
// path and every thread count must reproduce its bits exactly (no tolerances anywhere).

import Kernels
import Testing
import TestRandom

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// MARK: - Helpers

/// One product: operands stored with strides possibly larger than the minimum; the padding is
/// filled with values that must neither be read into the result nor be overwritten.
private struct Problem {
    var transA: Bool, transB: Bool
    var m: Int, n: Int, k: Int
    var lda: Int, ldb: Int, ldc: Int
    var accumulate: Bool
    var a: [Float], b: [Float], c: [Float]

    init(
        transA: Bool, transB: Bool, m: Int, n: Int, k: Int, pad: (Int, Int, Int) = (0, 0, 0),
        accumulate: Bool, rng: inout SplitMix64
    ) {
        self.transA = transA
        self.transB = transB
        (self.m, self.n, self.k) = (m, n, k)
        self.accumulate = accumulate
        lda = (transA ? m : k) + pad.0
        ldb = (transB ? k : n) + pad.1
        ldc = n + pad.2
        a = rng.values(max(1, (transA ? k : m) * lda))
        b = rng.values(max(1, (transB ? n : k) * ldb))
        c = rng.values(max(1, m * ldc))
    }

    /// C after the contract's product (ReferenceGemm).
    func reference() -> [Float] {
        var out = c
        a.withUnsafeBufferPointer { pa in
            b.withUnsafeBufferPointer { pb in
                out.withUnsafeMutableBufferPointer { pc in
                    ReferenceGemm.multiply(
                        transA: transA, transB: transB, m: m, n: n, k: k,
                        a: pa.baseAddress!, lda: lda, b: pb.baseAddress!, ldb: ldb,
                        c: pc.baseAddress!, ldc: ldc, accumulate: accumulate)
                }
            }
        }
        return out
    }

    /// C after Gemm.multiply on `kernel` with `threads` workers (no small-product shortcut, so
    /// small shapes really are split).
    func gemm(kernel: Gemm.Kernel, threads: Int) -> [Float] {
        var out = c
        a.withUnsafeBufferPointer { pa in
            b.withUnsafeBufferPointer { pb in
                out.withUnsafeMutableBufferPointer { pc in
                    Gemm.multiply(
                        transA: transA, transB: transB, m: m, n: n, k: k,
                        a: pa.baseAddress!, lda: lda, b: pb.baseAddress!, ldb: ldb,
                        c: pc.baseAddress!, ldc: ldc, accumulate: accumulate, threads: threads,
                        kernel: kernel, minimumParallelFlops: 0)
                }
            }
        }
        return out
    }

    /// C after an *unfused* chain (acc = acc + x*y, two roundings per step; Swift never
    /// contracts this into an FMA). Not the contract: used to show the tests can tell.
    func unfused() -> [Float] {
        var out = c
        for i in 0..<m {
            for j in 0..<n {
                var acc: Float = accumulate ? c[i * ldc + j] : 0
                for p in 0..<k {
                    let x = transA ? a[p * lda + i] : a[i * lda + p]
                    let y = transB ? b[j * ldb + p] : b[p * ldb + j]
                    acc = acc + x * y
                }
                out[i * ldc + j] = acc
            }
        }
        return out
    }

    var label: String {
        """
        transA=\(transA) transB=\(transB) m=\(m) n=\(n) k=\(k) lda=\(lda) ldb=\(ldb) ldc=\(ldc) \
        accumulate=\(accumulate)
        """
    }
}

/// Checks every kernel path and thread count 1...4 against `expected`, bit for bit.
private func expectAllPathsMatch(_ problem: Problem, _ expected: [Float]) {
    for kernel in kernels {
        for threads in 1...4 {
            let bad = mismatches(problem.gemm(kernel: kernel, threads: threads), expected)
            #expect(bad == 0, "\(problem.label) kernel=\(kernel) threads=\(threads): elements differ")
        }
    }
}

// MARK: - Bit identity with the reference

/// Ragged sizes around the 6x16 register tile and the cache blocks.
private let smallDims = [1, 5, 7, 17]
private let allDims = [1, 2, 5, 7, 13, 17, 31, 100, 129]

@Test(
    "Gemm equals ReferenceGemm bit for bit: every path, threads 1-4, ragged shapes, padded strides",
    arguments: [false, true], [false, true])
func matchesReference(transA: Bool, transB: Bool) {
    var rng = SplitMix64(state: 0x5EED_0000 + (transA ? 2 : 0) + (transB ? 1 : 0))
    var problems: [Problem] = []
    // Every combination of small ragged sizes, both accumulate modes, tight and padded strides.
    for m in smallDims {
        for n in smallDims {
            for k in smallDims {
                let accumulate = (m + n + k) % 2 == 0
                let pad = (m * n + k) % 3 == 0 ? (0, 0, 0) : (3, 1, 5)
                problems.append(
                    Problem(
                        transA: transA, transB: transB, m: m, n: n, k: k, pad: pad,
                        accumulate: accumulate, rng: &rng))
            }
        }
    }
    // Random shapes over the full list, including products larger than one tile and k larger
    // than one register pass.
    for i in 0..<14 {
        let m = allDims[rng.below(allDims.count)]
        let n = allDims[rng.below(allDims.count)]
        let k = allDims[rng.below(allDims.count)]
        problems.append(
            Problem(
                transA: transA, transB: transB, m: m, n: n, k: k,
                pad: (rng.below(4), rng.below(20), rng.below(4)),
                accumulate: i % 2 == 0, rng: &rng))
    }
    for problem in problems {
        expectAllPathsMatch(problem, problem.reference())
    }
}

@Test(
    "ragged shapes around the AVX-512 14x32 tile and its 16x16 packing transposes: every path, threads 1-3",
    arguments: [false, true], [false, true])
func matchesReferenceAroundWideTile(transA: Bool, transB: Bool) {
    var rng = SplitMix64(state: 0x512_0000 + (transA ? 2 : 0) + (transB ? 1 : 0))
    // m around the tile's 14 rows (13, 15: one row short and over; 29: two tiles and one row),
    // n around its 32 columns and the 16-lane vectors (17, 31, 33, 47, 49, 65), k around the
    // 16 p that packing transposes at a time.
    var problems: [Problem] = []
    for m in [13, 14, 15, 29] {
        for n in [16, 17, 31, 32, 33, 47, 49, 65] {
            let k = [1, 15, 16, 17, 33][rng.below(5)]
            problems.append(
                Problem(
                    transA: transA, transB: transB, m: m, n: n, k: k,
                    pad: (rng.below(3), rng.below(17), rng.below(3)),
                    accumulate: (m + n) % 2 == 1, rng: &rng))
        }
    }
    for problem in problems {
        let expected = problem.reference()
        for kernel in kernels {
            for threads in 1...3 {
                let bad = mismatches(problem.gemm(kernel: kernel, threads: threads), expected)
                #expect(bad == 0, "\(problem.label) kernel=\(kernel) threads=\(threads): elements differ")
            }
        }
    }
}

@Test(
    "k larger than the cache block (resumes from C) and n, m larger than the cache blocks",
    arguments: [false, true], [false, true])
func blockedDimensions(transA: Bool, transB: Bool) {
    var rng = SplitMix64(state: 0xB10C + (transA ? 2 : 0) + (transB ? 1 : 0))
    // k = 800 is cut into k blocks; m = 150 into m blocks (144 max for AVX2, 140 for AVX-512);
    // n = 4113 into three n blocks (2048 max).
    let shapes = [(13, 19, 800), (150, 17, 9), (7, 4113, 3)]
    for (index, (m, n, k)) in shapes.enumerated() {
        let problem = Problem(
            transA: transA, transB: transB, m: m, n: n, k: k, pad: (1, 2, 3),
            accumulate: index == 1, rng: &rng)
        expectAllPathsMatch(problem, problem.reference())
    }
}

@Test("k = 0 leaves C unchanged when accumulating, else sets it to +0; m = 0 or n = 0 is a no-op")
func emptyProducts() {
    var rng = SplitMix64(state: 0xE0)
    for transA in [false, true] {
        for transB in [false, true] {
            let kept = Problem(
                transA: transA, transB: transB, m: 5, n: 7, k: 0, pad: (1, 1, 2),
                accumulate: true, rng: &rng)
            expectAllPathsMatch(kept, kept.c)
            let zeroed = Problem(
                transA: transA, transB: transB, m: 5, n: 7, k: 0, pad: (1, 1, 2),
                accumulate: false, rng: &rng)
            var expected = zeroed.c
            for i in 0..<5 { for j in 0..<7 { expected[i * zeroed.ldc + j] = 0 } }
            #expect(mismatches(zeroed.reference(), expected) == 0)
            expectAllPathsMatch(zeroed, expected)
            for (m, n) in [(0, 7), (5, 0), (0, 0)] {
                let none = Problem(
                    transA: transA, transB: transB, m: m, n: n, k: 3, pad: (1, 1, 1),
                    accumulate: false, rng: &rng)
                expectAllPathsMatch(none, none.c)
            }
        }
    }
}

@Test("signed zeros, subnormals, exact powers of two: same bits as the reference (no flush to zero)")
func specialValues() {
    var rng = SplitMix64(state: 0x5BEC)
    let pool: [Float] = [
        0, -0.0, 1, -1, 0.5, 3, 0x1p-126, -0x1p-130, 0x1p-149, 0x1.5p-127, -0x1.4p-129,
        0x1p-70, -0x1p-75, 0x1.fffffep-1, 1 + 0x1p-23, 65504,
    ]
    for (m, n, k) in [(7, 19, 5), (13, 33, 17), (6, 16, 64)] {
        var problem = Problem(transA: false, transB: true, m: m, n: n, k: k, accumulate: false, rng: &rng)
        problem.a = problem.a.map { _ in pool[rng.below(pool.count)] }
        problem.b = problem.b.map { _ in pool[rng.below(pool.count)] * 0x1p-60 }
        expectAllPathsMatch(problem, problem.reference())
        problem.accumulate = true
        problem.c = problem.c.map { _ in pool[rng.below(pool.count)] * 0x1p-80 }
        expectAllPathsMatch(problem, problem.reference())
    }
    // All products are -0 (-0 times a positive number): the chain from +0 stays +0
    // (+0 + -0 = +0); from -0 (accumulate) it stays -0.
    var zeros = Problem(transA: false, transB: false, m: 7, n: 17, k: 3, accumulate: false, rng: &rng)
    zeros.a = zeros.a.map { _ in -0.0 }
    zeros.b = zeros.b.map { abs($0) + 0.5 }
    let plusZero = zeros.reference()
    #expect(plusZero.allSatisfy { $0.bitPattern == 0 })
    expectAllPathsMatch(zeros, plusZero)
    zeros.accumulate = true
    zeros.c = zeros.c.map { _ in -0.0 }
    let minusZero = zeros.reference()
    #expect(minusZero.allSatisfy { $0.bitPattern == 0x8000_0000 })
    expectAllPathsMatch(zeros, minusZero)
}

// MARK: - The tests can tell fused from unfused

@Test("one multiply-add whose fused and unfused results differ: every path gives the fused one")
func fusedNotUnfused() {
    // x·y = 1 + 2^-11 + 2^-24 exactly; rounded to float (a tie, to even) it is 1 + 2^-11.
    // So c + x·y with c = -(1 + 2^-11) is 2^-24 fused, but 0 unfused.
    let x: Float = 1 + 0x1p-12
    let c0: Float = -(1 + 0x1p-11)
    #expect(c0.addingProduct(x, x) == 0x1p-24)
    #expect(c0 + x * x == 0)
    // A matrix of such products (m, n cover full and partial tiles), k = 1 and k = 2.
    var rng = SplitMix64(state: 1)
    for k in [1, 2] {
        for (transA, transB) in [(false, false), (false, true), (true, false), (true, true)] {
            var problem = Problem(
                transA: transA, transB: transB, m: 13, n: 37, k: k,
                accumulate: true, rng: &rng)
            problem.a = problem.a.map { _ in x }
            problem.b = problem.b.enumerated().map { i, _ in
                // second row of op(B) (p = 1) zero, so the result is still c0 + x·x (then + x·0)
                let p = transB ? i % problem.ldb : i / problem.ldb
                return p == 0 ? x : 0
            }
            problem.c = problem.c.map { _ in c0 }
            let expected = problem.reference()
            #expect(expected.allSatisfy { $0 == 0x1p-24 })
            #expect(problem.unfused().allSatisfy { $0 == 0 })
            expectAllPathsMatch(problem, expected)
        }
    }
}

@Test("on the random test data an unfused chain gives different bits in most elements")
func testsHaveTeeth() {
    var rng = SplitMix64(state: 0x7EE7)
    for (transA, transB) in [(false, false), (false, true), (true, false), (true, true)] {
        let problem = Problem(
            transA: transA, transB: transB, m: 31, n: 33, k: 100, pad: (1, 2, 3),
            accumulate: transA, rng: &rng)
        let fused = problem.reference()
        let unfused = problem.unfused()
        let differing = mismatches(fused, unfused)
        // An implementation that does not fuse (or rounds anywhere else) fails the bit
        // comparisons above on most elements.
        #expect(differing > problem.m * problem.n / 2, "only \(differing) differ")
        expectAllPathsMatch(problem, fused)
        for kernel in kernels {
            #expect(mismatches(problem.gemm(kernel: kernel, threads: 2), unfused) == differing)
        }
    }
}

// MARK: - The training engine's products

/// Elements of the contract computed one at a time (the full reference on these shapes would be
/// slow in a debug build).
private func referenceElement(_ p: Problem, _ i: Int, _ j: Int) -> Float {
    var acc: Float = p.accumulate ? p.c[i * p.ldc + j] : 0
    for q in 0..<p.k {
        let x = p.transA ? p.a[q * p.lda + i] : p.a[i * p.lda + q]
        let y = p.transB ? p.b[j * p.ldb + q] : p.b[q * p.ldb + j]
        acc = acc.addingProduct(x, y)
    }
    return acc
}

@Test(
    "training shapes (batch 100, 784-1024-10): forward, backward, gradient; paths and threads agree",
    arguments: [(784, 1024), (1024, 10)])
func trainingShapes(inputs: Int, outputs: Int) {
    var rng = SplitMix64(state: UInt64(inputs * 10_000 + outputs))
    let batch = 100
    // forward Z = bias + X·Wᵀ, backward dX = dZ·W, gradient dW = dZᵀ·X
    let products = [
        Problem(transA: false, transB: true, m: batch, n: outputs, k: inputs, accumulate: true, rng: &rng),
        Problem(transA: false, transB: false, m: batch, n: inputs, k: outputs, accumulate: false, rng: &rng),
        Problem(transA: true, transB: false, m: outputs, n: inputs, k: batch, accumulate: false, rng: &rng),
    ]
    for problem in products {
        // The scalar fallback once (it is slow), checked element-wise against the contract.
        let first = problem.gemm(kernel: .scalar, threads: 1)
        for (i, j) in (0..<64).map({ _ in (rng.below(problem.m), rng.below(problem.n)) }) {
            #expect(
                first[i * problem.ldc + j].bitPattern == referenceElement(problem, i, j).bitPattern,
                "\(problem.label) element (\(i), \(j))")
        }
        for kernel in kernels where kernel != .scalar {
            for threads in [1, 2, 3] {
                #expect(
                    mismatches(problem.gemm(kernel: kernel, threads: threads), first) == 0,
                    "\(problem.label) kernel=\(kernel) threads=\(threads)")
            }
        }
    }
}

// MARK: - Path reporting

/// The fastest path this CPU has.
private let best: Gemm.Kernel = Gemm.isAvailable(.avx512) ? .avx512 : Gemm.isAvailable(.avx2) ? .avx2 : .scalar

private func name(_ kernel: Gemm.Kernel) -> String {
    switch kernel {
    case .avx512: "avx512"
    case .avx2: "avx2+fma"
    default: "scalar"
    }
}

@Test("path names the fastest available kernel, or the one DROPMODEL_KERNEL forces")
func pathReport() {
    let environment = getenv("DROPMODEL_KERNEL").map { String(cString: $0) }
    #expect(Gemm.path == name(Gemm.kernel(forEnvironment: environment, best: best).kernel))
    if environment == nil {
        #expect(Gemm.path == name(best))
    }
    #expect(Gemm.isAvailable(.scalar))
    // A CPU with AVX-512 has AVX2 and FMA: the paths are ordered.
    #expect(!Gemm.isAvailable(.avx512) || Gemm.isAvailable(.avx2))
}

@Test(
    """
    DROPMODEL_KERNEL: a path the CPU has is used; one it lacks, or any other value, falls back to the fastest with a \
    notice
    """,
    arguments: [Gemm.Kernel.scalar, .avx2, .avx512])
func environmentRule(cpuBest: Gemm.Kernel) {
    let paths: [(String, Gemm.Kernel)] = [("scalar", .scalar), ("avx2", .avx2), ("avx512", .avx512)]
    for unset in [nil, ""] as [String?] {
        let chosen = Gemm.kernel(forEnvironment: unset, best: cpuBest)
        #expect(chosen.kernel == cpuBest && chosen.notice == nil)
    }
    for (value, kernel) in paths {
        let chosen = Gemm.kernel(forEnvironment: value, best: cpuBest)
        if kernel.rank <= cpuBest.rank {
            #expect(chosen.kernel == kernel && chosen.notice == nil, "\(value) on \(cpuBest)")
        } else {
            #expect(chosen.kernel == cpuBest, "\(value) on \(cpuBest)")
            #expect(
                chosen.notice?.hasPrefix("DROPMODEL_KERNEL=\(value): this CPU lacks") == true,
                "\(chosen.notice ?? "no notice")")
        }
    }
    for value in ["AVX512", "avx-512", "fast", "avx2+fma", " scalar"] {
        let chosen = Gemm.kernel(forEnvironment: value, best: cpuBest)
        #expect(chosen.kernel == cpuBest, "\(value)")
        #expect(
            chosen.notice
                == "DROPMODEL_KERNEL=\(value) is not one of scalar, avx2, avx512; using \(paths[cpuBest.rank].0)")
    }
}

extension Gemm.Kernel {
    /// Position in the order of speed (scalar 0, avx2 1, avx512 2).
    fileprivate var rank: Int {
        switch self {
        case .avx512: 2
        case .avx2: 1
        default: 0
        }
    }
}

// MARK: - Concurrency

@Test("concurrent callers (each splitting its own product over the pool) get the reference bits")
func concurrentCallers() async {
    var rng = SplitMix64(state: 0xC0C0)
    let problems = (0..<8).map { i in
        Problem(
            transA: i % 2 == 1, transB: i % 3 == 0, m: 37 + i, n: 45, k: 29, pad: (1, 2, 3),
            accumulate: i % 4 == 0, rng: &rng)
    }
    let expected = problems.map { $0.reference() }
    await withTaskGroup(of: Int.self) { group in
        for round in 0..<4 {
            for (index, problem) in problems.enumerated() {
                group.addTask {
                    var bad = 0
                    for threads in [2, 3] {
                        let kernel: Gemm.Kernel = round % 2 == 0 ? .automatic : .scalar
                        bad += mismatches(problem.gemm(kernel: kernel, threads: threads), expected[index])
                    }
                    return bad
                }
            }
        }
        for await bad in group {
            #expect(bad == 0)
        }
    }
}

// MARK: - Fused update

@Test(
    """
    multiplyUpdate equals the reference product followed by the update loop, bit for bit: every path, threads 1-3, l2 \
    on/off, either operand transposed, k beyond the cache block, m beyond the m block
    """,
    arguments: [false, true], [Float(0), Float(0.001)])
func fusedUpdate(transA: Bool, l2: Float) {
    var rng = SplitMix64(state: transA ? 11 : 12)
    // Around both tiles (6x16, 14x32) and the k block of 384 (400, 385: the unfused fallback);
    // m beyond the m blocks (144 and 140 rows: several blocks, a partial last one).
    for (m, n, k, transB) in [
        (7, 17, 5, false), (13, 31, 100, false), (100, 129, 13, false), (6, 16, 400, false), (31, 40, 385, false),
        (14, 32, 384, false), (15, 49, 17, false), (29, 65, 100, false), (300, 50, 20, false), (157, 97, 9, true),
        (29, 65, 100, true),
    ] {
        let p = Problem(
            transA: transA, transB: transB, m: m, n: n, k: k, pad: (1, 2, 3), accumulate: false, rng: &rng)
        let w0 = rng.values(m * p.ldc), v0 = rng.values(m * p.ldc)
        let (mu, lr): (Float, Float) = (0.9, 0.05)
        // Expected: G by the contract, then v = mu*v - lr*(g + l2*w); w = w + v (Swift never contracts).
        var g = [Float](repeating: 0, count: m * p.ldc)
        var probe = p
        probe.c = g
        g = probe.reference()
        var w = w0, v = v0
        for i in 0..<m {
            for j in 0..<n {
                let e = i * p.ldc + j
                let gg = l2 != 0 ? g[e] + l2 * w[e] : g[e]
                v[e] = mu * v[e] - lr * gg
                w[e] = w[e] + v[e]
            }
        }
        for kernel in kernels {
            for threads in 1...3 {
                var fw = w0, fv = v0
                p.a.withUnsafeBufferPointer { pa in
                    p.b.withUnsafeBufferPointer { pb in
                        fw.withUnsafeMutableBufferPointer { pw in
                            fv.withUnsafeMutableBufferPointer { pv in
                                Gemm.multiplyUpdate(
                                    transA: transA, transB: transB, m: m, n: n, k: k,
                                    a: pa.baseAddress!, lda: p.lda, b: pb.baseAddress!, ldb: p.ldb,
                                    update: Gemm.Update(
                                        w: pw.baseAddress!, v: pv.baseAddress!, ld: p.ldc, mu: mu, lr: lr, l2: l2),
                                    threads: threads, kernel: kernel, minimumParallelFlops: 0)
                            }
                        }
                    }
                }
                #expect(
                    mismatches(fw, w) == 0, "\(p.label) l2=\(l2) kernel=\(kernel) threads=\(threads): weights differ")
                #expect(
                    mismatches(fv, v) == 0, "\(p.label) l2=\(l2) kernel=\(kernel) threads=\(threads): velocities differ"
                )
            }
        }
    }
}
