r"""Exports an EfficientNet in the formats of ``export.formats.FORMATS``, verified.

    python -m export.main --model_name=efficientnet-b2 --weights=SOURCE --export_dir=DIR \
        [--format=FORMAT|LIST|all] [--quantize=MODE] [--num_classes=1000] \
        [--image_size=N] [--labels=FILE] [--calibration_images=GLOB] [--eval_data=DATA]
        [--max_accuracy_drop=POINTS] [--overwrite]

SOURCE is anything ``efficientnet_tf.load_weights`` accepts: a published weight set by tag
(``imagenet``, ``autoaugment``, ``advprop``, ``imagenet21k``, ...: ``python -m efficientnet_tf
weights list``; downloaded once into the cache), a URL, a Keras/.h5 file, an official TF
checkpoint, a PyTorch state dict, a training checkpoint. Without --weights the
export holds freshly initialized weights (a warning says so). The export is written next to DIR,
reloaded, compared with the Keras model on a fixed batch (the max-abs differences are printed;
a mismatch fails with exit status 1) and only then renamed to DIR. Several formats
(``--format=hub,tflite`` or ``--format=all``) share one model build and weight load and go to
DIR/<format>/, all renamed into place together once every one is verified; a summary table
follows. A write failure (disk full) also exits with status 1 and leaves nothing at DIR.
"""

from __future__ import annotations

import glob
import os
import sys
import time

from absl import app, flags, logging  # noqa: E402

import efficientnet_tf  # noqa: E402  (efficientnet_tf.console quiets TensorFlow's start-up unless -v)
from export.formats import FORMATS  # noqa: E402
from export.atomic import ExportWriteError, check_target  # noqa: E402
from export.job import QUANTIZE_MODES  # noqa: E402
from export.verify import VerificationError  # noqa: E402
from export import parse_formats
from efficientnet_tf import console
from efficientnet_tf.labels import read_labels
from export import check_quantize, export_formats, export_model, summary_table
from efficientnet_tf.weights.pretrained import build_facts
from export import publish
from efficientnet_tf.labels import class_names as default_class_names
from export.accuracy import load as load_eval_data

FLAGS = flags.FLAGS
flags.DEFINE_enum("model_name", None, efficientnet_tf.list_models(), "The variant to export.")
flags.DEFINE_string("weights", None, "Weights source for efficientnet_tf.load_weights: a tag (imagenet, "
                    "autoaugment, advprop, ...), a URL or a file (default: none, i.e. freshly initialized weights).")
flags.DEFINE_string("export_dir", None, "Output directory (must not exist unless --overwrite).")
flags.DEFINE_string("format", "hub", f"<{'|'.join(FORMATS)}>, a comma-separated list of them, or all "
                    "(several formats: DIR/<format>/ each). " + "; ".join(
                        f"{name} = {exporter.layout}" for name, exporter in FORMATS.items()) + ".")
flags.DEFINE_integer("num_classes", 1000, "Classifier outputs (must match the weights; a tag's own, e.g. "
                     "21843 for imagenet21k, when left at 1000).", lower_bound=1)
flags.DEFINE_enum("quantize", None, list(QUANTIZE_MODES), "Formats " + ", ".join(
    name for name, e in FORMATS.items() if e.quantize_modes) + " only: " + "; ".join(
    f"{mode} = {what}" for mode, what in QUANTIZE_MODES.items()) + ".")
flags.DEFINE_string("eval_data", None, "With --quantize: labeled data on which the quantized export's top-1 is "
                    "compared with the float model's: digits (the embedded 360 held-out digits), a folder "
                    "root/<class>/ of images, or a TFDS dataset name.")
flags.DEFINE_float("max_accuracy_drop", 1.0, "With --quantize and --eval_data: the points of top-1 accuracy a "
                   "quantized export may lose; more fails the export (nothing is written).")
flags.DEFINE_integer("image_size", None, "Input size to document and verify at (default: the variant's "
                     "resolution); the TF-Lite input size.", lower_bound=32)
flags.DEFINE_string("labels", None, "Text file with one class name per line (default: ImageNet labels "
                    "for 1000 classes, else class_<i>).")
flags.DEFINE_multi_string("calibration_images", None, "Image files or globs for --quantize=int8 "
                          "(default: the photographs shipped in installed packages).")
flags.DEFINE_bool("overwrite", False, "Replace an existing --export_dir once the new export is verified.")
flags.DEFINE_bool("publish", False, "Also write the Kaggle Models upload tree of the hub modules "
                  "(formats hub, hub_tf1; tflite rides along) into EXPORT_DIR-publish (export/publish.py); upload it with "
                  "python -m export.publish upload EXPORT_DIR-publish.")
flags.DEFINE_string("owner", None, "--publish: the Kaggle owner (user or organization slug; default --publisher).")
flags.DEFINE_bool("tfhub_docs", False, "--publish: also the retired tfhub.dev package (.tar.gz archives, "
                  "documentation pages, --publisher, --version).")
flags.DEFINE_string("publisher", None, "--publish --tfhub_docs: the tfhub.dev publisher id (lowercase letters, "
                    "digits, '-').")
flags.DEFINE_string("module_name", None, "--publish: the model name, e.g. efficientnet/b0 (default: "
                    "--model_name); '/classification', '/feature_vector' or '/tf1/...' is appended.")
