"""Keras weight files: ``.weights.h5`` (Keras 3, also our native format), ``.keras`` archives and
legacy ``.h5`` (Keras 2 / tf_keras ``save_weights`` or ``save``, e.g. keras.applications' own
ImageNet files).

The files are read with h5py rather than by rebuilding the saved model, so a keras.applications
file needs neither its model code nor a download, and every variable can be checked before
anything is assigned.
"""

from __future__ import annotations

import io
import os
import re
import zipfile
from typing import Dict

import numpy as np

from efficientnet_tf.weights.keras_source import keras_layer_name

KERAS_SUFFIXES = (".weights.h5", ".h5", ".hdf5", ".keras")
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
# Layers of keras.applications that carry input statistics, not network weights.
_INPUT_LAYER = re.compile(r"^(normalization|rescaling)(_\d+)?$")
_INPUT_LAYER_VARS = {"mean", "variance", "count"}


def is_hdf5(path) -> bool:
    with open(path, "rb") as f:
        return f.read(8) == HDF5_MAGIC


def is_keras_archive(path) -> bool:
    return zipfile.is_zipfile(path) and "model.weights.h5" in zipfile.ZipFile(path).namelist()


def read_keras_file(path, model=None) -> Dict[str, np.ndarray]:
    """``{"layer/var": array}`` from any Keras weight file. ``model`` (ours) is only consulted
    for Keras 3 files written without layer names."""
    import h5py

    path = os.fspath(path)
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            if "model.weights.h5" not in archive.namelist():
                raise ValueError(f"{path!r} is a zip archive without model.weights.h5, not a .keras file")
            data = io.BytesIO(archive.read("model.weights.h5"))
        with h5py.File(data, "r") as f:
            return _read_keras3(f, model, path)
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise ValueError(f"{path!r} is not an HDF5 weights file: {err}") from None
    with f:
        if "layers" in f and "layer_names" not in f.attrs:
            return _read_keras3(f, model, path)
        root = f["model_weights"] if "model_weights" in f else f
        if "layer_names" not in root.attrs:
            raise ValueError(f"{path!r} is HDF5 but neither a Keras 3 weights file (layers/...) nor a legacy "
                             "Keras one (layer_names attribute)")
        return _read_legacy(root)


def _decode(value) -> str:
    return value.decode("utf8") if isinstance(value, bytes) else str(value)


def _read_legacy(root) -> Dict[str, np.ndarray]:
    """Keras 2 / legacy H5: one group per layer, ``weight_names`` like ``stem_conv/kernel:0``."""
    tensors = {}
    for layer in (_decode(n) for n in root.attrs["layer_names"]):
        group = root[layer]
        names = [_decode(n) for n in group.attrs.get("weight_names", [])]
        shorts = [n.split("/")[-1].split(":")[0] for n in names]
        if _INPUT_LAYER.match(layer) or (names and set(shorts) == _INPUT_LAYER_VARS):
            continue
        for name, short in zip(names, shorts):
            if short == "depthwise_kernel":
                short = "kernel"
            tensors[f"{keras_layer_name(layer)}/{short}"] = np.asarray(group[name])
    return tensors


def _auto_names(model) -> Dict[str, object]:
    """The group names Keras 3 gives a functional model's layers in weight files (snake-cased
    class name, uniquified in layer order; keras/src/saving/saving_lib.py
    ``_save_container_state``). Only needed for files written before Keras stored layer names."""
    from keras.src.utils.naming import to_snake_case

    import keras

    used, names = {}, {}
    for layer in model.layers:
        # Our FusedBatchNormalization stands where the writing model had Keras' own layer.
        kind = "BatchNormalization" if isinstance(layer, keras.layers.BatchNormalization) else type(layer).__name__
        base = to_snake_case(kind)
        count = used.get(base, -1) + 1
        used[base] = count
        names[base if count == 0 else f"{base}_{count}"] = layer
    return names


# Keras 3 stores a layer's variables by position; the group name (snake-cased class) says which.
_KERAS3_VARS = {
    "conv2d": ("kernel", "bias"),
    "depthwise_conv2d": ("kernel", "bias"),
    "batch_normalization": ("gamma", "beta", "moving_mean", "moving_variance"),
    "fused_batch_normalization": ("gamma", "beta", "moving_mean", "moving_variance"),  # ours
    "dense": ("kernel", "bias"),
}


def _read_keras3(f, model, path) -> Dict[str, np.ndarray]:
    """Keras 3: ``layers/<class-based name>/vars/<i>``, the layer's own name in the ``vars``
    attributes (older files lack it: then Keras' positional group names identify our layer)."""
    by_group = None
    tensors = {}
    for group_name, group in f["layers"].items():
        values = group.get("vars")
        if values is None or not len(values) or _INPUT_LAYER.match(group_name):
            continue
        name = values.attrs.get("name")
        if name is None:
            if model is None:
                raise ValueError(f"{path!r} does not store layer names; pass the model to match them")
            by_group = by_group or _auto_names(model)
            name = by_group[group_name].name if group_name in by_group else group_name
        name = keras_layer_name(_decode(name))
        var_names = _KERAS3_VARS.get(re.sub(r"_\d+$", "", group_name), ())
        for index in sorted(values, key=int):
            short = var_names[int(index)] if int(index) < len(var_names) else f"vars/{index}"
            tensors[f"{name}/{short}"] = np.asarray(values[index])
    if not tensors:
        raise ValueError(f"{path!r} holds no layer weights")
    return tensors
