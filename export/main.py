r"""Exports an EfficientNet as TF-Hub modules, a TF Serving SavedModel or TF-Lite, verified.

    python -m export.main --model_name=efficientnet-b2 --weights=SOURCE --export_dir=DIR \
        [--format=hub|hub_tf1|saved_model|tflite|openvino] [--quantize=int8] [--num_classes=1000] \
        [--image_size=N] [--labels=FILE] [--calibration_images=GLOB] [--overwrite]

SOURCE is anything ``efficientnet_tf.load_weights`` accepts (``imagenet``, a Keras/.h5 file, an
official TF checkpoint, a PyTorch state dict, a training checkpoint). Without --weights the
export holds freshly initialized weights (a warning says so). The export is written next to DIR,
reloaded, compared with the Keras model on a fixed batch (the max-abs differences are printed;
a mismatch fails with exit status 1) and only then renamed to DIR.
"""

from __future__ import annotations

import glob
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # noqa: E402

import efficientnet_tf  # noqa: E402
from export import common  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_enum("model_name", None, efficientnet_tf.list_models(), "The variant to export.")
flags.DEFINE_string("weights", None, "Weights source for efficientnet_tf.load_weights (default: none, "
                    "i.e. freshly initialized weights).")
flags.DEFINE_string("export_dir", None, "Output directory (must not exist unless --overwrite).")
flags.DEFINE_enum("format", "hub", list(common.FORMATS), "What to write: hub = TF2 hub modules "
                  "DIR/classification + DIR/feature_vector; hub_tf1 = TF1 Hub module; saved_model = "
                  "TF Serving DIR/1; tflite = DIR/model.tflite; openvino = OpenVINO IR DIR/1/model.xml.")
flags.DEFINE_integer("num_classes", 1000, "Classifier outputs (must match the weights).", lower_bound=1)
flags.DEFINE_enum("quantize", None, list(common.QUANTIZE_MODES), "tflite only: int8 = full-integer "
                  "quantization calibrated on real photographs.")
flags.DEFINE_integer("image_size", None, "Input size to document and verify at (default: the variant's "
                     "resolution); the TF-Lite input size.", lower_bound=32)
flags.DEFINE_string("labels", None, "Text file with one class name per line (default: ImageNet labels "
                    "for 1000 classes, else class_<i>).")
flags.DEFINE_multi_string("calibration_images", None, "Image files or globs for --quantize=int8 "
                          "(default: the photographs shipped in installed packages).")
flags.DEFINE_bool("overwrite", False, "Replace an existing --export_dir once the new export is verified.")
flags.mark_flags_as_required(["model_name", "export_dir"])

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
    from efficientnet_tf.labels import read_labels
    from export import export_model

    class_names = read_labels(FLAGS.labels) if FLAGS.labels else None
    calibration = _calibration_files(FLAGS.calibration_images)
    started = time.perf_counter()
    model = efficientnet_tf.build_model(FLAGS.model_name, classes=FLAGS.num_classes, classifier_activation=None)
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
    result = export_model(model, FLAGS.export_dir, FLAGS.format, model_name=FLAGS.model_name,
                          image_size=FLAGS.image_size, overwrite=FLAGS.overwrite, quantize=FLAGS.quantize,
                          class_names=class_names, calibration_images=calibration, weights=weights)
    print(result.summary())
    return 0


def main(argv) -> int:
    try:
        return run(argv)
    except common.VerificationError as err:
        print(f"error: verification failed, nothing was written to {FLAGS.export_dir}: {err}", file=sys.stderr)
        return 1
    except (ValueError, FileExistsError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    app.run(main)
