// The fused epilogue of the forward product (Gemm.multiply with bias:relu:): bit-identical to
// the bias written into C, the product accumulated (ReferenceGemm) and relu as a loop.
import Foundation
import Kernels
import Testing
import TestRandom

/// One forward product X (m x k) · Wᵀ (W n x k, or k x n when !transB) with bias and relu.
private struct EpilogueProblem {
    var transA: Bool, transB: Bool
    var m: Int, n: Int, k: Int
    var a: [Float], b: [Float], bias: [Float]?
    var relu: Bool

    init(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, bias: Bool, relu: Bool, rng: inout SplitMix64) {
        (self.transA, self.transB, self.m, self.n, self.k, self.relu) = (transA, transB, m, n, k, relu)
        a = rng.values(max(1, m * k))  // never empty: k may be 0
        b = rng.values(max(1, k * n))
        self.bias = bias ? rng.values(n) : nil
    }

    var label: String { "m=\(m) n=\(n) k=\(k) tA=\(transA) tB=\(transB) bias=\(bias != nil) relu=\(relu)" }

    /// The definition: C = bias in every row (or +0), C += op(A)·op(B) as one FMA chain per
    /// element, then z > 0 ? z : +0.
    func reference() -> [Float] {
        var c = [Float](repeating: 0, count: m * n)
        for i in 0..<m { for j in 0..<n { c[i * n + j] = bias?[j] ?? 0 } }
        a.withUnsafeBufferPointer { a in
            b.withUnsafeBufferPointer { b in
                c.withUnsafeMutableBufferPointer { c in
                    ReferenceGemm.multiply(
                        transA: transA, transB: transB, m: m, n: n, k: k, a: a.baseAddress!, lda: transA ? m : k,
                        b: b.baseAddress!, ldb: transB ? k : n, c: c.baseAddress!, ldc: n, accumulate: true)
                }
            }
        }
        if relu { for i in c.indices where !(c[i] > 0) { c[i] = 0 } }
        return c
    }

    func fused(kernel: Gemm.Kernel, threads: Int) -> [Float] {
        // C starts as NaN: the fused product must neither read nor keep it.
        var c = [Float](repeating: .nan, count: m * n)
        let biasValues = bias ?? [0]
        a.withUnsafeBufferPointer { a in
            b.withUnsafeBufferPointer { b in
                biasValues.withUnsafeBufferPointer { biasValues in
                    c.withUnsafeMutableBufferPointer { c in
                        Gemm.multiply(
                            transA: transA, transB: transB, m: m, n: n, k: k, a: a.baseAddress!, lda: transA ? m : k,
                            b: b.baseAddress!, ldb: transB ? k : n, c: c.baseAddress!, ldc: n,
                            bias: bias == nil ? nil : biasValues.baseAddress, relu: relu, threads: threads,
                            kernel: kernel, minimumParallelFlops: 0)
                    }
                }
            }
        }
        return c
    }
}

@Test(
    "bias and relu fused into the product: bits of bias-filled C, product, relu loop; every path, threads 1-3",
    arguments: [false, true], [false, true])
func epilogueMatchesReference(transA: Bool, transB: Bool) {
    var rng = SplitMix64(state: 0xE91_0000 + (transA ? 2 : 0) + (transB ? 1 : 0))
    var problems: [EpilogueProblem] = []
    // Ragged shapes around both register tiles (6x16, 14x32), a k beyond one k block (resuming
    // from C: the bias must start the chain once, relu end it once), and the training shape.
    let shapes = [
        (1, 1, 1), (5, 17, 7), (6, 16, 16), (13, 31, 15), (14, 32, 17), (15, 33, 33), (29, 49, 1),
        (7, 65, 800), (100, 130, 784), (3, 5, 0),
    ]
    for (index, (m, n, k)) in shapes.enumerated() {
        problems.append(
            EpilogueProblem(
                transA: transA, transB: transB, m: m, n: n, k: k, bias: index % 4 != 3, relu: index % 3 != 1,
                rng: &rng))
    }
    for problem in problems {
        let expected = problem.reference()
        for kernel in kernels {
            for threads in 1...3 {
                let bad = mismatches(problem.fused(kernel: kernel, threads: threads), expected)
                #expect(bad == 0, "\(problem.label) kernel=\(kernel) threads=\(threads): elements differ")
            }
        }
    }
}

