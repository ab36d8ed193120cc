"""Runs that heal themselves: after each host call of ``runtime.steps_per_loop`` steps the
trainer asks :class:`LossGuard` whether training diverged -- a non-finite loss or state, or a
loss above ``runtime.loss_upper_bound`` -- and if so restores the last good checkpoint and
goes on with the next batches, at most ``runtime.recovery_max_trials`` times, then stops with
:class:`TrainingDivergedError`.

Semantics of TF Model Garden's trainer (tensorflow/models official/core/config_definitions.py
``TrainerConfig``: ``loss_upper_bound`` 1e6, ``recovery_begin_steps`` 0, ``recovery_max_trials``
0; official/core/base_trainer.py ``Recovery``): max trials < 0 checks nothing, 0 stops the run
at the first divergence, N > 0 restores up to N times; the bound applies from
``recovery_begin_steps`` on, a non-finite loss always counts. Our default is -1, not Model
Garden's 0: a run without the flags behaves as before (no check, nothing computed).
"""

from __future__ import annotations

import math
from typing import List, Optional

import keras
import tensorflow as tf
from absl import logging

from train import checkpoints
from train import state as state_lib


class TrainingDivergedError(RuntimeError):
    """Training diverged more often than ``runtime.recovery_max_trials`` allows; the
    checkpoints written before are intact."""


def float_variables(state: state_lib.TrainState) -> List[tf.Variable]:
    """Every floating-point variable a checkpoint of ``state`` holds (model, optimizer slots,
    EMA shadows, best top-1): what must be finite before it is saved or evaluated."""
    seen, out = set(), []
    candidates = (list(state.model.weights) + list(state.optimizer.variables)
                  + list(state.ema_shadows) + [state.best_top1])
    for var in candidates:
        var = var.value if isinstance(var, keras.Variable) else var  # the tf.Variable
        if var.dtype.is_floating and id(var) not in seen:
            seen.add(id(var))
            out.append(var)
    return out


class LossGuard:
    """Checks each loop of train steps; restores the last good checkpoint or raises."""

    def __init__(self, state: state_lib.TrainState, store: checkpoints.CheckpointStore, *,
                 loss_upper_bound: float, max_trials: int, begin_steps: int, loss_scaled: bool):
        self.state, self.store = state, store
        self.loss_upper_bound, self.max_trials, self.begin_steps = (
            loss_upper_bound, max_trials, begin_steps)
        # float16 loss scaling skips steps whose gradients are not finite (their loss may be):
        # a non-finite loss is then divergence only when the state itself turned non-finite.
        self.loss_scaled = loss_scaled
        self.trials = 0
        self._finite = None
        if self.enabled:  # off (the default): not even the list of variables
            variables = float_variables(state)
            self._finite = tf.function(
                lambda: tf.reduce_all([tf.reduce_all(tf.math.is_finite(v)) for v in variables]))

    @property
    def enabled(self) -> bool:
        return self.max_trials >= 0

    def state_is_finite(self) -> bool:
        return bool(self._finite().numpy())

    def problem(self, loss: Optional[float], step: int) -> Optional[str]:
        """Why the loop that ended at ``step`` with mean ``loss`` (None: no step counted)
        diverged, judged by the loss; None when it did not."""
        if not self.enabled:
            return None
        if loss is not None and math.isfinite(loss):
            if step >= self.begin_steps and loss > self.loss_upper_bound:
                return f"loss {loss:.6g} above runtime.loss_upper_bound={self.loss_upper_bound:g}"
            return None
        if self.loss_scaled or loss is None:
            if self.state_is_finite():  # float16 loss scaling skipped those steps
                logging.warning("Non-finite loss %s before step %d: float16 loss scaling "
                                "skipped those steps; the weights are finite.", loss, step)
                return None
            return f"loss {loss}, non-finite weights"
        return f"loss {loss}"

    def state_problem(self, loss: Optional[float]) -> Optional[str]:
        """Non-finite weights, optimizer slots or EMA behind a finite loss (a reduction over
        every variable: run before a checkpoint or an evaluation, not every loop)."""
        if not self.enabled or self.state_is_finite():
            return None
        return f"loss {loss:.6g}, non-finite weights" if loss is not None else "non-finite weights"

    def recover(self, problem: str, first: int, step: int) -> int:
        """Restores the newest checkpoint after the loop ``first``..``step`` diverged; returns
        its step. Raises TrainingDivergedError when no trial is left (or nothing to restore)."""
        self.trials += 1
        where = (f"at step {step} ({problem}; the mean over steps {first + 1}-{step})"
                 if step > first + 1 else f"at step {step} ({problem})")
        if self.trials > self.max_trials:
            kept = self.store.latest()
            raise TrainingDivergedError(
                f"Training diverged {where} with no recovery left (runtime.recovery_max_trials="
                f"{self.max_trials}, {self.trials - 1} used). Nothing was saved from the diverged "
                f"state: the last good "
                f"checkpoint is {kept or '(none)'}. Lower the learning rate, check the data, or "
                "raise --recovery_max_trials.")
        path = self.store.restore()
        if path is None:
            raise TrainingDivergedError(f"Training diverged {where} and there is no checkpoint "
                                        "to recover from")
        restored = self.state.step
        message = (f"Training diverged {where}: recovery {self.trials}/{self.max_trials}, "
                   f"restored {path} (step {restored}); continuing with the next batches.")
        logging.warning(message)
        print(f"\n{message}", flush=True)
        return restored
