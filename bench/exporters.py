"""The exports the inference benchmark times, each as a runner: numpy images -> numpy output,
written by the project's exporter (``export.export_model``, formats ``saved_model`` and
``tflite``), which verifies each against the Keras model before it is timed.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

from export import export_model


def saved_model_runner(model, directory: str):
    """(runner, facts) for the project's serving SavedModel of ``model``."""
    result = export_model(model, directory, format="saved_model")
    path = os.path.join(directory, "1")
    signature = tf.saved_model.load(path).signatures["serving_default"]

    def run(images):
        return signature(images=tf.constant(images))["probabilities"].numpy()

    return run, {"how": "export.export_model(format='saved_model'), signature serving_default",
                 "bytes": _size(path),
                 "export_max_abs_diff": {k: float(v) for k, v in result.max_abs_diff.items()}}


def tflite_runner(model, directory: str, threads: int):
    """(runner for batch-1 calls, facts) for the project's float32 TF-Lite export."""
    path = os.path.join(directory, "model.tflite")
    export_model(model, directory, format="tflite")
    interpreter = tf.lite.Interpreter(model_path=path, num_threads=threads)
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]

    def run(images):
        outputs = []
        for image in images:  # the export takes one image per call
            interpreter.set_tensor(inp["index"], np.ascontiguousarray(image[None]))
            interpreter.invoke()
            outputs.append(interpreter.get_tensor(out["index"])[0])
        return np.stack(outputs)

    return run, {"how": "export.export_model(format='tflite'), float32, input [1, S, S, 3]",
                 "bytes": os.path.getsize(path), "num_threads": threads,
                 "delegate": "XNNPACK (TF-Lite default for float32 on CPU)"}


def _size(directory):
    return sum(os.path.getsize(os.path.join(root, name))
               for root, _, names in os.walk(directory) for name in names)
