import CKernels

/// Deterministic float32 matrix products (Specs/determinism.md).
///
/// For `C = op(A)·op(B)` (C is m×n, inner dimension k) every element of C is computed as
///
///     acc = accumulate ? C[i][j] : +0
///     for p in 0..<k { acc = fma(a(i,p), b(p,j), acc) }   // fused multiply-add, one rounding
///     C[i][j] = acc
///
/// on every kernel path (AVX-512 or AVX2+FMA intrinsics, or the portable `fmaf` fallback) and for
/// every thread count: threads split the *output* (blocks of rows or of columns of C), never k.
/// `ReferenceGemm` is this definition written as a plain triple loop.
///
/// Storage is row-major with explicit strides (in elements):
/// `op(A)(i,p)` is `a[i*lda + p]`, or `a[p*lda + i]` if `transA`;
/// `op(B)(p,j)` is `b[p*ldb + j]`, or `b[j*ldb + p]` if `transB`; `C(i,j)` is `c[i*ldc + j]`.
public enum Gemm {
    /// A kernel path. All paths give the same bits; they differ only in speed.
    public enum Kernel: Sendable, Hashable, CaseIterable {
        /// The path `path` names: the fastest one the CPU has (AVX-512, else AVX2+FMA, else
        /// scalar), unless `DROPMODEL_KERNEL` forces another (Specs/determinism.md §2 rule 5).
        case automatic
        /// Portable C, one `fmaf` per multiply-add (slow).
        case scalar
        /// AVX2+FMA intrinsics, 6×16 register tile, packed panels.
        case avx2
        /// AVX-512 (F, VL, BW, DQ) intrinsics, 14×32 register tile, packed panels.
        case avx512

        var code: Int32 {
            switch self {
            case .automatic: -1
            case .scalar: 0
            case .avx2: 1
            case .avx512: 2
            }
        }
    }

    /// The kernel path `multiply` uses by default: `"avx512"`, `"avx2+fma"` or `"scalar"`.
    public static var path: String {
        switch dm_kernel_path() {
        case 2: "avx512"
        case 1: "avx2+fma"
        default: "scalar"
        }
    }

    /// Whether this CPU can run `kernel` (`.scalar` and `.automatic` always can).
    public static func isAvailable(_ kernel: Kernel) -> Bool {
        kernel == .automatic || dm_kernel_path_available(kernel.code) != 0
    }

    /// The rule `DROPMODEL_KERNEL` follows (CKernels `dm_kernel_path_choose`), for tests of the
    /// values this process was not started with: the path for the variable's value
    /// (`nil` when unset) on a CPU whose fastest path is `best`, and the notice printed on stderr
    /// when the value is not honoured.
    package static func kernel(forEnvironment value: String?, best: Kernel) -> (kernel: Kernel, notice: String?) {
        var notice = [CChar](repeating: 0, count: 256)
        let code = dm_kernel_path_choose(value, best.code, &notice, UInt(notice.count))
        let kernel = Kernel.allCases.first { $0.code == code } ?? .scalar
        let text = notice.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        return (kernel, text.isEmpty ? nil : text)
    }

    /// `C (m×n) = (accumulate ? C : 0) + op(A)·op(B)`, with the output split between `threads`
    /// workers (the calling thread and `threads - 1` pool threads; use at most the number of
    /// cores). Bit-identical for every `threads` (see the type's documentation).
    public static func multiply(
        transA: Bool, transB: Bool, m: Int, n: Int, k: Int,
        a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
        c: UnsafeMutablePointer<Float>, ldc: Int, accumulate: Bool, threads: Int
    ) {
        multiply(
            transA: transA, transB: transB, m: m, n: n, k: k, a: a, lda: lda, b: b, ldb: ldb,
            c: c, ldc: ldc, accumulate: accumulate, threads: threads, kernel: .automatic)
    }

    /// `multiply` on an explicit kernel path (a path the CPU lacks runs the fastest one it has),
    /// for tests that compare paths within one process. Products of fewer than
    /// `minimumParallelFlops` floating-point operations (2·m·n·k) run on the calling thread
    /// whatever `threads` says (pass 0 to always use `threads` workers, as far as there are
    /// register tiles to share). Neither choice changes a bit of the result.
    public static func multiply(
        transA: Bool, transB: Bool, m: Int, n: Int, k: Int,
        a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
        c: UnsafeMutablePointer<Float>, ldc: Int, accumulate: Bool, threads: Int, kernel: Kernel,
        minimumParallelFlops: Int = Gemm.defaultMinimumParallelFlops
    ) {
        run(
            transA: transA, transB: transB, m: m, n: n, k: k, a: a, lda: lda, b: b, ldb: ldb, c: c, ldc: ldc,
            accumulate: accumulate, threads: threads, kernel: kernel, minimumParallelFlops: minimumParallelFlops,
            update: nil, epilogue: nil, afterBlock: nil)
    }

