"""Official TensorFlow checkpoints: tensorflow/tpu (V1, Lite) and google/automl (V2).

Variables are named ``<model scope>/stem/conv2d/kernel``, ``<scope>/blocks_<i>/...``,
``<scope>/head/dense/kernel`` (see :mod:`efficientnet_tf.weights.naming`). Training checkpoints
also hold ``<var>/ExponentialMovingAverage`` shadows, which the official eval driver restores in
place of the raw values (``ema.variables_to_restore``); we prefer them likewise. Optimizer slots
and ``global_step`` are not weights and are skipped.

Two readings: :func:`read_for_model` looks up the variables a model needs and sets the rest
aside (what the public converters do; used for published sets), :func:`tensors_from_checkpoint`
keeps every variable so a strict load lists what does not fit (user-supplied files).
"""

from __future__ import annotations

import dataclasses
import glob
import os
import re
from typing import Dict, List, Optional, Tuple

import numpy as np
import tensorflow as tf

from efficientnet_tf.spec import model_spec
from efficientnet_tf.weights import naming
from efficientnet_tf.weights.core import model_variables

EMA_SUFFIX = "/ExponentialMovingAverage"
# Slots of tf.compat.v1 optimizers (RMSProp, Momentum, Adam, ...) and training bookkeeping.
_SLOT = re.compile(r"/(RMSProp|Momentum|Adam|Adagrad|Ftrl|LARS|Lamb)(_\d+)?$")
_BOOKKEEPING = re.compile(r"^(global_step|beta1_power|beta2_power|_CHECKPOINTABLE_OBJECT_GRAPH)$")
# Non-TPU training names the eval BN ``batch_normalization`` instead of ``tpu_batch_normalization``.
_PLAIN_BN = re.compile(r"(^|/)batch_normalization(_\d+)?(?=/)")
# google/automl effnetv2_model.py (EffNetV2Model.call) opens tf.name_scope('head') for the
# classifier after its Head layer has taken the scope 'head': in graph mode (main.py, infer.py)
# the classifier is saved as '<scope>/head_1/dense/...'; the published files say 'head/dense'.
_UNIQUIFIED_HEAD = re.compile(r"^(.*/)head_\d+/dense/(kernel|bias)((/.*)?)$")
STEM_KERNEL = "/stem/conv2d/kernel"
INDEX = ".index"
# macOS tar adds AppleDouble companions ("._model.ckpt.index") that are not checkpoints.
_APPLEDOUBLE = "._"
_DATA = re.compile(r"\.data-(\d{5})-of-(\d{5})$")


# ----------------------------------------------------------------------------- finding it
def _is_complete(prefix: str) -> bool:
    """``prefix.index`` and every ``prefix.data-0000i-of-0000n`` shard exist."""
    if not os.path.isfile(prefix + INDEX):
        return False
    shards = glob.glob(glob.escape(prefix) + ".data-*-of-*")
    counts = {int(m.group(2)) for m in map(_DATA.search, shards) if m}
    if len(counts) != 1:
        return False
    total = counts.pop()
    return all(os.path.isfile(f"{prefix}.data-{i:05d}-of-{total:05d}") for i in range(total))


def _candidates(folder: str) -> List[str]:
    """Complete index/data pairs directly in ``folder`` (AppleDouble files ignored)."""
    found = []
    for index in sorted(glob.glob(os.path.join(glob.escape(folder), "*" + INDEX))):
        if os.path.basename(index).startswith(_APPLEDOUBLE):
            continue
        prefix = index[: -len(INDEX)]
        if _is_complete(prefix):
            found.append(prefix)
    return found


def _named_by_state_file(folder: str) -> Optional[str]:
    """The prefix a ``checkpoint`` state file names, when that checkpoint is here and complete
    (a stale file naming a missing prefix, or one naming a training machine's absolute path,
    falls back to the same base name in ``folder``); None otherwise."""
    state_file = os.path.join(folder, "checkpoint")
    if not os.path.isfile(state_file):
        return None
    try:
        state = tf.train.get_checkpoint_state(folder)
    except Exception:  # a damaged state file names nothing  # noqa: BLE001
        return None
    named = state.model_checkpoint_path if state is not None else ""
    if not named:
        return None
    for prefix in (named, os.path.join(folder, os.path.basename(named))):
        if _is_complete(prefix):
            return prefix
    return None


def find_checkpoint(root: str, recursive: bool = False) -> Optional[str]:
    """The one checkpoint prefix in ``root`` (and its subfolders when ``recursive``): the one a
    ``checkpoint`` state file names when that file is valid, else the one complete index/data
    pair; ``._*`` AppleDouble files and other files (``.tflite``, ...) are ignored.

    Returns None when there is none; raises ValueError naming them when several could be meant.
    """
    folders = [folder for folder, _, _ in os.walk(root)] if recursive else [root]
    named, candidates = set(), []
    for folder in sorted(folders):
        prefix = _named_by_state_file(folder)
        if prefix:
            named.add(os.path.abspath(prefix))
        candidates.extend(_candidates(folder))
    if len(named) == 1:
        return named.pop()
    if len(named) > 1:
        candidates = sorted(named)
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        return None
    listing = [os.path.relpath(p, root) for p in candidates]
    raise ValueError(f"{root!r} holds several checkpoints and no valid 'checkpoint' file names one: "
                     f"{listing}; pass one prefix")


