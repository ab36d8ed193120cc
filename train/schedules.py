"""Learning-rate schedules of the official recipes, as a Keras LearningRateSchedule.

Semantics of tensorflow/tpu ``models/official/efficientnet/utils.py`` ``build_learning_rate``
and google/automl ``efficientnetv2/utils.py`` ``WarmupLearningRateSchedule``:

- exponential: ``peak * factor ** floor(step / (steps_per_epoch * decay_epochs))`` (staircase),
  counted from step 0, not from the end of the warm-up (so at the end of a 5-epoch warm-up the
  rate is already peak * 0.97**2 -- the official quirk, kept);
- cosine: ``0.5 * peak * (1 + cos(pi * step / total_steps))``; linear: ``peak * (1 - step /
  total_steps)``; constant: ``peak``;
- then ``max(lr, min_lr)``; during the first ``int(warmup_epochs * steps_per_epoch)`` steps the
  rate is ``peak * step / warmup_steps`` instead (linear from 0).

``steps_per_epoch`` is a float (num_train_images / batch_size), as in the official code.
"""

from __future__ import annotations

import math

import keras
from keras import ops

DECAY_TYPES = ("exponential", "cosine", "linear", "constant")


def scaled_learning_rate(base_learning_rate: float, global_batch_size: int) -> float:
    """The official linear scaling rule: ``base`` is the rate for 256 images per step."""
    return base_learning_rate * global_batch_size / 256.0


@keras.saving.register_keras_serializable(package="efficientnet_tf_train")
class WarmupDecaySchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up, then exponential (staircase), cosine, linear or constant decay."""

    def __init__(self, peak_learning_rate: float, steps_per_epoch: float,
                 decay_type: str = "exponential", warmup_epochs: float = 5.0,
                 decay_epochs: float = 2.4, decay_factor: float = 0.97,
                 total_steps: int | None = None, min_learning_rate: float = 0.0):
        if decay_type not in DECAY_TYPES:
            raise ValueError(f"decay_type={decay_type!r}; valid: {DECAY_TYPES}")
        if steps_per_epoch <= 0:
            raise ValueError(f"steps_per_epoch must be > 0, got {steps_per_epoch}")
        if decay_type in ("cosine", "linear") and not total_steps:
            raise ValueError(f"decay_type={decay_type!r} needs total_steps")
        self.peak_learning_rate = float(peak_learning_rate)
        self.steps_per_epoch = float(steps_per_epoch)
        self.decay_type = decay_type
        self.warmup_epochs = float(warmup_epochs)
        self.decay_epochs = float(decay_epochs)
        self.decay_factor = float(decay_factor)
        self.total_steps = int(total_steps) if total_steps else None
        self.min_learning_rate = float(min_learning_rate)

    @property
    def warmup_steps(self) -> int:
        return int(self.warmup_epochs * self.steps_per_epoch)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        peak = self.peak_learning_rate
        if self.decay_type == "exponential":
            decay_steps = self.steps_per_epoch * self.decay_epochs
            lr = peak * ops.power(self.decay_factor, ops.floor(step / decay_steps))
        elif self.decay_type == "cosine":
            lr = 0.5 * peak * (1.0 + ops.cos(math.pi * step / self.total_steps))
        elif self.decay_type == "linear":
            lr = peak * (1.0 - step / self.total_steps)
        else:
            lr = ops.convert_to_tensor(peak, "float32")
        if self.min_learning_rate:
            lr = ops.maximum(lr, self.min_learning_rate)
        if self.warmup_steps > 0:
            warmup_lr = peak * step / float(self.warmup_steps)
            lr = ops.where(step < self.warmup_steps, warmup_lr, lr)
        return lr

    def get_config(self):
        return {
            "peak_learning_rate": self.peak_learning_rate,
            "steps_per_epoch": self.steps_per_epoch,
            "decay_type": self.decay_type,
            "warmup_epochs": self.warmup_epochs,
            "decay_epochs": self.decay_epochs,
            "decay_factor": self.decay_factor,
            "total_steps": self.total_steps,
            "min_learning_rate": self.min_learning_rate,
        }