flags.DEFINE_integer("version", 1, "--publish: the version of the published modules.", lower_bound=1)
flags.DEFINE_string("license", "apache-2.0", "--publish: license metadata (a tfhub.dev license id).")
flags.mark_flags_as_required(["model_name", "export_dir"])


def _valid_formats(value: str) -> bool:
    try:
        parse_formats(value)
    except ValueError as err:
        raise flags.ValidationError(f"{err} (<{'|'.join(FORMATS)}>)") from None
    return True


flags.register_validator("format", _valid_formats)

FRESH_WEIGHTS_WARNING = """
======================================================================
  NO --weights GIVEN: exporting FRESHLY INITIALIZED, UNTRAINED weights.
  The export works but its predictions are meaningless. Pass e.g.
  --weights=imagenet (where installed) or a checkpoint / weights file.
======================================================================"""


def _calibration_files(patterns):
    if not patterns:
        return None
    files = []
    for pattern in patterns:
        found = sorted(glob.glob(os.path.expanduser(pattern)))
        if not found:
            raise ValueError(f"--calibration_images={pattern!r} matches no file")
        files += found
    return files


def run(argv) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")

    console.setup_from_flags()
    formats = parse_formats(FLAGS.format)  # bad arguments fail before any work
    check_quantize(FLAGS.quantize, formats, FLAGS.eval_data, FLAGS.max_accuracy_drop)
    check_target(FLAGS.export_dir, FLAGS.overwrite)
    if FLAGS.publish:
        if not FLAGS.weights:
            raise ValueError("--publish needs --weights: freshly initialized weights are not worth publishing")
        publishable = [f for f in formats if f in publish.PUBLISHABLE_FORMATS]
        publish.check_kaggle_request(FLAGS.owner or FLAGS.publisher, FLAGS.license)
        publish.check_request(publishable[0] if publishable else FLAGS.format,
                              FLAGS.publisher if FLAGS.tfhub_docs else FLAGS.owner or FLAGS.publisher,
                              FLAGS.module_name or FLAGS.model_name, FLAGS.version, FLAGS.license,
                              publish.default_publish_dir(FLAGS.export_dir), FLAGS.overwrite)
    class_names = read_labels(FLAGS.labels) if FLAGS.labels else None
    calibration = _calibration_files(FLAGS.calibration_images)
    started = time.perf_counter()

    weight_set = build_facts(FLAGS.model_name, FLAGS.weights)  # a tag: its classes (21k: 21,843)
    classes = weight_set.classes if weight_set and FLAGS.num_classes == 1000 else FLAGS.num_classes
    if FLAGS.eval_data:  # a missing folder or other classes than the model's: an error before the build

        load_eval_data(FLAGS.eval_data, classes, default_class_names(classes, class_names))
    model = efficientnet_tf.build_model(FLAGS.model_name, classes=classes, classifier_activation=None)
    logging.info("Built %s (%s parameters) in %.1fs", FLAGS.model_name, f"{model.count_params():,}",
                 time.perf_counter() - started)
    if FLAGS.weights:
        started = time.perf_counter()
        report = efficientnet_tf.load_weights(model, FLAGS.weights)
        print(f"Weights: {report.describe()} ({time.perf_counter() - started:.1f}s)")
        weights = str(FLAGS.weights)
    else:
        print(FRESH_WEIGHTS_WARNING, file=sys.stderr)
        logging.warning("Exporting freshly initialized weights (no --weights)")
        weights = "none (freshly initialized)"
    options = dict(model_name=FLAGS.model_name, image_size=FLAGS.image_size, overwrite=FLAGS.overwrite,
                   quantize=FLAGS.quantize, class_names=class_names, calibration_images=calibration, weights=weights,
                   eval_data=FLAGS.eval_data, max_accuracy_drop=FLAGS.max_accuracy_drop)
    if FLAGS.format in FORMATS:  # one format named: DIR holds it
        results = [export_model(model, FLAGS.export_dir, FLAGS.format, **options)]
        print(results[0].summary())
    else:
        results = export_formats(model, FLAGS.export_dir, formats, **options)
        for result in results:
            print(result.summary())
        print(summary_table(results))
    if FLAGS.publish:
        # Each format's folder has its own export_info.json, so publish reads them alike.
        published = publish.publish([r.export_dir for r in results if r.format in publish.KAGGLE_FORMATS],
                                    publish.default_publish_dir(FLAGS.export_dir), owner=FLAGS.owner,
                                    publisher=FLAGS.publisher, module_name=FLAGS.module_name or FLAGS.model_name,
                                    version=FLAGS.version, license=FLAGS.license, tfhub_docs=FLAGS.tfhub_docs,
                                    overwrite=FLAGS.overwrite)
        print(publish.summary(published))
    return 0


def main(argv) -> int:
    try:
        return run(argv)
    except VerificationError as err:
        print(f"error: verification failed, nothing was written to {FLAGS.export_dir}: {err}", file=sys.stderr)
        return 1
    except ExportWriteError as err:  # disk full, I/O error: nothing was left at DIR
        print(f"error: {err}", file=sys.stderr)
        return 1
    except (ValueError, OSError) as err:  # OSError: also DownloadError (network, hash)
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    app.run(main)
