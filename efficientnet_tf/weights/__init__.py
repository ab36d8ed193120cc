"""``load_weights(model, source, strict=True)``: pretrained weights from any supported source."""

from __future__ import annotations

from efficientnet_tf.weights.core import LoadReport, assign, model_variables
from efficientnet_tf.weights.keras_source import tensors_from_keras_model


def load_weights(model, source, strict: bool = True) -> LoadReport:
    """Copies weights from ``source`` into ``model`` (same variant).

    Sources: a keras.applications (or efficientnet_tf) Keras model. Strict by default: any
    missing, unexpected or mis-shaped tensor raises ValueError listing all of them and leaves the
    model untouched; ``strict=False`` loads what matches and returns the report of the rest.
    """
    import keras

    if isinstance(source, keras.Model):
        return assign(model, tensors_from_keras_model(source), strict, source=f"keras model {source.name!r}")
    raise ValueError(f"Unsupported weights source {source!r}: expected a keras.Model")


__all__ = ["LoadReport", "assign", "load_weights", "model_variables"]
