"""Class names: the ImageNet-1k and ImageNet-21k labels shipped with the package, or a user's own list.

The label files in ``efficientnet_tf/data/`` are derived from timm's ``timm/data/_info/``
(Apache-2.0): ``imagenet21k_synsets.txt`` is its ``imagenet21k_goog_synsets.txt`` verbatim (the
21,843 synsets in the order of Google's ImageNet-21k checkpoints, e.g. automl's EfficientNetV2
``-21k`` sets), and each ``*_labels.txt`` line is the first WordNet lemma of that synset in
timm's ``imagenet_synset_to_lemma.txt``. They ship with the package so labels work offline and
without timm.
"""

from __future__ import annotations

import functools
import importlib.resources
import os
from typing import Optional, Sequence, Tuple

IMAGENET_NUM_CLASSES = 1000
IMAGENET21K_NUM_CLASSES = 21843
_IMAGENET_RESOURCE = "data/imagenet_labels.txt"
_IMAGENET21K_RESOURCES = {"labels": "data/imagenet21k_labels.txt", "synsets": "data/imagenet21k_synsets.txt"}


@functools.lru_cache(maxsize=None)
def imagenet_labels() -> Tuple[str, ...]:
    """The 1000 ImageNet-1k class names in class-index order (0 = tench ... 999 = toilet tissue).

    First WordNet lemma of each synset, as in ``efficientnet_tf/data/imagenet_labels.txt``; names
    are not unique (134 and 517 are both 'crane').
    """
    resource = importlib.resources.files("efficientnet_tf").joinpath(_IMAGENET_RESOURCE)
    names = tuple(resource.read_text(encoding="utf-8").splitlines())
    if len(names) != IMAGENET_NUM_CLASSES or not all(names):
        raise ValueError(f"{resource} must hold {IMAGENET_NUM_CLASSES} non-empty lines, "
                         f"found {len(names)} lines")
    return names


@functools.lru_cache(maxsize=None)
def _imagenet21k(kind: str) -> Tuple[str, ...]:
    resource = importlib.resources.files("efficientnet_tf").joinpath(_IMAGENET21K_RESOURCES[kind])
    names = tuple(resource.read_text(encoding="utf-8").splitlines())
    if len(names) != IMAGENET21K_NUM_CLASSES or not all(names):
        raise ValueError(f"{resource} must hold {IMAGENET21K_NUM_CLASSES} non-empty lines, found {len(names)}")
    return names


def imagenet21k_labels() -> Tuple[str, ...]:
    """The 21,843 ImageNet-21k class names in class-index order (0 = organism ...)."""
    return _imagenet21k("labels")


def imagenet21k_synsets() -> Tuple[str, ...]:
    """The 21,843 WordNet synset ids of ImageNet-21k in class-index order (0 = n00004475)."""
    return _imagenet21k("synsets")


def read_labels(path: str) -> Tuple[str, ...]:
    """One class name per line (blank trailing lines ignored)."""
    with open(os.fspath(path), encoding="utf-8") as f:
        names = f.read().splitlines()
    while names and not names[-1].strip():
        names.pop()
    if not names or not all(n.strip() for n in names):
        raise ValueError(f"{path!r}: expected one non-empty class name per line")
    return tuple(names)


def class_names(num_classes: int, names: Optional[Sequence[str]] = None) -> Tuple[str, ...]:
    """Names for a classifier with ``num_classes`` outputs.

    ``names`` if given (its length must match); else the ImageNet labels for 1000 classes, the
    ImageNet-21k labels for 21,843, else ``class_0``, ``class_1``, ...
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    if names is not None:
        names = tuple(str(n) for n in names)
        if len(names) != num_classes:
            raise ValueError(f"Got {len(names)} class names for a classifier with {num_classes} classes")
        return names
    if num_classes == IMAGENET_NUM_CLASSES:
        return imagenet_labels()
    if num_classes == IMAGENET21K_NUM_CLASSES:
        return imagenet21k_labels()
    return tuple(f"class_{i}" for i in range(num_classes))


__all__ = ["IMAGENET21K_NUM_CLASSES", "IMAGENET_NUM_CLASSES", "class_names", "imagenet21k_labels",
           "imagenet21k_synsets", "imagenet_labels", "read_labels"]
