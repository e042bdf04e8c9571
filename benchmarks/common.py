"""Helpers shared by the Python peers of scripts/benchmark."""
import gzip
import json
import os
import struct
import sys
import time

import numpy as np

FASHION = "/usr/share/datasets/fashion-mnist"


def read_idx(path):
    """An IDX file (gzipped or not) as a numpy array (uint8 data, any rank)."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != 0x08:
        raise ValueError(f"{path}: not an IDX file of unsigned bytes")
    shape = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def fashion_mnist(limit, directory=FASHION):
    """The first `limit` training examples of Fashion-MNIST, as dropmodel decodes them:
    float32 inputs byte/255 (one rounding) in [limit, 784], uint8 labels."""
    images = read_idx(os.path.join(directory, "train-images-idx3-ubyte.gz"))[:limit]
    labels = read_idx(os.path.join(directory, "train-labels-idx1-ubyte.gz"))[:limit]
    x = images.reshape(len(images), -1).astype(np.float32) / np.float32(255)
    return np.ascontiguousarray(x), np.ascontiguousarray(labels)


def blas_info():
    """Which BLAS numpy calls, with its kernel ("architecture") and thread count."""
    try:
        from threadpoolctl import threadpool_info
        return [{k: v for k, v in pool.items() if k in
                 ("internal_api", "version", "architecture", "num_threads", "threading_layer", "filepath")}
                for pool in threadpool_info() if pool.get("user_api") == "blas"]
    except Exception as error:  # threadpoolctl missing or failing: say so, do not die
        return [{"error": str(error)}]


def cpu_seconds():
    """User + system CPU seconds of this process so far (all its threads)."""
    t = os.times()
    return t.user + t.system


def emit(result):
    """The one JSON line a peer prints on stdout for the harness."""
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


now = time.perf_counter


def peer_arguments():
    """The command line both training peers share (mlp_numpy.py, mlp_keras.py)."""
    import argparse
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=20000)
    ap.add_argument("--layers", default="784,1024,1024,10")
    ap.add_argument("--keep", default="0.8,0.5,0.5")
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--learning-rate", type=float, default=0.1)
    ap.add_argument("--momentum", type=float, default=0.9)
    ap.add_argument("--warmup-steps", type=int, default=10)
    ap.add_argument("--seed", type=int, default=1)
    return ap.parse_args()
