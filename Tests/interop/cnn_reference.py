"""A small NumPy reference for Keras dropout CNNs, written from Specs/interop.md ("Convolutional
models (draft)") and /work/shared/reference/conv.md, to check dropmodel's Swift importer tensor by
tensor and its forward pass prediction by prediction.

* `read_keras(path)`: the config and weights of a Keras file, read with h5py and json only
  (no Keras): a full-model `.h5` (Keras 2 or 3: `/@model_config`, `/model_weights/<layer>`) or a
  Keras 3 `.keras` archive (`config.json`, `model.weights.h5`, groups matched by their `vars@name`).
* `to_bundle(path_or_model)`: the model in dropmodel's bundle layout, as plain NumPy arrays:
  activations NHWC, Conv2D weight `[F, KH, KW, C]` (the Keras kernel `(KH, KW, C, F)` read as a
  `(KH·KW·C, F)` matrix and transposed: row f holds filter f's weights in patch order (i, j, c)),
  Dense weight `[outputs, inputs]` with inputs in Keras's Flatten order (H, W, C fastest), keep
  probability `p = 1 − rate` on the input of the weighted layer that receives the dropped units and
  the dropout mode `element`, `channel` or `gaussian`. Raises `Refused` (message
  `layer '<name>' (<class>): ...`) for what the draft spec refuses.
* `forward(bundle, x)`: inference (dropout is the identity: inverted dropout and Gaussian dropout
  both have mean 1) in float64 from the bundle arrays, with TensorFlow's "same" padding (the odd
  pixel at the bottom/right), valid pooling dropping the rows that do not fill a window, max-pooling
  ignoring padding and average-pooling dividing by the pixels inside the image.

    python Tests/interop/cnn_reference.py MODEL.h5|MODEL.keras [--npz OUT.npz]

prints the bundle layout and optionally writes it as `layers.<i>.weight`, `layers.<i>.bias`,
`keep_prob`, `dropout_mode`, `activations`, `layer_names` (weighted layers only, input first).
"""

import io
import json
import sys
import zipfile

import h5py
import numpy as np

ACTIVATIONS = {"relu": "relu", "sigmoid": "logistic", "tanh": "tanh", "linear": "linear", None: "linear",
               "softmax": "softmax"}
MODEL_CLASSES = ("Sequential", "Functional", "Model")
DROPOUTS = ("Dropout", "SpatialDropout2D", "GaussianDropout")
POOLS = {"MaxPooling2D": "max_pool", "AveragePooling2D": "avg_pool"}


class Refused(ValueError):
    """What dropmodel must refuse; the message names the layer as `layer '<name>' (<class>)`."""


def _text(v):
    return v.decode() if isinstance(v, bytes) else str(v)


def _names(attrs, key):
    """A Keras name list attribute, possibly split into key0, key1, ... (lists over 64 KB)."""
    if key in attrs:
        return [_text(n) for n in np.asarray(attrs[key]).ravel()]
    out, k = [], 0
    while f"{key}{k}" in attrs:
        out += [_text(n) for n in np.asarray(attrs[f"{key}{k}"]).ravel()]
        k += 1
    return out


# --------------------------------------------------------------------------------------------
# Reading


def read_keras(path):
    """(config, weights): config = the parsed model config {"class_name", "config"}; weights =
    {layer name: {"kernel": array, "bias": array}} for every layer that has weights, as stored."""
    path = str(path)
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic == b"PK\x03\x04":
        with zipfile.ZipFile(path) as z:
            config = json.loads(z.read("config.json"))
            raw = z.read("model.weights.h5")
        weights = {}
        with h5py.File(io.BytesIO(raw), "r") as h:
            def visit(_, obj):
                if isinstance(obj, h5py.Group) and obj.name.endswith("/vars") and "name" in obj.attrs and len(obj):
                    keys = sorted(obj, key=int)
                    names = ["kernel", "bias"][:len(keys)]
                    weights[_text(obj.attrs["name"])] = {n: obj[k][()] for n, k in zip(names, keys)}
            h["layers"].visititems(visit)
        return config, weights
    with h5py.File(path, "r") as h:
        config = json.loads(_text(h.attrs["model_config"]))
        group = h["model_weights"]
        weights = {}
        for layer in group:
            names = _names(group[layer].attrs, "weight_names")
            if names:
                weights[layer] = {n.split("/")[-1].removesuffix(":0"): group[layer][n][()] for n in names}
        return config, weights


