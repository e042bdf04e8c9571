#!/usr/bin/env python3
"""Writes the seed corpora of the in-process parser fuzz targets (Fuzz/corpora/TARGET/) from the
repository's real fixtures: Tests/interop/fixtures (Keras 2 and 3 files and archives) and
samples/ (bundles written by dropmodel, whose recipes are the recipe target's seeds), plus small
hand-made safetensors, IDX and gzip files in every variant the readers accept, and a few that
break one rule each. Each seed is under the target's -max_len (scripts/fuzz).

    /work/main/.venv/bin/python Fuzz/make-parser-corpora.py     (needs h5py and numpy)
"""
import gzip, io, json, os, struct, zipfile, glob, shutil
import h5py, numpy as np

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
out = os.path.join(root, "Fuzz", "corpora")
fixtures = os.path.join(root, "Tests", "interop", "fixtures")

def put(target, name, data):
    d = os.path.join(out, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)

shutil.rmtree(out, ignore_errors=True)

# Keras configs: every fixture's model_config (HDF5) and config.json (.keras).
configs = {}
for p in sorted(glob.glob(os.path.join(fixtures, "*.h5"))):
    with h5py.File(p, "r") as f:
        c = f.attrs.get("model_config")
        if c is not None:
            configs[os.path.basename(p)[:-3]] = c.decode() if isinstance(c, bytes) else c
for p in sorted(glob.glob(os.path.join(fixtures, "*.keras"))):
    with zipfile.ZipFile(p) as z:
        configs[os.path.basename(p)[:-6] + "-keras"] = z.read("config.json").decode()
for name, text in configs.items():
    if len(text) <= 16384:
        put("keras-config", name + ".json", text)
        put("json", "keras-" + name + ".json", text)

# .keras archives, small: the real config.json and metadata.json, the weights file cut short
# (the ZIP reader and CRC checks are the target, not HDF5), members stored as Keras stores them.
for p in sorted(glob.glob(os.path.join(fixtures, "*.keras"))):
    with zipfile.ZipFile(p) as z:
        members = [(i.filename, z.read(i.filename)) for i in z.infolist()]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for n, data in members:
            z.writestr(n, data if not n.endswith(".h5") else data[:1024])
    if len(buf.getvalue()) <= 65536:
        put("keras-zip", os.path.basename(p), buf.getvalue())
buf = io.BytesIO()
with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
    z.writestr("config.json", '{"class_name":"Sequential","config":{"layers":[]}}')
put("keras-zip", "minimal.keras", buf.getvalue())
buf = io.BytesIO()
with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
    z.writestr("config.json", '{"class_name":"Sequential"}')
put("keras-zip", "refuse-deflated.keras", buf.getvalue())

# safetensors: dense chains as dropmodel exports them (with its metadata) and as PyTorch does.
def safetensors(tensors, metadata=None):
    header, data = {}, b""
    for name, arr in tensors:
        dt = {np.dtype("<f4"): "F32", np.dtype("<f2"): "F16", np.dtype("<f8"): "F64", np.dtype("<i4"): "I32"}[arr.dtype]
        b = arr.tobytes()
        header[name] = {"dtype": dt, "shape": list(arr.shape), "data_offsets": [len(data), len(data) + len(b)]}
        data += b
    if metadata:
        header["__metadata__"] = metadata
    h = json.dumps(header, separators=(",", ":")).encode()
    return struct.pack("<Q", len(h)) + h + data

rng = np.random.default_rng(17)
def dense(sizes, dtype="<f4", prefix="", bias=True):
    t = []
    for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
        t.append((f"{prefix}{i}.weight", rng.standard_normal((b, a)).astype(dtype)))
        if bias:
            t.append((f"{prefix}{i}.bias", rng.standard_normal(b).astype(dtype)))
    return t
meta = {"dropmodel.convention": "inverted", "dropmodel.keep_prob": "[0.8,0.5]",
        "dropmodel.activations": '["relu","softmax"]', "dropmodel.layer_names": '["dense_0","dense_1"]'}
put("safetensors", "dropmodel-8-6-4.safetensors", safetensors(dense([8, 6, 4]), meta))
put("safetensors", "torch-5-3.safetensors", safetensors(dense([5, 3], prefix="net.")))
put("safetensors", "f16-4-3-2.safetensors", safetensors(dense([4, 3, 2], "<f2"), meta))
put("safetensors", "f64-no-bias.safetensors", safetensors(dense([3, 2], "<f8", bias=False), {"dropmodel.keep_prob": "[1]"}))
put("safetensors", "int-tensor.safetensors", safetensors([("0.weight", np.arange(6, dtype="<i4").reshape(2, 3))]))
put("safetensors", "empty-header.safetensors", struct.pack("<Q", 2) + b"{}")
put("safetensors", "metadata-only.safetensors", safetensors([], {"a": "b"}))

