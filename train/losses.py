"""The trainer's classification loss and what counts as a correct prediction.

Two losses (``train.use_binary_cross_entropy``):
- softmax cross-entropy with label smoothing, the official one (tensorflow/tpu efficientnet
  main.py, automl efficientnetv2 main.py);
- sigmoid binary cross-entropy, for multi-label data such as ImageNet-21k: automl
  efficientnetv2 main.py ``loss_type='sigmoid'`` (``tf.compat.v1.losses.sigmoid_cross_entropy``),
  Model Garden ``losses.use_binary_cross_entropy``, timm ``--bce-loss``. Per example it is the
  mean over classes (automl's v1 loss averages over every batch x class element; Model Garden
  averages over classes for single-label data; timm averages too). Label smoothing moves the
  targets towards 1/2, ``y (1 - s) + s / 2``, as automl's ``sigmoid_cross_entropy`` and Keras'
  ``binary_crossentropy`` do (Model Garden ignores the smoothing for single-label BCE).

Labels: training always gets float [B, C]: one-hot or multi-hot, possibly mixed (mixup/CutMix).
Softmax on multi-label data needs each example's multi-hot label divided by its label count
*before* the batch mix (``Loss.normalizes_multi_hot``; the input pipeline does it), so a mix is
``lam y1/|y1| + (1 - lam) y2/|y2|``; BCE mixes the multi-hot labels as they are. Evaluation gets
int class ids [B] (single-label data) or multi-hot float [B, C] (multi-label data, see
``input_pipeline``). Multi-label top-k: one of the k best predictions is a true label (automl's
21k evaluation reports this as ``precision@1`` for k = 1).
"""

from __future__ import annotations

import dataclasses

import keras
import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class Loss:
    """A run's loss.

    binary: sigmoid binary cross-entropy instead of softmax cross-entropy.
    label_smoothing: training only (evaluation losses are unsmoothed).
    multi_label: labels are multi-hot (the data's; see ``input_pipeline.DatasetFacts``):
      softmax cross-entropy then spreads each example's target evenly over its labels (automl
      ``data.multiclass``), and a train prediction is correct when it is one of the labels.
    """
    binary: bool = False
    label_smoothing: float = 0.0
    multi_label: bool = False

    @property
    def normalizes_multi_hot(self) -> bool:
        """Softmax on multi-label data: each example's multi-hot label must be divided by its
        label count before mixup/CutMix mix the batch (see the module docstring)."""
        return self.multi_label and not self.binary

    def train(self, labels, logits):
        """Per-example loss [B] of float labels [B, C] and float32 logits [B, C].

        Softmax on multi-label data: rows are divided by their sum, which leaves a mix of
        normalized labels (:attr:`normalizes_multi_hot`) as it is and spreads an unmixed
        multi-hot row evenly over its labels.
        """
        if self.binary:
            return binary_cross_entropy(labels, logits, self.label_smoothing)
        if self.multi_label:
            labels = normalized(labels)
        return keras.losses.categorical_crossentropy(
            labels, logits, from_logits=True, label_smoothing=self.label_smoothing)

    def train_correct(self, labels, logits):
        """Bool [B]: the top prediction is the label (argmax of the float labels: after
        mixup/CutMix, the label with the larger weight), or, with multi-label data, one of the
        labels with a positive weight (after a mix, a label of either image)."""
        if self.multi_label:
            return in_labels(labels, logits, 1)
        return tf.equal(tf.argmax(logits, -1), tf.argmax(labels, -1))

    def evaluate(self, labels, logits, k: int):
        """(per-example loss, top-1 hit, top-k hit), each [B], for int labels [B] or multi-hot
        labels [B, C]."""
        if labels.shape.rank == 2:  # multi-hot
            labels = tf.cast(labels, tf.float32)
            if self.binary:
                loss = binary_cross_entropy(labels, logits)
            else:
                loss = tf.nn.softmax_cross_entropy_with_logits(normalized(labels), logits)
            return loss, in_labels(labels, logits, 1), in_labels(labels, logits, k)
        labels = tf.cast(labels, tf.int32)
        if self.binary:
            one_hot = tf.one_hot(labels, tf.shape(logits)[-1], dtype=tf.float32)
            loss = binary_cross_entropy(one_hot, logits)
        else:
            loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits)
        return loss, tf.math.in_top_k(labels, logits, 1), tf.math.in_top_k(labels, logits, k)


def binary_cross_entropy(labels, logits, label_smoothing: float = 0.0):
    """Mean over classes of the sigmoid cross-entropy, targets smoothed towards 1/2 -> [B]."""
    labels = tf.cast(labels, logits.dtype)
    if label_smoothing:
        labels = labels * (1.0 - label_smoothing) + 0.5 * label_smoothing
    return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels, logits), axis=-1)


def normalized(labels):
    """Each row divided by its sum (a row of zeros stays zeros)."""
    return tf.math.divide_no_nan(labels, tf.reduce_sum(labels, axis=-1, keepdims=True))


def in_labels(labels, logits, k: int):
    """Bool [B]: one of the k largest logits is at a positive label."""
    top = tf.math.top_k(logits, k).indices
    return tf.reduce_any(tf.gather(labels, top, batch_dims=1) > 0, axis=-1)