    /// `multiply` (not accumulated), then `afterBlock(rows, columns)` for each block of C as soon
    /// as the worker that computed it has finished it, on that worker: the blocks are disjoint
    /// and cover C (one block, all of C, when the product runs on one thread). Work on the block
    /// that needs no other block (an element-wise pass over the new values) so joins the product's
    /// parallel region instead of needing one of its own, and finds the values still in cache.
    /// The product's bits are those of ``multiply``; `afterBlock` must write only within its block
    /// (or memory no other block's call touches) for the whole to be independent of the split.
    package static func multiply(
        transA: Bool, transB: Bool, m: Int, n: Int, k: Int,
        a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
        c: UnsafeMutablePointer<Float>, ldc: Int, threads: Int, kernel: Kernel = .automatic,
        minimumParallelFlops: Int = Gemm.defaultMinimumParallelFlops,
        afterBlock: (_ rows: Range<Int>, _ columns: Range<Int>) -> Void
    ) {
        withoutActuallyEscaping(afterBlock) { after in
            run(
                transA: transA, transB: transB, m: m, n: n, k: k, a: a, lda: lda, b: b, ldb: ldb, c: c, ldc: ldc,
                accumulate: false, threads: threads, kernel: kernel, minimumParallelFlops: minimumParallelFlops,
                update: nil, epilogue: nil, afterBlock: after)
        }
    }

    /// A dense layer's forward product with its epilogue fused (Specs/determinism.md §4.2):
    /// `C (m×n) = act(bias + op(A)·op(B))`, each element the FMA chain of ``multiply`` started
    /// from `bias[j]` (from +0 when `bias` is nil) instead of from C, then `relu` (`z > 0 ? z :
    /// +0`) when asked (CKernels `dm_sgemm_bias_act_path`). The bits equal those of filling C
    /// with the bias row by row, ``multiply`` with `accumulate`, then the relu loop, on every path
    /// and thread count; C is neither read nor written twice.
    ///
    /// - Parameters:
    ///   - bias: `n` values (column j's at `bias[j]`), or nil.
    public static func multiply(
        transA: Bool, transB: Bool, m: Int, n: Int, k: Int,
        a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
        c: UnsafeMutablePointer<Float>, ldc: Int, bias: UnsafePointer<Float>?, relu: Bool, threads: Int,
        kernel: Kernel = .automatic, minimumParallelFlops: Int = Gemm.defaultMinimumParallelFlops
    ) {
        run(
            transA: transA, transB: transB, m: m, n: n, k: k, a: a, lda: lda, b: b, ldb: ldb, c: c, ldc: ldc,
            accumulate: false, threads: threads, kernel: kernel, minimumParallelFlops: minimumParallelFlops,
            update: nil, epilogue: Epilogue(bias: bias, relu: relu), afterBlock: nil)
    }

    /// The fused forward product above, then `afterBlock` for each block of C as the `multiply`
    /// with `afterBlock:` calls it.
    package static func multiply(
        transA: Bool, transB: Bool, m: Int, n: Int, k: Int,
        a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
        c: UnsafeMutablePointer<Float>, ldc: Int, bias: UnsafePointer<Float>?, relu: Bool, threads: Int,
        kernel: Kernel = .automatic, minimumParallelFlops: Int = Gemm.defaultMinimumParallelFlops,
        afterBlock: (_ rows: Range<Int>, _ columns: Range<Int>) -> Void
    ) {
        withoutActuallyEscaping(afterBlock) { after in
            run(
                transA: transA, transB: transB, m: m, n: n, k: k, a: a, lda: lda, b: b, ldb: ldb, c: c, ldc: ldc,
                accumulate: false, threads: threads, kernel: kernel, minimumParallelFlops: minimumParallelFlops,
                update: nil, epilogue: Epilogue(bias: bias, relu: relu), afterBlock: after)
        }
    }

    /// The fused epilogue of a forward product (the `multiply` with `bias:relu:`).
    private struct Epilogue {
        let bias: UnsafePointer<Float>?
        let relu: Bool
    }

    /// The momentum-SGD update fused into a product: G = opA(A) · opB(B) (m x n, never stored),
    /// each element consumed at once by `v = mu*v - lr*(g + l2*w)` (`v = mu*v - lr*g` when l2 is
    /// 0), then `w = w + v`, every operation rounded (CKernels `dm_sgemm_update_path`). The same
    /// bits as ``multiply`` into a buffer followed by that update as a loop, on any path and
    /// thread count.
    public struct Update {
        public var w: UnsafeMutablePointer<Float>
        public var v: UnsafeMutablePointer<Float>
        public var ld: Int
        public var mu: Float, lr: Float, l2: Float
        public init(
            w: UnsafeMutablePointer<Float>, v: UnsafeMutablePointer<Float>, ld: Int, mu: Float, lr: Float, l2: Float
        ) {
            self.w = w
            self.v = v
            self.ld = ld
            self.mu = mu
            self.lr = lr
            self.l2 = l2
        }
    }

