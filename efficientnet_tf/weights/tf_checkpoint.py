"""Official TensorFlow checkpoints: tensorflow/tpu (V1, Lite) and google/automl (V2).

Variables are named ``<model scope>/stem/conv2d/kernel``, ``<scope>/blocks_<i>/...``,
``<scope>/head/dense/kernel`` (see :mod:`efficientnet_tf.weights.naming`). Training checkpoints
also hold ``<var>/ExponentialMovingAverage`` shadows, which the official eval driver restores in
place of the raw values (``ema.variables_to_restore``); we prefer them likewise. Optimizer slots
and ``global_step`` are not weights and are skipped.
"""

from __future__ import annotations

import glob
import os
import re
from typing import Dict, Optional, Tuple

import numpy as np

from efficientnet_tf.weights import naming

EMA_SUFFIX = "/ExponentialMovingAverage"
# Slots of tf.compat.v1 optimizers (RMSProp, Momentum, Adam, ...) and training bookkeeping.
_SLOT = re.compile(r"/(RMSProp|Momentum|Adam|Adagrad|Ftrl|LARS|Lamb)(_\d+)?$")
_BOOKKEEPING = re.compile(r"^(global_step|beta1_power|beta2_power|_CHECKPOINTABLE_OBJECT_GRAPH)$")
# Non-TPU training names the eval BN ``batch_normalization`` instead of ``tpu_batch_normalization``.
_PLAIN_BN = re.compile(r"(^|/)batch_normalization(_\d+)?(?=/)")
STEM_KERNEL = "/stem/conv2d/kernel"


def checkpoint_prefix(path) -> Optional[str]:
    """The checkpoint prefix for a directory, a prefix, or one of its ``.index``/``.data`` files;
    None when ``path`` is not a TF checkpoint."""
    path = os.fspath(path)
    if os.path.isdir(path):
        import tensorflow as tf

        latest = tf.train.latest_checkpoint(path)
        if latest:
            return latest
        indexes = sorted(glob.glob(os.path.join(path, "*.index")))
        if len(indexes) == 1:
            return indexes[0][: -len(".index")]
        if len(indexes) > 1:
            raise ValueError(f"{path!r} holds several checkpoints and no 'checkpoint' file naming the latest: "
                             f"{[os.path.basename(i) for i in indexes]}; pass one prefix")
        return None
    if path.endswith(".index"):
        path = path[: -len(".index")]
    match = re.match(r"^(.*)\.data-\d{5}-of-\d{5}$", path)
    if match:
        path = match.group(1)
    return path if os.path.isfile(path + ".index") else None


def read_checkpoint(prefix: str, use_ema: bool = True) -> Tuple[str, Dict[str, np.ndarray]]:
    """(model scope, {variable name: array}) with EMA shadows preferred and slots dropped."""
    import tensorflow as tf

    try:
        reader = tf.train.load_checkpoint(prefix)
    except Exception as err:  # DataLossError, NotFoundError, ...
        raise ValueError(f"{prefix!r} is not a readable TensorFlow checkpoint: {err}") from None
    names = set(reader.get_variable_to_shape_map())
    scopes = sorted({n[: -len(STEM_KERNEL)] for n in names if n.endswith(STEM_KERNEL)})
    if len(scopes) != 1:
        found = "several model scopes " + str(scopes) if scopes else "no '<scope>/stem/conv2d/kernel'"
        raise ValueError(f"{prefix!r} is not an official EfficientNet checkpoint: {found}; "
                         f"first variables: {sorted(names)[:5]}")
    tensors = {}
    for name in sorted(names):
        if name.endswith(EMA_SUFFIX) or _SLOT.search(name) or _BOOKKEEPING.match(name):
            continue
        source = name + EMA_SUFFIX if use_ema and name + EMA_SUFFIX in names else name
        tensors[_PLAIN_BN.sub(r"\1tpu_batch_normalization\2", name)] = reader.get_tensor(source)
    return scopes[0], tensors


def tensors_from_checkpoint(model, prefix: str, use_ema: bool = True) -> Tuple[str, Dict[str, np.ndarray]]:
    """(scope, ``{"layer/var": array}``) for ``model`` from an official checkpoint; variables the
    naming does not know keep their stored name (the strict check lists them)."""
    scope, tensors = read_checkpoint(prefix, use_ema)
    return scope, naming.rename(model, tensors, "tf", prefix=scope + "/")


def checkpoint_tensors_from_model(model, scope: Optional[str] = None) -> Dict[str, np.ndarray]:
    """Our weights under the official variable names (with the model scope)."""
    from efficientnet_tf.weights.core import model_variables

    scope = scope or model.name
    variables = model_variables(model)
    return {f"{scope}/{theirs}": np.asarray(variables[ours].numpy())
            for theirs, (ours, _) in naming.variable_table(model, "tf").items() if ours in variables}


def write_checkpoint(model, prefix: str, scope: Optional[str] = None,
                     extra: Optional[Dict[str, np.ndarray]] = None) -> str:
    """Writes a TF checkpoint in the official names (what tensorflow/tpu / automl would restore).

    ``scope`` defaults to the model name (``efficientnet-b0``); ``extra`` adds tensors verbatim
    (for example EMA shadows). Returns the prefix.
    """
    import tensorflow as tf

    tensors = checkpoint_tensors_from_model(model, scope)
    tensors.update(extra or {})
    names = sorted(tensors)
    os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
    tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names, shape_and_slices=[""] * len(names),
                      tensors=[tf.constant(tensors[n]) for n in names])
    return prefix
