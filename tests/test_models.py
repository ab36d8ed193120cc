"""Structure and behaviour of the built networks (keras applications_test / timm test_models style)."""

import gc

import keras
import numpy as np
import pytest
import tensorflow as tf

import efficientnet_tf
from efficientnet_tf.applications import constructor_name
from param_counts import KERAS_TOTAL, TRAINABLE

HUGE = {"efficientnet-l2"}  # 480M parameters: counted in the slow tier only
# 19M-208M parameters, 5-21 s each to build here: slow tier too (B0-B3, Lite, V2-B0..S stay).
LARGE = {"efficientnet-b4", "efficientnet-b5", "efficientnet-b6", "efficientnet-b7",
         "efficientnet-b8", "efficientnetv2-m", "efficientnetv2-l", "efficientnetv2-xl"}


def _trainable(model):
    return sum(int(np.prod(v.shape)) for v in model.trainable_weights)


@pytest.mark.parametrize("name", [n for n in efficientnet_tf.list_models() if n not in HUGE | LARGE])
def test_parameter_counts(name):
    model = efficientnet_tf.build_model(name)
    assert _trainable(model) == TRAINABLE[name]
    if name in KERAS_TOTAL:
        assert model.count_params() == KERAS_TOTAL[name]
    del model
    keras.backend.clear_session()
    gc.collect()


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(HUGE | LARGE))
def test_parameter_counts_large(name):
    test_parameter_counts(name)


@pytest.mark.parametrize("name", ["efficientnet-b0", "efficientnetv2-b0"])
def test_keras_totals_are_live(name):
    reference = getattr(keras.applications, constructor_name(name))(weights=None)
    normalization = sum(l.count_params() for l in reference.layers if type(l).__name__ == "Normalization")
    assert reference.count_params() - normalization == KERAS_TOTAL[name]


@pytest.fixture(scope="module")
def b0_headless():
    return efficientnet_tf.build_model("efficientnet-b0", include_top=False)


@pytest.mark.parametrize("size", [(123, 123), (64, 97), (224, 224), (33, 33)])
def test_feature_map_shapes_odd_sizes(b0_headless, size):
    images = np.random.rand(2, *size, 3).astype("float32")
    out = b0_headless(images)
    expected = [int(np.ceil(s / 32)) for s in size]
    assert out.shape == (2, *expected, 1280)


@pytest.mark.parametrize("pooling,shape", [(None, (1, 4, 4, 1280)), ("avg", (1, 1280)), ("max", (1, 1280))])
def test_pooling_modes(pooling, shape):
    model = efficientnet_tf.build_model("efficientnet-b0", include_top=False, pooling=pooling,
                                        input_shape=(123, 123, 3))
    assert model(np.random.rand(1, 123, 123, 3).astype("float32")).shape == shape


@pytest.mark.parametrize("name,classes", [("efficientnet-lite0", 7), ("efficientnetv2-b0", 1000)])
def test_include_top_outputs_probabilities(name, classes):
    model = efficientnet_tf.build_model(name, classes=classes)
    probs = model(np.random.rand(3, 65, 65, 3).astype("float32")).numpy()
    assert probs.shape == (3, classes)
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)


def test_constructors_generated_from_table():
    for name in efficientnet_tf.list_models():
        assert callable(getattr(efficientnet_tf, constructor_name(name)))
    model = efficientnet_tf.EfficientNetLite0(include_top=False, pooling="avg", input_shape=(96, 96, 3), name="mine")
    assert model.name == "mine" and model.output.shape == (None, 1280)
    assert efficientnet_tf.EfficientNetV2XL.__name__ == "EfficientNetV2XL"


def test_input_tensor_argument():
    images = keras.Input((64, 64, 3))
    model = efficientnet_tf.EfficientNetB0(input_tensor=images, include_top=False, pooling="avg")
    assert model.inputs[0] is images
    assert model(np.zeros((1, 64, 64, 3), "float32")).shape == (1, 1280)


