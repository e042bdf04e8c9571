"""Interoperability of `dropmodel import`, `export` and `predict` with the real tools, written from
Specs/interop.md: Keras 3 (JAX backend), ONNX (onnx.checker), ONNX Runtime, safetensors, NumPy
and h5py.

    DROPMODEL_BIN=.build/debug/dropmodel KERAS_BACKEND=jax python -m pytest -q Tests/interop/test_interop.py

* import:  the committed Keras fixtures (Tests/interop/fixtures, made by Keras 3 and by tf-keras 2
           through make_fixtures.py) import with keep p = 1 - rate on the layer receiving the
           dropped units, convention inverted, and the kernels that Keras itself loads.
* agree:   on real Fashion-MNIST test images, the original Keras model, `dropmodel predict`, the
           exported ONNX model under ONNX Runtime and the exported Keras model under Keras give the
           same probabilities within 1e-5; the round trip Keras -> import -> export keras -> Keras
           predicts the same.
* layouts: safetensors, npz and Keras exports hold the names, shapes and metadata the spec lists.
* refuse:  an unbaked classic bundle is not exported; hostile inputs exit 2 without a crash.

Nothing here compares against stored numbers: every side is computed live.
"""

import gzip
import json
import os
import struct
import subprocess
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")

# Hard imports: scripts/setup installs these, and a missing one must fail CI, not skip.
import h5py  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnx.numpy_helper  # noqa: E402
import onnxruntime as ort  # noqa: E402
import pytest  # noqa: E402
import safetensors.numpy as safetensors_numpy  # noqa: E402

# Keras's own get_weights() trips NumPy 2's __array__(copy=...) deprecation: not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
FASHION = Path("/usr/share/datasets/fashion-mnist")
EXAMPLES = 1000
TOLERANCE = 1e-5
CRASH_MARKERS = ("HDF5-DIAG", "Traceback", "Stack dump", "Fatal error")
KERAS_FIXTURES = ["keras3_sequential", "keras3_functional", "keras2_sequential", "keras2_functional"]
# What Specs/interop.md says each export carries.
METADATA_KEYS = {
    "dropmodel.convention", "dropmodel.baked", "dropmodel.keep_prob", "dropmodel.activations",
    "dropmodel.layer_names", "dropmodel.weights_sha256", "dropmodel.creator",
}
# Measured differences, printed at the end of the session (pytest -s) for the record.
MEASURED = {}


@pytest.fixture(scope="session")
def dropmodel():
    env = os.environ.get("DROPMODEL_BIN")
    path = Path(env) if env else REPO_ROOT / ".build" / "debug" / "dropmodel"
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(f"dropmodel binary not found at {path}; build it with `swift build` or set DROPMODEL_BIN",
                    pytrace=False)
    return str(path)


def run(binary, *args, timeout=300):
    return subprocess.run([binary, *map(str, args)], capture_output=True, text=True, timeout=timeout)


def ok(result):
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


def idx(path):
    raw = gzip.open(path, "rb").read()
    ndim = raw[3]
    dims = struct.unpack(">" + "I" * ndim, raw[4:4 + 4 * ndim])
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


@pytest.fixture(scope="session")
def images():
    """The first EXAMPLES Fashion-MNIST test images as dropmodel reads them: byte / 255 in float32."""
    x = idx(FASHION / "t10k-images-idx3-ubyte.gz")[:EXAMPLES].reshape(EXAMPLES, 784)
    return x.astype(np.float32) / np.float32(255)


@pytest.fixture(scope="session", autouse=True)
def report():
    yield
    if MEASURED:
        print("\nmax |difference| of class probabilities on", EXAMPLES, "Fashion-MNIST test images:")
        for k, v in sorted(MEASURED.items()):
            print(f"  {k}: {v:.3g}")


def predict_dropmodel(binary, bundle, tmp_path):
    out = tmp_path / (Path(bundle).stem + ".probs.npy")
    ok(run(binary, "predict", bundle, "--data", "fashion-mnist", "--limit", EXAMPLES, "-o", out))
    return np.load(out, allow_pickle=False)


