#!/usr/bin/env python3
"""Regenerates Fuzz/corpus: small valid bundles, near-valid variants and invalid files.

    .venv/bin/python Fuzz/make-corpus.py [--dropmodel PATH] [OUT_DIR]

OUT_DIR defaults to Fuzz/corpus (cleared first). With --dropmodel (a built dropmodel), also
adds bundles dropmodel itself writes (init, a tiny trained one, baked float32/float16).
Every file is under 64 KB; the whole corpus stays well under 2 MB. Deterministic apart from
the h5py/HDF5 version that writes the files.
"""
import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile

import h5py
import numpy as np

MAX_SEED = 64 * 1024


def digest(W, B):
    h = hashlib.sha256()
    for w, b in zip(W, B):
        h.update(w.astype("<f4").tobytes())
        h.update(b.astype("<f4").tobytes())
    return np.frombuffer(h.digest(), "u1")


def weights(sizes, seed=0, dtype="<f4"):
    rng = np.random.default_rng(seed)
    W = [rng.uniform(-1, 1, (o, i)).astype(dtype) for i, o in zip(sizes, sizes[1:])]
    B = [np.zeros(o, dtype) for o in sizes[1:]]
    return W, B


def bundle(path, sizes=(4, 3, 2), keep=(0.8, 0.5), libver=None, strings=str, baked=np.uint8(0),
           dtype="<f4", storage="chunked-fletcher", history=True, per_layer=False, convention="classic",
           track_order=None, extra=None, layer_extra=None, attrs_override=None):
    """The bundle of Specs/bundle-format.md section 12.2, with knobs for every variation."""
    W, B = weights(sizes, dtype=dtype)
    kw = {}
    if libver:
        kw["libver"] = libver
    if track_order is not None:
        kw["track_order"] = track_order
    with h5py.File(path, "w", **kw) as f:
        a = f.attrs
        a["dropmodel_format"] = strings("dropmodel.bundle")
        a["format_version"] = np.array([1, 0], "<i8")
        a["convention"] = strings(convention)
        a["baked"] = baked
        a["creator"] = strings("Fuzz/make-corpus.py")
        layers = f.create_group("layers")
        layers.attrs["count"] = np.int64(len(W))
        for i, (w, b) in enumerate(zip(W, B)):
            last = i == len(W) - 1
            g = layers.create_group(str(i))
            g.attrs["name"] = strings("output" if last else f"hidden{i + 1}")
            g.attrs["kind"] = strings("dense")
            g.attrs["inputs"], g.attrs["outputs"] = np.int64(w.shape[1]), np.int64(w.shape[0])
            g.attrs["activation"] = strings("softmax" if last else "relu")
            g.attrs["keep_prob"] = np.float64(keep[i])
            for name, data in (("weight", w), ("bias", b)):
                if storage == "chunked-fletcher":
                    g.create_dataset(name, data=data, chunks=data.shape, fletcher32=True)
                elif storage == "contiguous":
                    g.create_dataset(name, data=data)
                elif storage == "compact":
                    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
                    dcpl.set_layout(h5py.h5d.COMPACT)
                    space = h5py.h5s.create_simple(data.shape)
                    tid = h5py.h5t.py_create(data.dtype)
                    ds = h5py.h5d.create(g.id, name.encode(), tid, space, dcpl=dcpl)
                    ds.write(h5py.h5s.ALL, h5py.h5s.ALL, np.ascontiguousarray(data))
                elif storage == "deflate-shuffle":
                    chunks = tuple(max(1, s // 2) for s in data.shape)
                    g.create_dataset(name, data=data, chunks=chunks, compression="gzip", shuffle=True,
                                     fletcher32=True)
            if layer_extra:
                layer_extra(i, g)
        r = f.create_group("rng")
        r.attrs["algorithm"], r.attrs["seed"], r.attrs["stream_layout"] = strings("philox4x32-10"), np.int64(42), np.int64(1)
        t = f.create_group("training")
        t.attrs["recipe"] = strings(json.dumps({"layers": list(sizes), "keep": list(keep), "epochs": 2}))
        t.attrs["data_fingerprint"] = strings("sha256:" + "ab" * 32)
        t.attrs["data_description"] = strings("fuzz seed")
        t.attrs["examples"] = np.int64(100)
        if history:
            h = f.create_group("history")
            h.attrs["initial_weights_sha256"] = digest([0.5 * w for w in W], B)
            h["epoch"] = np.array([1, 2], "<i8")
            h["loss"] = np.array([0.9, 0.7])
            h["train_error"] = np.array([0.3, 0.2])
            h["test_error"] = np.array([0.35, np.nan])
            h["weights_sha256"] = np.stack([digest([0.9 * w for w in W], B), digest(W, B)])
            if per_layer:
                per = np.stack([np.stack([digest([w], [b]) for w, b in zip(W, B)])] * 2)
                h["layer_weights_sha256"] = per
        if attrs_override:
            for (obj, name), value in attrs_override.items():
                target = f[obj]
                if value is None:
                    del target.attrs[name]
                else:
                    target.attrs[name] = value
        if extra:
            extra(f)


def fixed_ascii(s):
    return np.bytes_(s.encode())


def fixed_utf8(s):
    b = s.encode()
    return np.array(b, dtype=h5py.string_dtype("utf-8", len(b)))


def var_ascii(s):
    return np.array(s.encode(), dtype=h5py.string_dtype("ascii"))


def build(out, dropmodel):
    tmp = tempfile.mkdtemp()
    made = []

    def add(name, fn, *args, **kw):
        path = os.path.join(out, name)
        fn(path, *args, **kw)
        made.append(path)
        return path

    # Valid bundles in every encoding and layout a reader meets.
    spec = add("h5py-spec-example.h5", bundle)
    add("h5py-libver-v110.h5", bundle, libver=("v110", "v110"))
    add("h5py-libver-v108.h5", bundle, libver=("v108", "v108"))
    add("h5py-track-order.h5", bundle, track_order=True, libver=("v110", "v110"))
    add("h5py-fixed-ascii.h5", bundle, strings=fixed_ascii)
    add("h5py-fixed-utf8.h5", bundle, strings=fixed_utf8)
    # What dropmodel writes since b427266: fixed-length UTF-8 strings, 1.10 format.
    add("h5py-fixed-utf8-v110.h5", bundle, strings=fixed_utf8, libver=("v110", "v110"))
    add("h5py-var-ascii.h5", bundle, strings=var_ascii)
    add("h5py-baked-bool-enum.h5", bundle, baked=np.bool_(False))
    add("h5py-baked-int32.h5", bundle, baked=np.int32(1), convention="classic")
    add("h5py-inverted.h5", bundle, convention="inverted", sizes=(3, 2), keep=(0.5,), history=False)
    add("h5py-float16.h5", bundle, dtype="<f2")
    add("h5py-float64.h5", bundle, dtype="<f8", storage="contiguous")
    add("h5py-bigendian.h5", bundle, dtype=">f4")
    add("h5py-contiguous.h5", bundle, storage="contiguous")
    add("h5py-compact.h5", bundle, storage="compact")
    add("h5py-deflate-shuffle.h5", bundle, storage="deflate-shuffle", sizes=(6, 4, 2))
    add("h5py-per-layer-digests.h5", bundle, per_layer=True)
    add("h5py-one-layer.h5", bundle, sizes=(2, 1), keep=(1.0,), history=False)
    # Dense attribute and link storage (fractal heap, v2 B-trees): more than 8 of each.
    add("h5py-dense-attrs.h5", bundle, libver=("v110", "v110"),
        extra=lambda f: [f.attrs.__setitem__(f"extra{i}", np.int64(i)) for i in range(12)])
    add("h5py-dense-links.h5", bundle, libver=("v110", "v110"),
        extra=lambda f: [f.create_group(f"extra/g{i}") for i in range(12)])
    add("h5py-large-attr.h5", bundle, libver=("v110", "v110"),  # 16 KB attribute: dense storage
        extra=lambda f: f.attrs.__setitem__("big", np.arange(2000, dtype="<i8")))

    # Near-valid: one rule broken each (the parser's problem paths). Written in the compact,
    # checksummed 1.10 format: these exercise dropmodel's rules, not HDF5's byte parsing.
    def near(name, **kw):
        add(name, bundle, libver=("v110", "v110"), **kw)
    near("bad-keep-prob.h5", attrs_override={("layers/0", "keep_prob"): np.float64(1.5)})
    near("bad-shapes-do-not-chain.h5", attrs_override={("layers/1", "inputs"): np.int64(7)})
    near("bad-layer-count.h5", attrs_override={("layers", "count"): np.int64(5)})
    near("bad-version-2.h5", attrs_override={("/", "format_version"): np.array([2, 0], "<i8")})
    near("bad-version-shape.h5", attrs_override={("/", "format_version"): np.array([1, 0, 0], "<i8")})
    near("bad-marker.h5", attrs_override={("/", "dropmodel_format"): "keras"})
    near("bad-no-marker.h5", attrs_override={("/", "dropmodel_format"): None})
    near("bad-activation.h5", attrs_override={("layers/0", "activation"): "swish"})
    near("bad-kind.h5", attrs_override={("layers/0", "kind"): "conv2d"})
    near("bad-string-array-name.h5", attrs_override={("layers/0", "name"): np.array([b"a", b"b"])})
    near("bad-int-dtype-weight.h5",
        layer_extra=lambda i, g: (g.__delitem__("weight"), g.create_dataset("weight", data=np.zeros((3, 4) if i == 0 else (2, 3), "<i4"))))
    near("bad-weight-shape.h5",
        layer_extra=lambda i, g: (g.__delitem__("weight"), g.create_dataset("weight", data=np.zeros((4, 3), "<f4"))) if i == 0 else None)
    near("bad-history-rows.h5",
        extra=lambda f: (f["history"].__delitem__("loss"), f["history"].create_dataset("loss", data=np.zeros(3))))
    near("bad-digest-dtype.h5",
        extra=lambda f: f["history"].attrs.__setitem__("initial_weights_sha256", np.zeros(32, "<i4")))
    near("bad-recipe-not-json.h5", extra=lambda f: f["training"].attrs.__setitem__("recipe", "{not json"))
    near("bad-invalid-utf8.h5",
        attrs_override={("layers/0", "name"): np.array(b"\xff\xfe", dtype=h5py.string_dtype("utf-8", 2))})

    # Refusals: links, external storage, virtual datasets, filters that are not built in.
    def soft(f):
        g = f["layers/0"]
        del g["weight"]
        g["weight"] = h5py.SoftLink("/layers/1/weight")
    add("refuse-soft-link.h5", bundle, extra=soft)

    def external_link(f):
        g = f["layers/0"]
        del g["bias"]
        g["bias"] = h5py.ExternalLink("other.h5", "/layers/0/bias")
    add("refuse-external-link.h5", bundle, extra=external_link)

    def external_storage(f):
        g = f["layers/1"]
        del g["bias"]
        g.create_dataset("bias", shape=(2,), dtype="<f4", external=[("/etc/hostname", 0, 8)])
    add("refuse-external-storage.h5", bundle, extra=external_storage)

    def virtual(f):
        g = f["layers/1"]
        del g["bias"]
        layout = h5py.VirtualLayout(shape=(2,), dtype="<f4")
        layout[:] = h5py.VirtualSource("other.h5", "/x", shape=(2,))
        g.create_virtual_dataset("bias", layout)
    add("refuse-virtual.h5", bundle, extra=virtual)

    def lzf(f):
        g = f["layers/1"]
        del g["weight"]
        g.create_dataset("weight", data=np.zeros((2, 3), "<f4"), compression="lzf")
    add("refuse-lzf-filter.h5", bundle, extra=lzf)

    def scaleoffset(f):
        g = f["layers/1"]
        del g["weight"]
        g.create_dataset("weight", data=np.zeros((2, 3), "<f4"), scaleoffset=2)
    add("refuse-scaleoffset-filter.h5", bundle, extra=scaleoffset)

    # Declared shapes far larger than the file (nothing written): the reader must bound them.
    def huge(f):
        g = f["layers/1"]
        del g["weight"]
        g.attrs["inputs"] = np.int64(1 << 20)
        g.create_dataset("weight", shape=(2, 1 << 20), dtype="<f4", chunks=(1, 1 << 16))
    add("huge-declared-weight.h5", bundle, extra=huge)

    # Not bundles at all.
    with h5py.File(os.path.join(out, "hdf5-empty.h5"), "w"):
        pass
    made.append(os.path.join(out, "hdf5-empty.h5"))
    with open(os.path.join(out, "not-hdf5.txt"), "wb") as fh:
        fh.write(b"dropmodel.bundle format_version 1.0\n")
    made.append(os.path.join(out, "not-hdf5.txt"))

    # dropmodel's own output.
    if dropmodel:
        def dm(*args):
            subprocess.run([dropmodel, *args], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        dm("init", "--layers", "8,6,4", "--keep", "0.8,0.5", "--seed", "1", "-o", os.path.join(out, "dropmodel-init-8-6-4.h5"))
        dm("init", "--layers", "5,3", "--keep", "0.9", "--seed", "7", "--convention", "inverted",
           "--activation", "tanh", "-o", os.path.join(out, "dropmodel-init-inverted-5-3.h5"))
        trained = os.path.join(out, "dropmodel-trained-784-4-10.h5")
        if os.path.isdir("/usr/share/datasets/fashion-mnist"):
            dm("train", "--data", "fashion-mnist", "--layers", "784,4,10", "--keep", "0.8,0.5", "--epochs", "1",
               "--limit", "100", "--test-limit", "50", "--seed", "1", "--threads", "1", "-o", trained)
            t2 = os.path.join(tmp, "trained2.h5")
            dm("train", "--data", "fashion-mnist", "--layers", "784,2,10", "--keep", "0.8,0.5", "--epochs", "2",
               "--limit", "100", "--test-limit", "50", "--seed", "3", "--threads", "1", "-o", t2)
            dm("bake", t2, "-o", os.path.join(out, "dropmodel-baked-trained-784-2-10.h5"))
        dm("bake", os.path.join(out, "dropmodel-init-8-6-4.h5"), "-o", os.path.join(out, "dropmodel-baked-float16.h5"),
           "--dtype", "float16")
        made += [os.path.join(out, n) for n in os.listdir(out) if n.startswith("dropmodel-")]

    # Damaged copies: truncated and bit-flipped (deterministic positions).
    for src in [spec, os.path.join(out, "h5py-libver-v110.h5"), os.path.join(out, "h5py-libver-v108.h5")]:
        data = open(src, "rb").read()
        base = os.path.splitext(os.path.basename(src))[0]
        for frac in (0.3, 0.9):
            with open(os.path.join(out, f"truncated-{int(frac * 100)}-{base}.h5"), "wb") as fh:
                fh.write(data[: int(len(data) * frac)])
        rng = np.random.default_rng(len(data))
        for k in range(2):
            flipped = bytearray(data)
            for pos in rng.integers(0, len(data), 4):
                flipped[pos] ^= 1 << int(rng.integers(0, 8))
            with open(os.path.join(out, f"bitflip-{k}-{base}.h5"), "wb") as fh:
                fh.write(flipped)

    shutil.rmtree(tmp)
    for n in sorted(os.listdir(out)):
        size = os.path.getsize(os.path.join(out, n))
        if size > MAX_SEED:
            sys.exit(f"{n} is {size} bytes, more than a seed may be")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", nargs="?", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus"))
    ap.add_argument("--dropmodel", help="a built dropmodel executable, for bundles dropmodel writes itself")
    args = ap.parse_args()
    if os.path.isdir(args.out):
        shutil.rmtree(args.out)
    os.makedirs(args.out)
    build(args.out, args.dropmodel)
    total = sum(os.path.getsize(os.path.join(args.out, n)) for n in os.listdir(args.out))
    print(f"{len(os.listdir(args.out))} seeds, {total} bytes in {args.out}")


if __name__ == "__main__":
    main()
