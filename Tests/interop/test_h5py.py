"""Interoperability of dropmodel bundles with h5py, written from Specs/bundle-format.md alone.

    DROPMODEL_BIN=.build/debug/dropmodel python -m pytest -q Tests/interop/test_h5py.py

* read:      a bundle written by `dropmodel init`, opened with h5py, holds every item the spec
             requires, with the spec's types, shapes, storage and values; the recorded weight
             digest is recomputed here from the spec's definition.
* write:     bundles written here with h5py (no dropmodel code) are read correctly by
             `dropmodel inspect`, in every string encoding, dtype and storage layout the spec allows.
* refuse:    files that break a rule of the spec, or use HDF5 features a bundle must not use, make
             `dropmodel inspect` exit 2 with an error naming the file and the object, and never
             with a crash or HDF5's own diagnostics.

The binary is $DROPMODEL_BIN, else <repo>/.build/debug/dropmodel.
"""

import hashlib
import json
import math
import os
import re
import subprocess
from pathlib import Path

import h5py
import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SPEC = REPO_ROOT / "Specs" / "bundle-format.md"

FORMAT_MARKER = "dropmodel.bundle"
RECIPE_KEYS_ALWAYS = {
    "layers", "keep", "activation", "convention", "epochs", "batch_size", "learning_rate", "lr_decay",
    "momentum", "momentum_final", "momentum_ramp_epochs", "l2", "data", "init",
}
RECIPE_KEYS_OPTIONAL = {"max_norm", "limit"}
CRASH_MARKERS = ("HDF5-DIAG", "Traceback", "Stack dump", "Fatal error")


# --------------------------------------------------------------------------------------------
# The binary


@pytest.fixture(scope="session")
def dropmodel():
    env = os.environ.get("DROPMODEL_BIN")
    path = Path(env) if env else REPO_ROOT / ".build" / "debug" / "dropmodel"
    if not (path.is_file() and os.access(path, os.X_OK)):
        source = "$DROPMODEL_BIN" if env else "the default location"
        pytest.fail(
            f"dropmodel binary not found at {path} ({source}); build it with `swift build` in {REPO_ROOT} "
            "or point DROPMODEL_BIN at a built binary",
            pytrace=False,
        )
    return str(path)


def run(binary, *args, timeout=120):
    return subprocess.run([binary, *map(str, args)], capture_output=True, text=True, timeout=timeout)


def inspect_json(binary, path, *extra):
    r = run(binary, "inspect", "--json", *extra, path)
    assert r.returncode == 0, f"inspect failed ({r.returncode}):\n{r.stderr}"
    for marker in CRASH_MARKERS:
        assert marker not in r.stderr
    return json.loads(r.stdout)


def assert_refused(result, path, obj):
    """Exit 2; stderr names the file and the object; no crash, no HDF5 diagnostics."""
    err = result.stderr
    assert result.returncode == 2, f"exit {result.returncode}, expected 2\nstdout:\n{result.stdout}\nstderr:\n{err}"
    assert str(path) in err, f"stderr does not name the file {path}:\n{err}"
    assert f"{path}: {obj}: " in err, f"stderr does not name the object {obj}:\n{err}"
    for marker in CRASH_MARKERS:
        assert marker not in err, f"stderr contains {marker!r}:\n{err}"


# --------------------------------------------------------------------------------------------
# The spec, in Python


def weights_digest(params):
    """Specs/bundle-format.md, weight digest: SHA-256 over each layer's weight then bias, every
    value as IEEE binary32 little-endian, row-major; other dtypes converted to binary32 first."""
    h = hashlib.sha256()
    for w, b in params:
        h.update(np.ascontiguousarray(np.asarray(w).astype("<f4")).tobytes(order="C"))
        h.update(np.ascontiguousarray(np.asarray(b).astype("<f4")).tobytes(order="C"))
    return h.digest()


def text(value):
    """A string attribute as str: dropmodel writes fixed-length UTF-8, which h5py returns as bytes."""
    return value.decode("utf-8") if isinstance(value, (bytes, np.bytes_)) else value


def str_writer(encoding):
    """Writes a scalar string attribute in one of the four encodings a reader must accept."""

    def write(attrs, name, value):
        if encoding == "vlen-utf8":
            attrs.create(name, value, dtype=h5py.string_dtype("utf-8"))
        elif encoding == "vlen-ascii":
            attrs.create(name, value.encode("ascii"), dtype=h5py.string_dtype("ascii"))
        elif encoding == "fixed-utf8":
            raw = value.encode("utf-8")
            attrs.create(name, np.bytes_(raw), dtype=h5py.string_dtype("utf-8", max(1, len(raw))))
        elif encoding == "fixed-ascii":
            attrs[name] = np.bytes_(value.encode("ascii"))  # NumPy 'S': fixed-length ASCII
        else:
            raise ValueError(encoding)

    return write


