#!/usr/bin/env python3
"""Structure-aware bundle mutations (issue 17, point 2): valid bundles, then mutated at the HDF5
object level with h5py, so the fuzzer reaches the reader's validation rules instead of dying in
the superblock.

    .venv/bin/python Fuzz/mutate-bundles.py [--count N] [--seed S] OUT_DIR
    .venv/bin/python Fuzz/mutate-bundles.py --bases OUT_DIR     (only the 18 unmutated bases:
                                                 Fuzz/corpus/base-*.h5, valid, checked by
                                                 Tests/HostileInputTests/ValidSeedsTests)
    scripts/fuzz structured SECONDS [COUNT]     (generates into .build-fuzz/structured/, then
                                                 fuzzes the bundle target with them as seeds)

Every output starts as one of the base bundles below (a dense 1.0 bundle and a convolutional 1.1
bundle, each in three HDF5 file-format versions and three string encodings), then gets 1 to 4
mutations drawn from:

* attribute types: an attribute rewritten as another integer width or signedness, a float, a
  big-endian integer, a bool enum, a fixed or variable-length string, a variable-length sequence,
  a compound, an opaque blob, an object reference;
* attribute shapes: scalar <-> [1], [2], [2, 1], a null dataspace (h5py.Empty), more or fewer
  elements than the rule wants;
* attribute values: the bounds of every rule (0, -1, 1, 2^24, 2^24 + 1, 4096, 4097, 2^31, 2^63 - 1,
  -2^63, NaN, inf), every known name in the wrong place, empty, long and invalid UTF-8 strings;
* deleted attributes, attributes of other kinds added (input_shape, kernel, pool, strides,
  padding, filters, inputs, outputs, dropout_mode);
* layer kinds: a layer's kind set to another kind or an unknown one, with or without the
  attributes and datasets that kind needs;
* layer structure: /layers@count changed, layer groups renamed (01, -1, a gap), extra members;
* link kinds: a dataset or group replaced by a soft link (dangling, to another object, to
  itself), an external link, a hard link to another object or to an ancestor (a cycle), a group
  where a dataset belongs or the reverse, a committed (named) datatype;
* filter pipelines and layouts: weight and bias rewritten with shuffle, deflate 0-9, Fletcher32,
  LZF, scale-offset, in chunked (any chunk shape, unlimited maxshape), contiguous or compact
  layout, external raw storage, a fill value;
* dataset types and shapes: float16/32/64, big-endian, integer, complex, compound, string, bool;
  transposed, an extra or a missing dimension, a zero-sized dimension, a scalar;
* history and root: the digests' dtype and shape, history columns of other lengths,
  format_version and input_shape variants.

Deterministic for a given --seed, h5py and HDF5. Files over 64 KB (the bundle target's -max_len)
are not written. Prints how many files were written and the count of each mutation applied.
"""
import argparse
import collections
import hashlib
import json
import os
import random
import sys

import h5py
import numpy as np

MAX_LEN = 64 * 1024

KINDS = ["dense", "conv2d", "max_pool2d", "avg_pool2d", "global_avg_pool2d", "flatten"]
ACTIVATIONS = ["relu", "logistic", "tanh", "linear", "softmax"]
NAMES = (KINDS + ACTIVATIONS + ["valid", "same", "element", "channel", "gaussian", "classic", "inverted",
                                "dropmodel.bundle", "philox4x32-10", "output", "hidden1", "conv1", "",
                                "x" * 3000, "\u00e9\u4e2d\U0001F600", "a\0b"])
INTS = [0, -1, 1, 2, 3, 7, 4095, 4096, 4097, (1 << 24) - 1, 1 << 24, (1 << 24) + 1, (1 << 31) - 1, 1 << 31,
        1 << 40, (1 << 63) - 1, -(1 << 63), 100000, 100001]
FLOATS = [0.0, -0.0, 1.0, 0.5, 1.5, -1.0, 1e-300, float("nan"), float("inf"), -float("inf"), 1e308]
LAYER_ATTRS = ["name", "kind", "inputs", "outputs", "activation", "keep_prob", "dropout_mode", "input_shape",
               "kernel", "pool", "strides", "padding", "filters"]


