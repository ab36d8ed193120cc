"""Format ``tflite``: ``DIR/model.tflite`` for phones (Lite variants are the main targets).

One image per call: input [1, S, S, 3]; output the class scores (softmax, or sigmoid for a
multi-label weight set: ImageNet-21k) or, for a model without classifier, the pooled features.

- float32: inputs float32 in [0, 1].
- ``quantize="float16"``: weights stored as float16 (half the file), computed in float32;
  ``quantize="dynamic"``: dynamic-range quantization (int8 weights, activations quantized on the
  fly), float32 input and output. Both as TF Model Garden's TF-Lite export offers them.
- ``quantize="int8"``: full-integer quantization (every op int8, TFLITE_BUILTINS_INT8) with
  uint8 input and output, calibrated on a representative dataset: real photographs (the ones
  shipped in installed packages, or the user's ``calibration_images``) with random crops and
  flips. The input's quantization is ~(1/255, 0), i.e. raw 0-255 pixels; read the exact scale
  and zero point from the interpreter's input details.

Every ``.tflite`` carries TF-Lite Metadata (``export.tflite_metadata``: input image properties and
normalization, the label file, name, description, version, license), which MediaPipe Tasks'
``ImageClassifier`` needs; ``labels.txt`` is also written beside it. Verified with LiteRT and, when
``mediapipe`` is installed, with MediaPipe's ``ImageClassifier`` on the real photographs.

Interpreter: ``ai_edge_litert`` when installed, else ``tf.lite.Interpreter`` (still shipped in
TF 2.21, deprecated in favour of LiteRT).
"""

from __future__ import annotations

import os
import warnings
from typing import List, Optional, Sequence

import numpy as np
import tensorflow as tf
from absl import logging

import efficientnet_tf
from efficientnet_tf.preprocessing import (eval_config, preprocess_array, resize, to_rgb,
                                           to_unit_range)
from efficientnet_tf.spec import model_spec
from export import mediapipe_client, photos, progress, tflite_metadata, trace
from export.accuracy import photo_images
from export.exporter import Exporter
from export.job import QUANTIZE_MODES, ExportJob
from export.verify import Tolerance, Verification
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2
from efficientnet_tf import console

FILENAME = "model.tflite"
LABELS_FILENAME = "labels.txt"
CALIBRATION_SAMPLES = 48
FLOAT_TOLERANCE = Tolerance(rtol=1e-3, atol=1e-4)  # different kernels (XNNPACK), same math
# Quantized exports are accepted on their measured accuracy cost (export.accuracy), not on a
# probability tolerance; their max-abs diff is recorded against the largest a probability can
# differ by.
QUANTIZED_RECORD = Tolerance(rtol=0.0, atol=1.0)
# int8 probabilities: quantization noise of ~0.5 step per layer over ~60 layers; measured max-abs
# 0.06 with the ImageNet Lite0 weights on 3 photos at 224 px. No longer what accepts an export
# (QUANTIZED_RECORD above); the tests keep it as a bound for the trained Lite0.
INT8_TOLERANCE = Tolerance(rtol=0.0, atol=0.25)
INT8_FEATURE_TOLERANCE = Tolerance(rtol=0.25, atol=0.0)


