// Times one training step of the CNN
//
//     28x28x1 -> conv 3x3, 16 filters, relu -> max-pool 2 -> conv 3x3, 32 filters, relu -> max-pool 2
//             -> dense 800-128, relu -> dense 128-10, softmax cross-entropy
//
// at batch 100 with dropmodel's kernels (Kernels.Convolution, Kernels.Pooling, Kernels.Gemm),
// the way a trainer would run it: forward, loss gradient, backward with the momentum update fused
// into every weight-gradient product (Gemm.multiplyUpdate, Convolution.weightGradient(update:)),
// biases updated after. Dropout masks are left out (an elementwise multiply per activation).
// Elementwise steps (relu, its derivative, softmax) are plain Swift loops split over examples.
//
// Prints, per thread count: images per second, the step's time per operation, and GFLOP/s of the
// convolution kernels beside the GEMM's own rate on a product of the same m, n, k (operands already
// in memory: what an im2col implementation would get at best, before writing its patch matrix);
// each convolution and pooling kernel timed alone (warm caches); and the GEMM on the dense product
// 100x784 . 784x1024 (the reference shape of shared/reference/kernels.md). Then one JSON object per
// thread count. With one thread every time is the process's CPU time (so time spent descheduled on
// a shared machine does not count); with more, wall time, and "cores used" says how much of the
// cores the run got.
//
// usage: swift run -c release --package-path benchmarks/conv ConvBench
//            [--threads 1,2] [--batch 100] [--padding valid|same] [--min-seconds 2] [--repeats 31]
// (pin it, e.g. taskset -c 0 for one thread, as benchmarks/run.py pins its runs)
import Foundation
import Kernels

var threadCounts = [1, 2]
var batch = 100
var padding = Convolution.Padding.valid
var minSeconds = 2.0
var repeats = 31
var args = Array(CommandLine.arguments.dropFirst())
while !args.isEmpty {
    let flag = args.removeFirst()
    guard let value = args.first else { fatalError("\(flag) needs a value") }
    args.removeFirst()
    switch flag {
    case "--threads": threadCounts = value.split(separator: ",").map { Int($0)! }
    case "--batch": batch = Int(value)!
    case "--padding": padding = Convolution.Padding(rawValue: value)!
    case "--min-seconds": minSeconds = Double(value)!
    case "--repeats": repeats = Int(value)!
    default: fatalError("unknown option \(flag)")
    }
}

func cpuSeconds() -> Double {
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    return Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec)
        + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) * 1e-6
}

/// The clock the measurements use: wall time, or, with one thread, this process's CPU time, so
/// that time spent descheduled by other processes on a shared machine is not counted (the pool's
/// workers spin while idle, so with more threads CPU time would overstate the work; wall time
/// then).
var clock = CLOCK_MONOTONIC

func now() -> Double {
    var ts = timespec()
    clock_gettime(clock, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}

func wallNow() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}

/// Deterministic values in [lo, hi).
func filled(_ count: Int, seed: UInt64, _ lo: Float = -1, _ hi: Float = 1) -> UnsafeMutablePointer<Float> {
    let p = UnsafeMutablePointer<Float>.allocate(capacity: max(count, 1))
    var s = seed &* 0x9E37_79B9_7F4A_7C15 | 1
    for i in 0..<count {
        s ^= s << 13; s ^= s >> 7; s ^= s << 17
        p[i] = lo + (hi - lo) * (Float(s >> 40) / Float(1 << 24))
    }
    return p
}

func buffer(_ p: UnsafeMutablePointer<Float>, _ n: Int) -> UnsafeBufferPointer<Float> {
    UnsafeBufferPointer(start: p, count: n)
}
func mbuffer(_ p: UnsafeMutablePointer<Float>, _ n: Int) -> UnsafeMutableBufferPointer<Float> {
    UnsafeMutableBufferPointer(start: p, count: n)
}

