"""PyTorch state dicts (.pth/.pt/.bin/.safetensors) in efficientnet_pytorch or timm naming.

torch is optional: it is imported only to read pickled files (.pth/.pt/.bin); .safetensors files
are read with the ``safetensors`` package's numpy API and need no torch at all.
"""

from __future__ import annotations

import os
from typing import Dict, Mapping, Optional

import numpy as np

from efficientnet_tf.weights import naming
from efficientnet_tf.weights.core import model_variables

TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".tar")
SAFETENSORS_SUFFIXES = (".safetensors",)
# Training checkpoints wrap the weights; the EMA copy is preferred, as for TF checkpoints.
_WRAPPER_KEYS = ("state_dict_ema", "model_ema", "state_dict", "model", "model_state_dict", "net")
_STRIP_PREFIXES = ("module.", "model.", "_orig_mod.")


def _require(package: str, path, why: str):
    import importlib

    try:
        return importlib.import_module(package)
    except ImportError:
        pip_name = package.split(".")[0]
        raise ImportError(
            f"{os.fspath(path)!r} needs the optional package {pip_name!r} ({why}): pip install {pip_name}, or "
            "convert it once with `python -m efficientnet_tf.convert` where it is installed.") from None


def _to_numpy(value) -> Optional[np.ndarray]:
    if isinstance(value, np.ndarray):
        return value
    if hasattr(value, "detach"):  # torch.Tensor
        value = value.detach().cpu()
        if value.is_floating_point():
            value = value.float()
        return value.numpy()
    return None


def read_state_dict(path) -> Dict[str, np.ndarray]:
    """The tensors of a PyTorch checkpoint file as numpy arrays (torch layout, names as stored)."""
    path = os.fspath(path)
    if path.endswith(SAFETENSORS_SUFFIXES) or is_safetensors(path):
        st = _require("safetensors.numpy", path, "to read .safetensors")
        return dict(st.load_file(path))
    torch = _require("torch", path, "to unpickle a PyTorch checkpoint")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for non-checkpoints
        raise ValueError(f"{path!r} is not a readable PyTorch checkpoint: {err}") from None
    return state_dict_arrays(loaded, path)


def is_safetensors(path: str) -> bool:
    """safetensors files start with an 8-byte little-endian header length, then a JSON '{'."""
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < os.path.getsize(path)


def state_dict_arrays(loaded, where="state dict") -> Dict[str, np.ndarray]:
    """A (possibly wrapped) state dict of tensors -> {name: array}; drops BN step counters and
    wrapper prefixes such as ``module.``."""
    if not isinstance(loaded, Mapping):
        raise ValueError(f"{where!r} holds a {type(loaded).__name__}, not a state dict")
    for key in _WRAPPER_KEYS:
        if isinstance(loaded.get(key), Mapping):
            loaded = loaded[key]
            break
    arrays = {}
    for name, value in loaded.items():
        array = _to_numpy(value)
        if array is None or name.endswith("num_batches_tracked"):
            continue
        arrays[name] = array
    for prefix in _STRIP_PREFIXES:
        if arrays and all(k.startswith(prefix) for k in arrays):
            arrays = {k[len(prefix):]: v for k, v in arrays.items()}
    if not arrays:
        raise ValueError(f"{where!r} holds no tensors")
    return arrays


def detect_scheme(names) -> str:
    """efficientnet_pytorch (``_conv_stem``, ``_blocks.N``) or timm (``conv_stem``, ``blocks.S.I``)."""
    names = list(names)
    if any(n.startswith(("_conv_stem.", "_blocks.")) for n in names):
        return "efficientnet_pytorch"
    if any(n.startswith(("conv_stem.", "blocks.")) for n in names):
        return "timm"
    raise ValueError("Unrecognised PyTorch naming: expected efficientnet_pytorch keys (_conv_stem.weight, "
                     f"_blocks.0...) or timm keys (conv_stem.weight, blocks.0.0...); first keys: {names[:5]}")


def tensors_from_state_dict(model, state_dict: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """A state dict in either naming -> ``{"layer/var": array}`` in our layout."""
    arrays = state_dict_arrays(state_dict)
    return naming.rename(model, arrays, detect_scheme(arrays))


def state_dict_from_model(model, scheme: str = "timm") -> Dict[str, np.ndarray]:
    """Our weights as a state dict in ``scheme`` naming and PyTorch layout (numpy arrays)."""
    if scheme not in ("timm", "efficientnet_pytorch"):
        raise ValueError(f"scheme={scheme!r}; valid PyTorch schemes: ('timm', 'efficientnet_pytorch')")
    if scheme == "efficientnet_pytorch":
        fused = [b.prefix for b in naming.model_blocks(model) if b.fused]
        if fused:
            raise ValueError(f"efficientnet_pytorch naming has no Fused-MBConv blocks ({fused[0]}...); "
                             "use scheme='timm'")
    variables = model_variables(model)
    out = {}
    for theirs, (ours, layout) in naming.variable_table(model, scheme).items():
        if ours in variables:
            out[theirs] = naming.to_torch(np.asarray(variables[ours].numpy()), layout)
    return out


def save_state_dict(model, path, scheme: str = "timm") -> str:
    """Writes :func:`state_dict_from_model` to ``.safetensors`` (no torch needed) or a torch pickle."""
    path = os.fspath(path)
    arrays = state_dict_from_model(model, scheme)
    if path.endswith(SAFETENSORS_SUFFIXES):
        _require("safetensors.numpy", path, "to write .safetensors").save_file(arrays, path)
    else:
        torch = _require("torch", path, "to write a PyTorch checkpoint")
        torch.save({k: torch.from_numpy(v) for k, v in arrays.items()}, path)
    return path
