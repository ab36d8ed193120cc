"""The exports the inference benchmark times, each as a runner: numpy images -> numpy output.

- SavedModel and TF-Lite written by the project's exporter (``export.export_model``, formats
  ``saved_model`` and ``tflite``), when the export package is importable; otherwise written
  here with ``tf.saved_model.save`` / ``tf.lite.TFLiteConverter`` on the Keras model.
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import tensorflow as tf

from efficientnet_tf.fast import FoldedModel


def have_export_package() -> bool:
    return importlib.util.find_spec("export") is not None


def saved_model_runner(model, directory: str):
    """(runner, facts) for the project's serving SavedModel of ``model``."""
    if have_export_package():
        from export import export_model
        result = export_model(model, directory, format="saved_model")
        path = os.path.join(directory, "1")
        how = "export.export_model(format='saved_model'), signature serving_default"
        key = "probabilities"
    else:
        path = directory
        module = tf.Module()
        module.model = model
        module.serve = tf.function(lambda images: {"probabilities": model(images, training=False)},
                                   input_signature=[tf.TensorSpec([None, *model.input.shape[1:]],
                                                                  tf.float32, name="images")])
        tf.saved_model.save(module, path, signatures={"serving_default": module.serve})
        result, how, key = None, "tf.saved_model.save of the Keras model (export/ missing)", \
            "probabilities"
    signature = tf.saved_model.load(path).signatures["serving_default"]

    def run(images):
        return signature(images=tf.constant(images))[key].numpy()

    facts = {"how": how, "bytes": _size(path)}
    if result is not None:
        facts["export_max_abs_diff"] = {k: float(v) for k, v in result.max_abs_diff.items()} \
            if hasattr(result, "max_abs_diff") else None
    return run, facts


def tflite_runner(model, directory: str, threads: int):
    """(runner for batch-1 calls, facts) for the project's float32 TF-Lite export."""
    path = os.path.join(directory, "model.tflite")
    if have_export_package():
        from export import export_model
        export_model(model, directory, format="tflite")
        how = "export.export_model(format='tflite'), float32, input [1, S, S, 3]"
    else:
        os.makedirs(directory, exist_ok=True)
        folded = FoldedModel(model)
        spec = tf.TensorSpec([1, *model.input.shape[1:]], tf.float32, name="images")
        converter = tf.lite.TFLiteConverter.from_concrete_functions(
            [folded.serve.get_concrete_function(spec)], folded)
        with open(path, "wb") as f:
            f.write(converter.convert())
        how = "tf.lite.TFLiteConverter on the BN-folded graph (export/ missing)"
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

    return run, {"how": how, "bytes": os.path.getsize(path), "num_threads": threads,
                 "delegate": "XNNPACK (TF-Lite default for float32 on CPU)"}


def _size(directory):
    return sum(os.path.getsize(os.path.join(root, name))
               for root, _, names in os.walk(directory) for name in names)
