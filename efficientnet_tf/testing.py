"""Weights for numerical checks without a download: what the tests and bench/ compare exports
and runtimes with. Not for training."""

import keras
import numpy as np

from efficientnet_tf.builder import build_model


def randomize_like_trained(model, calibration_images, seed=0):
    """Gives a freshly built model weights whose outputs are of order one, like a trained net.

    Fresh networks give logits near 1e-4 and random batch-norm statistics make activations
    explode to 1e5, both of which hide numerical differences. Instead: random BN scales and
    biases, moving statistics calibrated on real batch statistics (momentum 0 for one training
    pass, dropout off), random biases and classifier.
    """

    rng = np.random.default_rng(seed)
    saved = []
    for layer in model.layers:
        kind = type(layer).__name__
        if kind in ("BatchNormalization", "FusedBatchNormalization"):  # also tf_keras' layers
            gamma, beta = layer.gamma, layer.beta
            gamma.assign(rng.uniform(0.5, 1.5, gamma.shape).astype("float32"))
            beta.assign(rng.normal(0.0, 0.2, beta.shape).astype("float32"))
            saved.append((layer, "momentum", layer.momentum))
            layer.momentum = 0.0
        elif kind == "Dropout":
            saved.append((layer, "rate", layer.rate))
            layer.rate = 0.0
        elif kind == "Dense":
            kernel, bias = layer.weights
            kernel.assign(rng.normal(0, 1 / np.sqrt(kernel.shape[0]), kernel.shape).astype("float32"))
            bias.assign(rng.normal(0, 0.1, bias.shape).astype("float32"))
        elif kind == "Conv2D" and layer.use_bias:
            layer.weights[1].assign(rng.normal(0, 0.2, layer.weights[1].shape).astype("float32"))
    model(calibration_images, training=True)
    for layer, attr, value in saved:
        setattr(layer, attr, value)
        if attr == "momentum":
            # Near-constant channels get a tiny variance whose 1/sqrt amplifies float round-off
            # without bound; floor it at half the layer's mean variance.
            variance = layer.moving_variance.numpy()
            layer.moving_variance.assign(np.maximum(variance, 0.5 * variance.mean()))
    return model


def seeded_model(name, calibration_images, seed=0, **build_kwargs):
    """``build_model(name, **build_kwargs)`` with Keras' seed set and
    :func:`randomize_like_trained` applied: the same weights on every run and machine, so no check
    on the model depends on the luck of an initialisation.

    ``calibration_images`` is a batch, or a function of the built model returning one (for a
    batch that depends on the model's facts, such as its evaluation preprocessing)."""
    keras.utils.set_random_seed(seed)
    model = build_model(name, **build_kwargs)
    if callable(calibration_images):
        calibration_images = calibration_images(model)
    return randomize_like_trained(model, calibration_images, seed)