/// One layer's parameters with their velocities.
struct Parameters {
    let w: UnsafeMutablePointer<Float>, vw: UnsafeMutablePointer<Float>
    let b: UnsafeMutablePointer<Float>, vb: UnsafeMutablePointer<Float>, gb: UnsafeMutablePointer<Float>
    let rows: Int, cols: Int
    init(rows: Int, cols: Int, seed: UInt64) {
        let scale = Float(2.0 / Double(cols)).squareRoot()
        w = filled(rows * cols, seed: seed, -scale, scale)
        vw = filled(rows * cols, seed: seed + 1, 0, 0)
        b = filled(rows, seed: seed + 2, 0, 0)
        vb = filled(rows, seed: seed + 3, 0, 0)
        gb = filled(rows, seed: seed + 4, 0, 0)
        self.rows = rows
        self.cols = cols
    }
    func updateBias(mu: Float, lr: Float) {
        for i in 0..<rows { vb[i] = mu * vb[i] - lr * gb[i]; b[i] = b[i] + vb[i] }
    }
}

let B = batch
let conv1 = try Convolution.Geometry(
    inputHeight: 28, inputWidth: 28, channels: 1, kernelHeight: 3, kernelWidth: 3,
    padding: padding, filters: 16)
let pool1 = try Pooling.Geometry(
    inputHeight: conv1.outputHeight, inputWidth: conv1.outputWidth, channels: 16,
    poolHeight: 2, poolWidth: 2)
let conv2 = try Convolution.Geometry(
    inputHeight: pool1.outputHeight, inputWidth: pool1.outputWidth, channels: 16,
    kernelHeight: 3, kernelWidth: 3, padding: padding, filters: 32)
let pool2 = try Pooling.Geometry(
    inputHeight: conv2.outputHeight, inputWidth: conv2.outputWidth, channels: 32,
    poolHeight: 2, poolWidth: 2)
let features = pool2.outputCount
let hidden = 128, classes = 10

// Activations and their gradients.
let x0 = filled(B * conv1.inputCount, seed: 1, 0, 1)
let labels = (0..<B).map { $0 % classes }
let y1 = filled(B * conv1.outputCount, seed: 2), d1 = filled(B * conv1.outputCount, seed: 3)
let p1 = filled(B * pool1.outputCount, seed: 4), dp1 = filled(B * pool1.outputCount, seed: 5)
let a1 = UnsafeMutablePointer<Int32>.allocate(capacity: B * pool1.outputCount)
let y2 = filled(B * conv2.outputCount, seed: 6), d2 = filled(B * conv2.outputCount, seed: 7)
let p2 = filled(B * features, seed: 8), dp2 = filled(B * features, seed: 9)
let a2 = UnsafeMutablePointer<Int32>.allocate(capacity: B * features)
let z3 = filled(B * hidden, seed: 10), d3 = filled(B * hidden, seed: 11)
let z4 = filled(B * classes, seed: 12), d4 = filled(B * classes, seed: 13)

let c1 = Parameters(rows: 16, cols: conv1.patchSize, seed: 100)
let c2 = Parameters(rows: 32, cols: conv2.patchSize, seed: 200)
let f3 = Parameters(rows: hidden, cols: features, seed: 300)
let f4 = Parameters(rows: classes, cols: hidden, seed: 400)
let workspace = Convolution.Workspace()
let (mu, lr): (Float, Float) = (0.9, 0.001)

/// Per-operation seconds of the current measurement.
var opSeconds: [String: Double] = [:]
var opOrder: [String] = []
func timed(_ name: String, _ body: () throws -> Void) rethrows {
    let t = now()
    try body()
    if opSeconds[name] == nil { opOrder.append(name) }
    opSeconds[name, default: 0] += now() - t
}

/// p = p > 0 ? p : 0, written as a select (a branch on the sign of random data mispredicts
/// half the time and costs several times the loop).
func relu(_ p: UnsafeMutablePointer<Float>, perRow: Int, threads: Int) {
    Parallel.forEachRange(count: B, threads: threads, minimumCount: 8) { rows in
        for i in (rows.lowerBound * perRow)..<(rows.upperBound * perRow) {
            let v = p[i]
            p[i] = v > 0 ? v : 0
        }
    }
}

/// g = y > 0 ? g : 0 (the relu's derivative through its output).
func reluBackward(_ g: UnsafeMutablePointer<Float>, _ y: UnsafeMutablePointer<Float>, perRow: Int, threads: Int) {
    Parallel.forEachRange(count: B, threads: threads, minimumCount: 8) { rows in
        for i in (rows.lowerBound * perRow)..<(rows.upperBound * perRow) {
            let v = g[i]  // loaded unconditionally, so the loop is a vector select, not a branch
            g[i] = y[i] > 0 ? v : 0
        }
    }
}

