"""`dropmodel import`, `export` and `predict` of the convolutional Keras fixtures
(Tests/interop/fixtures/keras{2,3}_cnn_*, trained on Fashion-MNIST by make_cnn_fixtures.py)
against the real tools, written from Specs/interop.md "Convolutional models":

    DROPMODEL_BIN=.build/debug/dropmodel KERAS_BACKEND=jax python -m pytest -q Tests/interop/test_cnn_interop.py

* import:  each accepted fixture imports to a format 1.1 bundle whose layer kinds, keep
           probabilities and dropout modes are those of the Keras architecture, and whose weights are
           the kernels Keras loads (Conv2D `[F, KH, KW, C]` = kernel.transpose(3, 0, 1, 2)).
* agree:   on the first 1,000 Fashion-MNIST test images, the original Keras model, ONNX Runtime on
           the ONNX export (checked with onnx.checker full_check), Keras on the Keras exports (.h5 and
           .keras) and `dropmodel predict` on the bundle give the same class probabilities within
           1e-5. Keras 3 cannot load keras2_cnn_sequential.h5 (test_cnn_fixtures.py says why): its
           predictions come from the NumPy reference (cnn_reference.py), which test_cnn_fixtures.py
           checks against Keras on every other fixture and make_cnn_fixtures.py against tf-keras.
* layouts: safetensors and npz exports hold the bundle's arrays with the 1.1 metadata.
* refuse:  every refusal fixture exits 2 naming its layer, writes nothing, shows no crash.

Nothing here compares against stored numbers: every side is computed live.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")

import h5py  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
import pytest  # noqa: E402
import safetensors.numpy as safetensors_numpy  # noqa: E402

import cnn_reference as ref  # noqa: E402
from test_cnn_fixtures import ACCEPTED, EXPECTED_DROPOUT, TOLERANT, idx, stem  # noqa: E402

FIXTURES = Path(__file__).resolve().parent / "fixtures"
sys.path.insert(0, str(FIXTURES))
from make_cnn_fixtures import REFUSED  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")

REPO_ROOT = Path(__file__).resolve().parents[2]
FASHION = Path("/usr/share/datasets/fashion-mnist")
EXAMPLES = 1000
TOLERANCE = 1e-5
CRASH_MARKERS = ("HDF5-DIAG", "Traceback", "Stack dump", "Fatal error")
MEASURED = {}
KINDS = {"conv2d": "conv2d", "dense": "dense", "max_pool": "max_pool2d", "avg_pool": "avg_pool2d",
         "global_avg_pool": "global_avg_pool2d", "flatten": "flatten"}


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


@pytest.fixture(scope="session")
def images():
    """The first EXAMPLES Fashion-MNIST test images as dropmodel reads them, NHWC (N, 28, 28, 1)."""
    x = idx(FASHION / "t10k-images-idx3-ubyte.gz")[:EXAMPLES].reshape(EXAMPLES, 28, 28, 1)
    return x.astype(np.float32) / np.float32(255)


@pytest.fixture(scope="session", autouse=True)
def report():
    yield
    if MEASURED:
        print("\nmax |difference| of class probabilities on", EXAMPLES, "Fashion-MNIST test images:")
        for k, v in sorted(MEASURED.items()):
            print(f"  {k}: {v:.3g}")


_original = {}


def original(name, x):
    """The fixture's own predictions, by Keras 3 (with the TOLERANT layer classes for a tf-keras file
    Keras 3 cannot load as it is)."""
    if name not in _original:
        model = keras.models.load_model(str(FIXTURES / name), compile=False, custom_objects=TOLERANT.get(name))
        _original[name] = np.asarray(model.predict(x, batch_size=250, verbose=0), np.float64)
    return _original[name]


_bundles = {}


@pytest.fixture(scope="session")
def bundle(dropmodel, tmp_path_factory):
    """The fixture imported once per session."""
    def get(name):
        if name not in _bundles:
            out = tmp_path_factory.mktemp("bundles") / f"{stem(name)}.bundle.h5"
            ok(run(dropmodel, "import", FIXTURES / name, "-o", out))
            _bundles[name] = out
        return _bundles[name]
    return get


def text(v):
    return v.decode() if isinstance(v, bytes) else str(v)


def compare(label, ours, theirs):
    ours = np.asarray(ours, np.float64)
    assert ours.shape == theirs.shape == (EXAMPLES, 10)
    diff = float(np.abs(ours - theirs).max())
    MEASURED[label] = diff
    assert diff <= TOLERANCE, f"{label}: {diff}"


# --------------------------------------------------------------------------------------------
# Import


@pytest.mark.parametrize("name", ACCEPTED)
def test_import_kinds_dropout_and_kernels(bundle, name):
    path = bundle(name)
    expected = ref.to_bundle(FIXTURES / name)
    with h5py.File(path, "r") as f:
        assert list(f.attrs["format_version"]) == [1, 1]
        assert text(f.attrs["convention"]) == "inverted" and int(f.attrs["baked"]) == 0
        layers = f["layers"]
        count = int(layers.attrs["count"])
        ours = [layers[str(i)] for i in range(count)]
        assert [text(l.attrs["kind"]) for l in ours] == [KINDS[o["kind"]] for o in expected["ops"]]
        assert [text(l.attrs["name"]) for l in ours] == [o["name"] for o in expected["ops"]]
        weighted = [l for l in ours if text(l.attrs["kind"]) in ("conv2d", "dense")]
        want = EXPECTED_DROPOUT[stem(name)]
        assert [float(l.attrs["keep_prob"]) for l in weighted] == pytest.approx([p for p, _ in want], abs=1e-15)
        assert [text(l.attrs["dropout_mode"]) for l in weighted] == [m for _, m in want]
        # The weights are the reference's, i.e. the kernels Keras loads (test_cnn_fixtures.py).
        for l, o in zip(weighted, ref.weighted(expected)):
            np.testing.assert_array_equal(l["weight"][()], o["weight"])
            np.testing.assert_array_equal(l["bias"][()], o["bias"])


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_refusals_name_the_layer(dropmodel, tmp_path, name):
    source = FIXTURES / f"{name}.h5"
    r = run(dropmodel, "import", source, "-o", tmp_path / "b.h5")
    assert r.returncode == 2, r.stderr
    assert f"{source}: /@model_config: layer {REFUSED[name]}:" in r.stderr
    assert "hint:" in r.stderr
    assert not any(m in r.stderr for m in CRASH_MARKERS)
    assert not (tmp_path / "b.h5").exists()


# --------------------------------------------------------------------------------------------
# Keras, ONNX Runtime, the Keras exports and dropmodel predict: the same predictions


@pytest.mark.parametrize("name", ACCEPTED)
def test_onnx_export_agrees(dropmodel, bundle, tmp_path, images, name):
    out = tmp_path / "m.onnx"
    ok(run(dropmodel, "export", bundle(name), "-o", out))
    model = onnx.load(str(out))
    onnx.checker.check_model(model, full_check=True)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    graph_input = session.get_inputs()[0]
    assert graph_input.shape[1:] == [1, 28, 28], "the graph reads NCHW images"
    probs = session.run(None, {graph_input.name: np.ascontiguousarray(images.transpose(0, 3, 1, 2))})[0]
    compare(f"{name}: onnxruntime vs original", probs, original(name, images))


@pytest.mark.parametrize("suffix", [".h5", ".keras"])
@pytest.mark.parametrize("name", ACCEPTED)
def test_keras_export_agrees(dropmodel, bundle, tmp_path, images, name, suffix):
    out = tmp_path / f"m{suffix}"
    ok(run(dropmodel, "export", bundle(name), "-o", out))
    model = keras.models.load_model(str(out), compile=False)
    probs = model.predict(images, batch_size=250, verbose=0)
    compare(f"{name}: keras{suffix} export vs original", probs, original(name, images))
    # The dropout layers say how the network was trained: rate 1 - p, one class per mode.
    classes = [l.__class__.__name__ for l in model.layers]
    want = EXPECTED_DROPOUT[stem(name)]
    modes = {"element": "Dropout", "channel": "SpatialDropout2D", "gaussian": "GaussianDropout"}
    assert sorted(c for c in classes if "Dropout" in c) == sorted(modes[m] for p, m in want if p < 1)


@pytest.mark.parametrize("name", ACCEPTED)
def test_dropmodel_predict_agrees(dropmodel, bundle, tmp_path, images, name):
    out = tmp_path / "p.npy"
    ok(run(dropmodel, "predict", bundle(name), "--data", "fashion-mnist", "--limit", EXAMPLES, "-o", out))
    compare(f"{name}: dropmodel predict vs original", np.load(out, allow_pickle=False), original(name, images))


# --------------------------------------------------------------------------------------------
# Layouts


def test_safetensors_and_npz_hold_the_bundle_arrays(dropmodel, bundle, tmp_path):
    name = "keras3_cnn_gap_gaussian.h5"
    expected = ref.to_bundle(FIXTURES / name)
    ops = expected["ops"]
    st, npz = tmp_path / "m.safetensors", tmp_path / "m.npz"
    ok(run(dropmodel, "export", bundle(name), "-o", st))
    ok(run(dropmodel, "export", bundle(name), "-o", npz))
    tensors = safetensors_numpy.load_file(str(st))
    arrays = np.load(npz, allow_pickle=False)
    for i, o in enumerate(ops):
        if o["kind"] not in ("conv2d", "dense"):
            assert f"layers.{i}.weight" not in tensors
            continue
        for got in (tensors, arrays):
            np.testing.assert_array_equal(got[f"layers.{i}.weight"], o["weight"])
            np.testing.assert_array_equal(got[f"layers.{i}.bias"], o["bias"])
    with open(st, "rb") as f:
        header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
    meta = header["__metadata__"]
    assert json.loads(meta["dropmodel.layer_kinds"]) == [KINDS[o["kind"]] for o in ops]
    assert json.loads(meta["dropmodel.input_shape"]) == [28, 28, 1]
    modes = json.loads(meta["dropmodel.dropout_modes"])
    assert [m for m, o in zip(modes, ops) if o["kind"] in ("conv2d", "dense")] == [
        m for _, m in EXPECTED_DROPOUT[stem(name)]]
    assert list(arrays["layer_kinds"]) == [KINDS[o["kind"]] for o in ops]
    assert list(arrays["input_shape"]) == [28, 28, 1]


# --------------------------------------------------------------------------------------------
# A CNN bundle dropmodel wrote itself: classic, refused unbaked, exported baked


def test_classic_cnn_bundle_baked_exports_agree(dropmodel, tmp_path, images):
    """`dropmodel init` writes a classic CNN with every dropout mode; unbaked it is not exported;
    baked, its ONNX and Keras exports predict the same, and the Keras export imports back to the
    same layers, keep probabilities, modes and weights."""
    bundle, baked = tmp_path / "init.h5", tmp_path / "baked.h5"
    ok(run(dropmodel, "init", "--layers", "28x28x1,conv3x3x4/same,maxpool2,conv3x3x8/s2,avgpool2/same,flatten,16,10",
           "--keep", "0.9,0.75,0.8,0.5", "--dropout-mode", "element,channel,channel,gaussian", "--seed", "5",
           "-o", bundle))
    r = run(dropmodel, "export", bundle, "-o", tmp_path / "unbaked.onnx")
    assert r.returncode == 2 and f"{bundle}: /@baked:" in r.stderr, r.stderr
    assert not (tmp_path / "unbaked.onnx").exists()
    ok(run(dropmodel, "bake", bundle, "-o", baked))
    ok(run(dropmodel, "export", baked, "-o", tmp_path / "m.onnx"))
    ok(run(dropmodel, "export", baked, "-o", tmp_path / "m.keras"))
    onnx.checker.check_model(onnx.load(str(tmp_path / "m.onnx")), full_check=True)
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    x = images[:200]
    via_onnx = session.run(None, {"input": np.ascontiguousarray(x.transpose(0, 3, 1, 2))})[0]
    via_keras = keras.models.load_model(str(tmp_path / "m.keras"), compile=False).predict(x, verbose=0)
    diff = float(np.abs(via_onnx - via_keras).max())
    MEASURED["dropmodel init + bake: onnxruntime vs keras export"] = diff
    assert diff <= TOLERANCE
    # dropmodel predict scales the unbaked classic bundle on the fly: the same network.
    for b in (bundle, baked):
        out = tmp_path / f"{b.stem}.npy"
        ok(run(dropmodel, "predict", b, "--data", "fashion-mnist", "--limit", len(x), "-o", out))
        diff = float(np.abs(np.load(out, allow_pickle=False) - via_onnx).max())
        MEASURED[f"dropmodel init + bake: dropmodel predict ({b.stem}) vs onnxruntime"] = diff
        assert diff <= TOLERANCE
    back = tmp_path / "back.h5"
    ok(run(dropmodel, "import", tmp_path / "m.keras", "-o", back))
    with h5py.File(baked, "r") as a, h5py.File(back, "r") as b:
        n = int(a["layers"].attrs["count"])
        assert int(b["layers"].attrs["count"]) == n
        for i in range(n):
            la, lb = a["layers"][str(i)], b["layers"][str(i)]
            for k in ("kind", "keep_prob", "dropout_mode", "activation"):
                assert la.attrs[k] == lb.attrs[k], (i, k)
            if "weight" in la:
                np.testing.assert_array_equal(la["weight"][()], lb["weight"][()])
                np.testing.assert_array_equal(la["bias"][()], lb["bias"][()])
