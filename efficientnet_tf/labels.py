"""Class names: the ImageNet-1k labels shipped with the package, or a user's own list."""

from __future__ import annotations

import functools
import importlib.resources
import os
from typing import Optional, Sequence, Tuple

IMAGENET_NUM_CLASSES = 1000
_IMAGENET_RESOURCE = "data/imagenet_labels.txt"


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

    ``names`` if given (its length must match); else the ImageNet labels for 1000 classes, else
    ``class_0``, ``class_1``, ...
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
    return tuple(f"class_{i}" for i in range(num_classes))


__all__ = ["IMAGENET_NUM_CLASSES", "class_names", "imagenet_labels", "read_labels"]
