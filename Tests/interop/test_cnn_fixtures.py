"""The convolutional Keras fixtures (Tests/interop/fixtures/keras{2,3}_cnn_*, made by
make_cnn_fixtures.py) against Keras itself and the NumPy reference (cnn_reference.py) that
dropmodel's convolutional import will be compared with:

    KERAS_BACKEND=jax .venv/bin/python -m pytest -q Tests/interop/test_cnn_fixtures.py

* agree:   on the first 1,000 Fashion-MNIST test images, Keras's own predictions
           (`load_model(path, compile=False).predict`) equal the reference's forward pass over the
           bundle-layout arrays within 1e-5 (max |difference| of class probabilities), for the
           Keras 3 .h5 and .keras files and for the tf-keras 2 .h5 files; the .h5 and .keras twins
           hold the same arrays and predict the same.
* keras 2: Keras 3 loads keras2_cnn_gaussian_avgpool.h5 but not keras2_cnn_sequential.h5 (its
           SpatialDropout2D refuses the `trainable` and `noise_shape` keys tf-keras writes; a test
           pins that). That file is checked against tf-keras when TF_KERAS_PYTHON names a Python
           with tf-keras (e.g. /work/venv-tf/bin/python, see make_cnn_fixtures.py), otherwise
           against Keras 3 loading it with a SpatialDropout2D that accepts those two keys
           (TolerantSpatialDropout2D; `noise_shape` must be None); make_cnn_fixtures.py --keras 2
           runs the same check when it writes the files.
* layout:  the bundle arrays are the kernels Keras itself loads: Conv2D `[F, KH, KW, C]` =
           kernel.transpose(3, 0, 1, 2), Dense `[out, in]` = kernel.T; keep probabilities and
           dropout modes as the fixtures' architectures say.
* mistakes: each plausible import mistake (the odd "same" pixel on the wrong side, max-pooling
           over zero padding, average-pooling dividing by the window size, C-H-W flatten order, a
           kernel reshaped instead of transposed) moves some fixture's predictions by far more
           than the tolerance, so the fixtures catch it.
* refuse:  every refusal fixture is a valid Keras file (Keras loads and runs it) and the
           reference refuses it naming the offending layer, as dropmodel must.

Nothing here compares against stored numbers: Keras and the reference run live. The only
hand-written expectations are the keep probabilities and modes in EXPECTED_DROPOUT, taken from
the dropout rates chosen in make_cnn_fixtures.py.
"""

import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")

import gzip  # noqa: E402
import struct  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import cnn_reference as ref  # noqa: E402

FIXTURES = Path(__file__).resolve().parent / "fixtures"
sys.path.insert(0, str(FIXTURES))
from make_cnn_fixtures import ARCHIVED, REFUSED  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")

FASHION = Path("/usr/share/datasets/fashion-mnist")
EXAMPLES = 1000
TOLERANCE = 1e-5
# Every accepted fixture: the Keras 3 twins and the tf-keras 2 files.
ACCEPTED = [f"{n}.h5" for n in ARCHIVED] + [f"{n}.keras" for n in ARCHIVED] + [
    "keras2_cnn_sequential.h5", "keras2_cnn_gaussian_avgpool.h5"]
# Per weighted layer (input first): (keep probability, mode), from the rates in make_cnn_fixtures.py.
EXPECTED_DROPOUT = {
    "keras3_cnn_sequential": [(1, "element"), (0.75, "element"), (0.8, "channel"), (0.5, "element")],
    "keras3_cnn_functional": [(1, "element"), (0.9, "channel"), (0.8, "element"), (0.8 * 0.75, "element")],
    "keras3_cnn_same_stride": [(1, "element"), (1, "element"), (0.7, "channel")],
    "keras3_cnn_gap_gaussian": [(0.9, "gaussian"), (0.8, "gaussian"), (1, "element"), (0.7, "gaussian")],
    "keras2_cnn_sequential": [(1, "element"), (0.75, "element"), (0.8, "channel"), (0.5, "element")],
    "keras2_cnn_gaussian_avgpool": [(1, "element"), (0.8, "gaussian"), (0.7, "element")],
}
# tf-keras 2 files Keras 3 cannot load as they are: checked against tf-keras when TF_KERAS_PYTHON
# names a Python with tf-keras, otherwise against Keras 3 with TOLERANT (below).
KERAS3_CANNOT_LOAD = {"keras2_cnn_sequential.h5": "SpatialDropout2D"}
TF_KERAS_PYTHON = os.environ.get("TF_KERAS_PYTHON")