@Test("relu in the epilogue maps -0, +0 and NaN to +0, as z > 0 ? z : 0 does")
func epilogueReluSpecialValues() {
    // k = 1 and a = 1: each output is fma(1, b, bias) = b + bias rounded once.
    let n = 40
    var b = [Float](repeating: 0, count: n), bias = [Float](repeating: 0, count: n)
    let specials: [(Float, Float)] = [(-0.0, -0.0), (0, -0.0), (.nan, 1), (-1, 0.5), (2, -3), (1, 1)]
    for j in 0..<n { (b[j], bias[j]) = specials[j % specials.count] }
    var expected = [Float](repeating: 0, count: n)
    for j in 0..<n {
        let chain = bias[j].addingProduct(1, b[j])
        expected[j] = chain > 0 ? chain : 0
    }
    for kernel in kernels {
        var c = [Float](repeating: .nan, count: n)
        let a: [Float] = [1]
        a.withUnsafeBufferPointer { a in
            b.withUnsafeBufferPointer { b in
                bias.withUnsafeBufferPointer { bias in
                    c.withUnsafeMutableBufferPointer { c in
                        Gemm.multiply(
                            transA: false, transB: false, m: 1, n: n, k: 1, a: a.baseAddress!, lda: 1,
                            b: b.baseAddress!, ldb: n, c: c.baseAddress!, ldc: n, bias: bias.baseAddress,
                            relu: true, threads: 1, kernel: kernel)
                    }
                }
            }
        }
        #expect(mismatches(c, expected) == 0, "kernel=\(kernel)")
    }
}

@Test(
    "afterBlock: blocks disjoint, covering C once, each already final when called, whole rows as blocksAreWholeRows says",
    arguments: [(100, 1024, 64), (1024, 784, 20), (10, 1024, 100), (100, 10, 300), (37, 45, 9)])
func afterBlockCoversFinalBlocks(shape: (m: Int, n: Int, k: Int)) {
    var rng = SplitMix64(state: 0xB10C_0000 &+ UInt64(shape.m * 7 + shape.n))
    let (m, n, k) = shape
    let problem = EpilogueProblem(transA: false, transB: true, m: m, n: n, k: k, bias: true, relu: true, rng: &rng)
    let expected = problem.reference()
    for kernel in [Gemm.Kernel.scalar, .avx2, .avx512].filter(Gemm.isAvailable) {
        for threads in 1...3 {
            var c = [Float](repeating: .nan, count: m * n)
            // Each call's block, and whether its values were the final ones when it ran (the
            // calls may come from several threads: one slot per call, guarded).
            let lock = NSLock()
            var blocks: [(Range<Int>, Range<Int>, Bool)] = []
            problem.a.withUnsafeBufferPointer { a in
                problem.b.withUnsafeBufferPointer { b in
                    problem.bias!.withUnsafeBufferPointer { bias in
                        c.withUnsafeMutableBufferPointer { c in
                            let cs = c.baseAddress!
                            Gemm.multiply(
                                transA: false, transB: true, m: m, n: n, k: k, a: a.baseAddress!, lda: k,
                                b: b.baseAddress!, ldb: k, c: cs, ldc: n, bias: bias.baseAddress, relu: true,
                                threads: threads, kernel: kernel, minimumParallelFlops: 0
                            ) { rows, columns in
                                let final = rows.allSatisfy { i in
                                    columns.allSatisfy { j in cs[i * n + j].bitPattern == expected[i * n + j].bitPattern
                                    }
                                }
                                lock.withLock { blocks.append((rows, columns, final)) }
                            }
                        }
                    }
                }
            }
            let label = "m=\(m) n=\(n) k=\(k) \(kernel) threads=\(threads)"
            #expect(c.map(\.bitPattern) == expected.map(\.bitPattern), "\(label)")
            var seen = [Int](repeating: 0, count: m * n)
            for (rows, columns, _) in blocks { for i in rows { for j in columns { seen[i * n + j] += 1 } } }
            #expect(seen.allSatisfy { $0 == 1 }, "\(label): blocks do not cover C exactly once")
            let allFinal = blocks.allSatisfy { $0.2 }
            #expect(allFinal, "\(label): a block was not final when its call ran")
            let whole = Gemm.blocksAreWholeRows(
                m: m, n: n, k: k, threads: threads, kernel: kernel, minimumParallelFlops: 0)
            let wholeRows = blocks.allSatisfy { $0.1 == 0..<n }
            #expect(wholeRows == whole, "\(label)")
            #expect(threads > 1 || blocks.count == 1, "\(label): one thread, one block")
        }
    }
}
