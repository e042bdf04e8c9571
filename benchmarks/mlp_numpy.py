"""The benchmark's training network written in numpy: 784-1024-1024-10 ReLU, softmax
cross-entropy, classic dropout (keep 0.8, 0.5, 0.5: masks from numpy's random generator),
SGD with momentum, minibatches of 100, float32; the same products with the same transposes as
dropmodel (Specs/determinism.md §4). Thread count: OPENBLAS_NUM_THREADS (set by the harness).

Trains a few warm-up steps, then times `--limit` examples (one pass in batches of 100) and
prints one JSON object with examples per second."""

import numpy as np

from common import blas_info, cpu_seconds, emit, fashion_mnist, now, peer_arguments


def main():
    args = peer_arguments()
    sizes = [int(v) for v in args.layers.split(",")]
    keep = [np.float32(v) for v in args.keep.split(",")]
    B = args.batch_size
    lr, mu = np.float32(args.learning_rate), np.float32(args.momentum)

    x_all, y_all = fashion_mnist(args.limit)
    n = len(x_all)
    rng = np.random.default_rng(args.seed)
    W = [(rng.standard_normal((o, i), dtype=np.float32) * np.float32(np.sqrt(2.0 / i)))
         for i, o in zip(sizes[:-1], sizes[1:])]
    b = [np.zeros(o, np.float32) for o in sizes[1:]]
    vW = [np.zeros_like(w) for w in W]
    vb = [np.zeros_like(v) for v in b]
    L = len(W)

    def step(x, y):
        # forward: Xm = X * M; Z = Xm · Wᵀ + b; relu on hidden layers
        xms, masks, acts = [], [], []
        h = x
        for l in range(L):
            m = (rng.random(h.shape, dtype=np.float32) < keep[l]).astype(np.float32)
            xm = h * m
            z = xm @ W[l].T
            z += b[l]
            xms.append(xm)
            masks.append(m)
            acts.append(h)
            h = np.maximum(z, 0, out=z) if l < L - 1 else z
        # softmax cross-entropy; dZ = (p - onehot) / B
        z = h
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        s = e.sum(axis=1, keepdims=True)
        rows = np.arange(len(y))
        loss = float(np.sum(np.log(s[:, 0]) - z[rows, y]))
        errors = int(np.count_nonzero(z.argmax(axis=1) != y))
        dz = e / s
        dz[rows, y] -= 1
        dz /= np.float32(len(y))
        # backward: gW = dZᵀ · Xm, gb = Σ dZ, dX = dZ · W, masked, relu'
        for l in range(L - 1, -1, -1):
            gW = dz.T @ xms[l]
            gb = dz.sum(axis=0)
            if l > 0:
                dx = dz @ W[l]
                dx *= masks[l]
                dx *= acts[l] > 0
                dz = dx
            # SGD with momentum: v = mu v - lr g; w += v
            vW[l] *= mu
            vW[l] -= lr * gW
            W[l] += vW[l]
            vb[l] *= mu
            vb[l] -= lr * gb
            b[l] += vb[l]
        return loss, errors

    order = rng.permutation(n)
    for t in range(args.warmup_steps):
        idx = order[(t * B) % n:(t * B) % n + B]
        step(x_all[idx], y_all[idx])

    order = rng.permutation(n)
    c0, t0 = cpu_seconds(), now()
    loss, errors, steps = 0.0, 0, 0
    for start in range(0, n, B):
        idx = order[start:start + B]
        l, e = step(x_all[idx], y_all[idx])
        loss += l
        errors += e
        steps += 1
    seconds = now() - t0
    cpu = cpu_seconds() - c0
    emit({"examples": n, "steps": steps, "seconds": seconds, "examples_per_second": n / seconds,
          "cpu_seconds": cpu, "cores_used": cpu / seconds, "loss": loss / n, "train_error": errors / n,
          "numpy": np.__version__, "blas": blas_info()})


if __name__ == "__main__":
    main()