def digest(arrays):
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a, "<f4").tobytes())
    return np.frombuffer(h.digest(), "u1")


def string_writer(kind):
    if kind == "var-utf8":
        return lambda s: s
    if kind == "fixed-utf8":
        return lambda s: np.array(s.encode(), dtype=h5py.string_dtype("utf-8", max(1, len(s.encode()))))
    return lambda s: np.array(s.encode(), dtype=h5py.string_dtype("ascii"))  # var-ascii


def dense_layers(rng):
    sizes = (4, 3, 2)
    out = []
    for i, (n, m) in enumerate(zip(sizes, sizes[1:])):
        last = i == len(sizes) - 2
        out.append(dict(
            attrs=dict(name="output" if last else f"hidden{i + 1}", kind="dense", inputs=np.int64(n),
                       outputs=np.int64(m), activation="softmax" if last else "relu",
                       keep_prob=np.float64(0.8 if i == 0 else 0.5)),
            weight=rng.uniform(-1, 1, (m, n)).astype("<f4"), bias=np.zeros(m, "<f4")))
    return out, None


def conv_layers(rng):
    """6x6x1 -> conv3x3x2 (valid) -> maxpool2 -> flatten -> dense 3 (format 1.1)."""
    i3 = lambda *v: np.array(v, "<i8")
    conv = dict(attrs=dict(name="conv1", kind="conv2d", input_shape=i3(6, 6, 1), kernel=i3(3, 3), strides=i3(1, 1),
                           padding="valid", filters=np.int64(2), activation="relu", keep_prob=np.float64(0.9),
                           dropout_mode="element"),
                weight=rng.uniform(-1, 1, (2, 3, 3, 1)).astype("<f4"), bias=np.zeros(2, "<f4"))
    pool = dict(attrs=dict(name="maxpool1", kind="max_pool2d", input_shape=i3(4, 4, 2), pool=i3(2, 2),
                           strides=i3(2, 2), padding="valid", activation="linear", keep_prob=np.float64(1),
                           dropout_mode="element"))
    flat = dict(attrs=dict(name="flatten1", kind="flatten", input_shape=i3(2, 2, 2), activation="linear",
                           keep_prob=np.float64(1), dropout_mode="element"))
    dense = dict(attrs=dict(name="output", kind="dense", inputs=np.int64(8), outputs=np.int64(3),
                            activation="softmax", keep_prob=np.float64(0.5), dropout_mode="channel"),
                 weight=rng.uniform(-1, 1, (3, 8)).astype("<f4"), bias=np.zeros(3, "<f4"))
    return [conv, pool, flat, dense], i3(6, 6, 1)


def write_base(path, kind, libver, strings, rng):
    s = string_writer(strings)
    layers, input_shape = (conv_layers if kind == "conv" else dense_layers)(rng)
    kw = {"libver": libver} if libver else {}
    with h5py.File(path, "w", **kw) as f:
        a = f.attrs
        a["dropmodel_format"] = s("dropmodel.bundle")
        a["format_version"] = np.array([1, 1 if input_shape is not None else 0], "<i8")
        a["convention"] = s("classic")
        a["baked"] = np.uint8(0)
        a["creator"] = s("Fuzz/mutate-bundles.py")
        if input_shape is not None:
            a["input_shape"] = input_shape
        g = f.create_group("layers")
        g.attrs["count"] = np.int64(len(layers))
        for i, layer in enumerate(layers):
            lg = g.create_group(str(i))
            for k, v in layer["attrs"].items():
                lg.attrs[k] = s(v) if isinstance(v, str) else v
            if "weight" in layer:
                for name in ("weight", "bias"):
                    d = layer[name]
                    lg.create_dataset(name, data=d, chunks=d.shape, fletcher32=True)
        weighted = [x for x in layers if "weight" in x]
        r = f.create_group("rng")
        r.attrs["algorithm"], r.attrs["seed"], r.attrs["stream_layout"] = s("philox4x32-10"), np.int64(42), np.int64(1)
        t = f.create_group("training")
        t.attrs["recipe"] = s(json.dumps({"layers": [4, 3, 2], "keep": [0.8, 0.5], "epochs": 2}))
        t.attrs["data_fingerprint"] = s("sha256:" + "ab" * 32)
        t.attrs["examples"] = np.int64(100)
        h = f.create_group("history")
        h.attrs["initial_weights_sha256"] = digest([0.5 * x["weight"] for x in weighted])
        h["epoch"] = np.array([1, 2], "<i8")
        h["loss"] = np.array([0.9, 0.7])
        h["train_error"] = np.array([0.3, 0.2])
        h["test_error"] = np.array([0.35, np.nan])
        flat = [a for x in weighted for a in (x["weight"], x["bias"])]
        h["weights_sha256"] = np.stack([digest(flat), digest(flat)])


