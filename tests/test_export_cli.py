"""``python -m export.main`` end to end, atomic writes, --overwrite, and argument errors."""

import os
import subprocess
import sys

import keras
import pytest

import numpy as np

import efficientnet_tf
from efficientnet_tf.testing import seeded_model
import export
from export import VerificationError, export_model
from export.job import prepare

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "export.main", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))


def _leftovers(parent):
    return [n for n in os.listdir(parent) if n.startswith(".")]


def test_cli_end_to_end_and_overwrite(tmp_path):
    target = tmp_path / "lite0_tflite"
    args = ["--model_name=efficientnet-lite0", f"--export_dir={target}", "--format=tflite", "--image_size=64"]
    first = _cli(*args)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "FRESHLY INITIALIZED" in first.stderr  # no --weights: said loudly
    assert "tflite_float32/probabilities: max-abs diff" in first.stdout
    model_file = target / "model.tflite"
    assert model_file.is_file() and (target / "export_info.json").is_file() and (target / "labels.txt").is_file()
    assert not _leftovers(tmp_path)
    stamp = (model_file.stat().st_ino, model_file.stat().st_mtime_ns)

    refused = _cli(*args)
    assert refused.returncode == 2
    assert "already exists" in refused.stderr and "--overwrite" in refused.stderr
    assert (model_file.stat().st_ino, model_file.stat().st_mtime_ns) == stamp

    replaced = _cli(*args, "--overwrite")
    assert replaced.returncode == 0, replaced.stderr[-3000:]
    assert (model_file.stat().st_ino, model_file.stat().st_mtime_ns) != stamp
    assert not _leftovers(tmp_path)


def test_cli_lists_valid_values(tmp_path):
    bad_model = _cli("--model_name=efficientnet-b9", f"--export_dir={tmp_path / 'x'}")
    assert bad_model.returncode != 0
    assert "efficientnet-b0|" in bad_model.stderr and "efficientnetv2-xl" in bad_model.stderr
    bad_format = _cli("--model_name=efficientnet-b0", f"--export_dir={tmp_path / 'x'}", "--format=coreml")
    assert bad_format.returncode != 0 and "<hub|hub_tf1|saved_model|tflite|openvino|onnx>" in bad_format.stderr
    assert not os.path.exists(tmp_path / "x")


@pytest.fixture(scope="module")
def lite0():
    calibration = np.random.default_rng(1).uniform(size=(4, 64, 64, 3)).astype("float32")
    return seeded_model("efficientnet-lite0", calibration)


def test_failed_verification_leaves_nothing(lite0, tmp_path, monkeypatch):
    from export import tflite

    def broken(*args, **kwargs):
        raise VerificationError("simulated mismatch")

    monkeypatch.setattr(tflite, "verify", broken)
    with pytest.raises(VerificationError, match="simulated"):
        export_model(lite0, str(tmp_path / "new"), format="tflite", image_size=64)
    assert not os.path.exists(tmp_path / "new") and not _leftovers(tmp_path)

    old = tmp_path / "old"
    old.mkdir()
    (old / "keep.txt").write_text("previous export")
    with pytest.raises(VerificationError):
        export_model(lite0, str(old), format="tflite", image_size=64, overwrite=True)
    assert os.listdir(old) == ["keep.txt"] and not _leftovers(tmp_path)


def test_interrupted_export_leaves_nothing(lite0, tmp_path, monkeypatch):
    from export import tflite

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(tflite, "convert", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export_model(lite0, str(tmp_path / "new"), format="tflite", image_size=64)
    assert os.listdir(tmp_path) == []


def test_models_that_cannot_be_exported(tmp_path):
    with pytest.raises(ValueError, match="include_preprocessing=True"):
        export_model(efficientnet_tf.build_model("efficientnet-lite0", include_preprocessing=False),
                     str(tmp_path / "a"), format="tflite")
    renamed = efficientnet_tf.build_model("efficientnet-lite0", model_name="my_net")
    assert prepare(renamed).model_name == "efficientnet-lite0"  # the spec knows, whatever the name
    with pytest.raises(ValueError, match="model_name='efficientnet-b0' does not match the model, which is "
                                         "'efficientnet-lite0'"):
        export_model(renamed, str(tmp_path / "a"), format="tflite", model_name="efficientnet-b0")
    not_ours = keras.Sequential([keras.Input((64, 64, 3)), keras.layers.Conv2D(4, 3, name="conv")], name="other")
    with pytest.raises(ValueError, match="not an efficientnet_tf model.*valid variants: efficientnet-b0, "):
        export_model(not_ours, str(tmp_path / "a"), format="tflite")
    with pytest.raises(ValueError, match="Unknown model name 'efficientnet-b9'"):
        export_model(renamed, str(tmp_path / "a"), format="tflite", model_name="efficientnet-b9")
    with pytest.raises(ValueError, match="image_size=96 does not fit the model's fixed input"):
        fixed = efficientnet_tf.build_model("efficientnet-lite0", input_shape=(64, 64, 3))
        export_model(fixed, str(tmp_path / "a"), format="tflite", image_size=96)
    headless = efficientnet_tf.build_model("efficientnet-lite0", include_top=False)
    with pytest.raises(ValueError, match="saved_model serves a classifier"):
        export_model(headless, str(tmp_path / "a"), format="saved_model", image_size=64)
    with pytest.raises(ValueError, match="openvino is converted from the serving SavedModel"):
        export_model(headless, str(tmp_path / "a"), format="openvino", image_size=64)
    keras.config.set_dtype_policy("mixed_float16")
    try:
        mixed = efficientnet_tf.build_model("efficientnet-lite0")
    finally:
        keras.config.set_dtype_policy("float32")
    with pytest.raises(ValueError, match="computes in float16; exports are float32"):
        export_model(mixed, str(tmp_path / "a"), format="tflite")
    assert os.listdir(tmp_path) == []
    assert tuple(export.FORMATS) == ("hub", "hub_tf1", "saved_model", "tflite", "openvino", "onnx")
