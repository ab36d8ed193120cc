"""Weights from files and in-memory dicts: which adapter reads a path or a mapping.

Every reader returns ``{"layer/var": array}`` in our layout, with the names it does not know
kept verbatim so that a strict load lists them (see :func:`efficientnet_tf.weights.core.assign`).
"""

from __future__ import annotations

import dataclasses
import os
import re
import zipfile
from typing import Callable, Dict, Mapping, Tuple

import numpy as np

from efficientnet_tf.weights import keras_files, naming, published, tf_checkpoint, torch_source

@dataclasses.dataclass(frozen=True)
class FileSource:
    """One kind of weights on disk: what a user may pass (``help``), whether a path is one
    (``matches``) and how to read it (``read(model, path) -> (tensors, description)``)."""
    name: str
    help: str
    matches: Callable[[str], bool]
    read: Callable[[object, str], Tuple[Dict[str, np.ndarray], str]]


def _is_checkpoint(path: str) -> bool:
    # A prefix, a directory, or one of the checkpoint's own files.
    if os.path.isfile(path) and not re.search(r"\.(index|data-\d{5}-of-\d{5})$", path):
        return False
    return tf_checkpoint.checkpoint_prefix(path) is not None


def _read_checkpoint(model, path: str):
    prefix = tf_checkpoint.checkpoint_prefix(path)
    scope, tensors = tf_checkpoint.tensors_from_checkpoint(model, prefix)
    return tensors, f"TF checkpoint {prefix!r} (scope {scope!r})"


def _is_keras_file(path: str) -> bool:
    return os.path.isfile(path) and (path.lower().endswith(keras_files.KERAS_SUFFIXES)
                                     or keras_files.is_hdf5(path) or keras_files.is_keras_archive(path))


def _is_torch_file(path: str) -> bool:
    return os.path.isfile(path) and (
        path.lower().endswith(torch_source.TORCH_SUFFIXES + torch_source.SAFETENSORS_SUFFIXES)
        or looks_like_torch(path))


def _read_torch(model, path: str):
    state = torch_source.read_state_dict(path)
    scheme = torch_source.detect_scheme(state)
    return naming.rename(model, state, scheme), f"PyTorch state dict {path!r} ({scheme} naming)"


# The kinds of weights files, tried in this order. Adding one is an adapter module and a row.
FILE_SOURCES = (
    FileSource("tf_checkpoint", "an official TF checkpoint (directory, prefix, or its .index file)",
               _is_checkpoint, _read_checkpoint),
    FileSource("keras", "a keras.applications or native .h5/.keras/.weights.h5 file", _is_keras_file,
               lambda model, path: (keras_files.read_keras_file(path, model), f"Keras file {path!r}")),
    FileSource("torch", "a PyTorch state dict file (.pth/.pt/.bin/.safetensors, efficientnet_pytorch "
               "or timm naming)", _is_torch_file, _read_torch),
)

SOURCES_HELP = (
    "a keras.Model; a weights tag (" + ", ".join(published.TAGS) + "; see "
    "efficientnet_tf.weights.published); a URL (https://, gs://, file://); "
    + "; ".join(source.help for source in FILE_SOURCES) + "; or a dict of arrays")


def tensors_from_mapping(model, source: Mapping) -> Dict[str, np.ndarray]:
    """A dict of arrays: official TF names under a model scope, our ``layer/var`` names, or a
    PyTorch state dict."""
    names = list(source)
    if all(isinstance(n, str) and "/" in n for n in names):
        stems = [n for n in names if n.endswith(tf_checkpoint.STEM_KERNEL)]
        if len(stems) == 1:  # official TF names under a model scope
            scope = stems[0][: -len(tf_checkpoint.STEM_KERNEL)]
            return naming.rename(model, {n: np.asarray(v) for n, v in source.items()}, "tf", prefix=scope + "/")
        return {n: np.asarray(v) for n, v in source.items()}  # already ours
    return torch_source.tensors_from_state_dict(model, source)


def tensors_from_path(model, path: str) -> Tuple[Dict[str, np.ndarray], str]:
    """(tensors, description) of a weights file or checkpoint directory/prefix, read by the
    first of :data:`FILE_SOURCES` that matches it.

    Raises FileNotFoundError for a missing path, ValueError for a path that holds no weights
    this project reads (the message lists what it reads).
    """
    for source in FILE_SOURCES:
        if source.matches(path):
            return source.read(model, path)
    if os.path.isdir(path):
        raise ValueError(f"{path!r} is a directory without a TF checkpoint (no complete NAME.index + "
                         f"NAME.data-* pair); expected {SOURCES_HELP}")
    if not os.path.exists(path):
        raise FileNotFoundError(f"Weights source {path!r} does not exist (and is not a TF checkpoint prefix: "
                                f"no {path + '.index'!r}); expected {SOURCES_HELP}")
    raise ValueError(f"Cannot tell what kind of weights {path!r} holds; expected {SOURCES_HELP}")


def looks_like_torch(path: str) -> bool:
    """torch.save writes a zip (new format) or a pickle (legacy, protocol 2: b'\\x80\\x02')."""
    with open(path, "rb") as f:
        head = f.read(2)
    return head == b"\x80\x02" or zipfile.is_zipfile(path) or torch_source.is_safetensors(path)


__all__ = ["FILE_SOURCES", "FileSource", "SOURCES_HELP", "looks_like_torch", "tensors_from_mapping",
           "tensors_from_path"]