# ---------------------------------------------------------------------------------------------
# Mutations. Each takes (f, rng) on a file open for writing; raises to say "did not apply".

def objects(f, datasets=True, groups=True):
    out = []
    def visit(name, obj):
        if isinstance(obj, h5py.Dataset) and datasets or isinstance(obj, h5py.Group) and groups:
            out.append(name)
    f.visititems(visit)
    if groups:
        out.append("/")
    return out


def layer_groups(f):
    return [f"layers/{k}" for k in f["layers"] if isinstance(f["layers"].get(k, getlink=True), h5py.HardLink)
            and isinstance(f["layers"][k], h5py.Group)] if "layers" in f else []


def pick_attr(f, rng):
    cands = [(o, n) for o in objects(f, datasets=True) for n in f[o].attrs]
    if not cands:
        raise LookupError
    return rng.choice(cands)


def retype(value, rng):
    """`value` (read back from an attribute) as another HDF5 type."""
    arr = np.asarray(value)
    num = arr.dtype.kind in "iufb"
    choice = rng.randrange(13)
    if choice < 6 and num:
        dt = rng.choice(["<i1", "<u1", "<i2", "<i4", "<u4", "<u8", ">i8", "<f2", "<f4", ">f8", "<f8"])
        return arr.astype(dt)
    if choice < 6:
        return np.int64(rng.choice(INTS))
    if choice == 6:
        return np.bool_(bool(arr.flat[0]) if arr.size and num else True)
    if choice == 7:
        text = str(arr.tolist() if num else (value.decode("utf-8", "replace") if isinstance(value, bytes) else value))
        return np.array(text.encode(), dtype=h5py.string_dtype("utf-8", max(1, len(text.encode()))))
    if choice == 8:
        v = np.empty(1, dtype=h5py.vlen_dtype(np.dtype("<i8")))
        v[0] = np.array([1, 2, 3], "<i8")
        return v
    if choice == 9:
        return np.array([(1, 2.0)], dtype=[("a", "<i8"), ("b", "<f8")])
    if choice == 10:
        return np.void(b"\x01\x02\x03\x04")
    if choice == 11:
        return h5py.Empty("<i8")
    return np.array([b"dense", b"conv2d"], dtype=h5py.string_dtype("ascii"))


def m_attr_type(f, rng):
    o, n = pick_attr(f, rng)
    f[o].attrs[n] = retype(f[o].attrs[n], rng)


def m_attr_ref(f, rng):
    o, n = pick_attr(f, rng)
    target = f[rng.choice(objects(f))]
    f[o].attrs.create(n, target.ref, dtype=h5py.ref_dtype)


def m_attr_shape(f, rng):
    o, n = pick_attr(f, rng)
    arr = np.asarray(f[o].attrs[n])
    if arr.dtype.kind not in "iufb":
        arr = np.array([1, 2], "<i8")
    flat = arr.reshape(-1)
    first = flat[:1] if flat.size else np.zeros(1, arr.dtype)
    shapes = [first.reshape(()), first.reshape((1,)), np.resize(flat, (2,)), np.resize(flat, (2, 1)),
              np.resize(flat, (4,)), flat[:-1] if flat.size > 1 else np.zeros((0,), arr.dtype),
              np.resize(flat, (3,)), np.resize(flat, (1, 3))]
    f[o].attrs[n] = rng.choice(shapes)


