"""``load_weights(model, source, strict=True)``: pretrained weights from any supported source.

Every source is an adapter producing ``{"layer/var": array}`` in our layout; ``core.assign``
checks the whole set and only then writes (all or nothing).
"""

from __future__ import annotations

import os
import re
from typing import Dict, Mapping, Tuple

import numpy as np

from efficientnet_tf.weights import keras_files, naming, pretrained, tf_checkpoint, torch_source
from efficientnet_tf.weights.core import LoadReport, assign, model_variables
from efficientnet_tf.weights.keras_source import tensors_from_keras_model

SOURCES_HELP = (
    "a keras.Model; a weights tag (" + ", ".join(pretrained.ALIASES) + "; see "
    "efficientnet_tf.weights.published); a URL (https://, gs://, file://); a keras.applications "
    "or native .h5/.keras/.weights.h5 file; "
    "an official TF checkpoint (directory, prefix, or its .index file); a PyTorch state dict file "
    "(.pth/.pt/.bin/.safetensors, efficientnet_pytorch or timm naming); or a dict of arrays")


def load_weights(model, source, strict: bool = True) -> LoadReport:
    """Copies weights from ``source`` into ``model`` (same variant) and returns a report.

    Sources: see ``SOURCES_HELP``. Tags and URLs go through the weights cache
    (:mod:`efficientnet_tf.weights.pretrained`) and record the weight set on the model. Strict by default: any missing, unexpected or mis-shaped
    tensor raises ValueError listing all of them and leaves the model untouched;
    ``strict=False`` loads what matches and reports the rest.
    """
    if pretrained.is_named_source(source):  # downloaded, verified, converted and cached once
        return pretrained.load_named(model, source, strict)
    tensors, description = resolve_source(model, source)
    return assign(model, tensors, strict, source=description)


def resolve_source(model, source) -> Tuple[Dict[str, np.ndarray], str]:
    """(``{"layer/var": array}``, description) for any supported source."""
    import keras

    if isinstance(source, keras.Model):
        return tensors_from_keras_model(source), f"keras model {source.name!r}"
    if isinstance(source, Mapping):
        return _tensors_from_mapping(model, source), "dict of tensors"
    if not isinstance(source, (str, os.PathLike)):
        raise ValueError(f"Unsupported weights source of type {type(source).__name__}; expected {SOURCES_HELP}")
    path = os.fspath(source)
    if pretrained.is_named_source(path):
        return pretrained.named_tensors(model, path)
    if re.fullmatch(r"[A-Za-z0-9_-]+", path) and not os.path.exists(path):  # a mistyped tag
        raise ValueError(f"Unknown weights {path!r}: no such file, and not a tag. Valid tags: "
                         f"{', '.join(pretrained.ALIASES)}")
    return _tensors_from_path(model, path)


def _tensors_from_mapping(model, source: Mapping) -> Dict[str, np.ndarray]:
    names = list(source)
    if all(isinstance(n, str) and "/" in n for n in names):
        stems = [n for n in names if n.endswith(tf_checkpoint.STEM_KERNEL)]
        if len(stems) == 1:  # official TF names under a model scope
            scope = stems[0][: -len(tf_checkpoint.STEM_KERNEL)]
            return naming.rename(model, {n: np.asarray(v) for n, v in source.items()}, "tf", prefix=scope + "/")
        return {n: np.asarray(v) for n, v in source.items()}  # already ours
    return torch_source.tensors_from_state_dict(model, source)


def _tensors_from_path(model, path: str) -> Tuple[Dict[str, np.ndarray], str]:
    prefix = None
    if not os.path.isfile(path) or re.search(r"\.(index|data-\d{5}-of-\d{5})$", path):
        prefix = tf_checkpoint.checkpoint_prefix(path)
    if prefix:
        scope, tensors = tf_checkpoint.tensors_from_checkpoint(model, prefix)
        return tensors, f"TF checkpoint {prefix!r} (scope {scope!r})"
    if os.path.isdir(path):
        raise ValueError(f"{path!r} is a directory without a TF checkpoint (no *.index / 'checkpoint' file); "
                         f"expected {SOURCES_HELP}")
    if not os.path.exists(path):
        raise FileNotFoundError(f"Weights source {path!r} does not exist (and is not a TF checkpoint prefix: "
                                f"no {path + '.index'!r}); expected {SOURCES_HELP}")
    lower = path.lower()
    if lower.endswith(keras_files.KERAS_SUFFIXES) or keras_files.is_hdf5(path) or keras_files.is_keras_archive(path):
        return keras_files.read_keras_file(path, model), f"Keras file {path!r}"
    if lower.endswith(torch_source.TORCH_SUFFIXES + torch_source.SAFETENSORS_SUFFIXES) or _looks_like_torch(path):
        state = torch_source.read_state_dict(path)
        scheme = torch_source.detect_scheme(state)
        return naming.rename(model, state, scheme), f"PyTorch state dict {path!r} ({scheme} naming)"
    raise ValueError(f"Cannot tell what kind of weights {path!r} holds; expected {SOURCES_HELP}")


def _looks_like_torch(path: str) -> bool:
    """torch.save writes a zip (new format) or a pickle (legacy, protocol 2: b'\\x80\\x02')."""
    import zipfile

    with open(path, "rb") as f:
        head = f.read(2)
    return head == b"\x80\x02" or zipfile.is_zipfile(path) or torch_source.is_safetensors(path)


__all__ = ["LoadReport", "SOURCES_HELP", "assign", "load_weights", "model_variables", "resolve_source"]
