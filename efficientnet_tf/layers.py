"""The custom layers: input normalization from the TF-Hub [0, 1] convention, and batch norm on
TF's fused kernel (what train.main trains with; ``efficientnet_tf.fast.with_fused_batchnorm``)."""

from __future__ import annotations

import functools

import keras
import tensorflow as tf
from keras import ops


@keras.saving.register_keras_serializable(package="efficientnet_tf")
class Preprocessing(keras.layers.Layer):
    """Maps RGB images in [0, 1] to what a variant was trained on: (255 x - mean) / std.

    ``mean`` and ``std`` are per channel on the 0-255 scale. Holds no weights, so it never shows
    up in parameter counts or checkpoints. Computes in float32 even under mixed precision.
    """

    def __init__(self, mean, std, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.mean = [float(m) for m in mean]
        self.std = [float(s) for s in std]
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"Preprocessing needs 3 means and 3 positive stds, got {mean}, {std}")
        self.input_spec = keras.layers.InputSpec(ndim=4, axes={-1: 3})

    def call(self, images):
        images = ops.cast(images, self.compute_dtype)
        scale = ops.convert_to_tensor([255.0 / s for s in self.std], self.compute_dtype)
        offset = ops.convert_to_tensor([-m / s for m, s in zip(self.mean, self.std)], self.compute_dtype)
        return images * scale + offset

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(mean=self.mean, std=self.std)
        return config


@functools.lru_cache(maxsize=None)
def onednn_enabled() -> bool:
    """Whether TensorFlow runs its oneDNN kernels in this process: TF_ENABLE_ONEDNN_OPTS, or by
    default on x86 CPUs with AVX512_VNNI/AVX512_BF16/AMX (TF's IsMKLEnabled)."""
    try:
        from tensorflow.python.util import _pywrap_util_port
    except ImportError:  # a TF build without the query: its own kernels
        return False
    return bool(getattr(_pywrap_util_port, "IsMklEnabled", lambda: False)())


@keras.saving.register_keras_serializable(package="efficientnet_tf")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """keras.layers.BatchNormalization (same arguments, variables and semantics, including the
    moving-average update with the biased batch variance) on tf.compat.v1.nn.fused_batch_norm.
    Falls back to Keras' implementation where the fused kernel does not apply (masks, renorm,
    synchronized statistics across replicas, inputs other than NHWC) and, under oneDNN, in
    inference (why: docs/performance.md, "What we found")."""

    def call(self, inputs, training=None, mask=None):
        axis = self.axis if self.axis >= 0 else self.axis + len(inputs.shape)
        inference = not (training and self.trainable)
        if (mask is not None or self.renorm or self.synchronized or len(inputs.shape) != 4
                or axis != 3 or (inference and onednn_enabled())):
            return super().call(inputs, training=training, mask=mask)
        x = tf.cast(inputs, tf.float32)
        channels = x.shape[-1]
        gamma = tf.cast(self.gamma, tf.float32) if self.scale else tf.ones([channels])
        beta = tf.cast(self.beta, tf.float32) if self.center else tf.zeros([channels])
        if not inference:
            y, mean, variance = tf.compat.v1.nn.fused_batch_norm(
                x, gamma, beta, epsilon=self.epsilon, is_training=True)[:3]
            # The kernel returns the Bessel-corrected variance; Keras averages the biased one.
            count = tf.cast(tf.size(x) // channels, tf.float32)
            variance = variance * (count - 1.0) / tf.maximum(count, 1.0)
            momentum = self.momentum
            self.moving_mean.assign(self.moving_mean * momentum + mean * (1.0 - momentum))
            self.moving_variance.assign(self.moving_variance * momentum
                                        + variance * (1.0 - momentum))
        else:
            y = tf.compat.v1.nn.fused_batch_norm(
                x, gamma, beta, mean=tf.cast(self.moving_mean, tf.float32),
                variance=tf.cast(self.moving_variance, tf.float32), epsilon=self.epsilon,
                is_training=False)[0]
        return tf.cast(y, self.compute_dtype)