def m_attr_value(f, rng):
    o, n = pick_attr(f, rng)
    arr = np.asarray(f[o].attrs[n])
    if arr.dtype.kind in "iu":
        v = np.array(arr, "<i8")
        v.reshape(-1)[rng.randrange(max(1, v.size))] = rng.choice(INTS) if v.size else 0
        f[o].attrs[n] = v
    elif arr.dtype.kind == "f":
        v = np.array(arr, "<f8")
        if v.size:
            v.reshape(-1)[rng.randrange(v.size)] = rng.choice(FLOATS)
        f[o].attrs[n] = v
    else:
        name = rng.choice(NAMES)
        if rng.random() < 0.2:
            f[o].attrs[n] = np.array(b"\xff\xfe" + name.encode(), dtype=h5py.string_dtype("utf-8", len(name) + 2))
        else:
            f[o].attrs[n] = name


def m_attr_delete(f, rng):
    o, n = pick_attr(f, rng)
    del f[o].attrs[n]


def plausible(name, rng):
    if name in ("input_shape",):
        return np.array([rng.choice([1, 2, 4, 6, 4096, 1 << 24, 0]) for _ in range(rng.choice([3, 3, 3, 1, 2]))],
                        "<i8")
    if name in ("kernel", "pool", "strides"):
        return np.array([rng.choice([1, 2, 3, 5, 4096, 4097, 0, -1]) for _ in range(rng.choice([2, 2, 2, 1, 3]))],
                        "<i8")
    if name in ("inputs", "outputs", "filters"):
        return np.int64(rng.choice(INTS))
    if name == "keep_prob":
        return np.float64(rng.choice(FLOATS))
    return rng.choice(NAMES[:17])


def m_attr_add(f, rng):
    groups = layer_groups(f) or ["/"]
    g = f[rng.choice(groups)]
    name = rng.choice(LAYER_ATTRS)
    g.attrs[name] = plausible(name, rng)


def m_kind(f, rng):
    g = f[rng.choice(layer_groups(f))]
    kind = rng.choice(KINDS + ["Conv2D", "dense ", "lstm"])
    g.attrs["kind"] = kind
    if rng.random() < 0.7:
        need = {"dense": ["inputs", "outputs"], "conv2d": ["input_shape", "kernel", "strides", "padding", "filters"],
                "max_pool2d": ["input_shape", "pool", "strides", "padding"],
                "avg_pool2d": ["input_shape", "pool", "strides", "padding"],
                "global_avg_pool2d": ["input_shape"], "flatten": ["input_shape"]}.get(kind, [])
        for name in need:
            if name not in g.attrs or rng.random() < 0.3:
                g.attrs[name] = plausible(name, rng)
    if rng.random() < 0.3:
        for name in ("weight", "bias"):
            if name in g:
                del g[name]
    elif rng.random() < 0.3 and "weight" not in g:
        g.create_dataset("weight", data=np.zeros((2, 3, 3, 1), "<f4"))
        g.create_dataset("bias", data=np.zeros(2, "<f4"))


def m_layer_structure(f, rng):
    layers = f["layers"]
    c = rng.randrange(5)
    if c == 0:
        layers.attrs["count"] = np.int64(rng.choice([0, 1, 2, 3, 5, 100000, 100001, -1]))
    elif c == 1:
        src = rng.choice(list(layers.keys()))
        layers.move(src, rng.choice(["01", "-1", "7", "+1", " 1", "1e0", str(len(layers) + 1)]))
    elif c == 2:
        layers.create_group(rng.choice(["extra", "99", "0x"]))
    elif c == 3:
        keys = list(layers.keys())
        if len(keys) >= 2:
            a, b = rng.sample(keys, 2)
            layers.move(a, "tmp")
            layers.move(b, a)
            layers.move("tmp", b)
    else:
        del layers[rng.choice(list(layers.keys()))]


