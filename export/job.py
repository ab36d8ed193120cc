"""The export job: the model to export, the facts every format needs, the options, and the fixed
verification batch with the Keras model's outputs on it (computed once, shared by all formats)."""

from __future__ import annotations

import dataclasses
import functools
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from efficientnet_tf.preprocessing import eval_config
from efficientnet_tf.weights.pretrained import weights_record
from export import photos
import efficientnet_tf
from efficientnet_tf.spec import model_spec
import keras
from efficientnet_tf import labels
from efficientnet_tf.spec import ENDPOINT_LOGITS
from efficientnet_tf.preprocessing import preprocess_bytes

# What each mode quantizes (the formats that implement them list theirs in ``quantize_modes``).
QUANTIZE_MODES = {
    "int8": "full-integer: weights and activations int8, uint8 input/output, calibrated on real photographs",
    "float16": "weights stored as float16 (half the size), computed in float32",
    "dynamic": "dynamic range: weights int8, activations quantized on the fly, float input/output",
}


@dataclasses.dataclass
class ExportJob:
    """The model to export with the facts every format needs."""

    model: object  # keras.Model, outputs whatever the user built
    model_name: str
    image_size: int
    input_hw: Tuple[Optional[int], Optional[int]]
    num_classes: Optional[int]  # None for a model without classifier
    class_names: Optional[Tuple[str, ...]]
    endpoints: object  # keras.Model with dict outputs (logits when there is a classifier)
    feature_endpoints: object  # the same without the classifier
    weights: str  # where the weights came from, for the record
    quantize: Optional[str] = None  # formats that quantize read it ("int8")
    calibration_images: Optional[Sequence] = None  # int8 representative data
    spec: object = None  # efficientnet_tf.spec.ModelSpec of the model
    eval_data: Optional[str] = None  # labeled data for the accuracy cost of quantized exports
    max_accuracy_drop: float = 1.0  # points of top-1 a quantized export may lose on eval_data
    eval_set: object = None  # export.accuracy.EvalSet loaded from eval_data (checked before any work)

    def input_spec(self, batch: Optional[int] = None):
        return tf.TensorSpec([batch, *self.input_hw, 3], tf.float32, name="images")

    @functools.cached_property
    def batch(self) -> np.ndarray:
        """The fixed verification batch: real photographs (evaluation preprocessing) + seeded noise."""
        return reference_batch(self)

    @functools.cached_property
    def reference(self) -> Dict[str, np.ndarray]:
        """The Keras model's endpoint outputs on :attr:`batch` (inference mode)."""
        outputs = self.endpoints(self.batch, training=False)
        return {k: np.asarray(v) for k, v in outputs.items()}

    def eval_config(self):
        """The evaluation preprocessing at :attr:`image_size`: the loaded weight set's rule
        (automl's 21k-ft1k sets resize uncropped), else the variant's."""
        return eval_config(self.model_name, self.image_size, weights=weights_record(self.model))

    def scores(self, logits):
        """The class scores the exports report for ``logits`` (tensor or array): softmax, or a
        sigmoid per class when the loaded weight set's head is multi-label (ImageNet-21k)."""
        if (weights_record(self.model) or {}).get("scores") == "sigmoid":
            return tf.nn.sigmoid(logits)
        return tf.nn.softmax(logits, axis=-1)

    def info(self) -> Dict[str, object]:
        """Facts written next to every export (and into the hub modules as an asset)."""

        info = efficientnet_tf.model_info(self.model_name)
        pre = self.eval_config()
        return {
            "model_name": self.model_name,
            "default_image_size": [self.image_size, self.image_size],
            "input": "float32 RGB images [batch, height, width, 3] with values in [0, 1]",
            "num_classes": self.num_classes,
            "num_features": info["num_features"],
            "weights": self.weights,
            "eval_preprocessing": {
                "center_crop_fraction": pre.crop_fraction, "resize_method": pre.resize_method,
                "legacy_tf1_resize": pre.legacy, "function": "efficientnet_tf.preprocessing.preprocess_bytes",
            },
            # The model's own (its spec's): the loaded weight set decides it (AdvProp: [-1, 1]).
            "normalization_inside_model": {"mean_rgb": list(model_spec(self.model).mean_rgb),
                                           "stddev_rgb": list(model_spec(self.model).stddev_rgb)},
            "weight_set": weights_record(self.model),  # tag, URL, sha256, normalization (None: not published)
            "efficientnet_tf_version": efficientnet_tf.__version__,
        }


