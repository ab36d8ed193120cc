"""The one custom layer: input normalization from the TF-Hub [0, 1] convention."""

from __future__ import annotations

import keras
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
