"""The convolutional benchmark network in Keras 3 on the JAX backend (the peer of
benchmarks/conv, dropmodel's ConvBench): Sequential
Input(28, 28, 1) Conv2D(16, 3, relu) MaxPooling2D(2) Conv2D(32, 3, relu) MaxPooling2D(2)
Flatten Dense(128, relu) Dense(10), softmax cross-entropy from logits, SGD(momentum=0.9),
batch 100, float32, trained with `model.fit`. With --keep, a Dropout(1 - p) before each layer
(p per layer, input first), as the JMLR paper's convolutional nets have.

One warm-up `fit` on a few batches compiles the train step; then `fit` runs one epoch over
`--limit` examples, and a callback times the epoch (its begin to its end). Threads: set by the
caller (XLA_FLAGS and CPU affinity, as benchmarks/run.py does for mlp_keras.py). Prints one JSON
object."""
import argparse
import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import numpy as np  # noqa: E402

from common import cpu_seconds, emit, fashion_mnist, now  # noqa: E402
from mlp_keras import xla_threads  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=20000)
    ap.add_argument("--keep", default="", help="keep probabilities of the 5 layers' inputs, e.g. 0.9,0.75,0.75,0.5,0.5")
    ap.add_argument("--padding", default="valid", choices=["valid", "same"])
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--learning-rate", type=float, default=0.01)
    ap.add_argument("--momentum", type=float, default=0.9)
    ap.add_argument("--warmup-steps", type=int, default=10)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    import jax
    import keras

    keras.utils.set_random_seed(args.seed)
    x, y = fashion_mnist(args.limit)
    x = x.reshape(len(x), 28, 28, 1)
    y = y.astype(np.int32)
    keep = [float(v) for v in args.keep.split(",")] if args.keep else [1.0] * 5
    L = keras.layers

    def drop(i):
        return [L.Dropout(1.0 - keep[i])] if keep[i] < 1 else []

    layers = ([keras.Input(shape=(28, 28, 1))] + drop(0)
              + [L.Conv2D(16, 3, padding=args.padding, activation="relu"), L.MaxPooling2D(2)] + drop(1)
              + [L.Conv2D(32, 3, padding=args.padding, activation="relu"), L.MaxPooling2D(2), L.Flatten()] + drop(2)
              + [L.Dense(128, activation="relu")] + drop(3) + [L.Dense(10)])
    model = keras.Sequential(layers)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=args.learning_rate, momentum=args.momentum),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.c0, self.t0 = cpu_seconds(), now()

        def on_epoch_end(self, epoch, logs=None):
            float(logs["loss"])  # the epoch's results are computed (no pending async work)
            self.t1, self.c1 = now(), cpu_seconds()

    B = args.batch_size
    warm = min(len(x), args.warmup_steps * B)
    model.fit(x[:warm], y[:warm], batch_size=B, epochs=1, shuffle=True, verbose=0)
    timer = Timer()
    history = model.fit(x, y, batch_size=B, epochs=1, shuffle=True, verbose=0, callbacks=[timer])
    seconds = timer.t1 - timer.t0
    cpu = timer.c1 - timer.c0
    n = len(x)
    emit({"examples": n, "steps": -(-n // B), "seconds": seconds, "examples_per_second": n / seconds,
          "cpu_seconds": cpu, "cores_used": cpu / seconds, "loss": float(history.history["loss"][-1]),
          "keras": keras.__version__, "jax": jax.__version__, "padding": args.padding, "keep": keep,
          "xla_flags": os.environ.get("XLA_FLAGS", ""), "xla_threads": xla_threads()})


if __name__ == "__main__":
    main()
