"""Format ``saved_model``: a SavedModel for TensorFlow Serving in ``DIR/1/`` (tag ``serve``).

Signatures:
- ``serving_default``: ``images`` float32 [batch, height, width, 3] in [0, 1];
- ``serving_bytes``: ``image_bytes`` string [batch] of encoded JPEG/PNG/GIF/BMP files, decoded,
  centre-cropped and resized exactly like ``efficientnet_tf.preprocessing.preprocess_bytes``
  (TF Serving's REST API base64-decodes inputs whose name ends in ``_bytes``).
The graph is the BN-folded inference graph of ``efficientnet_tf.fast.FoldedModel`` (faster; it
holds the folded kernels and biases, not the Keras model's weights). Up to ``CONSTANTS_LIMIT``
bytes of weights (every variant but V2-XL and L2) they are constants of the graph, so the
SavedModel has no variables (faster under oneDNN: docs/performance.md); larger models keep
them as variables (a graph is a protobuf, at most 2 GB). Both return ``probabilities`` [batch, classes] (softmax; a sigmoid
per class for a multi-label weight set, ImageNet-21k: ``ExportJob.scores``), and for the
top-k (k = min(5, classes)) ``classes`` (int32), ``scores`` and ``class_names``. Bytes that
are not an image fail the request with InvalidArgument naming the position in the batch; the
model keeps serving.
"""

from __future__ import annotations

import os
from typing import List

import tensorflow as tf

from efficientnet_tf.fast import FoldedModel
from efficientnet_tf.preprocessing import preprocess_bytes, preprocess_bytes_batch
from export import photos, progress, trace
from export.exporter import Exporter
from export.job import ExportJob
from export.verify import TF_TOLERANCE, Verification

VERSION = "1"
TOP_K = 5
# B7 264 MB, B8 350 MB, V2-L 476 MB of float32 weights: constants; V2-XL (833 MB) and L2
# (1.9 GB) would bring saved_model.pb near protobuf's 2 GB, so they keep variables.
CONSTANTS_LIMIT = 512 * 2**20


def weights_as_constants(job: ExportJob) -> bool:
    return 4 * job.endpoints.count_params() <= CONSTANTS_LIMIT


def _build(job: ExportJob):
    config = job.eval_config()
    spec = job.input_spec()
    with progress.step("saved_model: folding batch norm and tracing the network"):
        # Inference only: BN folded into the convolutions (efficientnet_tf.fast), ~1.5x the
        # Keras graph's throughput on CPU (docs/performance.md), same outputs up to rounding.
        folded = FoldedModel(job.endpoints, constants=weights_as_constants(job))

        def logits_fn(images):
            return folded.forward(trace.checked_images(images, job.input_hw))["logits"]
        logits = tf.function(logits_fn, autograph=False).get_concrete_function(spec)
    class_names = tf.constant(list(job.class_names))
    k = min(TOP_K, job.num_classes)

    def heads(images):
        # An empty batch would reach a batch-norm kernel that rejects it; answer it directly.
        scores = tf.cond(tf.shape(images)[0] > 0, lambda: logits(images),
                         lambda: tf.zeros([0, job.num_classes], tf.float32))
        probabilities = job.scores(scores)
        top = tf.math.top_k(probabilities, k=k)
        return {"probabilities": probabilities, "classes": top.indices, "scores": top.values,
                "class_names": tf.gather(class_names, top.indices)}

    def serving_default(images):
        return heads(images)

    def serving_bytes(image_bytes):
        return heads(preprocess_bytes_batch(image_bytes, config))

    module = tf.__internal__.tracking.AutoTrackable()
    module.folded = folded
    module.variables = list(folded.folded_variables.values())
    size = job.image_size
    module.default_image_size = tf.function(lambda: tf.constant([size, size], tf.int32), autograph=False)
    module.default_image_size.get_concrete_function()
    signatures = {
        "serving_default": tf.function(serving_default, autograph=False).get_concrete_function(spec),
        "serving_bytes": tf.function(serving_bytes, autograph=False).get_concrete_function(
            tf.TensorSpec([None], tf.string, name="image_bytes")),
    }
    return module, signatures


