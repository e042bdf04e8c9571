"""numpy's matmul (OpenBLAS sgemm) on the eight matrix products of one training step of a
784-1024-1024-10 network at batch 100, with the same shapes and transposes as dropmodel's
trainer and benchmarks/gemm (forward X·Wᵀ, gradient dZᵀ·X, backward dZ·W); with
--products paths, GemmBench's products of the same name (1024x1024x1024 and the two large
forward products). Run it with OPENBLAS_NUM_THREADS=1 for the single-thread figure. --clock cpu
times this thread's CPU time instead of the wall clock. Prints one JSON object."""
import argparse
import time

import numpy as np

from common import blas_info, emit, now


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", default="784,1024,1024,10")
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=31)
    ap.add_argument("--min-seconds", type=float, default=0.2)
    ap.add_argument("--products", choices=("step", "paths"), default="step")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="cpu: this thread's CPU time (OpenBLAS with 1 thread computes on it)")
    args = ap.parse_args()
    clock = time.thread_time if args.clock == "cpu" else now
    layers = [int(v) for v in args.layers.split(",")]
    batch = args.batch
    rng = np.random.default_rng(1)

    def rand(*shape):
        return rng.uniform(-1, 1, size=shape).astype(np.float32)

    products = []
    if args.products == "paths":
        products.append(("square1024", "square", rand(1024, 1024), rand(1024, 1024), rand(1024, 1024)))
        for l, (i, o) in enumerate([(784, 1024), (1024, 1024)]):
            x, w = rand(batch, i), rand(o, i)
            products.append(("forward%d" % l, "forward", x, w.T, rand(batch, o)))
    for l in range(len(layers) - 1) if args.products == "step" else []:
        i, o = layers[l], layers[l + 1]
        x, w = rand(batch, i), rand(o, i)
        products.append(("forward%d" % l, "forward", x, w.T, rand(batch, o)))
    for l in range(len(layers) - 2, -1, -1) if args.products == "step" else []:
        i, o = layers[l], layers[l + 1]
        dz, x, w = rand(batch, o), rand(batch, i), rand(o, i)
        products.append(("gradient%d" % l, "gradient", dz.T, x, rand(o, i)))
        if l > 0:
            products.append(("backward%d" % l, "backward", dz, w, rand(batch, i)))

    results, total_flops, total_seconds = [], 0.0, 0.0
    for name, kind, a, b, c in products:
        m, k = a.shape
        n = b.shape[1]
        flops = 2.0 * m * n * k
        np.matmul(a, b, out=c)
        t0 = clock()
        np.matmul(a, b, out=c)
        inner = max(1, int(0.002 / max(clock() - t0, 1e-7)))
        samples = []
        start = clock()
        while len(samples) < args.repeats or clock() - start < args.min_seconds:
            t = clock()
            for _ in range(inner):
                np.matmul(a, b, out=c)
            samples.append((clock() - t) / inner)
        samples.sort()
        median = samples[len(samples) // 2]
        total_flops += flops
        total_seconds += median
        results.append({"name": name, "kind": kind, "m": m, "n": n, "k": k,
                        "a_transposed": not a.flags.c_contiguous,
                        "b_transposed": not b.flags.c_contiguous,
                        "seconds": median, "gflops": flops / median / 1e9,
                        "best_gflops": flops / samples[0] / 1e9, "samples": len(samples)})
    emit({"numpy": np.__version__, "blas": blas_info(), "batch": batch, "layers": layers,
          "flops_per_step": total_flops, "seconds_per_step": total_seconds,
          "aggregate_gflops": total_flops / total_seconds / 1e9, "products": results})


if __name__ == "__main__":
    main()