def interpreter(model_content: bytes, num_threads: Optional[int] = None):
    """A LiteRT interpreter, ready to run (tf.lite.Interpreter when ai-edge-litert is missing)."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the deprecation notice for tf.lite.Interpreter
            Interpreter = tf.lite.Interpreter
    result = Interpreter(model_content=model_content, num_threads=num_threads)
    result.allocate_tensors()
    return result


def run(model_content_or_interpreter, images: np.ndarray) -> np.ndarray:
    """Runs a converted model on float images in [0, 1] (quantizing them when needed), one at a
    time; returns float outputs (dequantized)."""
    interp = model_content_or_interpreter
    if isinstance(interp, (bytes, bytearray)):
        interp = interpreter(bytes(interp))
    inp = interp.get_input_details()[0]
    out = interp.get_output_details()[0]
    results = []
    for image in images:
        x = image[None].astype(np.float32)
        if inp["dtype"] != np.float32:
            scale, zero = inp["quantization"]
            info = np.iinfo(inp["dtype"])
            x = np.clip(np.round(x / scale + zero), info.min, info.max).astype(inp["dtype"])
        interp.set_tensor(inp["index"], x)
        interp.invoke()
        y = interp.get_tensor(out["index"])[0]
        if out["dtype"] != np.float32:
            scale, zero = out["quantization"]
            y = (y.astype(np.float32) - zero) * scale
        results.append(y)
    return np.stack(results)


def calibration_batch(job: ExportJob, images: Optional[Sequence] = None,
                      count: int = CALIBRATION_SAMPLES, seed: int = 0) -> np.ndarray:
    """``count`` float images [S, S, 3] in [0, 1] for int8 calibration.

    ``images``: encoded image bytes, file paths or decoded arrays; default the photographs in
    installed packages. Each appears once with evaluation preprocessing; the rest of the
    ``count`` are random crops (35-100% of the shorter side) and mirror images of them.
    """
    config = job.eval_config()
    decoded = []
    for item in (images if images is not None else [data for _, data in photos.load()]):
        if isinstance(item, (str, os.PathLike)):
            with open(item, "rb") as f:
                item = f.read()
        if isinstance(item, bytes):
            decoded.append(tf.io.decode_image(item, channels=3, expand_animations=False).numpy())
            continue
        image = np.asarray(item)
        if image.dtype.kind == "f":  # [0, 1] floats, as the models take them
            image = np.round(np.clip(image, 0.0, 1.0) * 255.0)
        decoded.append(to_rgb(image.astype(np.uint8)).numpy())
    if not decoded:
        raise ValueError("No calibration images: pass calibration_images (files or arrays)")
    batch = [preprocess_array(image, config).numpy() for image in decoded[:count]]
    rng = np.random.default_rng(seed)
    while len(batch) < count:
        image = decoded[len(batch) % len(decoded)]
        height, width = image.shape[:2]
        size = int(min(height, width) * rng.uniform(0.35, 1.0))
        y = rng.integers(0, height - size + 1)
        x = rng.integers(0, width - size + 1)
        crop = image[y:y + size, x:x + size]
        if rng.uniform() < 0.5:
            crop = crop[:, ::-1]
        batch.append(to_unit_range(resize(crop, config)).numpy())
    return np.stack(batch).astype(np.float32)


def converter_for(fn, size: int) -> "tf.lite.TFLiteConverter":
    """A TF-Lite converter for ``fn(images)`` on one [1, size, size, 3] float32 image: traced
    with the plain (TF-Lite-friendly) swish and frozen, so that the weights are constants."""

    with trace.plain_swish():
        traced = tf.function(fn, autograph=False).get_concrete_function(
            tf.TensorSpec([1, size, size, 3], tf.float32, name="images"))
    frozen = convert_variables_to_constants_v2(traced)
    # An empty trackable selects the current converter path; the frozen graph holds the weights.
    return tf.lite.TFLiteConverter.from_concrete_functions([frozen], tf.__internal__.tracking.AutoTrackable())


def convert(job: ExportJob, quantize: Optional[str] = None,
            calibration_images: Optional[Sequence] = None) -> bytes:
    endpoints = job.endpoints
    classifier = bool(job.num_classes)

    def predict(images):
        outputs = endpoints(images, training=False)
        return job.scores(outputs["logits"]) if classifier else outputs["pooled_features"]

    with progress.step("tflite: tracing and freezing the network"):
        converter = converter_for(predict, job.image_size)
    if quantize == "int8":
        samples = calibration_batch(job, calibration_images)
        logging.info("tflite: calibrating int8 on %d images", len(samples))

        def representative():
            with console.progress("tflite: int8 calibration", total=len(samples),
                                  plain_every=max(1, len(samples) // 4)) as bar:
                for sample in samples:
                    yield [sample[None]]
                    bar.advance()

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
        converter.inference_output_type = tf.uint8
    elif quantize == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantize == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]  # no representative data: dynamic range
    elif quantize is not None:
        raise ValueError(f"Unknown quantize={quantize!r}; valid: {list(QUANTIZE_MODES)} or None")
    with progress.step(f"tflite: converting ({quantize or 'float32'})"):
        return converter.convert()


def metadata_for(job: ExportJob, content: bytes) -> tflite_metadata.ImageClassifierMetadata:
    """The TF-Lite Metadata the export states for ``job``'s converted model ``content``."""
    spec = model_spec(job.model)
    config = eval_config(job.model_name, job.image_size)
    inp = interpreter(content).get_input_details()[0]
    integer = np.dtype(inp["dtype"]) != np.float32
    described = (f"RGB image {job.image_size}x{job.image_size} (evaluation crop: the centre "
                 f"{config.crop_fraction:.3f} of the shorter side, {config.resize_method} resize). Pixels 0-255 are "
                 "normalized by (pixel - mean) / std to [0, 1]; the weight set's own normalization, mean_rgb "
                 f"{list(spec.mean_rgb)} and stddev_rgb {list(spec.stddev_rgb)} on [0, 1] values, is inside the model.")
    if integer:
        scale, zero = inp["quantization"]
        described += (f" Full-integer model: {np.dtype(inp['dtype']).name} input quantized with scale {scale:.6g} "
                      f"and zero point {zero} (raw pixels).")
    what = (f"{job.num_classes}-class classifier" if job.num_classes else "image feature vector (pooled features)")
    return tflite_metadata.ImageClassifierMetadata(
        name=f"{job.model_name} ({job.quantize or 'float32'})",
        description=f"EfficientNet {job.model_name}, {what}; weights: {job.weights}. Exported by efficientnet_tf.",
        version=f"efficientnet_tf {efficientnet_tf.__version__}", author="efficientnet_tf",
        license="Apache License 2.0 (the code); the weights' license is their source's",
        image_size=job.image_size, input_description=described,
        input_range=(0.0, 255.0) if integer else (0.0, 1.0), mean=[0.0], std=[255.0],
        output_name="probability" if job.num_classes else "feature_vector",
        output_description=("Class probabilities (softmax), in the order of labels.txt" if job.num_classes
                            else "Global-average-pooled features"),
        class_names=job.class_names)