def predict_onnx(path, x):
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def predict_keras(path, x):
    model = keras.models.load_model(str(path), compile=False)
    return np.asarray(model.predict(x, batch_size=250, verbose=0))


def keras_config(path):
    with h5py.File(path, "r") as f:
        cfg = f.attrs["model_config"]
        return json.loads(cfg.decode() if isinstance(cfg, bytes) else cfg)


def expected_keep(path):
    """From the Keras config alone: the keep probability of each Dense layer's inputs."""
    keeps, pending = [], 1.0
    for layer in keras_config(path)["config"]["layers"]:
        if layer["class_name"] == "Dropout":
            pending *= 1 - layer["config"]["rate"]
        elif layer["class_name"] == "Dense":
            keeps.append(pending)
            pending = 1.0
    return keeps


def bundle_layers(path):
    with h5py.File(path, "r") as f:
        layers = f["layers"]
        return [
            {k: layers[str(i)].attrs[k] for k in ("name", "keep_prob", "activation", "inputs", "outputs")}
            | {"weight": layers[str(i)]["weight"][()], "bias": layers[str(i)]["bias"][()]}
            for i in range(int(layers.attrs["count"]))
        ], {k: f.attrs[k] for k in f.attrs}


def text(v):
    return v.decode() if isinstance(v, bytes) else str(v)


# --------------------------------------------------------------------------------------------
# Import


@pytest.mark.parametrize("name", KERAS_FIXTURES)
def test_import_keeps_dropout_facts_and_kernels(dropmodel, tmp_path, name):
    source = FIXTURES / f"{name}.h5"
    bundle = tmp_path / "b.h5"
    ok(run(dropmodel, "import", source, "-o", bundle))
    layers, root = bundle_layers(bundle)
    assert text(root["convention"]) == "inverted"
    assert int(root["baked"]) == 0
    assert [float(l["keep_prob"]) for l in layers] == pytest.approx(expected_keep(source), abs=1e-15)
    # The kernels Keras itself loads from the file, transposed to [outputs, inputs].
    model = keras.models.load_model(str(source), compile=False)
    dense = [l for l in model.layers if l.__class__.__name__ == "Dense"]
    assert [text(l["name"]) for l in layers] == [d.name for d in dense]
    for ours, theirs in zip(layers, dense):
        kernel, bias = (np.asarray(w) for w in theirs.get_weights())
        np.testing.assert_array_equal(ours["weight"], kernel.T)
        np.testing.assert_array_equal(ours["bias"], bias)
    # Keras's dropout seeds are kept as provenance in the recipe.
    with h5py.File(bundle, "r") as f:
        recipe = json.loads(text(f["training"].attrs["recipe"]))
    seeds = [l["config"].get("seed") for l in keras_config(source)["config"]["layers"] if l["class_name"] == "Dropout"]
    assert [d["seed"] for d in recipe["imported_from"]["dropout"]] == seeds


def test_import_refuses_unsupported_layers_by_name(dropmodel, tmp_path):
    # keras3_conv.h5 imports since issue 12 (test_cnn_interop.py); a BatchNormalization still does not.
    for name, layer in [("keras3_cnn_refuse_batchnorm", "'bn' (BatchNormalization)"),
                        ("keras3_branch", "'right' (Dense)")]:
        r = run(dropmodel, "import", FIXTURES / f"{name}.h5", "-o", tmp_path / "b.h5")
        assert r.returncode == 2, r.stderr
        assert layer in r.stderr and f"{name}.h5" in r.stderr
        assert not any(m in r.stderr for m in CRASH_MARKERS)
        assert not (tmp_path / "b.h5").exists()


# --------------------------------------------------------------------------------------------
# Keras, dropmodel, ONNX Runtime: the same predictions


