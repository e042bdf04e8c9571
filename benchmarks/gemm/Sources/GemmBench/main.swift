// Times dropmodel's deterministic GEMM (Kernels.Gemm.multiply) on the eight matrix products of
// one training step of a 784-1024-1024-10 network at batch 100 (Specs/determinism.md §4.2,
// §4.5), with the same transposes as the trainer:
//   forward   Z_l  += Xm_l · W_lᵀ   m = batch, n = out, k = in   (transB)
//   gradient  gW_l  = dZ_lᵀ · Xm_l  m = out, n = in, k = batch   (transA)
//   backward  dX    = dZ_l · W_l    m = batch, n = in, k = out   (l > 0)
// Prints one JSON object: per product the median seconds and GFLOP/s (and the GFLOP/s of the
// fastest sample, "best_gflops"), and the total FLOPs over
// the sum of the medians ("aggregate_gflops"), and the kernel path that ran ("kernel").
//
// With --products paths instead: 1024x1024x1024 (no transposes) and the two large forward
// products (100x784·784x1024, 100x1024·1024x1024), for comparing the kernel paths. --kernel
// runs an explicit path (scalar, avx2, avx512) instead of the default one; a path this CPU lacks
// is not run ({"kernel": ..., "available": false}). --clock cpu times this thread's CPU time
// instead of the wall clock.
//
// Usage: `GemmBench --help`; bad usage exits 64 with the reason.
import Foundation
import Kernels

var layers = [784, 1024, 1024, 10]
var batch = 100
var threads = 1
var repeats = 31
var minSeconds = 0.2
var productSet = "step"
var timer = CLOCK_MONOTONIC
var kernel = Gemm.Kernel.automatic
let usage = """
    usage: GemmBench [--layers 784,1024,1024,10] [--batch 100] [--threads 1] [--repeats 31]
                     [--min-seconds 0.2] [--products step|paths] [--kernel default|scalar|avx2|avx512]
                     [--clock wall|cpu]
    """

/// Bad usage: the reason and the usage line on standard error, exit 64 (no trap, no backtrace).
func fail(_ reason: String) -> Never {
    FileHandle.standardError.write(Data("GemmBench: \(reason)\n\(usage)\n".utf8))
    exit(64)
}

func number<T: LosslessStringConvertible & Comparable>(_ flag: String, _ value: String, least: T) -> T {
    guard let n = T(value), n >= least else { fail("\(flag): \(value) is not a number of at least \(least)") }
    return n
}

var args = Array(CommandLine.arguments.dropFirst())
while !args.isEmpty {
    let flag = args.removeFirst()
    if flag == "--help" || flag == "-h" {
        print(usage)
        exit(0)
    }
    guard let value = args.first else { fail("\(flag) needs a value") }
    args.removeFirst()
    switch flag {
    case "--layers":
        layers = value.split(separator: ",").map { number(flag, String($0), least: 1) }
        if layers.count < 2 { fail("--layers: at least two sizes") }
    case "--batch": batch = number(flag, value, least: 1)
    case "--threads": threads = number(flag, value, least: 1)
    case "--repeats": repeats = number(flag, value, least: 1)
    case "--min-seconds": minSeconds = number(flag, value, least: 0.0)
    case "--products":
        guard ["step", "paths"].contains(value) else { fail("--products: step or paths") }
        productSet = value
    case "--clock":
        // cpu: this thread's CPU time, which time slices given to other programs do not count in
        // (with --threads 1 all the work runs on this thread).
        guard ["wall", "cpu"].contains(value) else { fail("--clock: wall or cpu") }
        timer = value == "cpu" ? CLOCK_THREAD_CPUTIME_ID : CLOCK_MONOTONIC
    case "--kernel":
        let kernels: [String: Gemm.Kernel] = [
            "default": .automatic, "scalar": .scalar, "avx2": .avx2, "avx512": .avx512,
        ]
        guard let k = kernels[value] else { fail("--kernel: default, scalar, avx2 or avx512") }
        kernel = k
    default: fail("unknown option \(flag)")
    }
}

