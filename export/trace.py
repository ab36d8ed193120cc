"""Tracing a Keras 3 model into TensorFlow graphs that SavedModels and TF1 graphs can hold."""

from __future__ import annotations

import contextlib
from typing import Dict, Iterator

from absl import logging


@contextlib.contextmanager
def plain_swish() -> Iterator[None]:
    """Traces swish as x * sigmoid(x) instead of tf.nn.silu.

    tf.nn.silu carries a custom gradient. A SavedModel must then store one traced gradient
    function per activation (tens of seconds per module; a TF1 graph cannot store them at all, so
    gradients through it would fail). The plain product gives the identical forward value
    (tf.nn.silu computes features * sigmoid(1.0 * features)) and an ordinary gradient. Keras
    offers no hook for this, so the private ``keras.src.backend.nn.silu`` is swapped while
    tracing, and restored after.
    """
    import keras
    from keras.src import backend as keras_backend

    if keras.backend.backend() != "tensorflow":
        raise ValueError(f"Exports need the TensorFlow Keras backend, got {keras.backend.backend()!r}")
    module = keras_backend.nn
    original = getattr(module, "silu", None)
    if original is None:  # a future Keras moved it: export still works, just slower to save
        logging.warning("keras backend has no nn.silu; tracing with tf.nn.silu (custom gradients)")
        yield
        return
    import tensorflow as tf

    module.silu = lambda x: x * tf.sigmoid(x)
    try:
        yield
    finally:
        module.silu = original


def checked_images(images, input_hw):
    """``images`` behind a run-time shape check. Restored signature functions do not check
    their inputs, and the model would silently broadcast a 1-channel batch; this raises
    InvalidArgumentError "Shape of tensor images [...] is not compatible with expected shape
    [?,?,?,3]" instead."""
    import tensorflow as tf

    return tf.ensure_shape(images, [None, *input_hw, 3])


def tf_variables(variables) -> list:
    """The tf.Variables behind Keras variables. SavedModels must track these, not the Keras
    wrappers: with the wrappers, TF1-style loaders (saved_model_cli run, TF Serving's session
    bundle path) restore nothing and fail with "Could not find variable ..."."""
    import keras

    return [v.value if isinstance(v, keras.Variable) else v for v in variables]


def variable_names(model) -> Dict[int, str]:
    """id(variable) -> '<layer>/<variable>' for every variable of ``model`` (including the
    random-seed state of dropout layers), as the TF1 graphs name them."""
    names = {}
    for layer in model.layers:
        for var in layer.variables:
            short = var.path.split("/")[-1]
            names.setdefault(id(var), f"{layer.name}/{short}")
    missing = [v.path for v in model.variables if id(v) not in names]
    if missing:
        raise ValueError(f"Variables not owned by a layer of {model.name!r}: {missing}")
    if len(set(names.values())) != len(names):
        raise ValueError(f"Variable names of {model.name!r} are not unique")
    return names