@pytest.mark.parametrize("name", ["efficientnet-b0", "efficientnetv2-s", "efficientnet-lite0"])
def test_endpoints_shapes_and_strides(name):
    model = efficientnet_tf.build_model(name)
    endpoints = efficientnet_tf.endpoints_model(model)
    images = np.random.rand(1, 128, 160, 3).astype("float32")
    out = endpoints(images)
    expected_keys = {"stem", "reduction_1", "reduction_2", "reduction_3", "reduction_4", "reduction_5",
                     "features", "pooled_features", "logits"}
    assert set(out) == expected_keys
    strides = {"stem": 2, "reduction_1": 2, "reduction_2": 4, "reduction_3": 8, "reduction_4": 16,
               "reduction_5": 32, "features": 32}
    for key, stride in strides.items():
        assert out[key].shape[1:3] == (128 // stride, 160 // stride), key
    info = efficientnet_tf.model_info(name)
    assert out["features"].shape[-1] == info["num_features"] == out["pooled_features"].shape[-1]
    # The logits endpoint is the classifier before its softmax, from the same pass.
    np.testing.assert_allclose(tf.nn.softmax(out["logits"]).numpy(), model(images).numpy(), rtol=1e-5, atol=1e-7)


def test_endpoints_of_headless_model_and_reloaded_model(tmp_path):
    model = efficientnet_tf.build_model("efficientnet-b0", include_top=False)
    path = str(tmp_path / "b0.keras")
    model.save(path)
    reloaded = keras.models.load_model(path)
    out = efficientnet_tf.endpoints_model(reloaded)(np.random.rand(1, 64, 64, 3).astype("float32"))
    assert "logits" not in out and out["pooled_features"].shape == (1, 1280)
    with pytest.raises(ValueError, match="no EfficientNet blocks"):
        efficientnet_tf.endpoints_model(keras.Sequential([keras.Input((8,)), keras.layers.Dense(2)]))


@pytest.mark.integration  # builds V2-XL, the second-largest variant
def test_layer_names_are_keras_style():
    names = {l.name for l in efficientnet_tf.build_model("efficientnet-b0").layers}
    for expected in ("stem_conv", "block1a_dwconv", "block1a_se_reduce", "block2a_expand_conv", "block2b_add",
                     "block6d_project_bn", "top_conv", "top_activation", "avg_pool", "predictions"):
        assert expected in names
    v2 = {l.name for l in efficientnet_tf.build_model("efficientnetv2-s").layers}
    assert {"block1a_project_conv", "block1a_project_activation", "block2a_expand_conv",
            "block4a_dwconv", "block6o_add"} <= v2
    xl = {l.name for l in efficientnet_tf.build_model("efficientnetv2-xl", include_top=False).layers}
    assert "block6af_add" in xl  # 32 repeats: a..z, aa..af


def test_every_trainable_variable_gets_a_gradient():
    model = efficientnet_tf.build_model("efficientnet-b0", classes=5, drop_connect_rate=0.0, dropout_rate=0.0)
    images = tf.random.uniform((2, 64, 64, 3))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(model(images, training=True) * tf.one_hot([1, 3], 5))
    grads = tape.gradient(loss, model.trainable_variables)
    missing = [v.path for v, g in zip(model.trainable_variables, grads)
               if g is None or not np.any(g.numpy())]
    assert not missing


def test_frozen_batch_norm_stays_frozen():
    model = efficientnet_tf.build_model("efficientnet-lite0", classes=3)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
    stats = {v.path: v.numpy().copy() for l in model.layers if isinstance(l, keras.layers.BatchNormalization)
             for v in l.weights}
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    x = np.random.rand(4, 64, 64, 3).astype("float32")
    model.fit(x, np.array([0, 1, 2, 0]), epochs=1, verbose=0)
    for l in model.layers:
        if isinstance(l, keras.layers.BatchNormalization):
            for v in l.weights:
                np.testing.assert_array_equal(v.numpy(), stats[v.path])
    # ... while unfrozen BN statistics do move in training.
    model2 = efficientnet_tf.build_model("efficientnet-lite0", classes=3)
    before = model2.get_layer("stem_bn").moving_mean.numpy().copy()
    model2(x, training=True)
    assert not np.allclose(before, model2.get_layer("stem_bn").moving_mean.numpy())


def test_drop_connect_only_in_training():
    model = efficientnet_tf.build_model("efficientnet-b0", include_top=False, pooling="avg", drop_connect_rate=0.5)
    x = np.random.rand(4, 64, 64, 3).astype("float32")
    np.testing.assert_array_equal(model(x, training=False).numpy(), model(x, training=False).numpy())
    rates = [l.rate for l in model.layers if l.name.endswith("_drop")]
    # B0 has 16 blocks; the first with a residual path (and so a drop layer) is block2b, index 2.
    # The last residual block is block6d, index 14 (block7a changes width, so has no residual).
    assert rates[0] == pytest.approx(0.5 * 2 / 16) and max(rates) == pytest.approx(0.5 * 14 / 16)


def test_serialization_round_trip(tmp_path):
    model = efficientnet_tf.build_model("efficientnetv2-b0", classes=10)
    x = np.random.rand(2, 72, 72, 3).astype("float32")
    expected = model(x).numpy()
    clone = keras.Model.from_config(model.get_config())
    clone.set_weights(model.get_weights())
    np.testing.assert_array_equal(clone(x).numpy(), expected)
    path = str(tmp_path / "m.keras")
    model.save(path)
    reloaded = keras.models.load_model(path)
    np.testing.assert_array_equal(reloaded(x).numpy(), expected)
    assert [w.path for w in reloaded.weights] == [w.path for w in model.weights]


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision(policy):
    keras.mixed_precision.set_global_policy(policy)
    try:
        model = efficientnet_tf.build_model("efficientnet-b0", classifier_activation=None)
        assert model.get_layer("block2a_expand_conv").compute_dtype == policy.split("_")[1]
        logits = model(np.random.rand(2, 64, 64, 3).astype("float32"))
        assert logits.dtype == "float32" and np.isfinite(logits.numpy()).all()
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_preprocessing_matches_family_normalization():
    x = np.random.rand(1, 8, 8, 3).astype("float32")
    for name, mean, std in [("efficientnet-lite0", 127.0, 128.0), ("efficientnetv2-s", 128.0, 128.0)]:
        layer = efficientnet_tf.build_model(name).get_layer("preprocessing")
        np.testing.assert_allclose(layer(x).numpy(), (255 * x - mean) / std, rtol=1e-5, atol=1e-6)
    layer = efficientnet_tf.build_model("efficientnet-b0").get_layer("preprocessing")
    expected = (x - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(layer(x).numpy(), expected, rtol=1e-5, atol=1e-5)
    no_pre = efficientnet_tf.build_model("efficientnet-b0", include_preprocessing=False)
    assert "preprocessing" not in {l.name for l in no_pre.layers}


@pytest.mark.parametrize("kwargs,match", [
    ({"dropout_rate": -0.1}, "dropout_rate must be in"),
    ({"drop_connect_rate": 1.0}, "drop_connect_rate must be in"),
    ({"bn_momentum": 1.5}, "bn_momentum"),
    ({"bn_epsilon": 0}, "bn_epsilon"),
    ({"dropout": 0.1}, r"Unknown argument\(s\) \['dropout'\]"),
    ({"pooling": "mean"}, "pooling='mean'; valid values"),
    ({"classes": 0}, "classes must be a positive integer"),
    ({"input_shape": (224, 224, 1)}, r"input_shape must be \(height, width, 3\)"),
    ({"input_shape": (224, 3)}, "input_shape must be"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        efficientnet_tf.build_model("efficientnet-b0", **kwargs)


def test_bad_inputs_at_call_time():
    model = efficientnet_tf.build_model("efficientnet-b0")
    with pytest.raises(ValueError, match="3|rank|ndim|shape"):
        model(np.zeros((1, 64, 64, 4), "float32"))
    with pytest.raises(ValueError, match="ndim|rank|shape"):
        model(np.zeros((64, 64, 3), "float32"))
    with pytest.raises(ValueError, match="Unknown model name"):
        efficientnet_tf.build_model("efficientnet-b10")