def make_layers(sizes, keeps, activations=None, names=None, dtype="<f4", seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(len(sizes) - 1):
        n_in, n_out = sizes[i], sizes[i + 1]
        last = i == len(sizes) - 2
        out.append({
            "name": names[i] if names else ("output" if last else f"hidden{i + 1}"),
            "kind": "dense",
            "activation": activations[i] if activations else ("softmax" if last else "relu"),
            "keep_prob": keeps[i],
            # Skewed so that means are far from 0 (relative tolerances stay meaningful).
            "weight": rng.uniform(-0.5, 1.0, size=(n_out, n_in)).astype(dtype),
            "bias": rng.uniform(-0.1, 0.2, size=(n_out,)).astype(dtype),
        })
    return out


def recipe_for(layers, epochs):
    sizes = [layers[0]["weight"].shape[1]] + [l["weight"].shape[0] for l in layers]
    return {
        "layers": sizes, "keep": [l["keep_prob"] for l in layers], "activation": "relu",
        "convention": "classic", "epochs": epochs, "batch_size": 100, "learning_rate": 0.1, "lr_decay": 1,
        "momentum": 0.5, "momentum_final": 0.99, "momentum_ramp_epochs": 500, "max_norm": 3.5, "l2": 0,
        "data": "fashion-mnist", "limit": 1000, "init": "glorot-uniform",
    }


def write_bundle(path, layers, *, convention="classic", baked=0, version=(1, 0), creator="interop test",
                 rng_seed=1234, recipe=None, fingerprint=None, description=None, history=None,
                 strings="vlen-utf8", weight_kwargs=None, bias_kwargs=None):
    """Writes a bundle with plain h5py, following Specs/bundle-format.md.

    history: None for no /history group, else dict(initial=bytes|None, records=[dict(epoch, loss,
    train_error, test_error, digest)]).
    """
    ws = str_writer(strings)
    weight_kwargs = {"chunks": True, "fletcher32": True} if weight_kwargs is None else weight_kwargs
    bias_kwargs = {"chunks": True, "fletcher32": True} if bias_kwargs is None else bias_kwargs
    with h5py.File(path, "w") as f:
        ws(f.attrs, "dropmodel_format", FORMAT_MARKER)
        f.attrs.create("format_version", np.array(version, dtype="<i8"))
        ws(f.attrs, "convention", convention)
        if isinstance(baked, (bool, np.bool_)):
            f.attrs["baked"] = np.bool_(baked)  # h5py: an HDF5 enum {FALSE, TRUE} over int8
        else:
            f.attrs.create("baked", baked, dtype="u1")
        if creator is not None:
            ws(f.attrs, "creator", creator)
        lg = f.create_group("layers")
        lg.attrs.create("count", len(layers), dtype="<i8")
        for i, layer in enumerate(layers):
            g = lg.create_group(str(i))
            w, b = layer["weight"], layer["bias"]
            ws(g.attrs, "name", layer["name"])
            ws(g.attrs, "kind", layer["kind"])
            g.attrs.create("inputs", layer.get("inputs", w.shape[1]), dtype="<i8")
            g.attrs.create("outputs", layer.get("outputs", w.shape[0]), dtype="<i8")
            ws(g.attrs, "activation", layer["activation"])
            g.attrs.create("keep_prob", layer["keep_prob"], dtype="<f8")
            g.create_dataset("weight", data=w, **weight_kwargs)
            g.create_dataset("bias", data=b, **bias_kwargs)
        if rng_seed is not None:
            r = f.create_group("rng")
            ws(r.attrs, "algorithm", "philox4x32-10")
            r.attrs.create("seed", rng_seed, dtype="<i8")
            r.attrs.create("stream_layout", 1, dtype="<i8")
        if recipe is not None:
            t = f.create_group("training")
            ws(t.attrs, "recipe", json.dumps(recipe, sort_keys=True))
            if fingerprint is not None:
                ws(t.attrs, "data_fingerprint", fingerprint)
            if description is not None:
                ws(t.attrs, "data_description", description)
        if history is not None:
            h = f.create_group("history")
            if history.get("initial") is not None:
                h.attrs.create("initial_weights_sha256", np.frombuffer(history["initial"], dtype="u1"))
            recs = history["records"]
            h.create_dataset("epoch", data=np.array([r["epoch"] for r in recs], dtype="<i8"))
            for col in ("loss", "train_error", "test_error"):
                h.create_dataset(col, data=np.array([r[col] for r in recs], dtype="<f8"))
            h.create_dataset("weights_sha256",
                             data=np.array([list(r["digest"]) for r in recs], dtype="u1").reshape(len(recs), 32))


def small_bundle(path, **kwargs):
    layers = make_layers([6, 5, 4, 3], [0.8, 0.5, 0.5])
    kwargs.setdefault("recipe", recipe_for(layers, 2))
    write_bundle(path, layers, **kwargs)
    return layers


# --------------------------------------------------------------------------------------------
# Reading what dropmodel writes


def attr_type(obj, name):
    return obj.attrs.get_id(name).dtype, obj.attrs.get_id(name).shape


def assert_fixed_utf8(obj, name):
    """dropmodel writes string attributes as fixed-length UTF-8 (Specs/bundle-format.md section 2)."""
    dt = obj.attrs.get_id(name).dtype
    info = h5py.check_string_dtype(dt)
    assert info is not None and info.encoding == "utf-8" and info.length is not None, f"{obj.name}@{name}: {dt}"


def assert_scalar(obj, name, dtype):
    dt, shape = attr_type(obj, name)
    assert dt == np.dtype(dtype), f"{obj.name}@{name}: {dt}, expected {dtype}"
    assert shape == ()


@pytest.fixture(scope="module")
def init_bundle(dropmodel, tmp_path_factory):
    path = tmp_path_factory.mktemp("init") / "x.h5"
    r = run(dropmodel, "init", "--layers", "20,16,8,3", "--keep", "0.8,0.5,0.5", "--seed", "7", "-o", path)
    assert r.returncode == 0, r.stderr
    return path


def test_read_root(init_bundle):
    with h5py.File(init_bundle, "r") as f:
        assert_fixed_utf8(f, "dropmodel_format")
        assert text(f.attrs["dropmodel_format"]) == FORMAT_MARKER
        dt, shape = attr_type(f, "format_version")
        assert dt == np.dtype("<i8") and shape == (2,)
        assert list(f.attrs["format_version"]) == [1, 0]
        assert_fixed_utf8(f, "convention")
        assert text(f.attrs["convention"]) == "classic"
        assert_scalar(f, "baked", "u1")
        assert f.attrs["baked"] == 0
        if "creator" in f.attrs:
            assert_fixed_utf8(f, "creator")
            assert text(f.attrs["creator"]).startswith("dropmodel")


def test_read_layers(init_bundle):
    sizes, keeps = [20, 16, 8, 3], [0.8, 0.5, 0.5]
    with h5py.File(init_bundle, "r") as f:
        lg = f["layers"]
        assert_scalar(lg, "count", "<i8")
        assert lg.attrs["count"] == 3
        assert sorted(lg.keys()) == ["0", "1", "2"]
        names = []
        for i in range(3):
            g = lg[str(i)]
            assert lg.get(str(i), getlink=True).__class__ is h5py.HardLink
            for a in ("name", "kind", "activation"):
                assert_fixed_utf8(g, a)
            for a in ("inputs", "outputs"):
                assert_scalar(g, a, "<i8")
            assert_scalar(g, "keep_prob", "<f8")
            names.append(text(g.attrs["name"]))
            assert text(g.attrs["kind"]) == "dense"
            assert g.attrs["inputs"] == sizes[i] and g.attrs["outputs"] == sizes[i + 1]
            assert text(g.attrs["activation"]) == ("softmax" if i == 2 else "relu")
            assert g.attrs["keep_prob"] == keeps[i]
            w, b = g["weight"], g["bias"]
            assert w.shape == (sizes[i + 1], sizes[i])  # [outputs, inputs]
            assert b.shape == (sizes[i + 1],)
            assert w.dtype == np.dtype("<f4") and b.dtype == np.dtype("<f4")
            # Chunked in whole rows of about 1 MiB, Fletcher32, no other filter.
            assert w.chunks is not None and w.chunks[1] == w.shape[1]
            assert w.chunks[0] == min(w.shape[0], max(1, (1 << 20) // (4 * w.shape[1])))
            assert w.fletcher32 and w.compression is None and not w.shuffle
            assert b.chunks == b.shape and b.fletcher32 and b.compression is None
            assert not w.external and not b.external
            for ds in (w, b):
                assert h5py.h5o.get_info(ds.id).ctime == 0  # object times not tracked
            assert np.all(np.isfinite(w[...])) and np.all(b[...] == 0)
        assert all(names) and len(set(names)) == 3
        assert h5py.h5o.get_info(lg.id).ctime == 0


def test_read_rng_training_history(init_bundle):
    with h5py.File(init_bundle, "r") as f:
        r = f["rng"]
        assert_fixed_utf8(r, "algorithm")
        assert text(r.attrs["algorithm"]) == "philox4x32-10"
        assert_scalar(r, "seed", "<i8")
        assert r.attrs["seed"] == 7
        assert_scalar(r, "stream_layout", "<i8")
        assert r.attrs["stream_layout"] == 1

        t = f["training"]
        assert_fixed_utf8(t, "recipe")
        recipe = json.loads(text(t.attrs["recipe"]))
        assert isinstance(recipe, dict)
        assert RECIPE_KEYS_ALWAYS <= set(recipe) <= RECIPE_KEYS_ALWAYS | RECIPE_KEYS_OPTIONAL
        assert recipe["layers"] == [20, 16, 8, 3]
        assert recipe["keep"] == [0.8, 0.5, 0.5]
        assert recipe["convention"] == "classic"
        assert recipe["init"] == "glorot-uniform"
        if "data_fingerprint" in t.attrs:
            assert re.fullmatch(r"sha256:[0-9a-f]{64}", text(t.attrs["data_fingerprint"]))

        h = f["history"]
        dt, shape = attr_type(h, "initial_weights_sha256")
        assert dt == np.dtype("u1") and shape == (32,)
        assert h["epoch"].dtype == np.dtype("<i8") and h["epoch"].shape == (0,)
        for col in ("loss", "train_error", "test_error"):
            assert h[col].dtype == np.dtype("<f8") and h[col].shape == (0,)
        assert h["weights_sha256"].dtype == np.dtype("u1") and h["weights_sha256"].shape == (0, 32)

        params = [(f[f"layers/{i}/weight"][...], f[f"layers/{i}/bias"][...]) for i in range(3)]
        assert bytes(h.attrs["initial_weights_sha256"]) == weights_digest(params)


def test_read_matches_inspect(dropmodel, init_bundle):
    report = inspect_json(dropmodel, init_bundle)
    with h5py.File(init_bundle, "r") as f:
        assert report["format_version"] == "%d.%d" % tuple(f.attrs["format_version"])
        assert report["convention"] == text(f.attrs["convention"])
        assert report["baked"] is bool(f.attrs["baked"])
        total = 0
        assert len(report["layers"]) == f["layers"].attrs["count"]
        for i, lr in enumerate(report["layers"]):
            g = f[f"layers/{i}"]
            n = g["weight"].size + g["bias"].size
            total += n
            assert lr["index"] == i
            assert lr["name"] == text(g.attrs["name"])
            assert lr["kind"] == text(g.attrs["kind"])
            assert [lr["outputs"], lr["inputs"]] == list(g["weight"].shape)
            assert lr["activation"] == text(g.attrs["activation"])
            assert lr["keep_prob"] == g.attrs["keep_prob"]
            assert lr["dtype"] == "float32"
            assert lr["parameters"] == n
        assert report["parameters"] == total
        assert report["rng"] == {"algorithm": "philox4x32-10", "seed": 7, "seed_string": "7", "stream_layout": 1}
        assert report["schema"] == "dropmodel.inspect/1"
        assert report["training"]["recipe"] == json.loads(text(f["training"].attrs["recipe"]))
        assert report["history"]["epochs"] == 0
        assert report["history"]["records"] == []
        assert report["history"]["initial_weights_sha256"] == bytes(f["history"].attrs["initial_weights_sha256"]).hex()


def test_writes_are_byte_reproducible(dropmodel, tmp_path):
    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    for p in (a, b):
        r = run(dropmodel, "init", "--layers", "20,16,8,3", "--keep", "0.8,0.5,0.5", "--seed", "7", "-o", p)
        assert r.returncode == 0, r.stderr
    assert a.read_bytes() == b.read_bytes()


def test_inspect_reads_no_weight_data(dropmodel, tmp_path):
    """Metadata-only guarantee: a corrupt weight chunk does not disturb `inspect`, and Fletcher32
    turns it into a read error (naming the dataset) as soon as weights are read."""
    path = tmp_path / "x.h5"
    r = run(dropmodel, "init", "--layers", "20,16,8,3", "--keep", "0.8,0.5,0.5", "--seed", "7", "-o", path)
    assert r.returncode == 0, r.stderr
    with h5py.File(path, "r") as f:
        chunk = f["layers/1/weight"].id.get_chunk_info(0)
    data = bytearray(path.read_bytes())
    data[chunk.byte_offset + 5] ^= 0x40
    path.write_bytes(bytes(data))
    assert inspect_json(dropmodel, path)["layers"][1]["inputs"] == 16
    assert_refused(run(dropmodel, "inspect", "--stats", "--json", path), path, "/layers/1/weight")


# --------------------------------------------------------------------------------------------
# Writing with h5py, reading with dropmodel


def check_stats(report, layers):
    for lr, layer in zip(report["layers"], layers):
        w = np.asarray(layer["weight"]).astype(np.float32).astype(np.float64)  # values as binary32
        s = lr["stats"]
        assert s["min"] == pytest.approx(w.min(), rel=1e-6)
        assert s["max"] == pytest.approx(w.max(), rel=1e-6)
        assert s["mean"] == pytest.approx(w.mean(), rel=1e-6)
        assert s["max_unit_norm"] == pytest.approx(np.linalg.norm(w, axis=1).max(), rel=1e-6)
        assert s["nan"] == 0 and s["inf"] == 0


def test_write_classic_bundle(dropmodel, tmp_path):
    path = tmp_path / "w.h5"
    layers = make_layers([12, 9, 7, 4], [0.8, 0.5, 0.5], seed=3)
    params = [(l["weight"], l["bias"]) for l in layers]
    initial = weights_digest([(w * 0.5, b) for w, b in params])
    after1 = weights_digest([(w * 0.9, b) for w, b in params])
    last = weights_digest(params)
    recipe = recipe_for(layers, 2)
    fingerprint = "sha256:" + hashlib.sha256(b"training data").hexdigest()
    history = {"initial": initial, "records": [
        {"epoch": 1, "loss": 0.75, "train_error": 0.25, "test_error": 0.3, "digest": after1},
        {"epoch": 2, "loss": 0.5, "train_error": 0.125, "test_error": float("nan"), "digest": last},
    ]}
    write_bundle(path, layers, rng_seed=2**63 - 1, recipe=recipe, fingerprint=fingerprint,
                 description="fashion-mnist train[0..<1000]", history=history)

    rep = inspect_json(dropmodel, path)
    assert rep["format_version"] == "1.0"
    assert rep["convention"] == "classic"
    assert rep["baked"] is False
    assert rep["creator"] == "interop test"
    assert rep["parameters"] == sum(w.size + b.size for w, b in params)
    assert len(rep["layers"]) == 3
    for i, (lr, layer) in enumerate(zip(rep["layers"], layers)):
        assert lr["index"] == i
        assert lr["name"] == layer["name"]
        assert lr["kind"] == "dense"
        assert lr["inputs"] == layer["weight"].shape[1]
        assert lr["outputs"] == layer["weight"].shape[0]
        assert lr["activation"] == layer["activation"]
        assert lr["keep_prob"] == layer["keep_prob"]
        assert lr["dtype"] == "float32"
        assert lr["parameters"] == layer["weight"].size + layer["bias"].size
    assert rep["rng"] == {"algorithm": "philox4x32-10", "seed": 2**63 - 1, "seed_string": str(2**63 - 1), "stream_layout": 1}
    assert rep["training"]["recipe"] == recipe
    assert rep["training"]["data_fingerprint"] == fingerprint
    assert rep["training"]["data_description"] == "fashion-mnist train[0..<1000]"
    h = rep["history"]
    assert h["epochs"] == 2
    assert h["initial_weights_sha256"] == initial.hex()
    assert [r["epoch"] for r in h["records"]] == [1, 2]
    assert [r["loss"] for r in h["records"]] == [0.75, 0.5]
    assert [r["train_error"] for r in h["records"]] == [0.25, 0.125]
    assert h["records"][0]["test_error"] == 0.3
    t = h["records"][1]["test_error"]
    assert t is None or math.isnan(t)  # NaN = not measured
    assert [r["weights_sha256"] for r in h["records"]] == [after1.hex(), last.hex()]

    check_stats(inspect_json(dropmodel, path, "--stats"), layers)


@pytest.mark.parametrize("dtype,name", [("<f2", "float16"), ("<f4", "float32"), ("<f8", "float64")])
def test_write_weight_dtypes(dropmodel, tmp_path, dtype, name):
    path = tmp_path / f"{name}.h5"
    layers = make_layers([10, 6, 3], [1.0, 0.5], dtype=dtype, seed=5)
    write_bundle(path, layers, recipe=None, history=None)
    with h5py.File(path, "r") as f:
        assert f["layers/0/weight"].dtype == np.dtype(dtype)
    rep = inspect_json(dropmodel, path, "--stats")
    assert [l["dtype"] for l in rep["layers"]] == [name, name]
    assert rep["training"] is None and rep["history"] is None
    check_stats(rep, layers)


def compact_dataset(group, name, data):
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_layout(h5py.h5d.COMPACT)
    space = h5py.h5s.create_simple(data.shape)
    ds = h5py.h5d.create(group.id, name.encode(), h5py.h5t.IEEE_F32LE, space, dcpl=dcpl)
    ds.write(h5py.h5s.ALL, h5py.h5s.ALL, np.ascontiguousarray(data, dtype="<f4"))


def test_write_storage_variants(dropmodel, tmp_path):
    """Contiguous, compact, and chunked with deflate + shuffle + Fletcher32 are all readable."""
    path = tmp_path / "storage.h5"
    layers = make_layers([30, 20, 10, 5], [0.8, 0.5, 0.5], seed=9)
    write_bundle(path, layers, weight_kwargs={}, bias_kwargs={})  # contiguous
    with h5py.File(path, "r+") as f:
        g = f["layers/1"]
        del g["weight"], g["bias"]
        g.create_dataset("weight", data=layers[1]["weight"], chunks=(4, 20), compression="gzip",
                         compression_opts=6, shuffle=True, fletcher32=True)
        compact_dataset(g, "bias", layers[1]["bias"])
        g2 = f["layers/2"]
        del g2["bias"]
        compact_dataset(g2, "bias", layers[2]["bias"])
    with h5py.File(path, "r") as f:
        assert f["layers/0/weight"].chunks is None
        assert f["layers/1/weight"].compression == "gzip" and f["layers/1/weight"].shuffle
        assert f["layers/1/bias"].id.get_create_plist().get_layout() == h5py.h5d.COMPACT
    check_stats(inspect_json(dropmodel, path, "--stats"), layers)


ENCODINGS = ["fixed-ascii", "vlen-ascii", "fixed-utf8", "vlen-utf8"]


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_string_encodings_and_numpy_bool(dropmodel, tmp_path, encoding):
    path = tmp_path / f"{encoding}.h5"
    utf8 = encoding.endswith("utf8")
    names = ["entrée" if utf8 else "entry", "caché" if utf8 else "hidden", "sortie" if utf8 else "out"]
    layers = make_layers([8, 6, 4, 2], [0.8, 0.5, 0.5], activations=["tanh", "logistic", "linear"], names=names)
    recipe = recipe_for(layers, 1)
    description = "données d'entraînement" if utf8 else "training data"
    fp = "sha256:" + "0123456789abcdef" * 4
    write_bundle(path, layers, strings=encoding, baked=np.bool_(True), creator="h5py " + encoding,
                 recipe=recipe, fingerprint=fp, description=description)
    with h5py.File(path, "r") as f:  # the file really uses the encoding under test
        info = h5py.check_string_dtype(f.attrs.get_id("convention").dtype)
        assert info.encoding == ("utf-8" if utf8 else "ascii")
        assert (info.length is None) == encoding.startswith("vlen")
        assert f.attrs.get_id("baked").get_type().get_class() == h5py.h5t.ENUM  # h5py's numpy bool
    rep = inspect_json(dropmodel, path)
    assert rep["format_version"] == "1.0"
    assert rep["convention"] == "classic"
    assert rep["baked"] is True
    assert rep["creator"] == "h5py " + encoding
    assert [l["name"] for l in rep["layers"]] == names
    assert [l["kind"] for l in rep["layers"]] == ["dense"] * 3
    assert [l["activation"] for l in rep["layers"]] == ["tanh", "logistic", "linear"]
    assert rep["rng"]["algorithm"] == "philox4x32-10"
    assert rep["training"]["recipe"] == recipe
    assert rep["training"]["data_fingerprint"] == fp
    assert rep["training"]["data_description"] == description


def test_baked_numpy_bool_false(dropmodel, tmp_path):
    path = tmp_path / "b.h5"
    small_bundle(path, baked=np.bool_(False), convention="inverted")
    rep = inspect_json(dropmodel, path)
    assert rep["baked"] is False and rep["convention"] == "inverted"


def test_newer_minor_version_with_unknown_items(dropmodel, tmp_path):
    path = tmp_path / "future.h5"
    small_bundle(path, version=(1, 7), history={"initial": None, "records": []})
    with h5py.File(path, "r+") as f:
        f.attrs["quantization"] = "none"
        f["layers/0"].attrs["norm"] = np.float64(1.5)
        f["layers/0"].create_dataset("running_mean", data=np.zeros(5, "<f4"))
        f.create_group("future").create_dataset("x", data=np.arange(3))
    rep = inspect_json(dropmodel, path)
    assert rep["format_version"] == "1.7"
    assert rep["parameters"] == 6 * 5 + 5 + 5 * 4 + 4 + 4 * 3 + 3
    assert rep["history"]["epochs"] == 0 and rep["history"]["initial_weights_sha256"] is None
    text = run(dropmodel, "inspect", path)
    assert text.returncode == 0, text.stderr
    assert "newer" in text.stdout.lower(), "a newer minor version must be reported:\n" + text.stdout


def test_spec_example_writes_a_valid_bundle(dropmodel, tmp_path, monkeypatch):
    """The h5py example of Specs/bundle-format.md (section 12.2) writes a bundle dropmodel reads."""
    text = SPEC.read_text(encoding="utf-8")
    example = [b for b in re.findall(r"```python\n(.*?)```", text, flags=re.S) if "h5py.File" in b]
    assert example, f"{SPEC} has no h5py example"
    monkeypatch.chdir(tmp_path)
    exec(compile(example[0], str(SPEC), "exec"), {"__name__": "spec_example"})
    path = tmp_path / "example.h5"
    rep = inspect_json(dropmodel, path)
    assert rep["format_version"] == "1.0" and rep["convention"] == "classic" and rep["baked"] is False
    assert [l["name"] for l in rep["layers"]] == ["hidden1", "output"]
    assert rep["rng"]["seed"] == 42
    with h5py.File(path, "r") as f:
        count = f["layers"].attrs["count"]
        params = [(f[f"layers/{i}/weight"][...], f[f"layers/{i}/bias"][...]) for i in range(count)]
    assert [r["epoch"] for r in rep["history"]["records"]] == [1, 2]
    assert rep["history"]["records"][-1]["weights_sha256"] == weights_digest(params).hex()


# --------------------------------------------------------------------------------------------
# Files a reader must refuse


def set_attr(obj_path, name, value, dtype=None):
    def mutate(f, tmp):
        f[obj_path].attrs.create(name, value, dtype=dtype)
    return mutate


def del_attr(obj_path, name):
    def mutate(f, tmp):
        del f[obj_path].attrs[name]
    return mutate


def soft_link_layer(f, tmp):
    f.move("layers/1", "stash_1")
    f["layers/1"] = h5py.SoftLink("/stash_1")


def soft_link_weight(f, tmp):
    f["layers/0"].move("weight", "/stash_weight")
    f["layers/0/weight"] = h5py.SoftLink("/stash_weight")


def external_link_layer(f, tmp):
    other = tmp / "other.h5"
    small_bundle(other)
    del f["layers/1"]
    f["layers/1"] = h5py.ExternalLink(str(other), "/layers/1")


def external_link_rng(f, tmp):
    other = tmp / "other.h5"
    small_bundle(other)
    del f["rng"]
    f["rng"] = h5py.ExternalLink(str(other), "/rng")


def external_storage(f, tmp):
    g = f["layers/1"]
    data = g["weight"][...]
    raw = tmp / "weights.raw"
    raw.write_bytes(data.astype("<f4").tobytes())
    del g["weight"]
    g.create_dataset("weight", shape=data.shape, dtype="<f4", external=[(str(raw), 0, data.nbytes)])


def lzf_filter(f, tmp):
    g = f["layers/0"]
    data = g["weight"][...]
    del g["weight"]
    g.create_dataset("weight", data=data, chunks=True, compression="lzf")  # filter 32000, not built in


def transposed_weight(f, tmp):
    g = f["layers/1"]
    data = g["weight"][...]
    del g["weight"]
    g.create_dataset("weight", data=data.T.copy(), chunks=True, fletcher32=True)  # Keras [inputs, outputs]


def weight_as_int(f, tmp):
    g = f["layers/2"]
    shape = g["weight"].shape
    del g["weight"]
    g.create_dataset("weight", data=np.ones(shape, dtype="<i4"))


def digests_as_int8(f, tmp):
    d = f["history/weights_sha256"][...]
    del f["history/weights_sha256"]
    f["history"].create_dataset("weights_sha256", data=d.view(np.int8))  # bytes >= 0x80 become negative


def bias_dtype_differs(f, tmp):
    g = f["layers/0"]
    b = g["bias"][...]
    del g["bias"]
    g.create_dataset("bias", data=b.astype("<f8"), chunks=True, fletcher32=True)  # weight stays float32


def bad_epochs(f, tmp):
    del f["history/epoch"]
    f["history"].create_dataset("epoch", data=np.array([1, 3], dtype="<i8"))


def two_epoch_history():
    d = hashlib.sha256(b"x").digest()
    return {"initial": d, "records": [
        {"epoch": 1, "loss": 1.0, "train_error": 0.5, "test_error": 0.5, "digest": d},
        {"epoch": 2, "loss": 0.5, "train_error": 0.25, "test_error": 0.25, "digest": d},
    ]}


def not_chaining(path, tmp):
    layers = make_layers([6, 5, 4, 3], [0.8, 0.5, 0.5])
    rng = np.random.default_rng(1)
    layers[1]["weight"] = rng.uniform(-1, 1, size=(4, 7)).astype("<f4")  # 7 inputs after 5 outputs
    write_bundle(path, layers)


def fixed_ascii_with_high_bytes(f, tmp):
    f["layers/1"].attrs["name"] = np.bytes_("caché".encode("utf-8"))  # declared ASCII, bytes > 127


def invalid_utf8(f, tmp):
    raw = b"bad\xff\xfe"
    f["layers/1"].attrs.create("name", np.bytes_(raw), dtype=h5py.string_dtype("utf-8", len(raw)))


def not_hdf5(path, tmp):
    path.write_text("this is not an HDF5 file\n" * 100)


def truncated(path, tmp):
    small_bundle(path, history=two_epoch_history())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])


BAD = [
    # id, mutation (of an h5py-written valid bundle) or writer, object named in the error
    ("keep_prob_1.5", set_attr("layers/1", "keep_prob", 1.5, "<f8"), "/layers/1@keep_prob"),
    ("keep_prob_nan", set_attr("layers/1", "keep_prob", float("nan"), "<f8"), "/layers/1@keep_prob"),
    ("keep_prob_0", set_attr("layers/0", "keep_prob", 0.0, "<f8"), "/layers/0@keep_prob"),
    ("shapes_do_not_chain", not_chaining, "/layers/1"),
    ("missing_activation", del_attr("layers/1", "activation"), "/layers/1@activation"),
    ("missing_convention", del_attr("/", "convention"), "/@convention"),
    ("missing_layer_count", del_attr("layers", "count"), "/layers@count"),
    ("unknown_activation", set_attr("layers/1", "activation", "gelu"), "/layers/1@activation"),
    ("unknown_kind", set_attr("layers/1", "kind", "conv3d"), "/layers/1@kind"),
    ("duplicate_name", set_attr("layers/1", "name", "hidden1"), "/layers/1@name"),
    ("empty_name", set_attr("layers/1", "name", ""), "/layers/1@name"),
    ("bad_convention", set_attr("/", "convention", "scaled"), "/@convention"),
    ("baked_2", set_attr("/", "baked", 2, "u1"), "/@baked"),
    ("baked_inverted", set_attr("/", "convention", "inverted"), "/@baked"),  # with baked = 1 below
    ("format_version_2_0", set_attr("/", "format_version", np.array([2, 0], "<i8")), "/@format_version"),
    ("format_version_0_9", set_attr("/", "format_version", np.array([0, 9], "<i8")), "/@format_version"),
    ("format_version_scalar", set_attr("/", "format_version", 1, "<i8"), "/@format_version"),
    ("not_a_bundle", set_attr("/", "dropmodel_format", "keras"), "/"),
    ("transposed_weight", transposed_weight, "/layers/1/weight"),
    ("integer_weight", weight_as_int, "/layers/2/weight"),
    ("negative_seed", set_attr("rng", "seed", -1, "<i8"), "/rng@seed"),
    ("stream_layout_0", set_attr("rng", "stream_layout", 0, "<i8"), "/rng@stream_layout"),
    ("recipe_not_object", set_attr("training", "recipe", "[1, 2]"), "/training@recipe"),
    ("bad_fingerprint", set_attr("training", "data_fingerprint", "sha256:ABC"), "/training@data_fingerprint"),
    ("epochs_out_of_order", bad_epochs, "/history/epoch"),
    ("digests_not_uint8", digests_as_int8, "/history/weights_sha256"),
    ("bias_dtype_differs", bias_dtype_differs, "/layers/0/bias"),
    ("short_initial_digest", set_attr("history", "initial_weights_sha256", np.zeros(16, "u1")),
     "/history@initial_weights_sha256"),
    ("ascii_with_high_bytes", fixed_ascii_with_high_bytes, "/layers/1@name"),
    ("invalid_utf8", invalid_utf8, "/layers/1@name"),
    ("soft_link_layer", soft_link_layer, "/layers/1"),
    ("soft_link_weight", soft_link_weight, "/layers/0/weight"),
    ("external_link_layer", external_link_layer, "/layers/1"),
    ("external_link_rng", external_link_rng, "/rng"),
    ("external_storage", external_storage, "/layers/1/weight"),
    ("unknown_filter_lzf", lzf_filter, "/layers/0/weight"),
    ("not_hdf5", not_hdf5, "/"),
    ("truncated", truncated, "/"),
]

WRITERS = {not_chaining, not_hdf5, truncated}


@pytest.mark.parametrize("case,mutate,obj", BAD, ids=[b[0] for b in BAD])
def test_refuses_bad_file(dropmodel, tmp_path, case, mutate, obj):
    path = tmp_path / f"{case}.h5"
    if mutate in WRITERS:
        mutate(path, tmp_path)
    else:
        small_bundle(path, baked=1 if case == "baked_inverted" else 0,
                     fingerprint="sha256:" + "ab" * 32, history=two_epoch_history())
        with h5py.File(path, "r+") as f:
            mutate(f, tmp_path)
    r = run(dropmodel, "inspect", path)
    assert_refused(r, path, obj)
    if case == "format_version_2_0":
        assert "upgrade" in r.stderr.lower()
    if case == "unknown_kind":
        assert "conv3d" in r.stderr
    # --json and --stats fail the same way.
    assert_refused(run(dropmodel, "inspect", "--json", "--stats", path), path, obj)


def test_huge_declared_shapes_do_not_crash(dropmodel, tmp_path):
    """Two layers of 2^31 x 2^31 units are within the reader's bounds (no data is stored): inspect
    must answer (or refuse with exit 2), never trap on an overflowing parameter count."""
    path = tmp_path / "huge.h5"
    n = 2**31
    with h5py.File(path, "w") as f:
        f.attrs["dropmodel_format"] = FORMAT_MARKER
        f.attrs.create("format_version", np.array([1, 0], "<i8"))
        f.attrs["convention"] = "inverted"
        f.attrs.create("baked", 0, dtype="u1")
        lg = f.create_group("layers")
        lg.attrs.create("count", 2, dtype="<i8")
        for i in range(2):
            g = lg.create_group(str(i))
            for k, v in (("name", f"l{i}"), ("kind", "dense"), ("activation", "linear")):
                g.attrs[k] = v
            g.attrs.create("inputs", n, dtype="<i8")
            g.attrs.create("outputs", n, dtype="<i8")
            g.attrs.create("keep_prob", 1.0, dtype="<f8")
            g.create_dataset("weight", shape=(n, n), dtype="<f4", chunks=(1, 1 << 16))
            g.create_dataset("bias", shape=(n,), dtype="<f4", chunks=(1 << 16,))
    for args in (["inspect", path], ["inspect", "--json", path]):
        r = run(dropmodel, *args)
        for marker in CRASH_MARKERS:
            assert marker not in r.stderr, f"{args}: stderr contains {marker!r}:\n{r.stderr}"
        assert r.returncode in (0, 2), f"{args}: exit {r.returncode}\n{r.stderr}"
