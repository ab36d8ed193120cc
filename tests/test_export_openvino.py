"""Format ``openvino`` (OpenVINO IR in OpenVINO Model Server's versioned layout) and OpenVINO's
TensorFlow reader on the ``saved_model`` export: real conversions, reloaded with the OpenVINO
runtime, compared with the Keras model and with TensorFlow's own run of the SavedModel."""

import os

import numpy as np
import pytest
import tensorflow as tf

from efficientnet_tf.testing import seeded_model
from export import export_model
from export import openvino as ov_export
from helpers import assert_missing_dependency_is_clear, relative_error

SIZE = 64  # small: conversion time does not depend on it, the check is the same


@pytest.fixture(scope="module")
def model():
    calibration = np.random.default_rng(1).uniform(size=(4, SIZE, SIZE, 3)).astype("float32")
    built = seeded_model("efficientnet-b0", calibration)
    head = built.get_layer("predictions")
    head.kernel.assign(head.kernel * 30.0)  # logits of ~30: probabilities far from uniform
    return built


def _images(n, seed):
    return np.random.default_rng(seed).uniform(size=(n, SIZE, SIZE, 3)).astype("float32")


def test_openvino_export_layout_numbers_and_free_batch(model, tmp_path):
    out = str(tmp_path / "ovms_model")
    result = export_model(model, out, format="openvino", image_size=SIZE)
    assert sorted(os.listdir(out)) == ["1", "export_info.json"]
    assert sorted(os.listdir(os.path.join(out, "1"))) == ["model.bin", "model.xml"]
    assert "openvino/probabilities" in result.max_abs_diff
    assert any("serving_bytes" in n and "not carried over" in n for n in result.notes)
    # float32 weights (not the converter's default fp16 compression): ~4 bytes per parameter.
    assert os.path.getsize(os.path.join(out, "1", "model.bin")) > 3.9 * model.count_params()

    compiled = ov_export.compile_model(os.path.join(out, "1", "model.xml"))
    shape = compiled.inputs[0].get_partial_shape()
    assert shape.is_dynamic and str(shape) == f"[?,{SIZE},{SIZE},3]"
    for n, seed in ((1, 5), (7, 6)):  # other batches than the exporter's own check
        x = _images(n, seed)
        want = model(x, training=False).numpy()
        got = ov_export.run(compiled, x)
        assert relative_error(want, got["probabilities"]) < 1e-3
        np.testing.assert_array_equal(got["classes"][:, 0], want.argmax(-1))
    assert want.max() > 0.05  # not ~1/1000 everywhere: the comparison means something


def test_saved_model_export_reads_in_openvino_with_equal_outputs(model, tmp_path):
    out = str(tmp_path / "serving")
    export_model(model, out, format="saved_model", image_size=SIZE)
    path = os.path.join(out, "1")
    x = _images(3, 7)
    by_tf = tf.saved_model.load(path).signatures["serving_default"](images=tf.constant(x))
    by_ov = ov_export.run(ov_export.compile_model(path), x)  # OpenVINO's TensorFlow reader
    assert set(by_ov) == set(by_tf)  # serving_default: probabilities, classes, scores, class_names
    assert relative_error(by_tf["probabilities"].numpy(), by_ov["probabilities"]) < 1e-3
    np.testing.assert_array_equal(by_ov["classes"][:, 0], by_tf["classes"].numpy()[:, 0])
    names = [n.decode() if isinstance(n, bytes) else n for n in by_ov["class_names"][:, 0]]
    assert names == [n.decode() for n in by_tf["class_names"].numpy()[:, 0]]


def test_missing_openvino_is_a_clear_error(model, tmp_path, monkeypatch):
    assert_missing_dependency_is_clear(monkeypatch, tmp_path, model, module="openvino",
                                       format="openvino", extra="openvino")


def test_export_openvino_rejects_what_is_not_a_saved_model(tmp_path):
    with pytest.raises(ValueError, match="not a SavedModel directory"):
        ov_export.export_openvino(str(tmp_path), str(tmp_path / "out"))