func step(threads t: Int) throws {
    // Forward.
    try timed("conv1.forward") {
        try Convolution.forward(
            conv1, batch: B, input: buffer(x0, B * conv1.inputCount), weights: buffer(c1.w, 16 * conv1.patchSize),
            bias: buffer(c1.b, 16), output: mbuffer(y1, B * conv1.outputCount),
            workspace: workspace, threads: t)
    }
    timed("relu1") { relu(y1, perRow: conv1.outputCount, threads: t) }
    try timed("pool1.forward") {
        try Pooling.maxForward(
            pool1, batch: B, input: buffer(y1, B * pool1.inputCount), output: mbuffer(p1, B * pool1.outputCount),
            argmax: UnsafeMutableBufferPointer(start: a1, count: B * pool1.outputCount), threads: t)
    }
    try timed("conv2.forward") {
        try Convolution.forward(
            conv2, batch: B, input: buffer(p1, B * conv2.inputCount), weights: buffer(c2.w, 32 * conv2.patchSize),
            bias: buffer(c2.b, 32), output: mbuffer(y2, B * conv2.outputCount),
            workspace: workspace, threads: t)
    }
    timed("relu2") { relu(y2, perRow: conv2.outputCount, threads: t) }
    try timed("pool2.forward") {
        try Pooling.maxForward(
            pool2, batch: B, input: buffer(y2, B * pool2.inputCount), output: mbuffer(p2, B * features),
            argmax: UnsafeMutableBufferPointer(start: a2, count: B * features), threads: t)
    }
    timed("dense.forward") {
        for r in 0..<B { for o in 0..<hidden { z3[r * hidden + o] = f3.b[o] } }
        Gemm.multiply(
            transA: false, transB: true, m: B, n: hidden, k: features, a: p2, lda: features, b: f3.w,
            ldb: features, c: z3, ldc: hidden, accumulate: true, threads: t)
        relu(z3, perRow: hidden, threads: t)
        for r in 0..<B { for o in 0..<classes { z4[r * classes + o] = f4.b[o] } }
        Gemm.multiply(
            transA: false, transB: true, m: B, n: classes, k: hidden, a: z3, lda: hidden, b: f4.w,
            ldb: hidden, c: z4, ldc: classes, accumulate: true, threads: t)
        // Softmax cross-entropy gradient: (p - onehot) / B.
        for r in 0..<B {
            let z = z4 + r * classes, d = d4 + r * classes
            var m = z[0]
            for c in 1..<classes where z[c] > m { m = z[c] }
            var s: Float = 0
            for c in 0..<classes { d[c] = Foundation.exp(z[c] - m); s += d[c] }
            for c in 0..<classes { d[c] = (d[c] / s - (c == labels[r] ? 1 : 0)) / Float(B) }
        }
    }
    // Backward.
    timed("dense.backward") {
        for o in 0..<classes { var s: Float = 0; for r in 0..<B { s += d4[r * classes + o] }; f4.gb[o] = s }
        Gemm.multiply(
            transA: false, transB: false, m: B, n: hidden, k: classes, a: d4, lda: classes, b: f4.w,
            ldb: hidden, c: d3, ldc: hidden, accumulate: false, threads: t)
        Gemm.multiplyUpdate(
            transA: true, transB: false, m: classes, n: hidden, k: B, a: d4, lda: classes, b: z3,
            ldb: hidden, update: Gemm.Update(w: f4.w, v: f4.vw, ld: hidden, mu: mu, lr: lr, l2: 0),
            threads: t)
        f4.updateBias(mu: mu, lr: lr)
        reluBackward(d3, z3, perRow: hidden, threads: t)
        for o in 0..<hidden { var s: Float = 0; for r in 0..<B { s += d3[r * hidden + o] }; f3.gb[o] = s }
        Gemm.multiply(
            transA: false, transB: false, m: B, n: features, k: hidden, a: d3, lda: hidden, b: f3.w,
            ldb: features, c: dp2, ldc: features, accumulate: false, threads: t)
        Gemm.multiplyUpdate(
            transA: true, transB: false, m: hidden, n: features, k: B, a: d3, lda: hidden, b: p2,
            ldb: features, update: Gemm.Update(w: f3.w, v: f3.vw, ld: features, mu: mu, lr: lr, l2: 0),
            threads: t)
        f3.updateBias(mu: mu, lr: lr)
    }
    try timed("pool2.backward") {
        try Pooling.maxBackward(
            pool2, batch: B, outputGradient: buffer(dp2, B * features),
            argmax: UnsafeBufferPointer(start: a2, count: B * features),
            into: mbuffer(d2, B * conv2.outputCount), threads: t)
    }
    timed("relu2.backward") { reluBackward(d2, y2, perRow: conv2.outputCount, threads: t) }
    try timed("conv2.inputGradient") {
        try Convolution.inputGradient(
            conv2, batch: B, outputGradient: buffer(d2, B * conv2.outputCount),
            weights: buffer(c2.w, 32 * conv2.patchSize), into: mbuffer(dp1, B * conv2.inputCount),
            workspace: workspace, threads: t)
    }
    try timed("conv2.weightUpdate") {
        try Convolution.weightGradient(
            conv2, batch: B, input: buffer(p1, B * conv2.inputCount),
            outputGradient: buffer(d2, B * conv2.outputCount),
            update: Gemm.Update(w: c2.w, v: c2.vw, ld: conv2.patchSize, mu: mu, lr: lr, l2: 0),
            biasGradient: mbuffer(c2.gb, 32), workspace: workspace, threads: t)
        c2.updateBias(mu: mu, lr: lr)
    }
    try timed("pool1.backward") {
        try Pooling.maxBackward(
            pool1, batch: B, outputGradient: buffer(dp1, B * pool1.outputCount),
            argmax: UnsafeBufferPointer(start: a1, count: B * pool1.outputCount),
            into: mbuffer(d1, B * conv1.outputCount), threads: t)
    }
    timed("relu1.backward") { reluBackward(d1, y1, perRow: conv1.outputCount, threads: t) }
    try timed("conv1.weightUpdate") {
        try Convolution.weightGradient(
            conv1, batch: B, input: buffer(x0, B * conv1.inputCount),
            outputGradient: buffer(d1, B * conv1.outputCount),
            update: Gemm.Update(w: c1.w, v: c1.vw, ld: conv1.patchSize, mu: mu, lr: lr, l2: 0),
            biasGradient: mbuffer(c1.gb, 16), workspace: workspace, threads: t)
        c1.updateBias(mu: mu, lr: lr)
    }
}