def _chain(config):
    """The layers of a linear chain in order, as (class_name, layer config); refuses anything else."""
    cls = config.get("class_name")
    if cls not in MODEL_CLASSES:
        raise Refused(f"model class {cls} is not supported")
    body = config["config"]
    layers = body if isinstance(body, list) else body["layers"]
    if cls == "Sequential":
        return [(l["class_name"], l["config"]) for l in layers]
    previous = None
    for l in layers:
        name = l["config"]["name"]
        nodes = l.get("inbound_nodes", [])
        if previous is None:
            if l["class_name"] != "InputLayer" or nodes:
                raise Refused(f"layer '{name}' ({l['class_name']}): the chain must start with an InputLayer")
        else:
            sources = []
            for node in nodes:
                if isinstance(node, dict):  # Keras 3
                    for a in node.get("args", []):
                        for t in (a if isinstance(a, list) else [a]):
                            sources.append(t["config"]["keras_history"][0])
                else:  # Keras 2: [[layer, node, tensor, kwargs], ...]
                    sources += [t[0] for t in node]
            if len(nodes) != 1 or sources != [previous]:
                raise Refused(f"layer '{name}' ({l['class_name']}): not a linear chain (reads {sources})")
        previous = name
    outputs = body.get("output_layers")
    if outputs is not None:
        outputs = outputs if outputs and isinstance(outputs[0], list) else [outputs]
        if [o[0] for o in outputs] != [previous]:
            raise Refused(f"the model's outputs {[o[0] for o in outputs]} are not its last layer '{previous}'")
    return [(l["class_name"], l["config"]) for l in layers]


# --------------------------------------------------------------------------------------------
# The bundle layout


def _pair(v):
    return (int(v), int(v)) if isinstance(v, (int, float)) else tuple(int(a) for a in v)


