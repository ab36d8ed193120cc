"""A proposal measured by bench.train, not part of the library: BatchNormalization computed by
TF's fused kernel (FusedBatchNormV3 and its gradient) instead of Keras 3's composite ops.

Keras 3 has no fused BN path: in training it runs tf.nn.moments (mean, squared difference,
mean) then a Mul and an AddV2, and autodiff adds about as many ops to the backward pass; with
the swish, these elementwise passes are ~60% of a B0 train step's op time on this CPU. The
fused kernel does the forward in one op and the backward in one op.

Using it in the library would change the class that model configs name (a serialization
change), which is why it lives here: ``with_fused_batchnorm(model)`` clones a built model with
this layer in place of every BatchNormalization, same names, variables and weights.
"""

from __future__ import annotations

import keras
import tensorflow as tf


class FusedBatchNormalization(keras.layers.BatchNormalization):
    """keras.layers.BatchNormalization (same arguments, variables and semantics, including the
    moving-average update with the biased batch variance) on tf.compat.v1.nn.fused_batch_norm.
    Falls back to Keras' implementation where the fused kernel does not apply."""

    def call(self, inputs, training=None, mask=None):
        axis = self.axis if self.axis >= 0 else self.axis + len(inputs.shape)
        if (mask is not None or self.renorm or self.synchronized or len(inputs.shape) != 4
                or axis != 3):
            return super().call(inputs, training=training, mask=mask)
        x = tf.cast(inputs, tf.float32)
        channels = x.shape[-1]
        gamma = tf.cast(self.gamma, tf.float32) if self.scale else tf.ones([channels])
        beta = tf.cast(self.beta, tf.float32) if self.center else tf.zeros([channels])
        if training and self.trainable:
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


def with_fused_batchnorm(model: keras.Model) -> keras.Model:
    """A copy of ``model`` (same layer names, variables and weights) using
    FusedBatchNormalization."""

    def clone(layer):
        if type(layer) is keras.layers.BatchNormalization:
            return FusedBatchNormalization.from_config(layer.get_config())
        return layer.__class__.from_config(layer.get_config())

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy
