"""efficientnet_tf.fast: the BN-folded inference graph (what the serving export runs) and fused
BatchNormalization (what train.main trains) compute what the Keras model computes."""

import collections
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import efficientnet_tf
from efficientnet_tf import fast
from helpers import randomize_like_trained, relative_error

SIZE = 96


def trained_like(name, **kwargs):
    # Seeded: with the scale of the randomized head, logits' max is ~1 and an unseeded init
    # sometimes fell just below the > 1.0 checks.
    keras.utils.set_random_seed(0)
    model = efficientnet_tf.build_model(name, input_shape=(SIZE, SIZE, 3), **kwargs)
    calibration = np.random.default_rng(1).uniform(size=(4, SIZE, SIZE, 3)).astype("float32")
    return randomize_like_trained(model, calibration)


def images(n=3, seed=2):
    return np.random.default_rng(seed).uniform(size=(n, SIZE, SIZE, 3)).astype("float32")


# One per family: swish V1 (bias-free convs, BN after each), relu6 Lite, V2 (fused MBConv).
@pytest.mark.parametrize("name", ["efficientnet-b0", "efficientnet-lite0", "efficientnetv2-b0"])
def test_folded_graph_equals_keras_model(name):
    model = trained_like(name, classifier_activation=None)
    folded = fast.FoldedModel(model)
    x = images()
    want = model(x, training=False).numpy()
    assert np.abs(want).max() > 1.0  # logits of a trained-like scale, not ~0
    got = folded(x).numpy()
    assert relative_error(want, got) < 2e-5
    # Every BatchNormalization went into a convolution: no standalone BN scale/shift left.
    assert not any(k.endswith("/scale") for k in folded.folded_variables)
    convs = sum(isinstance(l, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)) for l in model.layers)
    assert len(folded.folded_variables) == 2 * convs + 2  # kernel + bias per conv and the dense
    # Weights as graph constants (what the serving export writes): no variables, nothing captured.
    frozen = fast.FoldedModel(model, constants=True)
    assert frozen.folded_variables == {} and not frozen.trainable_variables + frozen.variables
    graph = frozen.serve.get_concrete_function()
    assert graph.captured_inputs == []
    have = collections.Counter(tuple(op.outputs[0].shape) for op in graph.graph.get_operations()
                               if op.type == "Const")
    need = collections.Counter(tuple(v.shape) for v in folded.folded_variables.values())
    assert all(have[shape] >= n for shape, n in need.items()), need - have  # every kernel and bias
    assert relative_error(want, frozen(x).numpy()) < 2e-5


def test_folded_endpoints_and_saved_model(tmp_path):
    model = trained_like("efficientnet-b0", classifier_activation=None)
    endpoints = efficientnet_tf.endpoints_model(model)
    x = images(5)
    want = endpoints(x, training=False)
    folded = fast.FoldedModel(endpoints)
    got = folded(x)
    assert set(got) == set(want)
    for key in want:
        assert relative_error(want[key].numpy(), got[key].numpy()) < 2e-5, key
    tf.saved_model.save(folded, str(tmp_path), signatures={"serving_default": folded.serve})
    loaded = tf.saved_model.load(str(tmp_path)).signatures["serving_default"]
    reloaded = loaded(images=tf.constant(x))
    for key in want:
        np.testing.assert_allclose(reloaded[key].numpy(), got[key].numpy(), rtol=1e-5, atol=1e-5)


def test_folded_rejects_what_it_cannot_fold():
    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, keras.layers.LayerNormalization()(inputs))
    with pytest.raises(ValueError, match="LayerNormalization is not supported"):
        fast.FoldedModel(model)


@pytest.mark.parametrize("name", ["efficientnet-b0", "efficientnetv2-b0"])
def test_fused_batchnorm_trains_like_keras_batchnorm(name):
    """Training mode: the same logits, gradients and moving statistics; inference mode: the same
    logits. The clone keeps layer names, variable paths and weights."""
    model = fast.with_keras_batchnorm(
        trained_like(name, classifier_activation=None, dropout_rate=0, drop_connect_rate=0))
    fused = fast.with_fused_batchnorm(model)
    kinds = {type(l).__name__ for l in fused.layers}
    assert "FusedBatchNormalization" in kinds and "BatchNormalization" not in kinds
    assert [v.path for v in fused.weights] == [v.path for v in model.weights]
    for a, b in zip(model.weights, fused.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    x = tf.constant(images(4))
    labels = tf.one_hot([3, 7, 1, 0], model.output.shape[-1])

    def step(m):
        with tf.GradientTape() as tape:
            logits = m(x, training=True)
            loss = tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(labels, logits))
        return logits, tape.gradient(loss, m.trainable_variables)

    (want, want_grads), (got, got_grads) = step(model), step(fused)
    assert relative_error(want.numpy(), got.numpy()) < 1e-4
    grad_error = float(tf.linalg.global_norm([g - w for g, w in zip(got_grads, want_grads)])
                       / tf.linalg.global_norm(want_grads))
    assert grad_error < 1e-3
    bns = [(a, b) for a, b in zip(model.layers, fused.layers)
           if isinstance(a, keras.layers.BatchNormalization)]
    for a, b in bns:  # the moving-average update with the biased batch variance, like Keras
        np.testing.assert_allclose(b.moving_mean.numpy(), a.moving_mean.numpy(), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(b.moving_variance.numpy(), a.moving_variance.numpy(), rtol=1e-4,
                                   atol=1e-5)
    assert relative_error(model(x, training=False).numpy(), fused(x, training=False).numpy()) < 1e-4


def test_fused_model_saves_and_loads_as_keras_file(tmp_path):
    fused = fast.with_fused_batchnorm(trained_like("efficientnet-lite0"))
    path = str(tmp_path / "fused.keras")
    fused.save(path)
    loaded = keras.models.load_model(path)
    assert any(type(l).__name__ == "FusedBatchNormalization" for l in loaded.layers)
    x = images(2)
    np.testing.assert_allclose(loaded(x).numpy(), fused(x).numpy(), rtol=1e-6, atol=1e-7)
    plain = efficientnet_tf.build_model("efficientnet-lite0", input_shape=(SIZE, SIZE, 3))
    efficientnet_tf.load_weights(plain, loaded)  # by name: interchangeable with the plain model
    np.testing.assert_allclose(plain(x).numpy(), fused(x).numpy(), rtol=1e-5, atol=1e-6)


def test_fused_and_keras_batchnorm_clones_are_the_same_function(tmp_path):
    """with_fused_batchnorm swaps in TF's fused kernel and with_keras_batchnorm swaps it back:
    same names and weights, and the same function in a tf.function as users serve it and after a
    .keras round trip. (build_model keeps Keras' own BN: with oneDNN on, the fused inference
    kernel measured ~20x slower at batch 1 on one thread; see README, Benchmarks.)"""
    built = trained_like("efficientnet-b0", classifier_activation=None)
    assert "FusedBatchNormalization" not in {type(l).__name__ for l in built.layers}
    model = fast.with_fused_batchnorm(built)
    kinds = {type(l).__name__ for l in model.layers}
    assert "FusedBatchNormalization" in kinds and "BatchNormalization" not in kinds
    plain = fast.with_keras_batchnorm(model)
    assert {type(l).__name__ for l in plain.layers} >= {"BatchNormalization"}
    assert "FusedBatchNormalization" not in {type(l).__name__ for l in plain.layers}
    assert [v.path for v in plain.weights] == [v.path for v in model.weights]
    x = tf.constant(images(4))
    want = tf.function(lambda t: plain(t, training=False))(x).numpy()
    got = tf.function(lambda t: model(t, training=False))(x).numpy()
    assert np.abs(want).max() > 1.0
    assert relative_error(want, got) < 1e-5
    path = str(tmp_path / "fused.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert [type(l).__name__ for l in loaded.layers] == [type(l).__name__ for l in model.layers]
    for saved, restored in zip(model.weights, loaded.weights):
        np.testing.assert_array_equal(restored.numpy(), saved.numpy(), err_msg=saved.path)
    # In a tf.function, as `got` was computed: eagerly, oneDNN fuses differently (~1.7e-6 apart).
    reloaded = tf.function(lambda t: loaded(t, training=False))(x).numpy()
    np.testing.assert_allclose(reloaded, got, rtol=1e-6, atol=1e-6)


_BN_GRAPH = """
import json, keras, numpy as np, tensorflow as tf
from efficientnet_tf.layers import FusedBatchNormalization, onednn_enabled
x = np.random.default_rng(0).normal(size=(2, 5, 5, 4)).astype(np.float32)
fused, plain = FusedBatchNormalization(), keras.layers.BatchNormalization()
for layer in (fused, plain):
    layer.build(x.shape)
    layer.set_weights([np.linspace(0.5, 2, 4, dtype=np.float32), np.arange(4, dtype=np.float32),
                       np.full(4, 0.3, np.float32), np.linspace(1, 3, 4, dtype=np.float32)])
run = tf.function(lambda t, training: fused(t, training=training))
ops = {training: sorted({op.type for op in run.get_concrete_function(
    tf.TensorSpec(x.shape), training).graph.get_operations()}) for training in (False, True)}
gap = float(np.abs(run(x, False).numpy() - plain(x, training=False).numpy()).max())
print(json.dumps({"onednn": onednn_enabled(), "ops": {str(k): v for k, v in ops.items()}, "gap": gap}))
"""


@pytest.mark.integration  # a fresh TensorFlow process per setting
@pytest.mark.parametrize("onednn", ["0", "1"])
def test_fused_batchnorm_inference_avoids_the_fused_kernel_under_onednn(onednn):
    """Under oneDNN the inference path is Keras' (conv + FusedBatchNorm fused by oneDNN took
    ~25x the CPU time at batch 1); training keeps the fused kernel either way. In a fresh
    process per setting: TF reads TF_ENABLE_ONEDNN_OPTS once."""
    proc = subprocess.run([sys.executable, "-c", _BN_GRAPH], capture_output=True, text=True,
                          env=dict(os.environ, TF_ENABLE_ONEDNN_OPTS=onednn, TF_CPP_MIN_LOG_LEVEL="2"),
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["onednn"] is (onednn == "1")
    assert ("FusedBatchNormV3" in result["ops"]["False"]) is (onednn == "0")
    assert "FusedBatchNormV3" in result["ops"]["True"]
    assert result["gap"] < 1e-5