def _spec(model, model_name: Optional[str]):
    """The model's spec (what the builder recorded); ``model_name`` may name the variant when it
    cannot be told, and must agree with the spec otherwise."""

    if model_name is not None:
        efficientnet_tf.model_info(model_name)  # unknown names list the valid ones
    try:
        spec = model_spec(model)
    except ValueError as err:
        raise ValueError(f"{err}. Exports need a model built by efficientnet_tf (valid variants: "
                         f"{', '.join(efficientnet_tf.list_models())})") from err
    if model_name is not None and model_name != spec.variant:
        raise ValueError(f"model_name={model_name!r} does not match the model, which is {spec.variant!r}")
    if not spec.include_preprocessing:
        raise ValueError(f"Model {model.name!r} has no preprocessing layer. The exports take images in [0, 1] "
                         "and rely on the model's own normalization: build it with include_preprocessing=True.")
    return spec


def prepare(model, model_name: Optional[str] = None, image_size: Optional[int] = None,
            class_names: Optional[Sequence[str]] = None, weights: Optional[str] = None,
            quantize: Optional[str] = None, calibration_images: Optional[Sequence] = None) -> ExportJob:
    """Checks that ``model`` is an exportable efficientnet_tf model and gathers its facts."""

    if not isinstance(model, keras.Model):
        raise ValueError(f"Expected a keras.Model built by efficientnet_tf, got {type(model).__name__}")
    spec = _spec(model, model_name)
    model_name = spec.variant
    info = efficientnet_tf.model_info(model_name)
    for layer in model.layers:
        if layer.dtype_policy.compute_dtype != "float32":
            raise ValueError(
                f"Layer {layer.name!r} computes in {layer.dtype_policy.compute_dtype}; exports are float32. "
                "Rebuild the model under keras.config.set_dtype_policy('float32') and copy the weights "
                "(efficientnet_tf.load_weights(float32_model, trained_model)).")
    shape = tuple(model.input.shape)
    if len(shape) != 4 or shape[-1] != 3:
        raise ValueError(f"Model input must be [batch, height, width, 3], got {shape}")
    input_hw = (shape[1], shape[2])
    if image_size is None:
        record = weights_record(model) or {}  # a weight set's own size (L2-475: 475)
        image_size = input_hw[0] if input_hw[0] is not None else record.get("resolution", info["resolution"])
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 32:
        raise ValueError(f"image_size must be an integer >= 32, got {image_size!r}")
    if any(d is not None and d != image_size for d in input_hw):
        raise ValueError(f"image_size={image_size} does not fit the model's fixed input {input_hw}")
    if quantize is not None and quantize not in QUANTIZE_MODES:
        raise ValueError(f"Unknown quantize {quantize!r}; valid values: {', '.join(QUANTIZE_MODES)}")
    if calibration_images is not None and quantize != "int8":
        raise ValueError("calibration_images are only used with quantize='int8'")

    endpoints = efficientnet_tf.endpoints_model(model)
    num_classes = None
    if spec.include_top:
        num_classes = int(endpoints.output[ENDPOINT_LOGITS].shape[-1])
        features = {k: v for k, v in endpoints.output.items() if k != ENDPOINT_LOGITS}
        feature_endpoints = keras.Model(endpoints.input, features, name=f"{model.name}_feature_endpoints")
    else:
        feature_endpoints = endpoints
    names_out = labels.class_names(num_classes, class_names) if num_classes else None
    if num_classes is None and class_names is not None:
        raise ValueError("class_names given for a model without classifier (include_top=False)")
    return ExportJob(model, model_name, image_size, input_hw, num_classes, names_out, endpoints,
                     feature_endpoints, weights or "unspecified", quantize, calibration_images, spec)


def reference_batch(job: ExportJob, max_photos: int = 4) -> np.ndarray:
    """Real photographs (evaluation preprocessing) + one image of seeded noise."""

    config = job.eval_config()
    images = [preprocess_bytes(data, config).numpy() for _, data in photos.load()[:max_photos]]
    rng = np.random.default_rng(20190528)  # fixed: the batch must be the same in every run
    images.append(rng.uniform(0.0, 1.0, (job.image_size, job.image_size, 3)))
    return np.stack(images).astype(np.float32)
