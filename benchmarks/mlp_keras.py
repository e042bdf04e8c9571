"""The benchmark's training network in Keras 3 on the JAX backend: Sequential
Dropout(0.2) Dense(1024, relu) Dropout(0.5) Dense(1024, relu) Dropout(0.5) Dense(10), softmax
cross-entropy from logits, SGD(momentum=0.9), batch 100, float32, trained with `model.fit`.
Keras's Dropout is inverted dropout with rate = 1 - keep.

One warm-up `fit` on a few batches compiles the train step; then `fit` runs one epoch over
`--limit` examples, and a callback times the epoch (its begin to its end). Threads: set by the harness (XLA_FLAGS and CPU affinity). Prints one JSON object."""
import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import numpy as np  # noqa: E402

from common import cpu_seconds, emit, fashion_mnist, now, peer_arguments  # noqa: E402


def xla_threads():
    """XLA's compute threads in this process (named tf_XLAEigen*): how many, and how many of
    them did real work (over 0.1 s of CPU), to show how many cores the peer really used."""
    names, busy = 0, 0
    tick = os.sysconf("SC_CLK_TCK")
    for tid in os.listdir("/proc/self/task"):
        try:
            stat = open(f"/proc/self/task/{tid}/stat").read()
        except OSError:
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        if name.startswith("tf_XLAEigen"):
            names += 1
            if (int(fields[11]) + int(fields[12])) / tick > 0.1:
                busy += 1
    return {"threads": names, "busy": busy, "affinity": sorted(os.sched_getaffinity(0))}


def main():
    args = peer_arguments()

    import jax
    import keras

    sizes = [int(v) for v in args.layers.split(",")]
    keep = [float(v) for v in args.keep.split(",")]
    B = args.batch_size
    keras.utils.set_random_seed(args.seed)
    x, y = fashion_mnist(args.limit)
    y = y.astype(np.int32)

    layers = [keras.Input(shape=(sizes[0],))]
    for l, (o, p) in enumerate(zip(sizes[1:], keep)):
        layers.append(keras.layers.Dropout(1.0 - p))
        last = l == len(sizes) - 2
        layers.append(keras.layers.Dense(o, activation=None if last else "relu"))
    model = keras.Sequential(layers)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=args.learning_rate, momentum=args.momentum),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))

    class Timer(keras.callbacks.Callback):
        # Epoch hooks only: a callback with batch hooks makes Keras call back every step,
        # which a plain `fit` does not do.
        def on_epoch_begin(self, epoch, logs=None):
            self.c0, self.t0 = cpu_seconds(), now()

        def on_epoch_end(self, epoch, logs=None):
            float(logs["loss"])  # the epoch's results are computed (no pending async work)
            self.t1, self.c1 = now(), cpu_seconds()

    warm = min(len(x), args.warmup_steps * B)
    model.fit(x[:warm], y[:warm], batch_size=B, epochs=1, shuffle=True, verbose=0)
    timer = Timer()
    history = model.fit(x, y, batch_size=B, epochs=1, shuffle=True, verbose=0, callbacks=[timer])
    # The timed span is the training epoch as `fit` runs it: every step with its data slicing
    # and shuffling, after the warm-up `fit` compiled the train step.
    seconds = timer.t1 - timer.t0
    cpu = timer.c1 - timer.c0
    n = len(x)
    emit({"examples": n, "steps": -(-n // B), "seconds": seconds, "examples_per_second": n / seconds,
          "cpu_seconds": cpu, "cores_used": cpu / seconds, "loss": float(history.history["loss"][-1]),
          "keras": keras.__version__, "jax": jax.__version__, "backend": keras.backend.backend(),
          "devices": [str(d) for d in jax.devices()], "xla_flags": os.environ.get("XLA_FLAGS", ""),
          "xla_threads": xla_threads()})


if __name__ == "__main__":
    main()