/// Multiply-add FLOPs (2 per multiply-add) of the step's products.
func convFlops(_ g: Convolution.Geometry) -> Double {
    2 * Double(B * g.outputHeight * g.outputWidth) * Double(g.filters) * Double(g.patchSize)
}
let productFlops: [String: Double] = [
    "conv1.forward": convFlops(conv1), "conv1.weightUpdate": convFlops(conv1),
    "conv2.forward": convFlops(conv2), "conv2.weightUpdate": convFlops(conv2), "conv2.inputGradient": convFlops(conv2),
    "dense.forward": 2 * Double(B) * Double(features * hidden + hidden * classes),
    "dense.backward": 2 * Double(B) * Double(2 * features * hidden + 2 * hidden * classes),
]
let stepFlops = productFlops.values.reduce(0, +)

/// Median seconds of `body` (timed in groups lasting about 5 ms).
func medianSeconds(_ body: () -> Void) -> Double {
    body()
    let t0 = now()
    body()
    let inner = max(1, Int(0.005 / max(now() - t0, 1e-7)))
    var samples: [Double] = []
    let start = now()
    while samples.count < 15 || now() - start < 0.3 {
        let t = now()
        for _ in 0..<inner { body() }
        samples.append((now() - t) / Double(inner))
    }
    samples.sort()
    return samples[samples.count / 2]
}

/// The GEMM on a product of the same shape as a convolution's (what im2col + GEMM would run).
func gemmRate(m: Int, n: Int, k: Int, transA: Bool, transB: Bool, threads: Int) -> Double {
    let a = filled(m * k, seed: 7), b = filled(k * n, seed: 8), c = filled(m * n, seed: 9)
    defer { a.deallocate(); b.deallocate(); c.deallocate() }
    let s = medianSeconds {
        Gemm.multiply(
            transA: transA, transB: transB, m: m, n: n, k: k, a: a, lda: transA ? m : k, b: b,
            ldb: transB ? k : n, c: c, ldc: n, accumulate: false, threads: threads)
    }
    return 2 * Double(m) * Double(n) * Double(k) / s / 1e9
}

