"""What every exporter shares: the prepared model, the fixed verification batch, comparisons,
atomic output directories, progress timing, and variable naming."""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.resources
import json
import os
import shutil
import tempfile
import time
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
from absl import logging

FORMATS = ("hub", "hub_tf1", "saved_model", "tflite", "openvino")
QUANTIZE_MODES = ("int8",)
INFO_FILENAME = "export_info.json"

# Photographs shipped inside installed packages (scikit-learn is a runtime requirement;
# scikit-image only a development one, so its photos are used when present).
PHOTOS = (
    ("china", "sklearn", "datasets/images/china.jpg"),
    ("flower", "sklearn", "datasets/images/flower.jpg"),
    ("chelsea", "skimage", "data/chelsea.png"),
    ("astronaut", "skimage", "data/astronaut.png"),
    ("coffee", "skimage", "data/coffee.png"),
)


class VerificationError(RuntimeError):
    """A reloaded export does not reproduce the in-memory Keras model within tolerance."""


@dataclasses.dataclass(frozen=True)
class Tolerance:
    """Pass when max|actual - expected| <= atol + rtol * max|expected|."""

    rtol: float
    atol: float

    def limit(self, expected: np.ndarray) -> float:
        return self.atol + self.rtol * float(np.abs(expected).max(initial=0.0))


# Same TF kernels on both sides: differences are float round-off of a re-traced graph.
TF_TOLERANCE = Tolerance(rtol=1e-4, atol=1e-5)


@dataclasses.dataclass
class ExportResult:
    """What an export wrote and how closely its reloaded form matched the Keras model."""

    format: str
    export_dir: str
    model_name: str
    image_size: int
    paths: List[str]
    max_abs_diff: Dict[str, float]  # per checked output, e.g. "classification/__call__"
    limits: Dict[str, float]  # the tolerance each diff was held to
    seconds: float
    quantize: Optional[str] = None
    notes: List[str] = dataclasses.field(default_factory=list)

    @property
    def worst(self) -> Dict[str, Tuple[str, float, float]]:
        """Per group (the first part of the keys, e.g. a module): the output closest to its limit,
        as (key, max-abs diff, limit)."""
        groups: Dict[str, Tuple[str, float, float]] = {}
        for key, diff in self.max_abs_diff.items():
            group, limit = key.split("/")[0], self.limits[key]
            old = groups.get(group)
            if old is None or diff / max(limit, 1e-30) > old[1] / max(old[2], 1e-30):
                groups[group] = (key, diff, limit)
        return groups

    def summary(self) -> str:
        lines = [f"Exported {self.model_name} ({self.format}{', ' + self.quantize if self.quantize else ''}, "
                 f"{self.image_size}x{self.image_size}) to {self.export_dir} in {self.seconds:.1f}s; "
                 f"{len(self.max_abs_diff)} reloaded outputs match the Keras model "
                 f"(all diffs: {INFO_FILENAME}). Closest to its limit:"]
        for key, diff, limit in self.worst.values():
            lines.append(f"  {key}: max-abs diff {diff:.3g} (limit {limit:.3g})")
        lines.extend(f"  {n}" for n in self.notes)
        return "\n".join(lines)


@dataclasses.dataclass
class PreparedModel:
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

    def input_spec(self, batch: Optional[int] = None):
        import tensorflow as tf

        return tf.TensorSpec([batch, *self.input_hw, 3], tf.float32, name="images")

    def info(self) -> Dict[str, object]:
        """Facts written next to every export (and into the hub modules as an asset)."""
        import efficientnet_tf
        from efficientnet_tf.preprocessing import eval_config

        info = efficientnet_tf.model_info(self.model_name)
        pre = eval_config(self.model_name, self.image_size)
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
            "normalization_inside_model": {"mean_rgb": list(info["mean_rgb"]), "stddev_rgb": list(info["stddev_rgb"])},
            "efficientnet_tf_version": efficientnet_tf.__version__,
        }


