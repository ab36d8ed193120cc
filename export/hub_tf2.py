"""Format ``hub``: TF2 reusable SavedModels, as tfhub.dev's ``.../classification/N`` and
``.../feature-vector/N`` modules.

Each module is a SavedModel whose root object has (the "Reusable SavedModel" API that
``hub.KerasLayer`` consumes):

- ``__call__(images, training=False)``: float32 [batch, height, width, 3] in [0, 1] -> logits
  (classification) or pooled features (feature_vector); traced for training False and True
  (batch-norm batch statistics, moving averages updated, dropout and drop-connect active).
- ``variables``, ``trainable_variables``, ``regularization_losses`` (empty: the official
  recipe applies weight decay in the trainer, not as model losses).
- signatures ``image_classification`` (classification module only), ``image_feature_vector``
  and ``serving_default`` (the module's main one), each ``images -> {"default": ..., <endpoints>}``.
- ``default_image_size()`` -> int32 [height, width] and the asset ``efficientnet_info.json``.
"""

from __future__ import annotations

import os
import tempfile
from typing import Dict, List

import numpy as np
import tensorflow as tf

from export import common

MODULES = ("classification", "feature_vector")
INFO_ASSET = "efficientnet_info.json"


def _trace_endpoints(endpoints_model, spec) -> Dict[bool, object]:
    """One concrete function per value of training: the expensive traces, done once."""
    traced = {}
    input_hw = tuple(spec.shape[1:3])
    for training in (False, True):
        def run(images, training=training):
            return endpoints_model(common.checked_images(images, input_hw), training=training)
        run.__name__ = f"endpoints_training_{str(training).lower()}"
        traced[training] = tf.function(run, autograph=False).get_concrete_function(spec)
    return traced


def _build_module(prepared: common.PreparedModel, kind: str, info_path: str):
    """The root object of one module; only cheap wrapper functions are left for save() to trace."""
    endpoints_model = prepared.endpoints if kind == "classification" else prepared.feature_endpoints
    head = "logits" if kind == "classification" else "pooled_features"
    spec = prepared.input_spec()
    with common.step(f"hub/{kind}: tracing the network for training=False and training=True"):
        with common.plain_swish():
            traced = _trace_endpoints(endpoints_model, spec)

    module = tf.__internal__.tracking.AutoTrackable()
    keras_model = endpoints_model
    module.variables = common.tf_variables(keras_model.variables)
    module.trainable_variables = common.tf_variables(keras_model.trainable_variables)
    module.regularization_losses = []

    def call(images, training=False):
        if not isinstance(training, bool):
            raise TypeError(f"training must be a Python bool, got {training!r}")
        return traced[training](images)[head]

    module.__call__ = tf.function(call, autograph=False)
    for training in (False, True):
        module.__call__.get_concrete_function(spec, training)

    signatures = {}

    def classification(images):
        outputs = traced[False](images)
        return {"default": outputs["logits"], **outputs}

    def feature_vector(images):
        outputs = traced[False](images)
        return {"default": outputs["pooled_features"], **outputs}

    if kind == "classification":
        signatures["image_classification"] = tf.function(classification, autograph=False).get_concrete_function(spec)
    signatures["image_feature_vector"] = tf.function(feature_vector, autograph=False).get_concrete_function(spec)
    signatures["serving_default"] = signatures["image_classification" if kind == "classification"
                                               else "image_feature_vector"]

    size = prepared.image_size
    module.default_image_size = tf.function(lambda: tf.constant([size, size], tf.int32), autograph=False)
    module.default_image_size.get_concrete_function()
    module.efficientnet_info = tf.saved_model.Asset(info_path)
    return module, signatures


def export(prepared: common.PreparedModel, staging_dir: str) -> List[str]:
    """Writes ``staging_dir/classification`` (when the model has a classifier) and
    ``staging_dir/feature_vector``."""
    kinds = MODULES if prepared.num_classes else ("feature_vector",)
    paths = []
    with tempfile.TemporaryDirectory() as scratch:
        info_path = os.path.join(scratch, INFO_ASSET)
        for kind in kinds:
            info = dict(prepared.info(), format="hub (TF2 reusable SavedModel)", module=kind,
                        call_output="logits" if kind == "classification" else "pooled_features")
            common.write_json(info_path, info)
            module, signatures = _build_module(prepared, kind, info_path)
            path = os.path.join(staging_dir, kind)
            with common.step(f"hub/{kind}: writing the SavedModel"), common.quiet_absl():
                tf.saved_model.save(module, path, signatures=signatures)
            paths.append(path)
    return paths


def verify(prepared: common.PreparedModel, staging_dir: str, batch: np.ndarray,
           reference: Dict[str, np.ndarray], results: Dict[str, float], limits: Dict[str, float]) -> None:
    """Reloads each module and compares __call__, every signature output and the size."""
    for kind in (MODULES if prepared.num_classes else ("feature_vector",)):
        path = os.path.join(staging_dir, kind)
        with common.step(f"hub/{kind}: reloading and comparing"):
            loaded = tf.saved_model.load(path)
            head = "logits" if kind == "classification" else "pooled_features"
            images = tf.constant(batch)
            common.check_close(results, limits, f"{kind}/__call__", reference[head],
                               loaded(images, training=False), common.TF_TOLERANCE)
            defaults = {"image_classification": "logits", "image_feature_vector": "pooled_features",
                        "serving_default": head}
            for name, signature in loaded.signatures.items():
                outputs = signature(images=images)
                for key, value in outputs.items():
                    expected = reference[defaults[name] if key == "default" else key]
                    common.check_close(results, limits, f"{kind}/{name}/{key}", expected, value, common.TF_TOLERANCE)
            size = loaded.default_image_size().numpy().tolist()
            if size != [prepared.image_size] * 2:
                raise common.VerificationError(f"{kind}: default_image_size() is {size}")
            counts = (len(loaded.trainable_variables), len(loaded.variables))
            model = prepared.endpoints if kind == "classification" else prepared.feature_endpoints
            if counts != (len(model.trainable_variables), len(model.variables)):
                raise common.VerificationError(f"{kind}: reloaded module has {counts} (trainable, all) variables, "
                                               f"the model {len(model.trainable_variables), len(model.variables)}")
            del loaded