def checkpoint_prefix(path) -> Optional[str]:
    """The checkpoint prefix for a directory, a prefix, or one of its ``.index``/``.data`` files;
    None when ``path`` is not a TF checkpoint."""
    path = os.fspath(path)
    if os.path.isdir(path):
        return find_checkpoint(path)
    if path.endswith(INDEX):
        path = path[: -len(INDEX)]
    match = re.match(r"^(.*)\.data-\d{5}-of-\d{5}$", path)
    if match:
        path = match.group(1)
    return path if os.path.isfile(path + INDEX) else None


# ----------------------------------------------------------------------------- reading it
@dataclasses.dataclass
class CheckpointTensors:
    """What one model scope of a checkpoint holds: ``tensors`` in our ``layer/var`` names,
    ``unused`` = its variables the model has no place for (stored names; EMA shadows, optimizer
    slots and bookkeeping are not counted)."""

    prefix: str
    scope: str
    tensors: Dict[str, np.ndarray]
    unused: List[str]

    def describe_unused(self, limit: int = 4) -> str:
        """``3 variables the model does not use were ignored: a, b, c``."""
        shown = ", ".join(self.unused[:limit]) + (", ..." if len(self.unused) > limit else "")
        return f"{len(self.unused)} variable(s) the model does not use were ignored: {shown}"


def _open(prefix: str):
    try:
        return tf.train.load_checkpoint(prefix)
    except Exception as err:  # DataLossError, NotFoundError, ...  # noqa: BLE001
        raise ValueError(f"{prefix!r} is not a readable TensorFlow checkpoint: {err}") from None


def _pick_scope(prefix: str, names, variant: Optional[str]) -> str:
    """The model scope: the only one, or among several the one named like ``variant``."""
    scopes = sorted({n[: -len(STEM_KERNEL)] for n in names if n.endswith(STEM_KERNEL)})
    if len(scopes) == 1:
        return scopes[0]
    if variant is not None and variant in scopes:
        return variant
    found = "several model scopes " + str(scopes) if scopes else "no '<scope>/stem/conv2d/kernel'"
    wanted = f" and none is {variant!r}" if scopes and variant else ""
    raise ValueError(f"{prefix!r} is not an official EfficientNet checkpoint: {found}{wanted}; "
                     f"first variables: {sorted(names)[:5]}")


def _canonical(name: str, names) -> str:
    """The published spelling of a variable name (plain BN -> tpu BN; head_N/dense -> head/dense
    when the checkpoint has no head/dense of its own)."""
    name = _PLAIN_BN.sub(r"\1tpu_batch_normalization\2", name)
    match = _UNIQUIFIED_HEAD.match(name)
    if match:
        published = f"{match.group(1)}head/dense/{match.group(2)}{match.group(3)}"
        if published not in names:
            return published
    return name


def read_checkpoint(prefix: str, use_ema: bool = True, variant: Optional[str] = None
                    ) -> Tuple[str, Dict[str, np.ndarray]]:
    """(model scope, {variable name: array}) with EMA shadows preferred, slots and bookkeeping
    dropped, names in the published spelling. Several model scopes: the one named ``variant``."""
    reader = _open(prefix)
    names = set(reader.get_variable_to_shape_map())
    scope = _pick_scope(prefix, names, variant)
    tensors = {}
    for name in sorted(names):
        if name.endswith(EMA_SUFFIX) or _SLOT.search(name) or _BOOKKEEPING.match(name):
            continue
        source = name + EMA_SUFFIX if use_ema and name + EMA_SUFFIX in names else name
        tensors[_canonical(name, names)] = reader.get_tensor(source)
    return scope, tensors


def tensors_from_checkpoint(model, prefix: str, use_ema: bool = True) -> Tuple[str, Dict[str, np.ndarray]]:
    """(scope, ``{"layer/var": array}``) for ``model`` from an official checkpoint; variables the
    naming does not know keep their stored name (the strict check lists them)."""
    scope, tensors = read_checkpoint(prefix, use_ema, variant=model_variant(model))
    return scope, naming.rename(model, tensors, "tf", prefix=scope + "/")


def read_for_model(model, prefix: str, use_ema: bool = True) -> CheckpointTensors:
    """The variables ``model`` needs, looked up by name in the scope matching its variant; every
    other variable is set aside in ``unused`` (missing and mis-shaped ones are left for the
    strict check to list)."""
    scope, tensors = read_checkpoint(prefix, use_ema, variant=model_variant(model))
    table = naming.variable_table(model, "tf")
    wanted = {f"{scope}/{theirs}": (ours, layout) for theirs, (ours, layout) in table.items()}
    ours = {}
    for name, value in tensors.items():
        if name in wanted:
            key, layout = wanted[name]
            ours[key] = naming.to_ours(np.asarray(value), layout)
    unused = sorted(n for n in tensors if n not in wanted)
    return CheckpointTensors(prefix, scope, ours, unused)


def model_variant(model) -> Optional[str]:
    """The variant ``model`` was built as (the official scope name), or None."""
    try:
        return model_spec(model).variant
    except ValueError:
        return None


# ----------------------------------------------------------------------------- writing it
def checkpoint_tensors_from_model(model, scope: Optional[str] = None) -> Dict[str, np.ndarray]:
    """Our weights under the official variable names (with the model scope)."""
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
    tensors = checkpoint_tensors_from_model(model, scope)
    tensors.update(extra or {})
    names = sorted(tensors)
    os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
    tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names, shape_and_slices=[""] * len(names),
                      tensors=[tf.constant(tensors[n]) for n in names])
    return prefix
