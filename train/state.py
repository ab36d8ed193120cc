"""The train state: model, optimizer (with its learning-rate schedule), EMA shadows, dropout RNG
states and the best accuracy so far -- everything a checkpoint holds, built in one place.

EMA of the weights as the official code does it (tensorflow/tpu utils.get_ema_vars):
tf.train.ExponentialMovingAverage(decay, num_updates=step), i.e. decay
min(d, (1 + step) / (10 + step)), over the trainable weights and the BN moving statistics.
Keras' optimizer ``use_ema`` has neither the num_updates ramp nor the BN statistics, and
overwrites the weights at the end of ``fit``. Evaluation, the best checkpoint and the export
use the averaged weights.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Dict, List, Optional

import keras
import numpy as np
import tensorflow as tf
from absl import logging

import efficientnet_tf
from efficientnet_tf import fast
from train import config as config_lib
from train import distribute
from train import fine_tune
from train import optimizers as optimizers_lib
from train import schedules

@dataclasses.dataclass
class TrainState:
    """What training updates and a checkpoint restores (see :func:`build`)."""
    model: keras.Model
    optimizer: keras.optimizers.Optimizer
    schedule: schedules.WarmupDecaySchedule
    best_top1: tf.Variable
    ema: Optional[tf.train.ExponentialMovingAverage] = None
    ema_vars: List[tf.Variable] = dataclasses.field(default_factory=list)
    ema_shadows: List[tf.Variable] = dataclasses.field(default_factory=list)
    rng_states: List[tf.Variable] = dataclasses.field(default_factory=list)
    decayed: List[tf.Variable] = dataclasses.field(default_factory=list)  # get the L2 term
    optimizer_info: Dict[str, object] = dataclasses.field(default_factory=dict)  # run_info
    sync_bn: bool = False

    @property
    def step_variable(self) -> tf.Variable:
        return self.optimizer.iterations.value

    @property
    def step(self) -> int:
        return int(self.step_variable.numpy())

    @property
    def weights_kind(self) -> str:
        """'ema' when evaluation and export use the averages, else 'raw'."""
        return "ema" if self.ema is not None else "raw"

    def tracked(self) -> Dict[str, object]:
        """The objects a tf.train.Checkpoint saves, by name."""
        tracked = dict(model=self.model, optimizer=self.optimizer, best_top1=self.best_top1)
        if self.ema is not None:
            tracked["ema"] = self.ema_shadows
        # The dropout / drop-connect random states are variables too (not among model.weights):
        # restoring them makes a resumed run draw the masks the uninterrupted run would have.
        if self.rng_states:
            tracked["rng"] = self.rng_states
        return tracked

    @contextlib.contextmanager
    def averaged_weights(self):
        """The EMA averages in place of the weights inside the block (a no-op without EMA)."""
        if self.ema is None:
            yield
            return
        _swap(self.ema_vars, self.ema_shadows)
        try:
            yield
        finally:
            _swap(self.ema_vars, self.ema_shadows)


@tf.function
def _swap(variables, shadows):
    """Swaps weights and their averages in place (twice = back)."""
    for var, shadow in zip(variables, shadows):
        value = tf.identity(var.read_value())
        var.assign(shadow.read_value())
        shadow.assign(value)


def build(cfg: config_lib.Config, strategy: tf.distribute.Strategy, *, num_classes: int,
          precision: str, total_steps: int, steps_per_epoch: float,
          init_source=None) -> TrainState:
    """The model, optimizer and EMA of ``cfg`` under ``strategy`` (fresh or from init_source)."""
    train_cfg = cfg.train
    replicas = strategy.num_replicas_in_sync
    with strategy.scope():
        model = _model(cfg, num_classes)
        sync_bn = replicas > 1 if cfg.model.sync_bn is None else cfg.model.sync_bn
        if sync_bn:
            distribute.set_synchronized_bn(model)
        elif replicas > 1:
            # Keras updates BN moving statistics per replica (aggregation NONE), so without
            # synchronization the replicas' copies drift apart; the checkpoint keeps replica 0's.
            logging.warning("model.sync_bn=false with %d replicas: each replica keeps its own BN "
                            "moving statistics", replicas)
        if init_source is not None:
            fine_tune.load_init_weights(model, init_source,
                                        modules=cfg.model.init_checkpoint_modules)
        batch = train_cfg.batch_size
        schedule = schedules.WarmupDecaySchedule(
            schedules.scaled_learning_rate(train_cfg.base_learning_rate, batch),
            steps_per_epoch=steps_per_epoch,
            decay_type=train_cfg.lr_schedule, warmup_epochs=train_cfg.lr_warmup_epochs,
            decay_epochs=train_cfg.lr_decay_epochs, decay_factor=train_cfg.lr_decay_factor,
            total_steps=max(total_steps, 1),
            min_learning_rate=schedules.scaled_learning_rate(train_cfg.lr_min, batch))
        optimizer, optimizer_info = optimizers_lib.make_optimizer(train_cfg, schedule, model)
        if precision == "mixed_float16":
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        optimizer.build(model.trainable_variables)  # slots now, not inside the traced step
        state = TrainState(model, optimizer, schedule,
                           tf.Variable(-1.0, trainable=False, name="best_top1"), sync_bn=sync_bn,
                           optimizer_info=optimizer_info)
        if train_cfg.moving_average_decay > 0:
            state.ema_vars = fine_tune.ema_variables(model)
            state.ema = tf.train.ExponentialMovingAverage(train_cfg.moving_average_decay,
                                                          num_updates=state.step_variable)
            state.ema.apply(state.ema_vars)  # creates the shadows (= the weights at step 0)
            state.ema_shadows = [state.ema.average(v) for v in state.ema_vars]
    state.rng_states = [v.value for v in model.non_trainable_variables
                        if v.path.endswith("seed_generator_state")]
    # AdamW and LAMB decay inside the optimizer: no L2 loss term (an empty list turns it off).
    if optimizers_lib.OPTIMIZERS[train_cfg.optimizer].l2_loss:
        excluded = {id(v) for v in optimizers_lib.excluded_variables(
            model, train_cfg.weight_decay_exclude)}
        state.decayed = [v.value for v in model.trainable_weights if id(v) not in excluded]
    _print_optimizer(optimizer_info)
    return state


def _print_optimizer(info: Dict[str, object]) -> None:
    """The optimizer settings and the layer-decay scales in two lines (also in run_info.json)."""
    settings = ", ".join(f"{k} {v}" for k, v in info.items() if k != "layer_decay")
    print(f"Optimizer: {settings}", flush=True)
    if info.get("layer_decay"):
        print("Layer-wise learning-rate scales: " + ", ".join(
            f"{group} x{scale:.4g}" for group, scale in info["layer_decay"].items()), flush=True)


def _model(cfg: config_lib.Config, num_classes: int) -> keras.Model:
    model = efficientnet_tf.build_model(
        cfg.model.name, classes=num_classes, classifier_activation=None,
        dropout_rate=cfg.model.dropout_rate, drop_connect_rate=cfg.model.drop_connect_rate,
        bn_momentum=cfg.model.bn_momentum)
    if cfg.model.fused_bn:  # same layer names, variables and weights; faster steps
        model = fast.with_fused_batchnorm(model)
    if cfg.model.freeze_bn:
        # Fine-tuning on small data: batch statistics of a few similar images are far from
        # the pretrained moving statistics (the features move by ~95% on 8 photo tiles), so
        # BN runs in inference mode and its scale and offset stay as loaded.
        for layer in model.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False
    return model


def weights_digest(model: keras.Model) -> float:
    """Sum of |w| over all weights (float64): a cheap fingerprint to compare replicas/workers."""
    return float(sum(np.abs(np.asarray(v.numpy(), np.float64)).sum() for v in model.weights))