def _out_size(n, k, s, padding):
    return -(-n // s) if padding == "same" else (n - k) // s + 1


def to_bundle(source):
    """The model in the bundle layout. `source` is a path or a (config, weights) pair.

    Returns {"input_shape": (H, W, C) or (D,), "ops": [...]} where each op is a dict with "kind"
    (conv2d, dense, max_pool, avg_pool, global_avg_pool, flatten), "name" (the Keras layer name),
    "input_shape", "output_shape" and, for weighted layers (conv2d, dense), "weight", "bias"
    (float32), "activation" (bundle name), "keep_prob" (float), "dropout" (element, channel or
    gaussian; element with keep_prob 1 when nothing is dropped) and "dropout_layers" (the Keras
    names that contributed); for conv2d and pools "kernel" or "pool" (KH, KW), "strides", "padding".
    """
    config, weights = read_keras(source) if not isinstance(source, tuple) else source
    chain = _chain(config)
    ops, shape = [], None
    keep, mode, sources = 1.0, None, []  # the pending dropout
    last_weighted = None  # index in ops of the weighted layer an Activation may still apply to

    def refuse(cls, cfg, why):
        raise Refused(f"layer '{cfg.get('name')}' ({cls}): {why}")

    def channels_last(cls, cfg):
        if cfg.get("data_format") not in (None, "channels_last"):
            refuse(cls, cfg, f"data_format {cfg.get('data_format')} is not supported (channels_last only)")

    def activation(cls, cfg, a):
        if not (a is None or isinstance(a, str) and a in ACTIVATIONS):
            refuse(cls, cfg, f"activation {a!r} is not supported")
        return ACTIVATIONS[a]

    def take_dropout():
        nonlocal keep, mode, sources
        out = (keep, mode or "element", sources)
        keep, mode, sources = 1.0, None, []
        return out

    def crossing(cls, cfg):
        if sources:
            refuse(cls, cfg, f"it lies between the dropout layer '{sources[-1]}' and the weighted layer receiving its units")

    for i, (cls, cfg) in enumerate(chain):
        name = cfg.get("name")
        if i == 0:
            if cls != "InputLayer":
                refuse(cls, cfg, "the model must start with an InputLayer")
            dims = cfg.get("batch_shape") or cfg.get("batch_input_shape")
            if not dims or any(d is None or d < 1 for d in dims[1:]) or len(dims) not in (2, 4):
                refuse(cls, cfg, f"input shape {dims} is not (batch, H, W, C) or (batch, D)")
            shape = tuple(int(d) for d in dims[1:])
            input_shape = shape
            continue
        if cls == "InputLayer":
            refuse(cls, cfg, "a second input")
        if cls == "Conv2D":
            channels_last(cls, cfg)
            if len(shape) != 3:
                refuse(cls, cfg, f"Conv2D reads a {len(shape) + 1}-D tensor; it needs (batch, H, W, C)")
            if _pair(cfg.get("dilation_rate", 1)) != (1, 1):
                refuse(cls, cfg, f"dilation_rate {cfg['dilation_rate']} is not supported (1 only)")
            if int(cfg.get("groups", 1)) != 1:
                refuse(cls, cfg, f"groups {cfg['groups']} is not supported (1 only)")
            if cfg.get("lora_rank") or cfg.get("quantization_config"):
                refuse(cls, cfg, "LoRA or quantized kernels are not supported")
            padding = cfg.get("padding", "valid").lower()
            if padding not in ("valid", "same"):
                refuse(cls, cfg, f"padding {padding} is not supported")
            kh, kw = _pair(cfg["kernel_size"])
            sh, sw = _pair(cfg.get("strides", 1))
            f = int(cfg["filters"])
            h, w, c = shape
            kernel = np.asarray(weights[name]["kernel"])
            if kernel.shape != (kh, kw, c, f):
                refuse(cls, cfg, f"kernel shape {kernel.shape} is not {(kh, kw, c, f)}")
            oh, ow = _out_size(h, kh, sh, padding), _out_size(w, kw, sw, padding)
            if oh < 1 or ow < 1:
                refuse(cls, cfg, f"a {kh}x{kw} kernel does not fit a {h}x{w} input")
            bias = np.asarray(weights[name]["bias"]) if cfg.get("use_bias", True) else np.zeros(f, np.float32)
            p, m, src = take_dropout()
            ops.append({"kind": "conv2d", "name": name, "input_shape": shape, "output_shape": (oh, ow, f),
                        "weight": kernel.reshape(kh * kw * c, f).T.reshape(f, kh, kw, c).astype(np.float32),
                        "bias": bias.astype(np.float32), "kernel": (kh, kw), "strides": (sh, sw),
                        "padding": padding, "activation": activation(cls, cfg, cfg.get("activation")),
                        "keep_prob": p, "dropout": m, "dropout_layers": src})
            if ops[-1]["activation"] == "softmax":
                refuse(cls, cfg, "softmax is supported on Dense layers only")
            shape, last_weighted = (oh, ow, f), len(ops) - 1
            continue
        if cls == "Dense":
            if len(shape) != 1:
                refuse(cls, cfg, f"Dense reads a {len(shape) + 1}-D tensor; flatten it first")
            if cfg.get("lora_rank") or cfg.get("quantization_config"):
                refuse(cls, cfg, "LoRA or quantized kernels are not supported")
            units = int(cfg["units"])
            kernel = np.asarray(weights[name]["kernel"])
            if kernel.shape != (shape[0], units):
                refuse(cls, cfg, f"kernel shape {kernel.shape} is not {(shape[0], units)}")
            bias = np.asarray(weights[name]["bias"]) if cfg.get("use_bias", True) else np.zeros(units, np.float32)
            p, m, src = take_dropout()
            flat_from = ops[-1]["input_shape"] if ops and ops[-1]["kind"] == "flatten" else shape
            ops.append({"kind": "dense", "name": name, "input_shape": shape, "output_shape": (units,),
                        "flattened_from": flat_from, "weight": kernel.T.astype(np.float32),
                        "bias": bias.astype(np.float32), "activation": activation(cls, cfg, cfg.get("activation")),
                        "keep_prob": p, "dropout": m, "dropout_layers": src})
            shape, last_weighted = (units,), len(ops) - 1
            continue
        if cls == "Activation":
            a = activation(cls, cfg, cfg.get("activation"))
            if a == "linear":
                continue
            if last_weighted is None or last_weighted != len(ops) - 1 or sources:
                refuse(cls, cfg, "an Activation must directly follow a Conv2D or Dense layer")
            target = ops[last_weighted]
            if target["activation"] != "linear":
                refuse(cls, cfg, f"'{target['name']}' already has activation {target['activation']}")
            if a == "softmax" and target["kind"] != "dense":
                refuse(cls, cfg, "softmax is supported on Dense layers only")
            target["activation"], last_weighted = a, None
            continue
        last_weighted = None
        if cls in DROPOUTS:
            rate = cfg.get("rate")
            if not isinstance(rate, (int, float)) or isinstance(rate, bool) or not 0 <= rate < 1:
                refuse(cls, cfg, f"rate {rate!r} is not a number in [0, 1)")
            if cls == "GaussianDropout":
                m = "gaussian"
            elif cls == "SpatialDropout2D":
                channels_last(cls, cfg)
                if len(shape) != 3:
                    refuse(cls, cfg, "SpatialDropout2D needs a (batch, H, W, C) tensor")
                m = "channel"
            else:
                ns = cfg.get("noise_shape")
                if ns is None:
                    m = "element"
                elif len(shape) == 3 and len(ns) == 4 and list(ns[1:3]) == [1, 1] and ns[3] in (None, shape[2]):
                    m = "channel"  # SpatialDropout2D's pattern (batch, 1, 1, C)
                else:
                    refuse(cls, cfg, f"noise_shape {ns} is not supported (null, or (None, 1, 1, C) on an image tensor)")
            if mode is not None and m != mode:
                refuse(cls, cfg, f"a {m} dropout right after the {mode} dropout '{sources[-1]}' has no bundle mode")
            keep, mode, sources = keep * (1 - float(rate)), m, sources + [name]
            continue
        if cls in POOLS:
            channels_last(cls, cfg)
            crossing(cls, cfg)
            if len(shape) != 3:
                refuse(cls, cfg, f"{cls} needs a (batch, H, W, C) tensor")
            kh, kw = _pair(cfg["pool_size"])
            sh, sw = _pair(cfg.get("strides") or cfg["pool_size"])
            padding = cfg.get("padding", "valid").lower()
            h, w, c = shape
            oh, ow = _out_size(h, kh, sh, padding), _out_size(w, kw, sw, padding)
            if oh < 1 or ow < 1:
                refuse(cls, cfg, f"a {kh}x{kw} pool does not fit a {h}x{w} input")
            ops.append({"kind": POOLS[cls], "name": name, "input_shape": shape, "output_shape": (oh, ow, c),
                        "pool": (kh, kw), "strides": (sh, sw), "padding": padding})
            shape = (oh, ow, c)
            continue
        if cls == "GlobalAveragePooling2D":
            channels_last(cls, cfg)
            crossing(cls, cfg)
            if cfg.get("keepdims"):
                refuse(cls, cfg, "keepdims true is not supported")
            if len(shape) != 3:
                refuse(cls, cfg, "GlobalAveragePooling2D needs a (batch, H, W, C) tensor")
            ops.append({"kind": "global_avg_pool", "name": name, "input_shape": shape, "output_shape": (shape[2],)})
            shape = (shape[2],)
            continue
        if cls == "Flatten":
            channels_last(cls, cfg)
            ops.append({"kind": "flatten", "name": name, "input_shape": shape,
                        "output_shape": (int(np.prod(shape)),)})
            shape = ops[-1]["output_shape"]
            continue
        refuse(cls, cfg, f"layer class {cls} is not supported")

    if sources:
        cls, cfg = next((c, g) for c, g in chain if g.get("name") == sources[-1])
        refuse(cls, cfg, "no Conv2D or Dense layer after it receives its units")
    if not any(o["kind"] in ("conv2d", "dense") for o in ops):
        raise Refused("the model has no Conv2D or Dense layer")
    return {"input_shape": input_shape, "ops": ops}


def weighted(bundle):
    """The bundle's layers proper (conv2d and dense, input first)."""
    return [o for o in bundle["ops"] if o["kind"] in ("conv2d", "dense")]


def bundle_arrays(bundle):
    """The weighted layers as flat NumPy arrays, one name per tensor (see the module docstring)."""
    layers = weighted(bundle)
    out = {}
    for i, l in enumerate(layers):
        out[f"layers.{i}.weight"], out[f"layers.{i}.bias"] = l["weight"], l["bias"]
    out["keep_prob"] = np.array([l["keep_prob"] for l in layers], np.float64)
    out["dropout_mode"] = np.array([l["dropout"] for l in layers])
    out["activations"] = np.array([l["activation"] for l in layers])
    out["layer_names"] = np.array([l["name"] for l in layers])
    out["input_shape"] = np.array(bundle["input_shape"], np.int64)
    return out


# --------------------------------------------------------------------------------------------
# Inference


def same_padding(n, k, s):
    """TensorFlow's "same": (before, after), the odd pixel after (bottom, right)."""
    total = max((-(-n // s) - 1) * s + k - n, 0)
    return total // 2, total - total // 2


def _windows(x, k, s, padding, fill):
    """(N, OH, OW, KH, KW, C) windows of the NHWC tensor x, padded with `fill` for "same"."""
    n, h, w, c = x.shape
    (kh, kw), (sh, sw) = k, s
    if padding == "same":
        x = np.pad(x, ((0, 0), same_padding(h, kh, sh), same_padding(w, kw, sw), (0, 0)), constant_values=fill)
    oh, ow = _out_size(h, kh, sh, padding), _out_size(w, kw, sw, padding)
    v = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(1, 2))  # (N, H', W', C, KH, KW)
    v = v[:, ::sh, ::sw][:, :oh, :ow]
    return v.transpose(0, 1, 2, 4, 5, 3)


def _inside(hw, op):
    """(1, OH, OW, 1): how many pixels of each pooling window lie inside the image; "same"
    average-pooling divides by this, not by the window's size."""
    return _windows(np.ones((1,) + tuple(hw) + (1,)), op["pool"], op["strides"], op["padding"], 0.0).sum(axis=(3, 4))


def _activate(z, a):
    if a == "relu":
        return np.maximum(z, 0)
    if a == "logistic":
        return 1 / (1 + np.exp(-z))
    if a == "tanh":
        return np.tanh(z)
    if a == "softmax":
        e = np.exp(z - z.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)
    return z


def forward(bundle, x):
    """Class probabilities (float64) of the bundle for the images x: (N, H, W, C) or (N, H·W·C)."""
    x = np.asarray(x, np.float64).reshape((-1,) + tuple(bundle["input_shape"]))
    for op in bundle["ops"]:
        k = op["kind"]
        if k == "conv2d":
            f, kh, kw, c = op["weight"].shape
            win = _windows(x, (kh, kw), op["strides"], op["padding"], 0.0)
            n, oh, ow = win.shape[:3]
            w = op["weight"].astype(np.float64).reshape(f, kh * kw * c)
            z = win.reshape(n * oh * ow, kh * kw * c) @ w.T + op["bias"]
            x = _activate(z.reshape(n, oh, ow, f), op["activation"])
        elif k == "dense":
            x = _activate(x @ op["weight"].astype(np.float64).T + op["bias"], op["activation"])
        elif k == "max_pool":
            x = _windows(x, op["pool"], op["strides"], op["padding"], -np.inf).max(axis=(3, 4))
        elif k == "avg_pool":
            total = _windows(x, op["pool"], op["strides"], op["padding"], 0.0).sum(axis=(3, 4))
            x = total / _inside(x.shape[1:3], op)
        elif k == "global_avg_pool":
            x = x.mean(axis=(1, 2))
        elif k == "flatten":
            x = x.reshape(len(x), -1)  # NHWC row-major: H, then W, then C fastest
    return x


def predict(path, x):
    return forward(to_bundle(path), x)


if __name__ == "__main__":
    import argparse
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("--npz")
    args = ap.parse_args()
    try:
        b = to_bundle(args.model)
    except Refused as e:
        print(f"{args.model}: refused: {e}", file=sys.stderr)
        sys.exit(2)
    print("input", b["input_shape"])
    for o in b["ops"]:
        extra = ""
        if o["kind"] in ("conv2d", "dense"):
            extra = (f" weight {list(o['weight'].shape)} {o['activation']} keep_prob {o['keep_prob']:.6g}"
                     f" {o['dropout']} {o['dropout_layers']}")
        if "padding" in o:
            extra += f" {o.get('kernel', o.get('pool'))} strides {o['strides']} {o['padding']}"
        print(f"{o['kind']:16} {o['name']:24} {o['input_shape']} -> {o['output_shape']}{extra}")
    if args.npz:
        np.savez(args.npz, **bundle_arrays(b))