@pytest.mark.parametrize("name", KERAS_FIXTURES)
def test_keras_dropmodel_onnx_agree(dropmodel, tmp_path, images, name):
    source = FIXTURES / f"{name}.h5"
    bundle, onnx_path, keras_path = tmp_path / "b.h5", tmp_path / "m.onnx", tmp_path / "m.keras.h5"
    ok(run(dropmodel, "import", source, "-o", bundle))
    ok(run(dropmodel, "export", bundle, "--format", "onnx", "-o", onnx_path))
    ok(run(dropmodel, "export", bundle, "--format", "keras", "-o", keras_path))

    original = predict_keras(source, images)
    ours = predict_dropmodel(dropmodel, bundle, tmp_path)
    via_onnx = predict_onnx(onnx_path, images)
    via_keras = predict_keras(keras_path, images)
    assert ours.shape == original.shape == via_onnx.shape == via_keras.shape == (EXAMPLES, 10)
    # A model that predicts one class everywhere would agree trivially: make sure it does not.
    assert len(set(original.argmax(1))) >= 5
    for label, other in [("dropmodel", ours), ("onnxruntime", via_onnx), ("exported keras", via_keras)]:
        diff = float(np.abs(other - original).max())
        MEASURED[f"{name}: {label} vs original keras"] = diff
        assert diff <= TOLERANCE, f"{label} differs from Keras by {diff}"
    diff = float(np.abs(via_onnx - ours).max())
    MEASURED[f"{name}: onnxruntime vs dropmodel"] = diff
    assert diff <= TOLERANCE


def test_keras3_archive_imports_and_agrees(dropmodel, tmp_path, images):
    """A Keras 3 .keras archive (zip) imports like its .h5 twin and predicts what Keras predicts."""
    source = FIXTURES / "keras3_functional.keras"
    ok(run(dropmodel, "import", source, "-o", tmp_path / "a.h5"))
    ok(run(dropmodel, "import", FIXTURES / "keras3_functional.h5", "-o", tmp_path / "h.h5"))
    a, _ = bundle_layers(tmp_path / "a.h5")
    h, _ = bundle_layers(tmp_path / "h.h5")
    for x, y in zip(a, h):
        np.testing.assert_array_equal(x["weight"], y["weight"])
        assert x["keep_prob"] == y["keep_prob"]
    ok(run(dropmodel, "export", tmp_path / "a.h5", "--format", "onnx", "-o", tmp_path / "a.onnx"))
    original = predict_keras(source, images)
    for label, probs in [("dropmodel", predict_dropmodel(dropmodel, tmp_path / "a.h5", tmp_path)),
                         ("onnxruntime", predict_onnx(tmp_path / "a.onnx", images))]:
        diff = float(np.abs(probs - original).max())
        MEASURED[f"keras3_functional.keras: {label} vs original keras"] = diff
        assert diff <= TOLERANCE


def test_round_trip_keras_import_export_keras(dropmodel, tmp_path, images):
    source = FIXTURES / "keras3_sequential.h5"
    first, second, exported = tmp_path / "first.h5", tmp_path / "second.h5", tmp_path / "exported.h5"
    ok(run(dropmodel, "import", source, "-o", first))
    ok(run(dropmodel, "export", first, "--format", "keras", "-o", exported))
    ok(run(dropmodel, "import", exported, "-o", second))
    a, _ = bundle_layers(first)
    b, _ = bundle_layers(second)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x["weight"], y["weight"])
        assert x["keep_prob"] == y["keep_prob"]
        assert text(x["activation"]) == text(y["activation"])
    diff = float(np.abs(predict_keras(exported, images) - predict_keras(source, images)).max())
    MEASURED["round trip keras -> import -> export keras vs original"] = diff
    assert diff <= TOLERANCE


def test_baked_classic_bundle_exports_with_the_weight_scaling_rule(dropmodel, tmp_path, images):
    """A classic bundle trained by dropmodel: refused unbaked; once baked, ONNX and Keras predict what
    `dropmodel predict` predicts for the unbaked bundle (weight scaling applied on the fly)."""
    classic = REPO_ROOT / "samples" / "fashion-784-256-128-10.h5"
    r = run(dropmodel, "export", classic, "--format", "onnx", "-o", tmp_path / "m.onnx")
    assert r.returncode == 2
    assert "/@baked" in r.stderr and "dropmodel bake" in r.stderr
    assert not (tmp_path / "m.onnx").exists()

    baked = tmp_path / "baked.h5"
    ok(run(dropmodel, "bake", classic, "-o", baked))
    ok(run(dropmodel, "export", baked, "--format", "onnx", "-o", tmp_path / "m.onnx"))
    ok(run(dropmodel, "export", baked, "--format", "keras", "-o", tmp_path / "m.h5"))
    unbaked = predict_dropmodel(dropmodel, classic, tmp_path)
    for label, probs in [("onnxruntime", predict_onnx(tmp_path / "m.onnx", images)),
                         ("keras", predict_keras(tmp_path / "m.h5", images))]:
        diff = float(np.abs(probs - unbaked).max())
        MEASURED[f"baked classic sample: {label} vs dropmodel (unbaked, scaled on the fly)"] = diff
        assert diff <= TOLERANCE
    # The Keras export says p as Dropout(rate = 1 - p).
    rates = [l["config"]["rate"] for l in keras_config(tmp_path / "m.h5")["config"]["layers"] if l["class_name"] == "Dropout"]
    assert rates == pytest.approx([0.2, 0.5, 0.5])