def export(job: ExportJob, staging_dir: str) -> List[str]:
    content = convert(job, job.quantize, job.calibration_images)
    with progress.step("tflite: writing TF-Lite Metadata (normalization, labels)"):
        content = tflite_metadata.populate(content, metadata_for(job, content))
    path = os.path.join(staging_dir, FILENAME)
    with open(path, "wb") as f:
        f.write(content)
    paths = [path]
    if job.class_names:
        labels_path = os.path.join(staging_dir, LABELS_FILENAME)
        with open(labels_path, "w", encoding="utf-8") as f:
            f.write("\n".join(job.class_names) + "\n")
        paths.append(labels_path)
    return paths


def verify_mediapipe(job: ExportJob, path: str, content: bytes, record: Verification) -> None:
    """MediaPipe's ImageClassifier on the photographs: it loads the file, names our classes, and
    for float models gives the Keras model's top-1 wherever the Keras top-1 leads by more than
    the export's tolerance (a closer call may legitimately flip)."""
    meta = mediapipe_client.read_metadata(content)
    record.equal("tflite/metadata", meta is not None, True, "the .tflite has no TF-Lite Metadata")
    norm = meta.subgraphMetadata[0].inputTensorMetadata[0].processUnits[0].options
    record.equal("tflite/metadata_normalization", ([float(v) for v in norm.mean], [float(v) for v in norm.std]),
                 ([0.0], [255.0]), "metadata normalization is not pixels / 255")
    files = tflite_metadata.associated_files(content)
    record.equal("tflite/metadata_labels", files.get(LABELS_FILENAME, b"").decode().splitlines(),
                 list(job.class_names), "labels.txt inside the .tflite does not list the class names")
    images = photo_images(job)
    if not len(images):
        return
    found = mediapipe_client.classify(path, images, max_results=2)
    top1 = [r[0][0] for r in found]
    record.equal("mediapipe/class_names", [r[0][1] for r in found], [job.class_names[i] for i in top1],
                 "MediaPipe's category names are not our class names")
    keras = tf.nn.softmax(job.endpoints(images.astype(np.float32) / 255.0, training=False)["logits"], -1).numpy()
    ordered = np.sort(keras, axis=-1)
    clear = (ordered[:, -1] - ordered[:, -2]) > 2 * FLOAT_TOLERANCE.limit(keras)
    agree = [int(a == b) for a, b in zip(top1, keras.argmax(-1))]
    if not job.quantize:
        record.equal("mediapipe/top1_equals_keras", [a for a, c in zip(agree, clear) if c], [1] * int(clear.sum()),
                     f"MediaPipe top-1 {top1} differs from the Keras model's {keras.argmax(-1).tolist()}")
    record.notes.append(f"mediapipe ImageClassifier top-1 agrees with Keras on {sum(agree)} of {len(agree)} "
                        "photographs: " + ", ".join(f"{n}={r[0][1]}" for (n, _), r in zip(photos.load(), found)))