    public static func multiplyUpdate(
        transA: Bool, transB: Bool, m: Int, n: Int, k: Int,
        a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
        update: Update, threads: Int, kernel: Kernel = .automatic,
        minimumParallelFlops: Int = Gemm.defaultMinimumParallelFlops
    ) {
        precondition(update.ld >= n, "Gemm: stride too small")
        run(
            transA: transA, transB: transB, m: m, n: n, k: k, a: a, lda: lda, b: b, ldb: ldb,
            c: update.w, ldc: update.ld, accumulate: false, threads: threads, kernel: kernel,
            minimumParallelFlops: minimumParallelFlops, update: update, epilogue: nil, afterBlock: nil)
    }

    /// ``multiplyUpdate(transA:transB:m:n:k:a:lda:b:ldb:update:threads:kernel:minimumParallelFlops:)``,
    /// then `afterBlock(rows, columns)` for each block of w (and v) as soon as its update is done,
    /// on the worker that did it, as the `multiply` with `afterBlock:` calls it: a pass over the
    /// updated rows (max-norm over whole rows, when the block has every column) joins the
    /// update's parallel region.
    package static func multiplyUpdate(
        transA: Bool, transB: Bool, m: Int, n: Int, k: Int,
        a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
        update: Update, threads: Int, kernel: Kernel = .automatic,
        minimumParallelFlops: Int = Gemm.defaultMinimumParallelFlops,
        afterBlock: (_ rows: Range<Int>, _ columns: Range<Int>) -> Void
    ) {
        precondition(update.ld >= n, "Gemm: stride too small")
        withoutActuallyEscaping(afterBlock) { after in
            run(
                transA: transA, transB: transB, m: m, n: n, k: k, a: a, lda: lda, b: b, ldb: ldb,
                c: update.w, ldc: update.ld, accumulate: false, threads: threads, kernel: kernel,
                minimumParallelFlops: minimumParallelFlops, update: update, epilogue: nil, afterBlock: after)
        }
    }

    private static func run(
        transA: Bool, transB: Bool, m: Int, n: Int, k: Int,
        a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
        c: UnsafeMutablePointer<Float>, ldc: Int, accumulate: Bool, threads: Int, kernel: Kernel,
        minimumParallelFlops: Int, update: Update?, epilogue: Epilogue?,
        afterBlock: ((Range<Int>, Range<Int>) -> Void)?
    ) {
        precondition(m >= 0 && n >= 0 && k >= 0, "Gemm: negative dimension")
        precondition(lda >= (transA ? m : k) && ldb >= (transB ? k : n) && ldc >= n, "Gemm: stride too small")
        guard m > 0, n > 0 else { return }
        let code = kernel.code
        let acc: Int32 = accumulate ? 1 : 0

        let plan = Plan(m: m, n: n, k: k, threads: threads, kernel: kernel, minimumParallelFlops: minimumParallelFlops)
        let (splitRows, unit, tiles, workers) = (plan.splitRows, plan.unit, plan.tiles, plan.workers)
        let job = Job(
            code: code, transA: transA, transB: transB, m: m, n: n, k: k, a: a, lda: lda, b: b,
            ldb: ldb, c: c, ldc: ldc, accumulate: acc, splitRows: splitRows, unit: unit,
            tiles: tiles, workers: workers, update: update, epilogue: epilogue, afterBlock: afterBlock)
        if workers == 1 {
            job.run(0)
            return
        }
        // The blocks run on a small persistent pool (CKernels/pool.c): measured 5-8 % faster
        // than DispatchQueue.concurrentPerform on the 1-2 ms training products with 2 threads,
        // and 1.6-1.9x faster (rather than slower) on the 20-50 µs ones.
        withUnsafePointer(to: job) { job in
            dm_parallel_for(
                workers,
                { context, w in
                    context!.assumingMemoryBound(to: Job.self).pointee.run(w)
                }, UnsafeMutableRawPointer(mutating: job))
        }
    }

    /// How a product is shared between threads. Split the larger output dimension, so the
    /// operand every worker packs in full is the smaller one, in the units `dm_kernel_tile` gives
    /// for the path that runs (whole register tiles, except rows on AVX-512: evenly). Never
    /// split k.
    private struct Plan {
        let splitRows: Bool
        let unit: Int, tiles: Int, workers: Int