def m_link(f, rng):
    objs = [o for o in objects(f) if o != "/"]
    victim = rng.choice(objs)
    parent, _, leaf = victim.rpartition("/")
    pg = f[parent or "/"]
    c = rng.randrange(8)
    if c == 4:  # the reverse: a group where a dataset was, or a dataset where a group was
        isgroup = isinstance(pg[leaf], h5py.Group)
        del pg[leaf]
        if isgroup:
            pg.create_dataset(leaf, data=np.zeros(3, "<f4"))
        else:
            pg.create_group(leaf)
        return
    if c == 5:  # a committed datatype, used by a dataset
        pg["committed_t"] = np.dtype("<f4")
        if isinstance(pg.get(leaf), h5py.Dataset):
            d = pg[leaf][()]
            del pg[leaf]
            pg.create_dataset(leaf, data=d, dtype=pg["committed_t"])
        return
    del pg[leaf]
    if c == 0:
        pg[leaf] = h5py.SoftLink("/" + rng.choice([o for o in objs if o != victim] + ["nowhere"]))
    elif c == 1:
        pg[leaf] = h5py.SoftLink("/" + victim)  # itself
    elif c == 2:
        pg[leaf] = h5py.ExternalLink(rng.choice(["other.h5", "/etc/passwd", ""]) or "x.h5", "/" + victim)
    elif c == 3:
        others = [o for o in objs if o != victim and not o.startswith(victim + "/") and o in f]
        pg[leaf] = f[rng.choice(others) if others else "/"]  # a hard link to another object
    else:
        pg[leaf] = f[rng.choice(["/", "layers", parent or "/"])]  # a cycle through an ancestor


def recreate(f, path, data, rng, **kw):
    parent, _, leaf = path.rpartition("/")
    pg = f[parent or "/"]
    attrs = dict(pg[leaf].attrs)
    del pg[leaf]
    d = pg.create_dataset(leaf, data=data, **kw)
    for k, v in attrs.items():
        d.attrs[k] = v


def m_storage(f, rng):
    path = rng.choice([o for o in objects(f, groups=False)])
    data = f[path][()]
    if not isinstance(data, np.ndarray) or data.dtype.kind not in "iuf" or data.ndim == 0 or data.size == 0:
        raise LookupError
    c = rng.randrange(8)
    if c == 0:
        recreate(f, path, data, rng)  # contiguous
        return
    if c == 1:
        parent, _, leaf = path.rpartition("/")
        pg = f[parent or "/"]
        del pg[leaf]
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_layout(h5py.h5d.COMPACT)
        tid = h5py.h5t.py_create(data.dtype)
        ds = h5py.h5d.create(pg.id, leaf.encode(), tid, h5py.h5s.create_simple(data.shape), dcpl=dcpl)
        ds.write(h5py.h5s.ALL, h5py.h5s.ALL, np.ascontiguousarray(data))
        return
    if c == 2:
        parent, _, leaf = path.rpartition("/")
        pg = f[parent or "/"]
        del pg[leaf]
        pg.create_dataset(leaf, shape=data.shape, dtype=data.dtype,
                          external=[(rng.choice(["/etc/hostname", "other.bin", "/dev/zero"]), 0, data.nbytes)])
        return
    chunks = tuple(rng.randint(1, max(1, s)) for s in data.shape)
    kw = dict(chunks=chunks)
    if rng.random() < 0.3:
        kw["maxshape"] = tuple(None for _ in data.shape)
        kw["chunks"] = tuple(rng.choice([1, s, 2 * s + 1]) for s in data.shape)
    filters = rng.sample(["shuffle", "gzip", "fletcher32", "lzf", "scaleoffset"], rng.randint(0, 3))
    for name in filters:
        if name == "shuffle":
            kw["shuffle"] = True
        elif name == "gzip":
            kw["compression"] = "gzip"
            kw["compression_opts"] = rng.randrange(10)
        elif name == "lzf" and "compression" not in kw:
            kw["compression"] = "lzf"
        elif name == "fletcher32":
            kw["fletcher32"] = True
        elif name == "scaleoffset" and data.dtype.kind in "iu":
            kw["scaleoffset"] = 0
    if rng.random() < 0.2:
        kw["fillvalue"] = rng.choice([0.0, 1.0, float("nan")]) if data.dtype.kind == "f" else 7
    recreate(f, path, data, rng, **kw)