class TolerantSpatialDropout2D(keras.layers.SpatialDropout2D):
    """Keras 3's SpatialDropout2D accepting the two config keys tf-keras 2 writes for it and Keras 3
    refuses: `trainable` (kept) and `noise_shape` (tf-keras always writes None: the noise shape of
    a spatial dropout is fixed by the layer). Anything else still fails. Prediction does not run
    dropout, so the model Keras 3 builds with it computes what tf-keras computes."""

    def __init__(self, *args, trainable=True, noise_shape=None, **kwargs):
        if noise_shape is not None:
            raise TypeError(f"SpatialDropout2D with noise_shape {noise_shape!r}: not what tf-keras writes")
        super().__init__(*args, **kwargs)
        self.trainable = trainable


# What Keras 3 needs to load each KERAS3_CANNOT_LOAD file without tf-keras.
TOLERANT = {"keras2_cnn_sequential.h5": {"SpatialDropout2D": TolerantSpatialDropout2D}}
MEASURED = {}


def idx(path):
    raw = gzip.open(path, "rb").read()
    ndim = raw[3]
    dims = struct.unpack(">" + "I" * ndim, raw[4:4 + 4 * ndim])
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


@pytest.fixture(scope="session")
def images():
    """The first EXAMPLES Fashion-MNIST test images, byte / 255 in float32, NHWC (N, 28, 28, 1)."""
    x = idx(FASHION / "t10k-images-idx3-ubyte.gz")[:EXAMPLES].reshape(EXAMPLES, 28, 28, 1)
    return x.astype(np.float32) / np.float32(255)


@pytest.fixture(scope="session", autouse=True)
def report():
    yield
    if MEASURED:
        print("\nmax |difference| of class probabilities on", EXAMPLES, "Fashion-MNIST test images:")
        for k, v in sorted(MEASURED.items()):
            print(f"  {k}: {v:.3g}")


_keras_cache = {}

# Run by TF_KERAS_PYTHON: tf-keras's predictions and the kernels it loads.
TF_KERAS_SCRIPT = """
import sys
import numpy as np
import tf_keras as keras
model = keras.models.load_model(sys.argv[1], compile=False)
out = {"probabilities": model.predict(np.load(sys.argv[2]), batch_size=250, verbose=0)}
layers = [l for l in model.layers if l.__class__.__name__ in ("Conv2D", "Dense")]
out["names"] = np.array([l.name for l in layers])
for i, l in enumerate(layers):
    out[f"{i}.kernel"], out[f"{i}.bias"] = l.get_weights()
np.savez(sys.argv[3], **out)
"""


def keras_outputs(name, x, tmp_path_factory):
    """(probabilities float64, [(layer name, kernel, bias)] of the Conv2D and Dense layers) as Keras
    itself loads the file: Keras 3, or for KERAS3_CANNOT_LOAD tf-keras through TF_KERAS_PYTHON (else
    Keras 3 with the file's TOLERANT layer classes)."""
    if name in _keras_cache:
        return _keras_cache[name]
    if name in KERAS3_CANNOT_LOAD and TF_KERAS_PYTHON:
        d = tmp_path_factory.mktemp("tf")
        np.save(d / "x.npy", x)
        r = subprocess.run([TF_KERAS_PYTHON, "-c", TF_KERAS_SCRIPT, str(FIXTURES / name), str(d / "x.npy"),
                            str(d / "out.npz")], capture_output=True, text=True, timeout=600,
                           env=os.environ | {"TF_CPP_MIN_LOG_LEVEL": "2"})
        assert r.returncode == 0, r.stderr
        z = np.load(d / "out.npz", allow_pickle=False)
        layers = [(str(n), z[f"{i}.kernel"], z[f"{i}.bias"]) for i, n in enumerate(z["names"])]
        probs = z["probabilities"]
    else:
        model = keras.models.load_model(str(FIXTURES / name), compile=False, custom_objects=TOLERANT.get(name))
        probs = model.predict(x, batch_size=250, verbose=0)
        layers = [(l.name, *(np.asarray(w) for w in l.get_weights())) for l in model.layers
                  if l.__class__.__name__ in ("Conv2D", "Dense")]
    _keras_cache[name] = np.asarray(probs, np.float64), layers
    return _keras_cache[name]


@pytest.fixture
def keras_model(images, tmp_path_factory):
    return lambda name: keras_outputs(name, images, tmp_path_factory)


def stem(name):
    return name.rsplit(".", 1)[0]


# --------------------------------------------------------------------------------------------
# Keras and the reference agree


