"""Monte-Carlo model averaging in Keras 3 on the JAX backend, the peer of `dropmodel eval --mc`:
the benchmark's 784-1024-1024-10 network (Dropout(0.2) Dense(1024, relu) Dropout(0.5)
Dense(1024, relu) Dropout(0.5) Dense(10, softmax)) on the first --limit Fashion-MNIST test
images. For each repeat, kmax = the largest k passes of `model(x, training=True)` (a fresh
dropout mask per example and pass) over all images, with running sums of the probabilities;
the error of the k-network average is read at each k (the first k of the repeat's kmax
samples, as dropmodel does): the best a user would write, one call per pass over all images.
The weights are Keras's initialisation (their values do not change the work). One warm-up
pass compiles; the timed span is all repeats. Prints one JSON object."""
import argparse
import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import numpy as np  # noqa: E402

from common import FASHION, cpu_seconds, emit, now, read_idx  # noqa: E402
from mlp_keras import xla_threads  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=10000)
    ap.add_argument("--mc", default="1,2,5,10,20,50,100")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    import jax
    import jax.numpy as jnp
    import keras

    keras.utils.set_random_seed(args.seed)
    images = read_idx(os.path.join(FASHION, "t10k-images-idx3-ubyte.gz"))[:args.limit]
    labels = read_idx(os.path.join(FASHION, "t10k-labels-idx1-ubyte.gz"))[:args.limit].astype(np.int32)
    x = jnp.asarray(images.reshape(len(images), -1).astype(np.float32) / np.float32(255))
    ks = sorted({int(v) for v in args.mc.split(",")})
    L = keras.layers
    model = keras.Sequential([keras.Input(shape=(784,)), L.Dropout(0.2), L.Dense(1024, activation="relu"),
                              L.Dropout(0.5), L.Dense(1024, activation="relu"), L.Dropout(0.5),
                              L.Dense(10, activation="softmax")])
    model(x[:100], training=True).block_until_ready()  # compiles
    errors = {k: [] for k in ks}
    c0, t0 = cpu_seconds(), now()
    for _ in range(args.repeats):
        total = jnp.zeros((len(images), 10), jnp.float32)
        for j in range(1, ks[-1] + 1):
            total = total + model(x, training=True)
            if j in errors:
                errors[j].append(float(np.mean(np.argmax(np.asarray(total), axis=1) != labels)))
    seconds, cpu = now() - t0, cpu_seconds() - c0
    passes = args.repeats * ks[-1]
    emit({"images": len(images), "passes": passes, "seconds": seconds,
          "images_per_second": passes * len(images) / seconds, "cpu_seconds": cpu, "cores_used": cpu / seconds,
          "errors": {str(k): v for k, v in errors.items()}, "keras": keras.__version__, "jax": jax.__version__,
          "xla_flags": os.environ.get("XLA_FLAGS", ""), "xla_threads": xla_threads()})


if __name__ == "__main__":
    main()