def m_dataset_type(f, rng):
    path = rng.choice([o for o in objects(f, groups=False)])
    data = np.asarray(f[path][()])
    c = rng.randrange(11)
    if c < 5:
        if data.dtype.kind not in "iuf":
            raise LookupError
        data = data.astype(rng.choice(["<f2", "<f4", "<f8", ">f4", ">f8", "<i4", "<u1", "<c8", "<i8"]))
    elif c == 5 and data.ndim >= 2:
        data = np.ascontiguousarray(data.T)
    elif c == 6:
        data = data[..., None]
    elif c == 7 and data.ndim >= 1:
        data = data.reshape(-1)[: max(0, data.size - 1)]
    elif c == 8:
        data = np.zeros((0,) + data.shape[1:], data.dtype if data.dtype.kind in "iuf" else "<f4")
    elif c == 9:
        data = np.asarray(data.reshape(-1)[0] if data.size else 0)
    else:
        data = np.zeros(data.shape, dtype=[("re", "<f4"), ("im", "<f4")]) if data.dtype.kind in "iuf" \
            else np.array([b"x"] * max(1, data.size), dtype=h5py.string_dtype("ascii"))
    recreate(f, path, data, rng)


def m_root(f, rng):
    c = rng.randrange(4)
    if c == 0:
        f.attrs["format_version"] = np.array(rng.choice([[1, 0], [1, 1], [1, 2], [2, 0], [0, 9], [1, -1]]), "<i8")
    elif c == 1:
        f.attrs["input_shape"] = plausible("input_shape", rng)
    elif c == 2:
        f.attrs["baked"] = rng.choice([np.uint8(1), np.uint8(2), np.bool_(True), np.int64(-1)])
    else:
        f.attrs["convention"] = rng.choice(["inverted", "classic", "both", ""])


def m_history(f, rng):
    if "history" not in f:
        raise LookupError
    h = f["history"]
    c = rng.randrange(4)
    name = rng.choice(list(h.keys()))
    if c == 0:
        del h[name]
    elif c == 1:
        d = h[name][()]
        del h[name]
        h[name] = np.resize(d, (rng.choice([0, 1, 3, 1000]),) + d.shape[1:])
    elif c == 2:
        h.attrs["initial_weights_sha256"] = np.zeros(rng.choice([0, 31, 32, 33]), rng.choice(["u1", "<i4"]))
    else:
        h["layer_weights_sha256"] = np.zeros((2, rng.choice([1, 2, 3]), 32), "u1")


MUTATIONS = [m_attr_type, m_attr_ref, m_attr_shape, m_attr_value, m_attr_value, m_attr_delete, m_attr_add,
             m_kind, m_kind, m_layer_structure, m_link, m_storage, m_storage, m_dataset_type, m_root, m_history]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--count", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--bases", action="store_true", help="write the unmutated bases only")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    h5py.get_config().track_order = False
    applied = collections.Counter()
    written = skipped = 0
    bases = [(k, lv, s) for k in ("dense", "conv") for lv in (None, ("v108", "v108"), ("v110", "v110"))
             for s in ("var-utf8", "fixed-utf8", "var-ascii")]
    if args.bases:
        for kind, libver, strings in bases:
            name = f"base-{kind}-{libver[0] if libver else 'earliest'}-{strings}.h5"
            write_base(os.path.join(args.out, name), kind, libver, strings, np.random.default_rng(0))
        print(f"{len(bases)} base bundles in {args.out}")
        return 0
    for n in range(args.count):
        rng = random.Random(args.seed * 1_000_003 + n)
        kind, libver, strings = rng.choice(bases)
        path = os.path.join(args.out, f"s{args.seed}-{n:05d}-{kind}.h5")
        write_base(path, kind, libver, strings, np.random.default_rng(n))
        done = []
        with h5py.File(path, "r+") as f:
            for _ in range(rng.choice([1, 1, 2, 2, 3, 4])):
                m = rng.choice(MUTATIONS)
                try:
                    m(f, rng)
                    done.append(m.__name__)
                except Exception:  # the mutation does not apply to this file (or h5py refuses it)
                    pass
        if not done or os.path.getsize(path) > MAX_LEN:
            os.remove(path)
            skipped += 1
            continue
        applied.update(done)
        written += 1
    print(f"{written} mutated bundles in {args.out} ({skipped} skipped: no mutation applied, or over 64 KB)")
    for name, k in sorted(applied.items()):
        print(f"  {name}: {k}")


if __name__ == "__main__":
    sys.exit(main())
