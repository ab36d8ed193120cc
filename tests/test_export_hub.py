"""Format ``hub``: TF2 reusable SavedModels, reloaded with tf.saved_model, hub.KerasLayer (tf_keras)
and keras.layers.TFSMLayer (Keras 3)."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

import efficientnet_tf
from efficientnet_tf.testing import seeded_model
from export import export_model
from export.job import prepare, reference_batch
from helpers import relative_error

SIZE = 64


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = seeded_model("efficientnet-b0", lambda m: reference_batch(prepare(m, image_size=SIZE)),
                         classifier_activation=None)
    path = str(tmp_path_factory.mktemp("hub") / "b0")
    result = export_model(model, path, format="hub", image_size=SIZE)
    return model, result, path


def _images(shape, seed=1):
    return np.random.default_rng(seed).uniform(0, 1, shape).astype(np.float32)


def test_round_trip_any_size(exported):
    model, result, path = exported
    assert result.max_abs_diff and all(result.max_abs_diff[k] <= result.limits[k] for k in result.max_abs_diff)
    assert "classification/__call__" in result.max_abs_diff and "feature_vector/__call__" in result.max_abs_diff
    x = _images((3, 72, 88, 3))  # not the default size: any H, W works
    endpoints = efficientnet_tf.endpoints_model(model)(x, training=False)
    classification = tf.saved_model.load(os.path.join(path, "classification"))
    features = tf.saved_model.load(os.path.join(path, "feature_vector"))
    assert relative_error(endpoints["logits"], classification(x, training=False)) < 1e-4
    assert relative_error(endpoints["pooled_features"], features(x)) < 1e-4
    outputs = classification.signatures["image_feature_vector"](images=tf.constant(x))
    assert set(outputs) == {"default", "stem", "reduction_1", "reduction_2", "reduction_3", "reduction_4",
                            "reduction_5", "features", "pooled_features", "logits"}
    assert outputs["reduction_3"].shape == (3, 9, 11, 40)
    assert relative_error(endpoints["reduction_3"], outputs["reduction_3"]) < 1e-4
    assert set(features.signatures) == {"image_feature_vector", "serving_default"}
    assert set(classification.signatures) == {"image_classification", "image_feature_vector", "serving_default"}


def test_size_and_facts_are_discoverable(exported):
    model, _, path = exported
    for kind in ("classification", "feature_vector"):
        module = tf.saved_model.load(os.path.join(path, kind))
        assert module.default_image_size().numpy().tolist() == [SIZE, SIZE]
        with open(module.efficientnet_info.asset_path.numpy().decode()) as f:
            info = json.load(f)
        assert info["default_image_size"] == [SIZE, SIZE] and info["model_name"] == "efficientnet-b0"
        assert info["module"] == kind
        assert list(module.regularization_losses) == []
        # the feature vector lacks the classifier (kernel, bias) and top_dropout (its seed state)
        assert len(module.variables) == len(model.variables) - (3 if kind == "feature_vector" else 0)
    with open(os.path.join(path, "export_info.json")) as f:
        info = json.load(f)
    assert info["format"] == "hub" and info["verification"]["max_abs_diff"]


def test_keras_layer_fine_tuning_changes_weights_and_statistics(exported):
    import tensorflow_hub as hub
    import tf_keras

    model, _, path = exported
    x = _images((4, SIZE, SIZE, 3), seed=2)
    y = np.array([0, 1, 2, 1])
    expected = efficientnet_tf.endpoints_model(model)(x, training=False)["pooled_features"]
    for trainable in (True, False):
        layer = hub.KerasLayer(os.path.join(path, "feature_vector"), trainable=trainable)
        inputs = tf_keras.Input((SIZE, SIZE, 3))
        head = tf_keras.layers.Dense(3)
        net = tf_keras.Model(inputs, head(layer(inputs)))
        assert relative_error(expected, layer(x, training=False)) < 1e-4
        before = {w.name: w.numpy().copy() for w in layer.weights}
        head_before = head.kernel.numpy().copy()
        net.compile(tf_keras.optimizers.SGD(0.05), tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        net.fit(x, y, batch_size=4, epochs=1, verbose=0)
        changed = {w.name for w in layer.weights if not np.array_equal(before[w.name], w.numpy())}
        assert not np.array_equal(head_before, head.kernel.numpy())
        stats = {w.name for w in layer.weights if "moving_" in w.name}
        assert len(stats) == 2 * 49  # every batch norm of B0
        if trainable:
            assert len(layer.trainable_weights) == len(model.trainable_variables) - 2  # no classifier
            assert stats <= changed, "fitting with training=True must update the moving statistics"
            kernels = {w.name for w in layer.trainable_weights if "kernel" in w.name}
            assert kernels <= changed, sorted(kernels - changed)[:5]
        else:
            assert not layer.trainable_weights
            assert not changed, sorted(changed)[:5]


def test_keras3_tfsm_layer(exported):
    import keras

    model, _, path = exported
    x = _images((2, SIZE, SIZE, 3), seed=3)
    layer = keras.layers.TFSMLayer(os.path.join(path, "classification"), call_endpoint="serving_default")
    outputs = layer(x)
    assert relative_error(model(x, training=False), outputs["default"]) < 1e-4
    inputs = keras.Input((SIZE, SIZE, 3))
    wrapped = keras.Model(inputs, layer(inputs)["pooled_features"])
    assert wrapped(x).shape == (2, 1280)


def test_wrong_rank_or_channels_is_a_clear_error(exported):
    _, _, path = exported
    module = tf.saved_model.load(os.path.join(path, "classification"))
    for bad in (_images((1, SIZE, SIZE, 4)), _images((SIZE, SIZE, 3))):
        with pytest.raises((ValueError, TypeError), match=r"None, None, None, 3"):
            module(bad)
    for bad in (_images((1, SIZE, SIZE, 1)), _images((SIZE, SIZE, 3))):  # signatures check at run time
        with pytest.raises(tf.errors.InvalidArgumentError, match=r"not compatible with expected shape \[\?,\?,\?,3\]"):
            module.signatures["serving_default"](images=tf.constant(bad))