// The name of the path that runs (Gemm.path's names).
let kernelName: String
switch kernel {
case .automatic: kernelName = Gemm.path
case .scalar: kernelName = "scalar"
case .avx2: kernelName = "avx2+fma"
case .avx512: kernelName = "avx512"
}
guard Gemm.isAvailable(kernel) else {
    print(#"{"kernel": "\#(kernelName)", "available": false}"#)
    exit(0)
}

struct Product {
    let name: String, kind: String
    let transA: Bool, transB: Bool
    let m: Int, n: Int, k: Int
    let lda: Int, ldb: Int, ldc: Int
    let accumulate: Bool
    var flops: Double { 2 * Double(m) * Double(n) * Double(k) }
}

var products: [Product] = []
if productSet == "paths" {
    products.append(
        Product(
            name: "square1024", kind: "square", transA: false, transB: false,
            m: 1024, n: 1024, k: 1024, lda: 1024, ldb: 1024, ldc: 1024, accumulate: false))
    for (l, (i, o)) in [(784, 1024), (1024, 1024)].enumerated() {
        products.append(
            Product(
                name: "forward\(l)", kind: "forward", transA: false, transB: true,
                m: batch, n: o, k: i, lda: i, ldb: i, ldc: o, accumulate: true))
    }
}
for l in 0..<(layers.count - 1) where productSet == "step" {
    let (i, o) = (layers[l], layers[l + 1])
    // Xm [batch, i] · W[o, i]ᵀ -> Z [batch, o]
    products.append(
        Product(
            name: "forward\(l)", kind: "forward", transA: false, transB: true,
            m: batch, n: o, k: i, lda: i, ldb: i, ldc: o, accumulate: true))
}
for l in stride(from: layers.count - 2, through: 0, by: -1) where productSet == "step" {
    let (i, o) = (layers[l], layers[l + 1])
    // dZ [batch, o]ᵀ · Xm [batch, i] -> gW [o, i]
    products.append(
        Product(
            name: "gradient\(l)", kind: "gradient", transA: true, transB: false,
            m: o, n: i, k: batch, lda: o, ldb: i, ldc: i, accumulate: false))
    if l > 0 {
        // dZ [batch, o] · W [o, i] -> dX [batch, i]
        products.append(
            Product(
                name: "backward\(l)", kind: "backward", transA: false, transB: false,
                m: batch, n: i, k: o, lda: o, ldb: i, ldc: i, accumulate: false))
    }
}

// The operands on 2 MiB pages where they span one, as training's weights and velocities are
// (dm_advise_huge_pages in CKernels, which this package cannot reach: the same two madvise
// calls over the 2 MiB pages the array touches). The kernel's rate is measured on the memory
// it trains on.
func adviseHugePages(_ p: UnsafeMutableRawPointer, bytes: Int) {
    let huge = 2 << 20
    guard bytes >= huge else { return }
    let start = Int(bitPattern: p) & ~(huge - 1)
    let end = (Int(bitPattern: p) + bytes + huge - 1) & ~(huge - 1)
    guard let base = UnsafeMutableRawPointer(bitPattern: start) else { return }
    if madvise(base, end - start, 14 /* MADV_HUGEPAGE */) == 0 {
        _ = madvise(base, end - start, 25 /* MADV_COLLAPSE */)
    }
}

// Deterministic operands in [-1, 1) (values do not affect the speed of this kernel).
func filled(_ count: Int, seed: UInt64) -> UnsafeMutablePointer<Float> {
    let p = UnsafeMutablePointer<Float>.allocate(capacity: max(count, 1))
    defer { adviseHugePages(UnsafeMutableRawPointer(p), bytes: count * 4) }
    var s = seed &* 0x9E37_79B9_7F4A_7C15 | 1
    for i in 0..<count {
        s ^= s << 13; s ^= s >> 7; s ^= s << 17
        p[i] = Float(s >> 40) / Float(1 << 23) - 1
    }
    return p
}

@MainActor func now() -> Double {
    var ts = timespec()
    clock_gettime(timer, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}

var results: [String] = []
var totalFlops = 0.0
var totalSeconds = 0.0
for (index, p) in products.enumerated() {
    let aCount = (p.transA ? p.k : p.m) * p.lda
    let bCount = (p.transB ? p.n : p.k) * p.ldb
    let a = filled(aCount, seed: UInt64(3 * index + 1))
    let b = filled(bCount, seed: UInt64(3 * index + 2))
    let c = filled(p.m * p.ldc, seed: UInt64(3 * index + 3))
    func run() {
        Gemm.multiply(
            transA: p.transA, transB: p.transB, m: p.m, n: p.n, k: p.k,
            a: a, lda: p.lda, b: b, ldb: p.ldb, c: c, ldc: p.ldc,
            accumulate: p.accumulate, threads: threads, kernel: kernel)
    }
    // The warm-up call also says how long one call takes. A call of 0.5 s or more (the scalar
    // path on 1024³ takes seconds) needs no warming up: it is the first sample.
    var t0 = now()
    run()
    var once = now() - t0
    var samples: [Double] = once >= 0.5 ? [once] : []
    if samples.isEmpty {
        t0 = now()
        run()
        once = max(now() - t0, 1e-7)
    }
    // Calls per sample: enough for about 2 ms, so timer resolution does not matter.
    let inner = max(1, Int(0.002 / once))
    let start = now()
    while samples.count < repeats || now() - start < minSeconds {
        let t = now()
        for _ in 0..<inner { run() }
        samples.append((now() - t) / Double(inner))
    }
    samples.sort()
    let median = samples[samples.count / 2]
    totalFlops += p.flops
    totalSeconds += median
    results.append(
        """
        {"name": "\(p.name)", "kind": "\(p.kind)", "m": \(p.m), "n": \(p.n), "k": \(p.k), \
        "transA": \(p.transA), "transB": \(p.transB), "seconds": \(median), \
        "gflops": \(p.flops / median / 1e9), "best_gflops": \(p.flops / samples[0] / 1e9), \
        "samples": \(samples.count)}
        """)
    a.deallocate(); b.deallocate(); c.deallocate()
}
print(
    """
    {"kernel": "\(kernelName)", "available": true, "products_set": "\(productSet)", \
    "threads": \(threads), "batch": \(batch), \
    "layers": [\(layers.map(String.init).joined(separator: ", "))], \
    "flops_per_step": \(totalFlops), "seconds_per_step": \(totalSeconds), \
    "aggregate_gflops": \(totalFlops / totalSeconds / 1e9), \
    "products": [\(results.joined(separator: ", "))]}
    """)
