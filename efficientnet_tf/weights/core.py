"""All-or-nothing assignment of named tensors to a model's variables.

Every weight source (keras.applications, official TF checkpoints, PyTorch state dicts, native
files) is an adapter that produces ``{"<layer name>/<variable name>": array}`` in our layout;
this module checks the whole set against the model and only then writes anything.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Mapping, Tuple

import numpy as np


def variable_key(layer_name: str, variable) -> str:
    """``block1a_dwconv/kernel``: the name every adapter must produce for a variable."""
    short = variable.name.split("/")[-1].split(":")[0]
    if short == "depthwise_kernel":  # Keras 2 name of the depthwise kernel
        short = "kernel"
    return f"{layer_name}/{short}"


def model_variables(model) -> Dict[str, object]:
    """Our model's variables (trainable and not) by :func:`variable_key`."""
    found = {}
    for layer in model.layers:
        for var in layer.weights:
            key = variable_key(layer.name, var)
            if key in found:
                raise ValueError(f"Two variables of {model.name!r} share the key {key!r}")
            found[key] = var
    return found


@dataclasses.dataclass
class LoadReport:
    """What a load did: how many tensors were written and what did not fit."""

    source: str
    loaded: int
    missing: List[str]
    unexpected: List[str]
    mismatched: List[Tuple[str, tuple, tuple]]

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def describe(self, limit: int = 40) -> str:
        def listing(title, items):
            if not items:
                return ""
            shown = ", ".join(str(i) for i in items[:limit])
            more = f" ... and {len(items) - limit} more" if len(items) > limit else ""
            return f"\n  {title} ({len(items)}): {shown}{more}"
        mism = [f"{k} (model {a}, source {b})" for k, a, b in self.mismatched]
        return (f"{self.source}: {self.loaded} tensors loaded"
                + listing("missing from the source", self.missing)
                + listing("unexpected in the source", self.unexpected)
                + listing("shape mismatch", mism))


def assign(model, tensors: Mapping[str, np.ndarray], strict: bool = True, source: str = "weights") -> LoadReport:
    """Writes ``tensors`` into ``model``. Strict: any missing, unexpected or mis-shaped tensor
    raises ValueError listing them all, before a single variable changes."""
    variables = model_variables(model)
    missing = sorted(k for k in variables if k not in tensors)
    unexpected = sorted(k for k in tensors if k not in variables)
    mismatched = []
    ready = []
    for key, var in variables.items():
        if key not in tensors:
            continue
        value = np.asarray(tensors[key])
        if tuple(value.shape) != tuple(var.shape):
            mismatched.append((key, tuple(var.shape), tuple(value.shape)))
        else:
            ready.append((var, value))
    report = LoadReport(source, len(ready), missing, unexpected, mismatched)
    if strict and not report.ok:
        raise ValueError(f"Cannot load into {model.name!r}; the model is unchanged. " + report.describe())
    for var, value in ready:
        var.assign(value.astype(np.dtype(var.dtype)))
    return report