def prepare(model, model_name: Optional[str] = None, image_size: Optional[int] = None,
            class_names: Optional[Sequence[str]] = None, weights: Optional[str] = None) -> PreparedModel:
    """Checks that ``model`` is an exportable efficientnet_tf model and gathers its facts."""
    import keras

    import efficientnet_tf
    from efficientnet_tf import labels

    if not isinstance(model, keras.Model):
        raise ValueError(f"Expected a keras.Model built by efficientnet_tf, got {type(model).__name__}")
    if model_name is None:
        if model.name not in efficientnet_tf.list_models():
            raise ValueError(f"Cannot tell the variant of model {model.name!r}; pass model_name= one of "
                             f"{', '.join(efficientnet_tf.list_models())}")
        model_name = model.name
    info = efficientnet_tf.model_info(model_name)  # unknown names list the valid ones
    names = {layer.name for layer in model.layers}
    missing = sorted({"preprocessing", "stem_conv", "top_activation"} - names)
    if missing:
        hint = (" The exports take images in [0, 1] and rely on the model's own normalization: "
                "build it with include_preprocessing=True." if "preprocessing" in missing else "")
        raise ValueError(f"Model {model.name!r} lacks the layers {missing} of an efficientnet_tf model.{hint}")
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
        image_size = input_hw[0] if input_hw[0] is not None else info["resolution"]
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 32:
        raise ValueError(f"image_size must be an integer >= 32, got {image_size!r}")
    if any(d is not None and d != image_size for d in input_hw):
        raise ValueError(f"image_size={image_size} does not fit the model's fixed input {input_hw}")

    endpoints = efficientnet_tf.endpoints_model(model)
    num_classes = None
    if "logits" in endpoints.output:
        num_classes = int(endpoints.output["logits"].shape[-1])
        pooled = model.get_layer("avg_pool").output
        feature_endpoints = efficientnet_tf.endpoints_model(keras.Model(model.input, pooled, name=model.name))
    else:
        feature_endpoints = endpoints
    names_out = labels.class_names(num_classes, class_names) if num_classes else None
    if num_classes is None and class_names is not None:
        raise ValueError("class_names given for a model without classifier (include_top=False)")
    return PreparedModel(model, model_name, image_size, input_hw, num_classes, names_out, endpoints,
                         feature_endpoints, weights or "unspecified")


# ----------------------------------------------------------------------------- fixed batch
def sample_photos() -> List[Tuple[str, bytes]]:
    """(name, encoded bytes) of the photographs found in the installed packages."""
    found = []
    for name, package, resource in PHOTOS:
        try:
            path = importlib.resources.files(package).joinpath(resource)
            if path.is_file():
                found.append((name, path.read_bytes()))
        except (ModuleNotFoundError, FileNotFoundError):
            continue
    return found


def reference_batch(prepared: PreparedModel, max_photos: int = 4) -> np.ndarray:
    """The fixed verification batch: real photographs (evaluation preprocessing) + seeded noise."""
    from efficientnet_tf.preprocessing import eval_config, preprocess_bytes

    config = eval_config(prepared.model_name, prepared.image_size)
    images = [preprocess_bytes(data, config).numpy() for _, data in sample_photos()[:max_photos]]
    rng = np.random.default_rng(20190528)  # fixed: the batch must be the same in every run
    images.append(rng.uniform(0.0, 1.0, (prepared.image_size, prepared.image_size, 3)))
    return np.stack(images).astype(np.float32)


def reference_outputs(prepared: PreparedModel, batch: np.ndarray) -> Dict[str, np.ndarray]:
    outputs = prepared.endpoints(batch, training=False)
    return {k: np.asarray(v) for k, v in outputs.items()}


def check_close(results: Dict[str, float], limits: Dict[str, float], key: str, expected, actual,
                tolerance: Tolerance) -> float:
    """Records max|actual - expected| under ``key``; raises VerificationError beyond tolerance."""
    expected = np.asarray(expected, np.float64)
    actual = np.asarray(actual, np.float64)
    if expected.shape != actual.shape:
        raise VerificationError(f"{key}: reloaded output has shape {actual.shape}, Keras gives {expected.shape}")
    if not np.all(np.isfinite(actual)):
        raise VerificationError(f"{key}: reloaded output has non-finite values")
    diff = float(np.abs(actual - expected).max(initial=0.0))
    limit = tolerance.limit(expected)
    results[key] = diff
    limits[key] = limit
    logging.debug("verify %s: max-abs diff %.3g (limit %.3g)", key, diff, limit)
    if not diff <= limit:
        raise VerificationError(f"{key}: reloaded export differs from the Keras model by {diff:.4g} "
                                f"(max-abs), beyond the tolerance {limit:.4g}")
    return diff