def export(job: ExportJob, staging_dir: str) -> List[str]:
    SavedModelExporter().check(job)
    module, signatures = _build(job)
    path = os.path.join(staging_dir, VERSION)
    with progress.step("saved_model: writing the SavedModel"):
        with progress.quiet_absl():
            tf.saved_model.save(module, path, signatures=signatures)
    return [path]


def verify(job: ExportJob, staging_dir: str) -> Verification:
    """Float signature against Keras; bytes signature against the float one on real photographs;
    a corrupt request fails cleanly and the next one is still served."""
    record = Verification(SavedModelExporter.name)
    with progress.step("saved_model: reloading and comparing"):
        loaded = tf.saved_model.load(os.path.join(staging_dir, VERSION), tags=["serve"])
        constants = weights_as_constants(job)
        record.equal("saved_model/weights are graph constants" if constants else
                     "saved_model/weights are variables", len(loaded.variables) == 0, constants,
                     f"the SavedModel holds {len(loaded.variables)} variables; expected "
                     + ("none (weights as constants)" if constants else "the folded weights"))
        record.notes.append("saved_model weights: " + ("graph constants" if constants else
                            f"variables (over {CONSTANTS_LIMIT // 2**20} MiB)"))
        expected = job.scores(job.reference["logits"]).numpy()
        outputs = loaded.signatures["serving_default"](images=tf.constant(job.batch))
        record.close("serving_default/probabilities", expected, outputs["probabilities"], TF_TOLERANCE)
        top1 = outputs["classes"].numpy()[:, 0]
        record.equal("serving_default/classes are the most probable", top1.tolist(),
                     outputs["probabilities"].numpy().argmax(-1).tolist(),
                     f"serving_default classes {top1} are not the most probable ones")

        found = photos.load()
        if found:
            config = job.eval_config()
            encoded = tf.constant([data for _, data in found])
            by_bytes = loaded.signatures["serving_bytes"](image_bytes=encoded)
            images = tf.stack([preprocess_bytes(data, config) for _, data in found])
            by_float = loaded.signatures["serving_default"](images=images)
            record.close("serving_bytes/probabilities", by_float["probabilities"], by_bytes["probabilities"],
                         TF_TOLERANCE)
            record.equal("serving_bytes/top-1 = serving_default top-1", by_bytes["classes"].numpy()[:, 0].tolist(),
                         by_float["classes"].numpy()[:, 0].tolist(),
                         "serving_bytes and serving_default disagree on the top-1 class")
            names = [n.decode() for n in by_bytes["class_names"].numpy()[:, 0]]
            record.notes.append("serving_bytes top-1: " + ", ".join(
                f"{photo}={name}" for (photo, _), name in zip(found, names)))
            try:
                loaded.signatures["serving_bytes"](image_bytes=tf.constant([found[0][1], b"not an image"]))
                message = None
            except tf.errors.InvalidArgumentError as err:
                message = err.message
            record.equal("serving_bytes/non-image bytes rejected", message is not None, True,
                         "serving_bytes accepted bytes that are not an image")
            record.equal("serving_bytes/non-image error names it", "is not an image" in message, True,
                         f"Unclear error for non-image bytes: {message}")
            again = loaded.signatures["serving_bytes"](image_bytes=encoded[:1])
            record.close("serving_bytes/after_bad_request", by_bytes["probabilities"][:1], again["probabilities"],
                         TF_TOLERANCE)
        del loaded
    return record


class SavedModelExporter(Exporter):
    name = "saved_model"
    layout = "DIR/1: SavedModel for TF Serving (tag 'serve'; serving_default, serving_bytes)"

    def check(self, job: ExportJob) -> None:
        super().check(job)
        if not job.num_classes:
            raise ValueError("Format saved_model serves a classifier; the model has none (include_top=False). "
                             "Use format 'hub' for feature vectors.")

    def export(self, job: ExportJob, out_dir: str) -> None:
        export(job, out_dir)

    def verify(self, job: ExportJob, out_dir: str) -> Verification:
        return verify(job, out_dir)


EXPORTER = SavedModelExporter()