func gemmShape(_ name: String) -> (m: Int, n: Int, k: Int, transA: Bool, transB: Bool)? {
    let g = name.hasPrefix("conv1") ? conv1 : conv2
    let rows = B * g.outputHeight * g.outputWidth
    switch name {
    case "conv1.forward", "conv2.forward": return (rows, g.filters, g.patchSize, false, true)  // P · Wᵀ
    case "conv1.weightUpdate", "conv2.weightUpdate": return (g.filters, g.patchSize, rows, true, false)  // dYᵀ · P
    case "conv2.inputGradient": return (rows, g.patchSize, g.filters, false, false)  // dY · W
    default: return nil
    }
}

/// Each convolution and pooling kernel alone, warm, on the step's operands (median seconds):
/// what the kernel costs without the rest of the step evicting its data.
func kernelsAlone(threads t: Int) throws -> [(String, Double, Double?)] {
    let dw = filled(32 * conv2.patchSize, seed: 50), db = filled(32, seed: 51)
    defer { dw.deallocate(); db.deallocate() }
    var out: [(String, Double, Double?)] = []
    func run(_ name: String, flops: Double?, _ body: () throws -> Void) throws {
        try body()
        let s = medianSeconds { try! body() }
        out.append((name, s, flops.map { $0 / s / 1e9 }))
    }
    for (name, g, x, y, w, bias, dy) in [
        ("conv1", conv1, x0, y1, c1.w, c1.b, d1), ("conv2", conv2, p1, y2, c2.w, c2.b, d2),
    ] {
        let nx = B * g.inputCount, ny = B * g.outputCount, nw = g.weightCount
        try run("\(name).forward", flops: convFlops(g)) {
            try Convolution.forward(
                g, batch: B, input: buffer(x, nx), weights: buffer(w, nw), bias: buffer(bias, g.filters),
                output: mbuffer(y, ny), workspace: workspace, threads: t)
        }
        try run("\(name).weightGradient", flops: convFlops(g)) {
            try Convolution.weightGradient(
                g, batch: B, input: buffer(x, nx), outputGradient: buffer(dy, ny),
                into: mbuffer(dw, nw), workspace: workspace, threads: t)
        }
        try run("\(name).weight+biasGradient", flops: convFlops(g)) {
            try Convolution.weightGradient(
                g, batch: B, input: buffer(x, nx), outputGradient: buffer(dy, ny),
                into: mbuffer(dw, nw), biasGradient: mbuffer(db, g.filters),
                workspace: workspace, threads: t)
        }
        try run("\(name).biasGradient", flops: nil) {
            try Convolution.biasGradient(
                g, batch: B, outputGradient: buffer(dy, ny), into: mbuffer(db, g.filters), threads: t)
        }
        if name == "conv2" {
            try run("conv2.inputGradient", flops: convFlops(g)) {
                try Convolution.inputGradient(
                    g, batch: B, outputGradient: buffer(dy, ny), weights: buffer(w, nw),
                    into: mbuffer(dp1, nx), workspace: workspace, threads: t)
            }
        }
    }
    for (name, g, x, y, a, dx) in [("pool1", pool1, y1, p1, a1, d1), ("pool2", pool2, y2, p2, a2, d2)] {
        let nx = B * g.inputCount, ny = B * g.outputCount
        try run("\(name).forward", flops: nil) {
            try Pooling.maxForward(
                g, batch: B, input: buffer(x, nx), output: mbuffer(y, ny),
                argmax: UnsafeMutableBufferPointer(start: a, count: ny), threads: t)
        }
        let dy = filled(ny, seed: 60)
        defer { dy.deallocate() }
        try run("\(name).backward", flops: nil) {
            try Pooling.maxBackward(
                g, batch: B, outputGradient: buffer(dy, ny), argmax: UnsafeBufferPointer(start: a, count: ny),
                into: mbuffer(dx, nx), threads: t)
        }
    }
    return out
}

print(
    "dropmodel ConvBench: batch \(B), padding \(padding.rawValue), kernel path \(Gemm.path); "
        + "step = \(String(format: "%.1f", stepFlops / 1e6)) MFLOP of products")