@pytest.mark.parametrize("name", ACCEPTED)
def test_keras_and_reference_agree(images, keras_model, name):
    theirs, _ = keras_model(name)
    ours = ref.forward(ref.to_bundle(FIXTURES / name), images)
    assert ours.shape == theirs.shape == (EXAMPLES, 10)
    # A model that predicts one class everywhere would agree trivially: make sure it does not.
    assert len(set(theirs.argmax(1))) >= 5
    labels = idx(FASHION / "t10k-labels-idx1-ubyte.gz")[:EXAMPLES]
    assert (theirs.argmax(1) == labels).mean() > 0.6, "the fixture is not trained"
    diff = float(np.abs(ours - theirs).max())
    MEASURED[f"{name}: reference vs keras"] = diff
    assert diff <= TOLERANCE


@pytest.mark.parametrize("name", ARCHIVED)
def test_h5_and_keras_twins_agree(keras_model, name):
    a = ref.bundle_arrays(ref.to_bundle(FIXTURES / f"{name}.h5"))
    b = ref.bundle_arrays(ref.to_bundle(FIXTURES / f"{name}.keras"))
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    diff = float(np.abs(keras_model(f"{name}.h5")[0] - keras_model(f"{name}.keras")[0]).max())
    MEASURED[f"{name}: keras .h5 vs keras .keras"] = diff
    assert diff <= TOLERANCE


# --------------------------------------------------------------------------------------------
# The bundle layout


@pytest.mark.parametrize("name", ACCEPTED)
def test_bundle_arrays_are_the_kernels_keras_loads(keras_model, name):
    ours = ref.weighted(ref.to_bundle(FIXTURES / name))
    _, theirs = keras_model(name)
    assert [l["name"] for l in ours] == [n for n, _, _ in theirs]
    for o, (_, kernel, bias) in zip(ours, theirs):
        expected = kernel.transpose(3, 0, 1, 2) if o["kind"] == "conv2d" else kernel.T
        assert o["weight"].dtype == np.float32
        np.testing.assert_array_equal(o["weight"], expected)
        np.testing.assert_array_equal(o["bias"], bias)


@pytest.mark.parametrize("name", ACCEPTED)
def test_keep_probabilities_and_modes(name):
    layers = ref.weighted(ref.to_bundle(FIXTURES / name))
    expected = EXPECTED_DROPOUT[stem(name)]
    assert [l["dropout"] for l in layers] == [m for _, m in expected]
    assert [l["keep_prob"] for l in layers] == pytest.approx([p for p, _ in expected], abs=1e-15)


def test_same_padding_puts_the_odd_pixel_last():
    assert ref.same_padding(28, 5, 2) == (1, 2)
    assert ref.same_padding(14, 3, 2) == (0, 1)
    assert ref.same_padding(7, 2, 2) == (0, 1)
    assert ref.same_padding(28, 3, 1) == (1, 1)
    assert ref.same_padding(28, 3, 2) == (0, 1)
    assert ref.same_padding(4, 1, 2) == (0, 0)


# --------------------------------------------------------------------------------------------
# The fixtures catch the plausible mistakes


def _odd_pixel_first(monkeypatch, bundle):
    real = ref.same_padding
    monkeypatch.setattr(ref, "same_padding", lambda n, k, s: real(n, k, s)[::-1])
    return bundle


def _max_pool_over_zeros(monkeypatch, bundle):
    real = ref._windows
    monkeypatch.setattr(ref, "_windows", lambda x, k, s, p, fill: real(x, k, s, p, 0.0 if fill == -np.inf else fill))
    return bundle


def _average_over_window(monkeypatch, bundle):
    monkeypatch.setattr(ref, "_inside", lambda hw, op: float(op["pool"][0] * op["pool"][1]))
    return bundle


def _flatten_chw(monkeypatch, bundle):
    """A Dense after a Flatten read as if Keras flattened C, H, W (the NCHW order)."""
    for o in bundle["ops"]:
        if o["kind"] == "dense" and len(o["flattened_from"]) == 3:
            h, w, c = o["flattened_from"]
            o["weight"] = o["weight"].reshape(-1, c, h, w).transpose(0, 2, 3, 1).reshape(len(o["weight"]), -1)
    return bundle


def _kernel_reshaped(monkeypatch, bundle):
    """The Keras kernel (KH, KW, C, F) reinterpreted as [F, KH, KW, C] without transposing."""
    for o in bundle["ops"]:
        if o["kind"] == "conv2d":
            f, kh, kw, c = o["weight"].shape
            o["weight"] = o["weight"].transpose(1, 2, 3, 0).reshape(f, kh, kw, c)
    return bundle


