"""Gradient checkpointing per block: a training forward pass that keeps only each block's input
and recomputes the block's activations in the backward pass (timm's ``set_grad_checkpointing``;
the mechanism of ``tf.recompute_grad``). Saved memory and cost: docs/training.md, "Small memory".

Why not ``tf.recompute_grad`` itself: it calls the block twice with nothing to tell the two
calls apart, so in training mode the recomputation would update the batch-norm moving statistics
a second time and draw new dropout/drop-connect masks (the gradients would then belong to a
different network than the forward). Here the recomputation first puts the block's state
variables (BN moving statistics, dropout seed states) back to what the forward saw, so the
stateless dropout ops draw the same masks, and afterwards restores what the forward left, so
each micro-batch updates the moving statistics exactly once.
"""

from __future__ import annotations

from typing import List

import keras
import tensorflow as tf

from efficientnet_tf import spec as spec_lib


class CheckpointedForward:
    """``model``'s forward pass cut into stem, blocks and head (shared layers, same weights),
    each block wrapped so that its activations are recomputed, not stored, for the gradient.

    Args:
        model: an efficientnet_tf classifier or feature model (one image input); its blocks are
            read from :func:`efficientnet_tf.spec.model_spec`.

    Calling it as ``forward(images, training=True)`` gives the model's outputs; with
    ``training=False`` it is the plain forward pass (nothing to recompute without a gradient).

    Raises:
        ValueError: a model with several inputs or without efficientnet_tf blocks.
    """

    def __init__(self, model: keras.Model):
        if len(model.inputs) != 1:
            raise ValueError(f"CheckpointedForward needs a single-input model, {model.name} has "
                             f"{len(model.inputs)}")
        spec = spec_lib.model_spec(model)
        self.model = model
        x = model.get_layer(spec.endpoints[spec_lib.ENDPOINT_STEM]).output
        self.stem = keras.Model(model.inputs[0], x, name=f"{model.name}_stem")
        self.blocks: List[keras.Model] = []
        for block in spec.blocks:
            out = model.get_layer(block.output).output
            self.blocks.append(keras.Model(x, out, name=f"{model.name}_{block.prefix.rstrip('_')}"))
            x = out
        self.head = keras.Model(x, model.output, name=f"{model.name}_head")

    def __call__(self, images, training=False):
        x = self.stem(images, training=training)
        for block in self.blocks:
            x = recomputed(block, x) if training else block(x, training=False)
        return self.head(x, training=training)


def _gradient_dependency(dy, x):
    """``x`` made to depend on the incoming gradient ``dy`` (adds zero): the recomputation
    cannot be merged with the forward pass (grappler's common-subexpression elimination) or
    scheduled before the backward pass reaches the block, which would keep its activations
    alive after all (the same guard tf.recompute_grad uses in graphs)."""
    first = tf.reshape(dy, [-1])[:1]
    zero = tf.where(tf.reduce_all(tf.math.is_nan(first)), float("nan"), 0.0)
    return x + tf.cast(zero, x.dtype)


def recomputed(block: keras.Model, x):
    """``block(x, training=True)`` whose internal activations are recomputed in the backward
    pass instead of being kept (a single-input, single-output sub-model)."""
    state = [v.value for v in block.non_trainable_variables]  # the tf.Variables
    # The state the forward starts from (a few numbers per layer), for the recomputation.
    before = [tf.identity(v.read_value()) for v in state]

    @tf.custom_gradient
    def run(inputs):
        outputs = block(inputs, training=True)

        def grad(dy, variables=None):
            variables = list(variables or [])
            after = [tf.identity(v.read_value()) for v in state]
            for v, value in zip(state, before):
                v.assign(value)
            with tf.GradientTape() as tape:
                again = _gradient_dependency(dy, inputs)
                tape.watch(again)
                tape.watch(variables)
                recomputed_outputs = block(again, training=True)
            grads = tape.gradient(recomputed_outputs, [again] + variables, output_gradients=dy,
                                  unconnected_gradients=tf.UnconnectedGradients.ZERO)
            # What the forward left behind: the moving statistics updated once, not twice.
            with tf.control_dependencies([g for g in grads if g is not None]):
                for v, value in zip(state, after):
                    v.assign(value)
            return grads[0], grads[1:]

        return outputs, grad

    return run(x)