# ----------------------------------------------------------------------------- files
@contextlib.contextmanager
def atomic_export_dir(export_dir: str, overwrite: bool = False) -> Iterator[str]:
    """Yields a fresh temporary directory next to ``export_dir``; renames it into place when the
    block succeeds, deletes it when it fails. An existing ``export_dir`` is an error unless
    ``overwrite``, in which case it is swapped out only after the new export is complete."""
    export_dir = os.path.abspath(os.fspath(export_dir))
    parent, base = os.path.split(export_dir)
    if not base:
        raise ValueError(f"Bad export_dir {export_dir!r}")
    if os.path.lexists(export_dir) and not overwrite:
        raise FileExistsError(f"export_dir {export_dir!r} already exists; pass --overwrite (overwrite=True) "
                              "to replace it")
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{base}.tmp-", dir=parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(staging, 0o777 & ~umask)  # mkdtemp's 0700 would hide the export from a serving user
    try:
        yield staging
        if os.path.lexists(export_dir):
            if not overwrite:
                raise FileExistsError(f"export_dir {export_dir!r} appeared during the export; not replacing it")
            retired = tempfile.mkdtemp(prefix=f".{base}.old-", dir=parent)
            os.rename(export_dir, os.path.join(retired, base))
            os.rename(staging, export_dir)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.rename(staging, export_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def write_json(path: str, data) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.write("\n")


@contextlib.contextmanager
def step(message: str) -> Iterator[None]:
    """Logs the start and the duration of a long step."""
    logging.info("%s ...", message)
    started = time.perf_counter()
    yield
    logging.info("%s: done in %.1fs", message, time.perf_counter() - started)


@contextlib.contextmanager
def quiet_absl() -> Iterator[None]:
    """Hides TF's INFO chatter (one line per renamed capture) while a SavedModel is written."""
    level = logging.get_verbosity()
    logging.set_verbosity(min(level, logging.WARNING))  # absl: larger is more verbose
    try:
        yield
    finally:
        logging.set_verbosity(level)


# ----------------------------------------------------------------------------- tracing
@contextlib.contextmanager
def plain_swish() -> Iterator[None]:
    """Traces swish as x * sigmoid(x) instead of tf.nn.silu.

    tf.nn.silu carries a custom gradient. A SavedModel must then store one traced gradient
    function per activation (tens of seconds per module; a TF1 graph cannot store them at all, so
    gradients through it would fail). The plain product gives the identical forward value
    (tf.nn.silu computes features * sigmoid(1.0 * features)) and an ordinary gradient.
    """
    import keras
    from keras.src import backend as keras_backend

    if keras.backend.backend() != "tensorflow":
        raise ValueError(f"Exports need the TensorFlow Keras backend, got {keras.backend.backend()!r}")
    module = keras_backend.nn
    original = getattr(module, "silu", None)
    if original is None:  # a future Keras moved it: export still works, just slower to save
        logging.warning("keras backend has no nn.silu; tracing with tf.nn.silu (custom gradients)")
        yield
        return
    import tensorflow as tf

    module.silu = lambda x: x * tf.sigmoid(x)
    try:
        yield
    finally:
        module.silu = original


def checked_images(images, input_hw):
    """``images`` behind a run-time shape check. Restored signature functions do not check
    their inputs, and the model would silently broadcast a 1-channel batch; this raises
    InvalidArgumentError "Shape of tensor images [...] is not compatible with expected shape
    [?,?,?,3]" instead."""
    import tensorflow as tf

    return tf.ensure_shape(images, [None, *input_hw, 3])


def tf_variables(variables) -> list:
    """The tf.Variables behind Keras variables. SavedModels must track these, not the Keras
    wrappers: with the wrappers, TF1-style loaders (saved_model_cli run, TF Serving's session
    bundle path) restore nothing and fail with "Could not find variable ..."."""
    import keras

    return [v.value if isinstance(v, keras.Variable) else v for v in variables]


def variable_names(model) -> Dict[int, str]:
    """id(variable) -> '<layer>/<variable>' for every variable of ``model`` (including the
    random-seed state of dropout layers), as the TF1 graphs name them."""
    names = {}
    for layer in model.layers:
        for var in layer.variables:
            short = var.path.split("/")[-1]
            names.setdefault(id(var), f"{layer.name}/{short}")
    missing = [v.path for v in model.variables if id(v) not in names]
    if missing:
        raise ValueError(f"Variables not owned by a layer of {model.name!r}: {missing}")
    if len(set(names.values())) != len(names):
        raise ValueError(f"Variable names of {model.name!r} are not unique")
    return names
