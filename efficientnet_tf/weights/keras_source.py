"""keras.applications models as a weight source (V1 B0-B7 and V2 B0-B3/S/M/L)."""

from __future__ import annotations

from typing import Dict

import numpy as np

from efficientnet_tf.weights.core import variable_key

# keras.applications' own input layers carry statistics, not network weights.
_INPUT_LAYER_CLASSES = ("Normalization", "Rescaling")


def keras_layer_name(name: str) -> str:
    """keras.applications V2 names depthwise convs ``dwconv2``; ours are ``dwconv`` everywhere."""
    return name[: -len("dwconv2")] + "dwconv" if name.endswith("_dwconv2") else name


def tensors_from_keras_model(keras_model) -> Dict[str, np.ndarray]:
    tensors = {}
    for layer in keras_model.layers:
        if type(layer).__name__ in _INPUT_LAYER_CLASSES:
            continue
        for var in layer.weights:
            tensors[variable_key(keras_layer_name(layer.name), var)] = np.asarray(var.numpy())
    return tensors