@pytest.mark.parametrize("mistake,name", [
    (_odd_pixel_first, "keras3_cnn_same_stride.h5"),
    (_odd_pixel_first, "keras3_cnn_functional.h5"),
    (_max_pool_over_zeros, "keras3_cnn_functional.h5"),
    (_average_over_window, "keras3_cnn_same_stride.h5"),
    (_average_over_window, "keras2_cnn_gaussian_avgpool.h5"),
    (_flatten_chw, "keras3_cnn_sequential.h5"),
    (_flatten_chw, "keras2_cnn_gaussian_avgpool.h5"),
    (_kernel_reshaped, "keras3_cnn_gap_gaussian.h5"),
])
def test_a_mistake_is_caught(monkeypatch, images, keras_model, mistake, name):
    bundle = mistake(monkeypatch, ref.to_bundle(FIXTURES / name))
    diff = float(np.abs(ref.forward(bundle, images) - keras_model(name)[0]).max())
    MEASURED[f"{name} with {mistake.__name__.strip('_')}: reference vs keras"] = diff
    assert diff > 1000 * TOLERANCE


# --------------------------------------------------------------------------------------------
# Refusals


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_refusal_fixture_is_valid_keras_and_refused_by_name(name):
    path = FIXTURES / f"{name}.h5"
    model = keras.models.load_model(str(path), compile=False)
    x = np.zeros((2,) + tuple(model.input_shape[1:]), np.float32)
    assert np.asarray(model.predict(x, verbose=0)).shape == (2, 3)
    with pytest.raises(ref.Refused) as e:
        ref.to_bundle(path)
    assert str(e.value).startswith(f"layer {REFUSED[name]}: ")


# --------------------------------------------------------------------------------------------
# Keras 2 files


@pytest.mark.parametrize("name", sorted(KERAS3_CANNOT_LOAD))
def test_keras3_still_cannot_load(name):
    """If this fails, Keras 3 has learnt to load the file: drop it from KERAS3_CANNOT_LOAD."""
    with pytest.raises(TypeError, match=KERAS3_CANNOT_LOAD[name]):
        keras.models.load_model(str(FIXTURES / name), compile=False)


# --------------------------------------------------------------------------------------------
# The draft's other refusals, on tiny models built here (no fixture files)


def _tiny(tmp_path, *body):
    from keras import layers
    model = keras.Sequential([keras.Input((8, 8, 2)), *body, layers.Dense(3, activation="softmax", name="output")])
    path = tmp_path / "m.h5"
    model.save(str(path))
    return path


@pytest.mark.parametrize("case,message", [
    ("dropout_before_pool", "layer 'pool' (MaxPooling2D): it lies between the dropout layer 'drop'"),
    ("dropout_before_gap", "layer 'gap' (GlobalAveragePooling2D): it lies between the dropout layer 'drop'"),
    ("mixed_modes", "layer 'spatial' (SpatialDropout2D): a channel dropout right after the element dropout 'drop'"),
    ("dense_on_image", "layer 'dense' (Dense): Dense reads a 4-D tensor"),
    ("conv_softmax", "layer 'conv' (Conv2D): softmax is supported on Dense layers only"),
    ("gap_keepdims", "layer 'gap' (GlobalAveragePooling2D): keepdims true"),
    ("activation_after_pool", "layer 'relu' (Activation): an Activation must directly follow"),
])
def test_draft_refusals(tmp_path, case, message):
    from keras import layers
    conv = layers.Conv2D(4, 3, name="conv")
    body = {
        "dropout_before_pool": [conv, layers.Dropout(0.2, name="drop"), layers.MaxPooling2D(2, name="pool"),
                                layers.Flatten()],
        "dropout_before_gap": [conv, layers.SpatialDropout2D(0.2, name="drop"),
                               layers.GlobalAveragePooling2D(name="gap")],
        "mixed_modes": [layers.Dropout(0.2, name="drop"), layers.SpatialDropout2D(0.2, name="spatial"), conv,
                        layers.Flatten()],
        "dense_on_image": [layers.Dense(4, name="dense"), layers.Flatten()],
        "conv_softmax": [layers.Conv2D(4, 3, activation="softmax", name="conv"), layers.Flatten()],
        "gap_keepdims": [conv, layers.GlobalAveragePooling2D(keepdims=True, name="gap"), layers.Flatten()],
        "activation_after_pool": [conv, layers.MaxPooling2D(2), layers.Activation("relu", name="relu"),
                                  layers.Flatten()],
    }[case]
    with pytest.raises(ref.Refused) as e:
        ref.to_bundle(_tiny(tmp_path, *body))
    assert str(e.value).startswith(message)


def test_channel_noise_shape_with_unknown_channels_is_channel_mode(tmp_path):
    from keras import layers
    path = _tiny(tmp_path, layers.Conv2D(4, 3, name="conv"),
                 layers.Dropout(0.4, noise_shape=(None, 1, 1, None), name="drop"), layers.Flatten())
    layers_ = ref.weighted(ref.to_bundle(path))
    assert [(l["keep_prob"], l["dropout"]) for l in layers_] == [(1, "element"), (pytest.approx(0.6), "channel")]