        init(m: Int, n: Int, k: Int, threads: Int, kernel: Kernel, minimumParallelFlops: Int) {
            splitRows = m >= n
            var tileRows = 1, tileColumns = 1
            dm_kernel_tile(kernel.code, &tileRows, &tileColumns)
            unit = splitRows ? tileRows : tileColumns
            tiles = ((splitRows ? m : n) + unit - 1) / unit
            workers = 2 * m * n * k < minimumParallelFlops ? 1 : max(1, min(threads, tiles))
        }

        /// Whether every block is made of whole rows of C (all n columns).
        var wholeRows: Bool { workers == 1 || splitRows }
    }

    /// Whether the blocks `afterBlock` receives for this product are whole rows of C (so a pass
    /// over whole rows can run in them); otherwise they are column blocks. The same arguments as
    /// the product's.
    package static func blocksAreWholeRows(
        m: Int, n: Int, k: Int, threads: Int, kernel: Kernel = .automatic,
        minimumParallelFlops: Int = Gemm.defaultMinimumParallelFlops
    ) -> Bool {
        Plan(m: m, n: n, k: k, threads: threads, kernel: kernel, minimumParallelFlops: minimumParallelFlops).wholeRows
    }

    /// One product split into `workers` blocks of whole register tiles (rows or columns of C). Block `w` is computed by
    /// `run(w)`; blocks write disjoint parts of C and only read A, B.
    private struct Job {
        let code: Int32
        let transA: Bool, transB: Bool
        let m: Int, n: Int, k: Int
        let a: UnsafePointer<Float>, lda: Int
        let b: UnsafePointer<Float>, ldb: Int
        let c: UnsafeMutablePointer<Float>, ldc: Int
        let accumulate: Int32
        let splitRows: Bool
        let unit: Int, tiles: Int, workers: Int
        let update: Update?
        let epilogue: Epilogue?
        let afterBlock: ((Range<Int>, Range<Int>) -> Void)?

        /// The product of rows/columns [lo, hi) (the whole product when lo == 0, hi == extent).
        func block(rows: Bool, _ lo: Int, _ hi: Int) {
            let tA: Int32 = transA ? 1 : 0
            let tB: Int32 = transB ? 1 : 0
            let (mm, nn) = rows ? (hi - lo, n) : (m, hi - lo)
            let aa = rows ? (transA ? a + lo : a + lo * lda) : a
            let bb = rows ? b : (transB ? b + lo * ldb : b + lo)
            if let u = update {
                let off = rows ? lo * u.ld : lo
                var d = dm_update(w: u.w + off, v: u.v + off, ld: u.ld, mu: u.mu, lr: u.lr, l2: u.l2)
                dm_sgemm_update_path(code, tA, tB, mm, nn, k, aa, lda, bb, ldb, &d)
            } else if let e = epilogue {
                let cc = rows ? c + lo * ldc : c + lo
                let bias = rows ? e.bias : e.bias.map { $0 + lo }
                dm_sgemm_bias_act_path(code, tA, tB, mm, nn, k, aa, lda, bb, ldb, cc, ldc, bias, e.relu ? 1 : 0)
            } else {
                let cc = rows ? c + lo * ldc : c + lo
                dm_sgemm_path(code, tA, tB, mm, nn, k, aa, lda, bb, ldb, cc, ldc, accumulate)
            }
            afterBlock?(rows ? lo..<hi : 0..<m, rows ? 0..<n : lo..<hi)
        }

        func run(_ w: Int) {
            guard workers > 1 else {
                block(rows: true, 0, m)
                return
            }
            let extent = splitRows ? m : n
            let lo = min(extent, tiles * w / workers * unit)
            let hi = min(extent, tiles * (w + 1) / workers * unit)
            guard hi > lo else { return }
            block(rows: splitRows, lo, hi)
        }
    }

    /// Products smaller than this (in floating-point operations, 2·m·n·k; about 10 µs on one
    /// core) run on the calling thread by default: dispatching would cost more than it saves.
    /// Does not affect results.
    public static let defaultMinimumParallelFlops = 1 << 20
}

/// The contract of `Gemm`, literally: one fused multiply-add chain per element in increasing p.
/// Slow; for tests and small shapes.
package enum ReferenceGemm {
    public static func multiply(
        transA: Bool, transB: Bool, m: Int, n: Int, k: Int,
        a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
        c: UnsafeMutablePointer<Float>, ldc: Int, accumulate: Bool
    ) {
        for i in 0..<m {
            for j in 0..<n {
                var acc: Float = accumulate ? c[i * ldc + j] : 0
                for p in 0..<k {
                    let x = transA ? a[p * lda + i] : a[i * lda + p]
                    let y = transB ? b[j * ldb + p] : b[p * ldb + j]
                    // `addingProduct` is IEEE 754 fusedMultiplyAdd: acc + x·y rounded once.
                    acc = acc.addingProduct(x, y)
                }
                c[i * ldc + j] = acc
            }
        }
    }
}
