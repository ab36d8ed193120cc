"""Format ``saved_model``: a SavedModel for TensorFlow Serving in ``DIR/1/`` (tag ``serve``).

Signatures:
- ``serving_default``: ``images`` float32 [batch, height, width, 3] in [0, 1];
- ``serving_bytes``: ``image_bytes`` string [batch] of encoded JPEG/PNG/GIF/BMP files, decoded,
  centre-cropped and resized exactly like ``efficientnet_tf.preprocessing.preprocess_bytes``
  (TF Serving's REST API base64-decodes inputs whose name ends in ``_bytes``).
The graph is the BN-folded inference graph of ``efficientnet_tf.fast.FoldedModel`` (faster; the
variables are the folded kernels and biases, not the Keras model's). Both return ``probabilities`` [batch, classes], and for the top-k (k = min(5, classes))
``classes`` (int32), ``scores`` and ``class_names``. Bytes that are not an image fail the
request with InvalidArgument naming the position in the batch; the model keeps serving.
"""

from __future__ import annotations

import os
from typing import Dict, List

import numpy as np
import tensorflow as tf

from efficientnet_tf.fast import FoldedModel
from efficientnet_tf.preprocessing import eval_config, preprocess_bytes, preprocess_bytes_batch
from export import common

VERSION = "1"
TOP_K = 5


def _build(prepared: common.PreparedModel):
    if not prepared.num_classes:
        raise ValueError("Format saved_model serves a classifier; the model has none (include_top=False). "
                         "Use format 'hub' for feature vectors.")
    config = eval_config(prepared.model_name, prepared.image_size)
    spec = prepared.input_spec()
    with common.step("saved_model: folding batch norm and tracing the network"):
        # Inference only: BN folded into the convolutions (efficientnet_tf.fast), ~1.5x the
        # Keras graph's throughput on CPU (README "Benchmarks"), same outputs up to rounding.
        folded = FoldedModel(prepared.endpoints)

        def logits_fn(images):
            return folded.forward(common.checked_images(images, prepared.input_hw))["logits"]
        logits = tf.function(logits_fn, autograph=False).get_concrete_function(spec)
    class_names = tf.constant(list(prepared.class_names))
    k = min(TOP_K, prepared.num_classes)

    def heads(images):
        # An empty batch would reach a batch-norm kernel that rejects it; answer it directly.
        scores = tf.cond(tf.shape(images)[0] > 0, lambda: logits(images),
                         lambda: tf.zeros([0, prepared.num_classes], tf.float32))
        probabilities = tf.nn.softmax(scores, axis=-1)
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
    size = prepared.image_size
    module.default_image_size = tf.function(lambda: tf.constant([size, size], tf.int32), autograph=False)
    module.default_image_size.get_concrete_function()
    signatures = {
        "serving_default": tf.function(serving_default, autograph=False).get_concrete_function(spec),
        "serving_bytes": tf.function(serving_bytes, autograph=False).get_concrete_function(
            tf.TensorSpec([None], tf.string, name="image_bytes")),
    }
    return module, signatures


def export(prepared: common.PreparedModel, staging_dir: str) -> List[str]:
    module, signatures = _build(prepared)
    path = os.path.join(staging_dir, VERSION)
    with common.step("saved_model: writing the SavedModel"):
        with common.quiet_absl():
            tf.saved_model.save(module, path, signatures=signatures)
    return [path]


def verify(prepared: common.PreparedModel, staging_dir: str, batch: np.ndarray,
           reference: Dict[str, np.ndarray], results: Dict[str, float], limits: Dict[str, float]) -> List[str]:
    """Float signature against Keras; bytes signature against the float one on real photographs;
    a corrupt request fails cleanly and the next one is still served."""
    notes = []
    with common.step("saved_model: reloading and comparing"):
        loaded = tf.saved_model.load(os.path.join(staging_dir, VERSION), tags=["serve"])
        expected = tf.nn.softmax(reference["logits"], axis=-1).numpy()
        outputs = loaded.signatures["serving_default"](images=tf.constant(batch))
        common.check_close(results, limits, "serving_default/probabilities", expected,
                           outputs["probabilities"], common.TF_TOLERANCE)
        top1 = outputs["classes"].numpy()[:, 0]
        if not np.array_equal(top1, outputs["probabilities"].numpy().argmax(-1)):
            raise common.VerificationError(f"serving_default classes {top1} are not the most probable ones")

        photos = common.sample_photos()
        if photos:
            config = eval_config(prepared.model_name, prepared.image_size)
            encoded = tf.constant([data for _, data in photos])
            by_bytes = loaded.signatures["serving_bytes"](image_bytes=encoded)
            images = tf.stack([preprocess_bytes(data, config) for _, data in photos])
            by_float = loaded.signatures["serving_default"](images=images)
            common.check_close(results, limits, "serving_bytes/probabilities", by_float["probabilities"],
                               by_bytes["probabilities"], common.TF_TOLERANCE)
            if not np.array_equal(by_bytes["classes"].numpy()[:, 0], by_float["classes"].numpy()[:, 0]):
                raise common.VerificationError("serving_bytes and serving_default disagree on the top-1 class")
            names = [n.decode() for n in by_bytes["class_names"].numpy()[:, 0]]
            notes.append("serving_bytes top-1: " + ", ".join(
                f"{photo}={name}" for (photo, _), name in zip(photos, names)))
            try:
                loaded.signatures["serving_bytes"](image_bytes=tf.constant([photos[0][1], b"not an image"]))
            except tf.errors.InvalidArgumentError as err:
                if "is not an image" not in err.message:
                    raise common.VerificationError(f"Unclear error for non-image bytes: {err.message}") from err
            else:
                raise common.VerificationError("serving_bytes accepted bytes that are not an image")
            again = loaded.signatures["serving_bytes"](image_bytes=encoded[:1])
            common.check_close(results, limits, "serving_bytes/after_bad_request", by_bytes["probabilities"][:1],
                               again["probabilities"], common.TF_TOLERANCE)
        del loaded
    return notes
