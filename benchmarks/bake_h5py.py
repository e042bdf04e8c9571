"""A straightforward streaming bake in h5py + numpy, the peer of `dropmodel bake`: copies the
bundle to a new file with the same layout and attributes, and writes every layer's weight
multiplied by float32(keep_prob) (Specs/bake.md §2), reading and writing blocks of whole rows
(about 4 MiB, a whole number of chunks) so memory stays bounded; sets /@baked = 1.

usage: bake_h5py.py IN OUT        (prints one JSON object: layers, seconds, peak RSS)"""
import sys

import h5py
import numpy as np

from common import emit, now

BLOCK_BYTES = 4 << 20


def copy_attrs(src, dst):
    for name, value in src.attrs.items():
        dst.attrs[name] = value


def bake(src_path, dst_path):
    with h5py.File(src_path, "r") as src, h5py.File(dst_path, "w") as dst:
        copy_attrs(src, dst)
        for name in src:
            if name != "layers":
                src.copy(src[name], dst, name=name)  # everything but the weights as it is
        layers = dst.create_group("layers")
        copy_attrs(src["layers"], layers)
        for key in src["layers"]:
            sgroup = src["layers"][key]
            group = layers.create_group(key)
            copy_attrs(sgroup, group)
            for name in sgroup:
                if name != "weight":
                    sgroup.copy(sgroup[name], group, name=name)
            w = sgroup["weight"]
            out = group.create_dataset("weight", shape=w.shape, dtype=w.dtype, chunks=w.chunks,
                                       fletcher32=w.fletcher32, compression=w.compression,
                                       compression_opts=w.compression_opts, shuffle=w.shuffle)
            copy_attrs(w, out)
            p = np.float32(sgroup.attrs["keep_prob"])
            rows_per_chunk = w.chunks[0] if w.chunks else 1
            row_bytes = w.shape[1] * w.dtype.itemsize
            block = max(rows_per_chunk, BLOCK_BYTES // row_bytes // rows_per_chunk * rows_per_chunk)
            for start in range(0, w.shape[0], block):
                rows = w[start:start + block].astype(np.float32)
                rows *= p
                out[start:start + block] = rows.astype(w.dtype, copy=False)
        dst.attrs["baked"] = np.uint8(1)
        return len(src["layers"])


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    t0 = now()
    layers = bake(sys.argv[1], sys.argv[2])
    seconds = now() - t0
    # VmHWM: the peak of this process's own memory map. (getrusage's ru_maxrss would also count
    # the launching process's size at fork, which Linux carries across exec.)
    peak_kib = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
    emit({"layers": layers, "seconds": seconds, "peak_rss_kib": peak_kib,
          "h5py": h5py.__version__, "libhdf5": h5py.version.hdf5_version})


if __name__ == "__main__":
    main()
