"""``load_weights(model, source, strict=True)``: pretrained weights from any supported source.

Every source is an adapter producing ``{"layer/var": array}`` in our layout; ``core.assign``
checks the whole set and only then writes (all or nothing).
"""

from __future__ import annotations

import os
import re
from typing import Dict, Mapping, Tuple

import keras
import numpy as np

from efficientnet_tf.weights import pretrained
from efficientnet_tf.weights.core import LoadReport, assign, model_variables
from efficientnet_tf.weights.keras_source import tensors_from_keras_model
from efficientnet_tf.weights.sources import SOURCES_HELP, tensors_from_mapping, tensors_from_path


def load_weights(model, source, strict: bool = True) -> LoadReport:
    """Copies weights from ``source`` into ``model`` (same variant) and returns a report.

    Sources: see ``SOURCES_HELP``. Tags and URLs go through the weights cache
    (:mod:`efficientnet_tf.weights.pretrained`) and record the weight set on the model; a
    published set's checkpoint may carry variables the model does not use (ignored with one
    warning line). Everything else is strict by default: any missing, unexpected or mis-shaped
    tensor raises ValueError listing all of them and leaves the model untouched;
    ``strict=False`` loads what matches and reports the rest.
    """
    if pretrained.is_named_source(source):  # downloaded, verified, converted and cached once
        return pretrained.load_named(model, source, strict)
    tensors, description = resolve_source(model, source)
    return assign(model, tensors, strict, source=description)


def resolve_source(model, source) -> Tuple[Dict[str, np.ndarray], str]:
    """(``{"layer/var": array}``, description) for any supported source."""
    if isinstance(source, keras.Model):
        return tensors_from_keras_model(source), f"keras model {source.name!r}"
    if isinstance(source, Mapping):
        return tensors_from_mapping(model, source), "dict of tensors"
    if not isinstance(source, (str, os.PathLike)):
        raise ValueError(f"Unsupported weights source of type {type(source).__name__}; expected {SOURCES_HELP}")
    path = os.fspath(source)
    if pretrained.is_named_source(path):
        return pretrained.named_tensors(model, path)
    if re.fullmatch(r"[A-Za-z0-9_-]+", path) and not os.path.exists(path):  # a mistyped tag
        raise ValueError(f"Unknown weights {path!r}: no such file, and not a tag. Valid tags: "
                         f"{', '.join(pretrained.ALIASES)}")
    return tensors_from_path(model, path)


__all__ = ["LoadReport", "SOURCES_HELP", "assign", "load_weights", "model_variables", "resolve_source"]
