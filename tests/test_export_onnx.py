"""Format ``onnx`` (tf2onnx on the serving SavedModel): real conversions of B0 and V2-B0,
reloaded in ONNX Runtime at batch 1 and 5 and compared with the Keras model."""

import os

import keras
import numpy as np
import pytest

import efficientnet_tf
from efficientnet_tf.labels import class_names
from efficientnet_tf.testing import randomize_like_trained
from export import export_model
from export import onnx as onnx_export
from helpers import assert_missing_dependency_is_clear

SIZE = 64  # small: conversion time hardly depends on it, the checks are the same

pytestmark = pytest.mark.integration


def _model(name):
    keras.utils.set_random_seed(0)  # the initializers too: the same weights in every run
    built = efficientnet_tf.build_model(name)
    calibration = np.random.default_rng(1).uniform(size=(4, SIZE, SIZE, 3)).astype("float32")
    randomize_like_trained(built, calibration)
    # Logits of magnitude ~10 like a trained net's: probabilities far from uniform, and far from
    # the ill-conditioned range where float rounding alone moves them (export.ILL_CONDITIONED_LOGITS).
    logits = efficientnet_tf.endpoints_model(built)(calibration, training=False)["logits"]
    head = built.get_layer("predictions")
    scale = 10.0 / float(np.abs(logits).max())
    head.kernel.assign(head.kernel * scale)
    head.bias.assign(head.bias * scale)
    return built


def _images(n, seed):
    return np.random.default_rng(seed).uniform(size=(n, SIZE, SIZE, 3)).astype("float32")


# V2-B0 (Fused-MBConv) in the slow tier: CI keeps B0, the ONNX path is the same converter.
@pytest.mark.parametrize("name", ["efficientnet-b0",
                                  pytest.param("efficientnetv2-b0", marks=pytest.mark.slow)])
def test_onnx_export_reloads_in_onnxruntime_at_batch_1_and_5(name, tmp_path):
    import onnx

    model = _model(name)
    out = str(tmp_path / "triton_model")
    result = export_model(model, out, format="onnx", image_size=SIZE)
    assert sorted(os.listdir(out)) == ["1", "export_info.json"]
    assert os.listdir(os.path.join(out, "1")) == ["model.onnx"]
    assert {"onnx/probabilities", "onnx/probabilities_batch1"} <= set(result.max_abs_diff)
    path = os.path.join(out, "1", "model.onnx")
    proto = onnx.load(path)
    assert {o.domain: o.version for o in proto.opset_import}[""] == onnx_export.OPSET
    # float32 weights: ~4 bytes per parameter.
    assert os.path.getsize(path) > 3.9 * model.count_params()

    sess = onnx_export.session(path)
    assert [i.name for i in sess.get_inputs()] == ["images"]
    assert sess.get_inputs()[0].shape[1:] == [SIZE, SIZE, 3]
    for n, seed in ((1, 5), (5, 6)):  # other images than the exporter's own check
        x = _images(n, seed)
        want = model(x, training=False).numpy()
        got = onnx_export.run(sess, x)
        assert sorted(got) == ["class_names", "classes", "probabilities", "scores"]
        assert got["probabilities"].shape == (n, 1000)
        assert np.abs(got["probabilities"] - want).max() <= onnx_export.TOLERANCE.limit(want)
        np.testing.assert_array_equal(got["classes"][:, 0], want.argmax(-1))
        np.testing.assert_allclose(got["scores"][:, 0], want.max(-1), rtol=1e-3)
    assert want.max() > 0.05  # not ~1/1000 everywhere: the comparison means something
    names = class_names(1000)
    assert [n.decode() if isinstance(n, bytes) else n for n in got["class_names"][:, 0]] == \
        [names[i] for i in want.argmax(-1)]


def test_missing_converter_is_a_clear_error(tmp_path, monkeypatch):
    model = efficientnet_tf.build_model("efficientnet-b0", input_shape=(SIZE, SIZE, 3))
    assert_missing_dependency_is_clear(monkeypatch, tmp_path, model, module="tf2onnx",
                                       format="onnx", extra="onnx")


def test_convert_rejects_what_is_not_a_saved_model(tmp_path):
    with pytest.raises(ValueError, match="not a SavedModel directory"):
        onnx_export.convert_saved_model(str(tmp_path), str(tmp_path / "model.onnx"), SIZE)
