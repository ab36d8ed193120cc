"""``python tests/nan_launcher.py FLAGS...``: the real ``train.main`` with NaN images planted in
its training batches, for tests/test_train_recovery.py.

Why a launcher and not a config key: planting bad data is a test's business, not a user's,
so nothing of it reaches train/ or the flags users see. The seam is real: the trainer's own
input pipeline builds its datasets (``train.input_pipeline.build_dataset``) and this wrapper
only replaces the images of chosen training batches by NaN; the flags, the loop, the
checkpoints and the process exit are train.main's, unchanged.

``NAN_BATCHES=I``: the batch with index I (0-based, counted from where the training iterator
starts) is NaN; ``NAN_BATCHES=I-``: every batch from I on. Evaluation batches are untouched.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tensorflow as tf  # noqa: E402
from absl import app  # noqa: E402

from train import input_pipeline  # noqa: E402
from train import main as train_main  # noqa: E402


def _plan():
    text = os.environ["NAN_BATCHES"]
    first = int(text.rstrip("-"))
    return first, None if text.endswith("-") else first


def _planted(build):
    first, last = _plan()

    def build_dataset(spec, **kwargs):
        ds = build(spec, **kwargs)
        if not spec.is_training:
            return ds

        def poison(index, batch):
            images, labels = batch
            bad = index >= first if last is None else tf.logical_and(index >= first, index <= last)
            nan = tf.fill(tf.shape(images), tf.constant(float("nan"), images.dtype))
            return tf.where(bad, nan, images), labels

        return ds.enumerate().map(poison)

    return build_dataset


if __name__ == "__main__":
    input_pipeline.build_dataset = _planted(input_pipeline.build_dataset)
    app.run(train_main.main)
