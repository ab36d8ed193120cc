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

from efficientnet_tf import console, recompute
from train import distribute, losses
from train.state import TrainState


def check_accumulation(batch_size: int, replicas: int, grad_accum_steps: int) -> None:
    """Raises distribute.ReplicaSplitError (a ValueError) unless ``grad_accum_steps`` >= 1
    divides the per-replica batch."""
    k = grad_accum_steps
    if k < 1:
        raise distribute.ReplicaSplitError(
            f"train.grad_accum_steps (--grad_accum_steps)={k} must be >= 1")
    if batch_size % replicas or (batch_size // replicas) % k:
        raise distribute.ReplicaSplitError(
            f"train.grad_accum_steps (--grad_accum_steps)={k} does not divide the per-replica "
            f"batch: train.batch_size={batch_size} over {replicas} replica(s) is "
            f"{batch_size / replicas:g} per replica")


def _split(x, k):
    """[n, ...] -> [k, n / k, ...], keeping the static dimensions static."""
    dims = [d if d is not None else tf.shape(x)[j] for j, d in enumerate(x.shape)]
    return tf.reshape(x, [k, dims[0] // k, *dims[1:]])


class TrainSteps:
    """``loop(iterator, num_steps)`` runs up to num_steps train steps in one host call and
    returns the summed [loss, correct, examples]; it stops early when ``stop`` (a boolean
    variable, set from a signal handler's thread) turns true between two steps.

    ``grad_accum_steps`` k > 1 splits each replica's batch into k micro-batches whose gradients
    are summed before the one optimizer update (the same update as the whole batch, BN aside);
    ``grad_checkpointing`` recomputes each block's activations in the backward pass
    (:class:`efficientnet_tf.recompute.CheckpointedForward`).

    Raises:
        ValueError: k < 1, or a per-replica batch not divisible by k (checked here when the
            global ``batch_size`` is given, else when the first step is traced).
    """

    def __init__(self, strategy: tf.distribute.Strategy, state: TrainState, *,
                 label_smoothing: float, weight_decay: float, jit: Optional[bool],
                 stop: Optional[tf.Variable] = None, loss: Optional[losses.Loss] = None,
                 grad_accum_steps: int = 1, grad_checkpointing: bool = False,
                 batch_size: Optional[int] = None):
        self.strategy, self.state = strategy, state
        self.weight_decay = weight_decay
        self.loss = loss or losses.Loss(label_smoothing=label_smoothing)  # train/losses.py (#22)
        self.stop = stop
        check_accumulation(batch_size or grad_accum_steps * strategy.num_replicas_in_sync,
                           strategy.num_replicas_in_sync, grad_accum_steps)
        self.grad_accum_steps = grad_accum_steps
        # How the micro-batches run: a tf.while_loop (one copy of the step in the graph), or
        # under the mirrored strategies a Python loop (k copies): there synchronized BN's
        # cross-replica reduction inside a loop body is a merge_call they reject (found with
        # --num_cpu_devices=2).
        mirrored = isinstance(strategy, (tf.distribute.MirroredStrategy,
                                         tf.distribute.MultiWorkerMirroredStrategy))
        self.micro_batch_loop = "python" if mirrored else "while_loop"
        self.forward = (recompute.CheckpointedForward(state.model) if grad_checkpointing
                        else state.model)
        self.step = tf.function(self._step, jit_compile=jit)
        self.loop = tf.function(self._loop)

    def _per_example_loss(self, labels, logits):
        """The training loss of each example (float32 logits; train/losses.py)."""
        return self.loss.train(labels, logits)

    def _regularization(self):
        """weight_decay * sum(l2_loss(w)) over the decayed weights, / replicas (grads are
        summed); None without weight decay."""
        state = self.state
        if not (self.weight_decay and state.decayed):
            return None
        l2 = self.weight_decay * tf.add_n([tf.nn.l2_loss(v) for v in state.decayed])
        return tf.nn.scale_regularization_loss(l2)

    def _metrics(self, labels, logits, per_example):
        correct = self.loss.train_correct(labels, logits)
        return tf.stack([tf.reduce_sum(per_example), tf.reduce_sum(tf.cast(correct, tf.float32)),
                         tf.cast(tf.shape(logits)[0], tf.float32)])

    def _replica(self, images, labels):
        state = self.state
        optimizer, trainable = state.optimizer, state.model.trainable_variables
        if self.grad_accum_steps == 1:
            with tf.GradientTape() as tape:
                logits = tf.cast(self.forward(images, training=True), tf.float32)
                per_example = self._per_example_loss(labels, logits)
                loss = tf.nn.compute_average_loss(per_example)  # / global batch
                regularization = self._regularization()
                if regularization is not None:
                    loss += regularization
                scaled = optimizer.scale_loss(loss)
            grads = tape.gradient(scaled, trainable)
            metrics = self._metrics(labels, logits, per_example)
        else:
            grads, metrics = self._accumulated_gradients(images, labels)
        optimizer.apply_gradients(zip(grads, trainable))  # the step counter: once per update
        if state.ema is not None:
            state.ema.apply(state.ema_vars)
        return metrics

    def _accumulated_gradients(self, images, labels):
        """The gradients of the whole replica batch's loss as the sum over k micro-batches,
        one micro-batch's activations alive at a time, and the summed metrics."""
        k, state = self.grad_accum_steps, self.state
        optimizer, trainable = state.optimizer, state.model.trainable_variables
        replicas = self.strategy.num_replicas_in_sync
        if images.shape[0] is not None:  # static (drop_remainder, XLA): checked when traced
            check_accumulation(images.shape[0] * replicas, replicas, k)
        images, labels = _split(images, k), _split(labels, k)
        # Each micro-batch's mean loss is over the global batch, so that the k gradients sum
        # to the gradient of the large batch's mean (and the learning rate stays the batch's).
        global_batch = tf.shape(images)[0] * tf.shape(images)[1] * replicas

        def micro_step(i, sums, metrics):
            with tf.GradientTape() as tape:
                logits = tf.cast(self.forward(images[i], training=True), tf.float32)
                per_example = self._per_example_loss(labels[i], logits)
                loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)
                scaled = optimizer.scale_loss(loss)
            grads = tape.gradient(scaled, trainable)
            sums = [s if g is None else s + tf.convert_to_tensor(g) for s, g in zip(sums, grads)]
            return i + 1, sums, metrics + self._metrics(labels[i], logits, per_example)

        with tf.GradientTape() as tape:  # the L2 term once per update, not per micro-batch
            regularization = self._regularization()
            scaled = None if regularization is None else optimizer.scale_loss(regularization)
        grads = tape.gradient(scaled, trainable) if scaled is not None else [None] * len(trainable)
        carry = (tf.constant(0), [tf.zeros(v.shape, v.dtype) if g is None else
                                  tf.convert_to_tensor(g) for v, g in zip(trainable, grads)],
                 tf.zeros([3]))
        if self.micro_batch_loop == "while_loop":
            # parallel_iterations=1: the next micro-batch starts when this one's gradients
            # exist, so one micro-batch's activations are alive at a time.
            carry = tf.while_loop(lambda i, *_: i < k, micro_step, carry, parallel_iterations=1)
        else:
            for _ in range(k):
                with tf.control_dependencies(carry[1]):  # after the previous backward
                    carry = (tf.identity(carry[0]), *carry[1:])
                carry = micro_step(*carry)
        return carry[1], carry[2]

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
