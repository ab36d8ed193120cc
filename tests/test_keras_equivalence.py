"""Numbers: our networks compute the same function as keras.applications' (code nobody here wrote).

keras' random weights are made trained-like (see helpers.randomize_like_trained), copied into our
model with efficientnet_tf.load_weights, and logits compared at relative error <= 1e-4.
"""

import keras
import numpy as np
import pytest

import efficientnet_tf
from efficientnet_tf.applications import constructor_name
from helpers import randomize_like_trained, relative_error

# Every variant keras.applications has; the first two run by default, the rest in the slow tier.
FAST = ["efficientnet-b0", "efficientnetv2-b0"]
SLOW = ["efficientnet-b1", "efficientnet-b2", "efficientnet-b3", "efficientnet-b4", "efficientnet-b5",
        "efficientnet-b6", "efficientnet-b7", "efficientnetv2-b1", "efficientnetv2-b2", "efficientnetv2-b3",
        "efficientnetv2-s", "efficientnetv2-m", "efficientnetv2-l"]
SIZE = 96


def keras_reference(name):
    """keras.applications' model of the variant with trained-like random weights, logits out.

    keras V1 expects 0-255 input and normalizes with a Normalization layer that is the identity
    unless ImageNet weights are requested; we set its ImageNet mean/variance so both models take
    the same images (ours in [0, 1], keras' times 255) through their own preprocessing.
    """
    model = getattr(keras.applications, constructor_name(name))(
        weights=None, input_shape=(SIZE, SIZE, 3), classifier_activation=None)
    for layer in model.layers:
        if type(layer).__name__ == "Normalization":
            if name.startswith("efficientnet-"):
                layer.set_weights([np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225]) ** 2,
                                   np.array(0)])
            layer.finalize_state()
    rng = np.random.default_rng(0)
    calibration = rng.uniform(0, 255, (4, SIZE, SIZE, 3)).astype("float32")
    return randomize_like_trained(model, calibration)


def check_equivalent(name):
    reference = keras_reference(name)
    ours = efficientnet_tf.build_model(name, classifier_activation=None)
    report = efficientnet_tf.load_weights(ours, reference)
    assert report.ok and report.loaded == len(ours.weights)
    images = np.random.default_rng(1).uniform(0, 1, (2, SIZE, SIZE, 3)).astype("float32")
    expected = reference(images * 255.0, training=False).numpy()
    got = ours(images, training=False).numpy()
    assert 0.5 < np.abs(expected).max() < 1e3, "reference logits should be of order one"
    assert relative_error(expected, got) <= 1e-4
    assert (expected.argmax(-1) == got.argmax(-1)).all()


@pytest.mark.parametrize("name", FAST)
def test_same_function_as_keras_applications(name):
    check_equivalent(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", SLOW)
def test_same_function_as_keras_applications_all(name):
    check_equivalent(name)


def test_weights_for_another_variant_are_refused_and_model_untouched():
    reference = keras.applications.EfficientNetB1(weights=None, input_shape=(SIZE, SIZE, 3))
    ours = efficientnet_tf.build_model("efficientnet-b0")
    before = [w.numpy().copy() for w in ours.weights]
    with pytest.raises(ValueError) as err:
        efficientnet_tf.load_weights(ours, reference)
    message = str(err.value)
    assert "unchanged" in message and "unexpected in the source" in message and "block2c_" in message
    assert all(np.array_equal(a, w.numpy()) for a, w in zip(before, ours.weights))
    report = efficientnet_tf.load_weights(ours, reference, strict=False)
    assert report.loaded > 0 and report.unexpected and not report.ok
