"""The compiled steps: the train step (and a loop of them per host call) and the evaluator.

Official loss (tensorflow/tpu efficientnet/main.py, automl efficientnetv2/main.py): softmax
cross-entropy with label smoothing + weight_decay * sum(l2_loss(w)) over the trainable weights
not matching ``train.weight_decay_exclude``. An explicit L2 term, as the official code does,
rather than Keras' decoupled ``weight_decay`` (which for RMSProp with momentum is a different
regularizer; the 1e-5 coefficient was tuned for the L2 term). The cross-entropy (softmax, or
sigmoid binary cross-entropy) is train/losses.py's.

With ``jit_compile`` the train and eval steps are XLA programs with static shapes, what
TPUStrategy compiles (tests/test_train_steps.py runs them in bfloat16 on CPU).
"""

from __future__ import annotations

from typing import Callable, Dict, Optional

import numpy as np
import tensorflow as tf

from efficientnet_tf import console
from train import losses
from train.state import TrainState


class TrainSteps:
    """``loop(iterator, num_steps)`` runs up to num_steps train steps in one host call and
    returns the summed [loss, correct, examples]; it stops early when ``stop`` (a boolean
    variable, set from a signal handler's thread) turns true between two steps."""

    def __init__(self, strategy: tf.distribute.Strategy, state: TrainState, *,
                 label_smoothing: float, weight_decay: float, jit: Optional[bool],
                 stop: Optional[tf.Variable] = None, loss: Optional[losses.Loss] = None):
        self.strategy, self.state = strategy, state
        self.label_smoothing, self.weight_decay = label_smoothing, weight_decay
        self.loss = loss or losses.Loss(label_smoothing=label_smoothing)  # train/losses.py (#22)
        self.stop = stop
        self.step = tf.function(self._step, jit_compile=jit)
        self.loop = tf.function(self._loop)

    def _replica(self, images, labels):
        state = self.state
        model, optimizer, trainable = state.model, state.optimizer, state.model.trainable_variables
        with tf.GradientTape() as tape:
            logits = tf.cast(model(images, training=True), tf.float32)
            per_example = self.loss.train(labels, logits)
            loss = tf.nn.compute_average_loss(per_example)  # / global batch
            if self.weight_decay and state.decayed:
                l2 = self.weight_decay * tf.add_n([tf.nn.l2_loss(v) for v in state.decayed])
                loss += tf.nn.scale_regularization_loss(l2)  # / replicas (grads are summed)
            scaled = optimizer.scale_loss(loss)
        grads = tape.gradient(scaled, trainable)
        optimizer.apply_gradients(zip(grads, trainable))
        if state.ema is not None:
            state.ema.apply(state.ema_vars)
        correct = self.loss.train_correct(labels, logits)
        return tf.stack([tf.reduce_sum(per_example), tf.reduce_sum(tf.cast(correct, tf.float32)),
                         tf.cast(tf.shape(logits)[0], tf.float32)])

    def _step(self, images, labels):
        return self.strategy.reduce("SUM", self.strategy.run(self._replica, (images, labels)),
                                    axis=None)

    def _loop(self, iterator, num_steps):
        # The stop flag is part of the loop condition, not a ``break``: AutoGraph turns a break
        # into a tf.cond around the rest of the body, and MirroredStrategy.run inside a cond
        # branch leaves unfed placeholders (found with --num_cpu_devices=2).
        totals, done = tf.zeros([3]), tf.constant(0)
        stop = self.stop if self.stop is not None else tf.constant(False)
        while tf.logical_and(done < num_steps, tf.logical_not(stop)):
            images, labels = next(iterator)
            totals += self.step(images, labels)
            done += 1
        return totals


class Evaluator:
    """Top-1, top-5 and loss of the (EMA) weights over one pass of an eval dataset."""

    def __init__(self, strategy: tf.distribute.Strategy, state: TrainState, *,
                 num_classes: int, jit: Optional[bool], dataset_fn: Callable[[], object],
                 loss: Optional[losses.Loss] = None):
        self.strategy, self.state, self.num_classes = strategy, state, num_classes
        self.loss = loss or losses.Loss()
        self.dataset = dataset_fn()
        self.step = tf.function(self._step, jit_compile=jit)

    def _replica(self, images, labels):
        logits = tf.cast(self.state.model(images, training=False), tf.float32)
        loss, top1, top5 = self.loss.evaluate(labels, logits, min(5, self.num_classes))
        return tf.stack([tf.reduce_sum(loss), tf.reduce_sum(tf.cast(top1, tf.float32)),
                         tf.reduce_sum(tf.cast(top5, tf.float32)),
                         tf.cast(tf.shape(labels)[0], tf.float32)])

    def _step(self, images, labels):
        return self.strategy.reduce("SUM", self.strategy.run(self._replica, (images, labels)),
                                    axis=None)

    def evaluate(self) -> Dict[str, object]:
        totals = np.zeros(4)
        # A redrawn line on a terminal (nothing in logs: count_lines=False); the job prints the result.
        with self.state.averaged_weights(), console.progress("evaluating", count_lines=False) as bar:
            for images, labels in self.dataset:
                totals += self.step(images, labels).numpy()
                bar.advance()
        count = max(totals[3], 1.0)
        return {"top_1_accuracy": totals[1] / count, "top_5_accuracy": totals[2] / count,
                "loss": totals[0] / count, "num_examples": int(totals[3]),
                "step": self.state.step, "weights": self.state.weights_kind}