# --------------------------------------------------------------------------------------------
# Layouts (Specs/interop.md sections 4-7)


@pytest.fixture(scope="module")
def inverted_bundle(dropmodel, tmp_path_factory):
    path = tmp_path_factory.mktemp("inv") / "b.h5"
    ok(run(dropmodel, "import", FIXTURES / "keras3_functional.h5", "-o", path))
    return path


def test_safetensors_layout(dropmodel, tmp_path, inverted_bundle):
    out = tmp_path / "m.safetensors"
    ok(run(dropmodel, "export", inverted_bundle, "--format", "safetensors", "-o", out))
    layers, _ = bundle_layers(inverted_bundle)
    raw = out.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    assert (8 + n) % 8 == 0, "the header is padded to 8 bytes"
    meta = header.pop("__metadata__")
    assert METADATA_KEYS <= set(meta)
    assert meta["dropmodel.convention"] == "inverted" and meta["dropmodel.baked"] == "0"
    assert json.loads(meta["dropmodel.keep_prob"]) == [float(l["keep_prob"]) for l in layers]
    assert json.loads(meta["dropmodel.layer_names"]) == [text(l["name"]) for l in layers]
    tensors = safetensors_numpy.load_file(str(out))
    assert set(tensors) == set(header) == {f"layers.{i}.{k}" for i in range(len(layers)) for k in ("weight", "bias")}
    for i, l in enumerate(layers):
        assert header[f"layers.{i}.weight"]["dtype"] == "F32"
        np.testing.assert_array_equal(tensors[f"layers.{i}.weight"], l["weight"])  # [outputs, inputs]
        np.testing.assert_array_equal(tensors[f"layers.{i}.bias"], l["bias"])
    # and back: the metadata supplies keep probabilities and convention
    back = tmp_path / "back.h5"
    ok(run(dropmodel, "import", out, "-o", back))
    again, root = bundle_layers(back)
    assert text(root["convention"]) == "inverted"
    assert [float(l["keep_prob"]) for l in again] == [float(l["keep_prob"]) for l in layers]


def test_npz_layout(dropmodel, tmp_path, inverted_bundle):
    out = tmp_path / "m.npz"
    ok(run(dropmodel, "export", inverted_bundle, "--format", "npz", "-o", out))
    layers, _ = bundle_layers(inverted_bundle)
    z = np.load(out, allow_pickle=False)
    L = len(layers)
    assert set(z.files) == {f"layers.{i}.{k}" for i in range(L) for k in ("weight", "bias")} | {
        "keep_prob", "activations", "layer_names", "convention", "baked", "weights_sha256"}
    for i, l in enumerate(layers):
        assert z[f"layers.{i}.weight"].dtype == np.float32
        np.testing.assert_array_equal(z[f"layers.{i}.weight"], l["weight"])
        np.testing.assert_array_equal(z[f"layers.{i}.bias"], l["bias"])
    np.testing.assert_array_equal(z["keep_prob"], [l["keep_prob"] for l in layers])
    assert list(z["activations"]) == [text(l["activation"]) for l in layers]
    assert list(z["layer_names"]) == [text(l["name"]) for l in layers]
    assert str(z["convention"]) == "inverted" and not bool(z["baked"])


