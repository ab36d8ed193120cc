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

import tensorflow as tf

from export import progress, trace
from export.exporter import Exporter, main_signature
from export.atomic import write_json
from export.job import ExportJob
from export.verify import TF_TOLERANCE, Verification

MODULES = ("classification", "feature_vector")
INFO_ASSET = "efficientnet_info.json"


def _trace_endpoints(endpoints_model, spec) -> Dict[bool, object]:
    """One concrete function per value of training: the expensive traces, done once."""
    traced = {}
    input_hw = tuple(spec.shape[1:3])
    for training in (False, True):
        def run(images, training=training):
            return endpoints_model(trace.checked_images(images, input_hw), training=training)
        run.__name__ = f"endpoints_training_{str(training).lower()}"
        traced[training] = tf.function(run, autograph=False).get_concrete_function(spec)
    return traced


def _build_module(job: ExportJob, kind: str, info_path: str):
    """The root object of one module; only cheap wrapper functions are left for save() to trace."""
    endpoints_model = job.endpoints if kind == "classification" else job.feature_endpoints
    head = "logits" if kind == "classification" else "pooled_features"
    spec = job.input_spec()
    with progress.step(f"hub/{kind}: tracing the network for training=False and training=True"):
        with trace.plain_swish():
            traced = _trace_endpoints(endpoints_model, spec)

    module = tf.__internal__.tracking.AutoTrackable()
    keras_model = endpoints_model
    module.variables = trace.tf_variables(keras_model.variables)
    module.trainable_variables = trace.tf_variables(keras_model.trainable_variables)
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
    signatures["serving_default"] = signatures[main_signature(kind == "classification")]

    size = job.image_size
    module.default_image_size = tf.function(lambda: tf.constant([size, size], tf.int32), autograph=False)
    module.default_image_size.get_concrete_function()
    module.efficientnet_info = tf.saved_model.Asset(info_path)
    return module, signatures


def export(job: ExportJob, staging_dir: str) -> List[str]:
    """Writes ``staging_dir/classification`` (when the model has a classifier) and
    ``staging_dir/feature_vector``."""
    kinds = MODULES if job.num_classes else ("feature_vector",)
    paths = []
    with tempfile.TemporaryDirectory() as scratch:
        info_path = os.path.join(scratch, INFO_ASSET)
        for kind in kinds:
            info = dict(job.info(), format="hub (TF2 reusable SavedModel)", module=kind,
                        call_output="logits" if kind == "classification" else "pooled_features")
            write_json(info_path, info)
            module, signatures = _build_module(job, kind, info_path)
            path = os.path.join(staging_dir, kind)
            with progress.step(f"hub/{kind}: writing the SavedModel"), progress.quiet_absl():
                tf.saved_model.save(module, path, signatures=signatures)
            paths.append(path)
    return paths


def verify(job: ExportJob, staging_dir: str) -> Verification:
    """Reloads each module and compares __call__, every signature output and the size."""
    record = Verification(HubExporter.name)
    images = tf.constant(job.batch)
    for kind in (MODULES if job.num_classes else ("feature_vector",)):
        path = os.path.join(staging_dir, kind)
        with progress.step(f"hub/{kind}: reloading and comparing"):
            loaded = tf.saved_model.load(path)
            head = "logits" if kind == "classification" else "pooled_features"
            record.close(f"{kind}/__call__", job.reference[head], loaded(images, training=False), TF_TOLERANCE)
            defaults = {"image_classification": "logits", "image_feature_vector": "pooled_features",
                        "serving_default": head}
            for name, signature in loaded.signatures.items():
                outputs = signature(images=images)
                for key, value in outputs.items():
                    expected = job.reference[defaults[name] if key == "default" else key]
                    record.close(f"{kind}/{name}/{key}", expected, value, TF_TOLERANCE)
            size = loaded.default_image_size().numpy().tolist()
            record.equal(f"{kind}/default_image_size", size, [job.image_size] * 2,
                         f"{kind}: default_image_size() is {size}")
            counts = (len(loaded.trainable_variables), len(loaded.variables))
            model = job.endpoints if kind == "classification" else job.feature_endpoints
            expected_counts = (len(model.trainable_variables), len(model.variables))
            record.equal(f"{kind}/variables (trainable, all)", counts, expected_counts,
                         f"{kind}: reloaded module has {counts} (trainable, all) variables, the model {expected_counts}")
            del loaded
    return record


class HubExporter(Exporter):
    name = "hub"
    layout = "DIR/classification and DIR/feature_vector: TF2 reusable SavedModels for hub.KerasLayer"

    def export(self, job: ExportJob, out_dir: str) -> None:
        export(job, out_dir)

    def verify(self, job: ExportJob, out_dir: str) -> Verification:
        return verify(job, out_dir)


EXPORTER = HubExporter()