for t in threadCounts {
    clock = t == 1 ? CLOCK_PROCESS_CPUTIME_ID : CLOCK_MONOTONIC
    // Warm up (pool threads, workspace growth), then time whole steps; keep the per-op split of
    // all timed steps.
    for _ in 0..<5 { try step(threads: t) }
    opSeconds = [:]
    opOrder = []
    var samples: [Double] = []
    let start = now(), cpuStart = cpuSeconds(), wallStart = wallNow()
    while samples.count < repeats || now() - start < minSeconds {
        let t0 = now()
        try step(threads: t)
        samples.append(now() - t0)
    }
    // CPU seconds per wall second over the timed steps: below `t` when other processes took a
    // share of these cores (the figures are then pessimistic).
    let coresUsed = (cpuSeconds() - cpuStart) / (wallNow() - wallStart)
    let steps = Double(samples.count)
    samples.sort()
    let median = samples[samples.count / 2]
    let imagesPerSecond = Double(B) / median
    let clockName = t == 1 ? "CPU time" : "wall time"
    print(
        String(
            format: """
                \nthreads %d: %.0f images/s by %@ (median step %.3f ms over %d steps; %.1f GFLOP/s of products; cores \
                used \
                %.2f)
                """,
            t, imagesPerSecond, clockName, median * 1e3, samples.count, stepFlops / median / 1e9, coresUsed))
    print("  operation              ms/step   share   GFLOP/s  GEMM same shape, GFLOP/s")
    var opsJSON: [String] = []
    let total = opSeconds.values.reduce(0, +)
    for name in opOrder {
        let s = opSeconds[name]! / steps
        let flops = productFlops[name]
        let gflops = flops.map { $0 / s / 1e9 }
        var gemm: Double? = nil
        if let shape = gemmShape(name) {
            gemm = gemmRate(m: shape.m, n: shape.n, k: shape.k, transA: shape.transA, transB: shape.transB, threads: t)
        }
        let cells = [gflops, gemm].map { $0.map { String(format: "%.1f", $0) } ?? "-" }
        print(
            name.padding(toLength: 22, withPad: " ", startingAt: 0)
                + String(format: "%8.3f %6.1f %%", s * 1e3, 100 * s * steps / total)
                + cells.map { String(repeating: " ", count: max(0, 10 - $0.count)) + $0 }.joined())
        opsJSON.append(
            "{\"name\": \"\(name)\", \"seconds\": \(s), \"gflops\": \(gflops.map { "\($0)" } ?? "null"), "
                + "\"gemm_same_shape_gflops\": \(gemm.map { "\($0)" } ?? "null")}")
    }
    print("  kernel alone (warm)        ms/call  GFLOP/s")
    var aloneJSON: [String] = []
    for (name, seconds, gflops) in try kernelsAlone(threads: t) {
        print(
            name.padding(toLength: 26, withPad: " ", startingAt: 0) + String(format: "%8.3f", seconds * 1e3)
                + (gflops.map { String(format: "%9.1f", $0) } ?? "        -"))
        aloneJSON.append(
            "{\"name\": \"\(name)\", \"seconds\": \(seconds), \"gflops\": \(gflops.map { "\($0)" } ?? "null")}")
    }
    let reference = gemmRate(m: 100, n: 1024, k: 784, transA: false, transB: true, threads: t)
    print(
        String(
            format:
                "  GEMM 100x784 . 784x1024 (reference shape): %.1f GFLOP/s; the step's products run at %.0f %% of it",
            reference, 100 * stepFlops / median / 1e9 / reference))
    print(
        """
        {"threads": \(t), "batch": \(B), "padding": "\(padding.rawValue)", "kernel": "\(Gemm.path)", \
        "images_per_second": \(imagesPerSecond), "step_seconds": \(median), "steps": \(samples.count), \
        "cores_used": \(coresUsed), "clock": "\(clockName)", \
        "flops_per_step": \(stepFlops), "gflops": \(stepFlops / median / 1e9), \
        "gemm_reference_gflops": \(reference), "ops": [\(opsJSON.joined(separator: ", "))], \
        "kernels_alone": [\(aloneJSON.joined(separator: ", "))]}
        """)
}
