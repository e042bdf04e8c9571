"""The pictures and the machine-readable output dropmodel writes, read by the tools people use:
the PNG of `masks --png` decoded by Pillow, the SVG of `eval --plot` parsed as XML, and the
`--json` documents of every command (a `schema`, the input `file`, the written `output`, seeds
as exact strings) parsed by Python's json module.

    DROPMODEL_BIN=.build/debug/dropmodel python -m pytest -q Tests/interop/test_outputs.py
"""

import json
import os
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLE = REPO_ROOT / "samples" / "fashion-784-256-128-10.h5"
SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture(scope="session")
def dropmodel():
    env = os.environ.get("DROPMODEL_BIN")
    path = Path(env) if env else REPO_ROOT / ".build" / "debug" / "dropmodel"
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(f"dropmodel binary not found at {path}; build it or set DROPMODEL_BIN", pytrace=False)
    return str(path)


def run(binary, *args, timeout=300):
    return subprocess.run([binary, *map(str, args)], capture_output=True, text=True, timeout=timeout)


def run_json(binary, *args):
    r = run(binary, *args, "--json")
    assert r.returncode == 0, f"{args} failed ({r.returncode}):\n{r.stderr}"
    return json.loads(r.stdout)


def test_masks_png_decodes_to_the_mask(dropmodel, tmp_path):
    png = tmp_path / "mask.png"
    doc = run_json(dropmodel, "masks", SAMPLE, "--epoch", 2, "--step", 3, "--layer", 1, "--png", png)
    assert doc["schema"] == "dropmodel.masks/1"
    assert doc["file"] == str(SAMPLE) and doc["output"] == str(png)
    assert doc["seed_string"] == str(doc["seed"])
    image = Image.open(png)
    image.load()
    assert image.format == "PNG" and image.mode == "L"
    assert image.size == (doc["units"], len(doc["examples"]))
    pixels = list(image.tobytes())
    width = doc["units"]
    for row, example in enumerate(doc["examples"]):
        kept = set(example["kept"])
        values = pixels[row * width:(row + 1) * width]
        assert all(v == (255 if u in kept else 0) for u, v in enumerate(values)), f"row {row}"
    # Keep probability 0.5: about half of 256 units in each of 100 rows.
    fraction = sum(len(e["kept"]) for e in doc["examples"]) / (width * len(doc["examples"]))
    assert 0.45 < fraction < 0.55


def test_eval_plot_is_well_formed_svg(dropmodel, tmp_path):
    svg = tmp_path / "mc.svg"
    doc = run_json(dropmodel, "eval", SAMPLE, "--mc", "1,2,5", "--repeats", 2, "--limit", 300, "--plot", svg)
    assert doc["schema"] == "dropmodel.eval/1"
    assert doc["file"] == str(SAMPLE) and doc["output"] == str(svg)
    assert [r["k"] for r in doc["monte_carlo"]] == [1, 2, 5]
    root = ET.parse(svg).getroot()
    assert root.tag == SVG + "svg"
    assert float(root.get("width")) > 0 and float(root.get("height")) > 0
    polylines = root.findall(SVG + "polyline")
    assert len(polylines) == 1
    points = polylines[0].get("points").split()
    assert len(points) == 3
    texts = [t.text or "" for t in root.iter(SVG + "text")]
    assert any("weight scaling" in t for t in texts)


def test_every_command_prints_schema_file_and_output(dropmodel, tmp_path):
    init = tmp_path / "init.h5"
    doc = run_json(dropmodel, "init", "--layers", "784,8,10", "--keep", "0.8,0.5", "--seed", 9007199254740993, "-o", init)
    assert doc["schema"] == "dropmodel.init/1" and doc["output"] == str(init)
    # Above 2^53 the number is not exact for a double; the string is.
    assert doc["seed_string"] == "9007199254740993"

    trained = tmp_path / "t.h5"
    r = run(dropmodel, "train", "--layers", "784,8,10", "--keep", "0.8,0.5", "--epochs", 2, "--limit", 200,
            "--test-limit", 100, "--seed", 5, "-o", trained, "--json")
    assert r.returncode == 0, r.stderr
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert [d["schema"] for d in lines] == ["dropmodel.train.epoch/1"] * 2 + ["dropmodel.train/1"]
    assert [d["epoch"] for d in lines[:2]] == [1, 2]
    assert lines[-1]["output"] == str(trained) and lines[-1]["weights_sha256"] == lines[1]["weights_sha256"]

    r = run(dropmodel, "replay", trained, "--json")
    assert r.returncode == 0, r.stderr
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert [d.get("identical") for d in lines[:2]] == [True, True]
    assert lines[-1]["schema"] == "dropmodel.replay/1" and lines[-1]["verdict"] == "identical"
    assert lines[-1]["file"] == str(trained) and lines[-1]["divergence"] is None

    baked = tmp_path / "baked.h5"
    doc = run_json(dropmodel, "bake", trained, "-o", baked)
    assert doc["schema"] == "dropmodel.bake/1" and doc["outcome"] == "baked" and doc["output"] == str(baked)
    assert doc["scales"] == [0.8, 0.5]

    onnx = tmp_path / "m.onnx"
    doc = run_json(dropmodel, "export", baked, "-o", onnx)  # the format from the extension
    assert doc["schema"] == "dropmodel.export/1" and doc["format"] == "onnx" and onnx.stat().st_size > 0

    doc = run_json(dropmodel, "check", "--deep", trained)
    assert doc["schema"] == "dropmodel.check/1" and doc["verdict"] == "valid"

    doc = run_json(dropmodel, "inspect", trained)
    assert doc["schema"] == "dropmodel.inspect/1" and doc["rng"]["seed_string"] == "5"

    npy = tmp_path / "p.npy"
    doc = run_json(dropmodel, "predict", trained, "--limit", 50, "-o", npy)
    assert doc["schema"] == "dropmodel.predict/1" and doc["output"] == str(npy) and doc["examples"] == 50


def test_outputs_are_checked_before_any_work(dropmodel, tmp_path):
    missing = tmp_path / "no" / "such" / "m.h5"
    r = run(dropmodel, "train", "--layers", "784,1024,1024,10", "--epochs", 50, "-o", missing, timeout=20)
    assert r.returncode == 2
    assert str(missing.parent) in r.stderr and "does not exist" in r.stderr
    assert not missing.parent.exists()
    r = run(dropmodel, "bake", SAMPLE, "-o", SAMPLE)
    assert r.returncode == 64 and "never modifies an input" in r.stderr