# IDX (MNIST layout), plain and gzipped.
def idx(arr):
    return bytes([0, 0, 8, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape) + arr.astype(np.uint8).tobytes()
images = rng.integers(0, 256, (3, 28, 28), dtype=np.uint8)
labels = np.array([3, 1, 4], dtype=np.uint8)
put("idx", "images-3.idx", idx(images))
put("idx", "labels-3.idx", idx(labels))
put("idx", "images-3.idx.gz", gzip.compress(idx(images), mtime=0))
put("idx", "labels-3.idx.gz", gzip.compress(idx(labels), mtime=0))
put("idx", "rank4.idx", idx(rng.integers(0, 256, (2, 2, 3, 2), dtype=np.uint8)))
put("idx", "truncated.idx", idx(images)[:100])

# gzip streams: empty, text, binary, two members, and one with every header field.
put("gzip", "empty.gz", gzip.compress(b"", mtime=0))
put("gzip", "text.gz", gzip.compress(b"dropmodel " * 200, mtime=0))
put("gzip", "binary.gz", gzip.compress(idx(images), mtime=0))
put("gzip", "two-members.gz", gzip.compress(b"a" * 100, mtime=0) + gzip.compress(b"b" * 100, mtime=0))
hdr = b"\x1f\x8b\x08\x1e" + b"\0\0\0\0\0\xff" + b"\x04\0abcd" + b"name\0" + b"comment\0"
body = gzip.compress(b"x" * 300, mtime=0)[10:]
put("gzip", "header-fields.gz", hdr + body)

# Recipes: those in the sample bundles, and variants with every optional key.
recipes = []
for p in sorted(glob.glob(os.path.join(root, "samples", "*.h5"))):
    with h5py.File(p, "r") as f:
        r = f["training"].attrs.get("recipe") if "training" in f else None
        if r is not None:
            recipes.append((os.path.basename(p)[:-3], r.decode() if isinstance(r, bytes) else r))
base = json.loads(recipes[0][1]) if recipes else {}
full = dict(base, limit=1000, test_limit=500, momentum_final=0.99, momentum_ramp_epochs=500)
recipes.append(("all-keys", json.dumps(full, separators=(",", ":"))))
recipes.append(("minimal", json.dumps({k: base[k] for k in ("layers", "keep", "epochs", "batch_size", "learning_rate", "data") if k in base})))
for name, text in recipes:
    put("recipe", name + ".json", text)
    put("json", "recipe-" + name + ".json", text)

# JSON: the grammar's corners.
for name, text in {
    "numbers": '[0,-0,1e308,-1e-308,1.5E+3,123456789012345678901234567890,9223372036854775807,-9223372036854775808]',
    "strings": r'["\u00e9\ud83d\ude00","\"\\\/\b\f\n\r\t","",  "x"]',
    "nested": '{"a":{"b":{"c":[[[{}]]]}}}',
    "literals": '[true,false,null]',
    "whitespace": ' \t\n{ "k" : [ 1 , 2 ] }\r\n',
    "duplicate-keys": '{"a":1,"a":2}',
}.items():
    put("json", name + ".json", text)

# The --layers grammar: the networks of the tests and docs (dense, conv, pooling, every option),
# the corners of its bounds, and a few that break one rule each.
for i, text in enumerate([
    "784,1024,1024,10", "784,128,64,10", "4,3,2", "1,1",
    "28x28x1,conv3x3x16,maxpool2,conv3x3x32,maxpool2,128,10",
    "28x28x1,conv3x3x16,maxpool2,conv3x3x32/same,maxpool2,flatten,128,10",
    "28x28x1,conv3x3x4/same,maxpool2,conv3x3x8/s2,avgpool2/same,flatten,16,10",
    "32x30x3,conv5x5x8/s2/same,maxpool3/s2/same,avgpool2x1,gap,10",
    "10x12x2,conv3x1x4/s1x2,maxpool2x3,flatten,7",
    "32x32x3,conv5x5x32/valid,maxpool3/s2x1/same,avgpool3x2/s1,gap,10",
    "4096x4096x1,conv4096x4096x1/s4096,flatten,1",
    "1x16777216x1,maxpool1x4096/s4096/same,gap,16777216",
    "28x28x1,conv30x30x8,10", "28x28x1,conv3x3x8/s2/s2,10", "4096x4096x4096,10", "28x28x1,maxpool2,gap",
]):
    put("layers", "net-%02d.txt" % i, text)
print("corpora written under", out)