def verify(job: ExportJob, staging_dir: str) -> Verification:
    record = Verification(TFLiteExporter.name)
    quantize = job.quantize
    path = os.path.join(staging_dir, FILENAME)
    with open(path, "rb") as f:
        content = f.read()
    with progress.step("tflite: running the interpreter on the verification batch"):
        interp = interpreter(content)
        inp = interp.get_input_details()[0]
        expected_dtype = np.uint8 if quantize == "int8" else np.float32
        record.equal("tflite/input", (np.dtype(inp["dtype"]).name, [int(d) for d in inp["shape"]]),
                     (np.dtype(expected_dtype).name, [1, job.image_size, job.image_size, 3]),
                     f"Unexpected input {inp['dtype']} {inp['shape']}")
        actual = run(interp, job.batch)
    record.equal("tflite/metadata_present", tflite_metadata.read_buffer(content) is not None, True,
                 f"the .tflite has no {tflite_metadata.METADATA_NAME} buffer")
    if job.num_classes:
        key, expected = "probabilities", job.scores(job.reference["logits"]).numpy()
        tolerance = QUANTIZED_RECORD if quantize else FLOAT_TOLERANCE
    else:
        key, expected = "pooled_features", job.reference["pooled_features"]
        tolerance = INT8_FEATURE_TOLERANCE if quantize else FLOAT_TOLERANCE
    record.close(f"tflite_{quantize or 'float32'}/{key}", expected, actual, tolerance)
    record.notes.append(f"tflite {os.path.getsize(path) / 2**20:.1f} MiB, input "
                        f"{inp['dtype'].__name__} quantization {tuple(round(float(q), 6) for q in inp['quantization'])}")
    if job.num_classes:
        agree = int((expected.argmax(-1) == actual.argmax(-1)).sum())
        record.notes.append(f"tflite top-1 agrees with Keras on {agree} of {len(job.batch)} verification images")
        if mediapipe_client.available():
            with progress.step("tflite: MediaPipe ImageClassifier on the photographs"):
                verify_mediapipe(job, path, content, record)
        else:
            record.notes.append(f"mediapipe not installed: MediaPipe check skipped ({mediapipe_client.INSTALL_HINT})")
    return record


class TFLiteExporter(Exporter):
    name = "tflite"
    layout = "DIR/model.tflite with TF-Lite Metadata (+ labels.txt)"
    quantize_modes = QUANTIZE_MODES

    def export(self, job: ExportJob, out_dir: str) -> None:
        export(job, out_dir)

    def verify(self, job: ExportJob, out_dir: str) -> Verification:
        return verify(job, out_dir)

    def predict(self, job: ExportJob, out_dir: str, images: np.ndarray) -> np.ndarray:
        with open(os.path.join(out_dir, FILENAME), "rb") as f:
            return run(f.read(), images)


EXPORTER = TFLiteExporter()