def test_onnx_graph(dropmodel, tmp_path, inverted_bundle):
    out = tmp_path / "m.onnx"
    ok(run(dropmodel, "export", inverted_bundle, "--format", "onnx", "-o", out))
    m = onnx.load(str(out))
    onnx.checker.check_model(m, full_check=True)
    assert m.ir_version == 7 and [(o.domain, o.version) for o in m.opset_import] == [("", 13)]
    assert [n.op_type for n in m.graph.node] == ["Gemm", "Relu", "Gemm", "Tanh", "Gemm", "Softmax"]
    assert [i.name for i in m.graph.input] == ["input"] and [o.name for o in m.graph.output] == ["output"]
    dims = m.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and dims[1].dim_value == 784
    props = {p.key: p.value for p in m.metadata_props}
    assert METADATA_KEYS <= set(props)
    layers, _ = bundle_layers(inverted_bundle)
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in m.graph.initializer}
    np.testing.assert_array_equal(inits["layers.0.weight"], layers[0]["weight"])


def test_keras_export_layout(dropmodel, tmp_path, inverted_bundle):
    out = tmp_path / "m.h5"
    ok(run(dropmodel, "export", inverted_bundle, "--format", "keras", "-o", out))
    layers, _ = bundle_layers(inverted_bundle)
    cfg = keras_config(out)
    assert cfg["class_name"] == "Sequential"
    classes = [l["class_name"] for l in cfg["config"]["layers"]]
    assert classes == ["InputLayer", "Dense", "Dropout", "Dense", "Dropout", "Dense"]
    with h5py.File(out, "r") as f:
        names = [text(n) for n in f["model_weights"].attrs["layer_names"]]
        assert names == [l["config"]["name"] for l in cfg["config"]["layers"][1:]]
        for l in layers:
            g = f["model_weights"][text(l["name"])]
            wn = [text(n) for n in g.attrs["weight_names"]]
            np.testing.assert_array_equal(g[wn[0]][()], l["weight"].T)  # kernel [inputs, units]
        assert text(f.attrs["dropmodel.convention"]) == "inverted"


# --------------------------------------------------------------------------------------------
# safetensors from elsewhere (PyTorch's nn.Sequential naming) and hostile files


def test_import_pytorch_style_safetensors(dropmodel, tmp_path, images):
    rng = np.random.default_rng(5)
    w0, b0 = rng.normal(0, 0.05, (64, 784)).astype(np.float32), rng.normal(0, 0.1, 64).astype(np.float32)
    w1, b1 = rng.normal(0, 0.2, (10, 64)).astype(np.float32), rng.normal(0, 0.1, 10).astype(np.float32)
    path = tmp_path / "torch.safetensors"
    safetensors_numpy.save_file({"0.weight": w0, "0.bias": b0, "3.weight": w1, "3.bias": b1}, str(path))
    r = run(dropmodel, "import", path, "-o", tmp_path / "b.h5")
    assert r.returncode == 2 and "--keep" in r.stderr
    ok(run(dropmodel, "import", path, "-o", tmp_path / "b.h5", "--keep", "0.8,0.5", "--convention", "inverted"))
    ours = predict_dropmodel(dropmodel, tmp_path / "b.h5", tmp_path)
    z = np.maximum(images @ w0.T + b0, 0) @ w1.T + b1
    expected = np.exp(z - z.max(1, keepdims=True))
    expected /= expected.sum(1, keepdims=True)
    assert float(np.abs(ours - expected).max()) <= TOLERANCE


@pytest.mark.parametrize("header,length", [
    (b"{}", 2**63),
    (b'{"a.weight":{"dtype":"F32","shape":[4096,4096],"data_offsets":[0,67108864]}}', None),
    (b'{"x":' + b"[" * 50000 + b"]" * 50000 + b"}", None),
])
def test_hostile_safetensors(dropmodel, tmp_path, header, length):
    path = tmp_path / "h.safetensors"
    path.write_bytes(struct.pack("<Q", len(header) if length is None else length) + header)
    r = run(dropmodel, "import", path, "-o", tmp_path / "b.h5", "--keep", "1", "--convention", "inverted")
    assert r.returncode == 2, r.stderr
    assert str(path) in r.stderr and not any(m in r.stderr for m in CRASH_MARKERS)
