"""Classify images: ``init_model(name, weights)`` and ``inference_model(model, image)``.

Images are file paths, encoded bytes (JPEG, PNG, GIF, BMP; other formats PIL reads) or decoded
arrays (grayscale, RGB or RGBA; uint8 0-255 or float [0, 1]). Evaluation preprocessing is the
loaded weight set's, else the variant's (``efficientnet_tf.preprocessing``: centre crop, resize
method, size), so encoded bytes give exactly what the exported serving signature gives -- except
JPEGs whose EXIF orientation tag asks for a rotation: TF's decoders ignore EXIF, so those are
decoded with PIL and turned upright (``ImageOps.exif_transpose``) before the same crop and resize.
"""

from __future__ import annotations

import io
import os
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import keras
import numpy as np
import tensorflow as tf

from efficientnet_tf import preprocessing
from efficientnet_tf.builder import build_model
from efficientnet_tf.labels import class_names
from efficientnet_tf.spec import CLASSIFIER, CLASSIFIER_ACTIVATION, model_spec

ImageInput = Union[str, os.PathLike, bytes, np.ndarray]
_EXIF_ORIENTATION = 0x0112  # 1 = upright; 2..8 = mirrored and/or rotated


def init_model(name: str, weights="imagenet", **kwargs):
    """A classifier for ``name`` with ``weights`` (see :func:`efficientnet_tf.load_weights`),
    probabilities out."""

    return build_model(name, weights=weights, **kwargs)


def read_image_file(path) -> bytes:
    """The bytes of an image file, with clear errors for missing paths and directories."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path!r} is a directory, not an image file")
    if not os.path.exists(path):
        raise FileNotFoundError(f"Image file {path!r} does not exist")
    with open(path, "rb") as f:
        return f.read()


def _pil_image(data: bytes):
    """PIL's view of the bytes, or None when PIL cannot identify them."""
    from PIL import Image, UnidentifiedImageError

    try:
        return Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, OSError, ValueError):
        return None


def preprocess_image(image: ImageInput, model_name: str, weights: Optional[Mapping[str, object]] = None) -> np.ndarray:
    """One image -> float32 [S, S, 3] in [0, 1], evaluation preprocessing of ``model_name``, or of
    the weight set ``weights`` records (``model_spec(model).weights``) when given."""
    config = preprocessing.eval_config(model_name, weights=weights)
    if isinstance(image, (str, os.PathLike)):
        label, data = repr(os.fspath(image)), read_image_file(image)
    elif isinstance(image, (bytes, bytearray)):
        label, data = f"the image bytes ({len(image)} bytes)", bytes(image)
    else:
        if hasattr(image, "getexif"):  # a PIL image
            from PIL import ImageOps

            image = np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
        return preprocessing.preprocess_array(np.asarray(image), config).numpy()

    decodable_by_tf = bool(preprocessing.is_image(data))
    pil = _pil_image(data)
    if not decodable_by_tf and pil is None:
        raise ValueError(f"{label} is not an image (expected JPEG, PNG, GIF, BMP or another format PIL reads; "
                         f"starts with {data[:8]!r})")
    try:
        rotated = pil is not None and pil.getexif().get(_EXIF_ORIENTATION, 1) not in (1, None)
        if decodable_by_tf and not rotated:
            return preprocessing.preprocess_bytes(data, config).numpy()
        from PIL import ImageOps

        upright = np.asarray(ImageOps.exif_transpose(pil).convert("RGB"))
        return preprocessing.preprocess_array(upright, config).numpy()
    except (tf.errors.InvalidArgumentError, OSError, SyntaxError, ValueError) as err:
        message = getattr(err, "message", None) or str(err)
        raise ValueError(f"{label} could not be decoded as an image: {message.strip()[:300]}") from None


def _probabilities(model, batch: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(scores, ranking key): the scores the loaded weight set's head was trained for (``scores``
    of its record): softmax, or an independent sigmoid per class for automl's multi-label
    ImageNet-21k sets (ranked by the logits, so saturated scores keep the logits' order)."""
    sigmoid = ((model_spec(model).weights or {}).get("scores") == "sigmoid")
    layer_names = {layer.name for layer in model.layers}
    has_activation = CLASSIFIER_ACTIVATION in layer_names
    if sigmoid and has_activation and model.get_layer(CLASSIFIER_ACTIVATION).get_config()["activation"] != "sigmoid":
        model = keras.Model(model.input, model.get_layer(CLASSIFIER).output)  # the logits
        has_activation = False
    outputs = np.asarray(model(batch, training=False), np.float64)
    if has_activation:  # the model's own activation
        return outputs, outputs
    if sigmoid:
        return 0.5 * (1.0 + np.tanh(0.5 * outputs)), outputs  # sigmoid without overflow
    scores = np.exp(outputs - outputs.max(-1, keepdims=True))
    return scores / scores.sum(-1, keepdims=True), outputs


def _class_names(model, names=None):
    return class_names(int(model.output.shape[-1]), names)


def predict_top_k(model, images: Sequence[ImageInput], k: int = 5, class_names=None) -> List[List[Dict]]:
    """Top-``k`` predictions for each image, best first:
    ``[[{"pred_class": "tabby", "pred_label": 281, "pred_score": 0.87}, ...], ...]``.

    Scores are softmax probabilities, or per-class sigmoid scores for a weight set trained
    multi-label (``imagenet21k``; its record says ``"scores": "sigmoid"``)."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if len(model.output.shape) != 2:
        raise ValueError(f"{model.name!r} has no classifier (include_top=False); build it with include_top=True")
    spec = model_spec(model)
    names = _class_names(model, class_names)
    batch = np.stack([preprocess_image(image, spec.variant, spec.weights) for image in images])
    probabilities, ranking = _probabilities(model, batch)
    k = min(k, probabilities.shape[-1])
    results = []
    for row, key in zip(probabilities, ranking):
        best = np.argsort(-key, kind="stable")[:k]
        results.append([{"pred_class": names[i], "pred_label": int(i), "pred_score": float(row[i])} for i in best])
    return results


def inference_model(model, image: ImageInput, class_names=None) -> Dict:
    """The top-1 prediction for one image: ``{"pred_class", "pred_label", "pred_score"}``."""
    return predict_top_k(model, [image], k=1, class_names=class_names)[0][0]


def format_top_k(predictions: List[Dict]) -> str:
    """Lines like ``  1. 281 tabby                    0.8712``."""
    return "\n".join(f"  {rank}. {p['pred_label']:>4d} {p['pred_class']:<28s} {p['pred_score']:.4f}"
                     for rank, p in enumerate(predictions, start=1))


__all__ = ["format_top_k", "inference_model", "init_model", "predict_top_k", "preprocess_image",
           "read_image_file"]
