"""train/steps.py as TPUStrategy would run it: XLA-compiled (jit_compile) bfloat16 train and eval
steps with static shapes, a few steps on CPU. Small (Lite0 at 16 px, batch 4) but the real
steps, state and input pipeline of the trainer."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from train import config as config_lib
from train import input_pipeline
from train import state as state_lib
from train import steps as steps_lib
from train_helpers import SMALL


@pytest.fixture
def bfloat16_policy():
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


# XLA compiles Lite0's train step (forward and backward) on CPU: measured 110 s of CPU time
# (350 s on a loaded 2-core machine), beyond the default tier's budget.
@pytest.mark.slow
def test_xla_bfloat16_train_and_eval_steps_on_cpu(digits_dir, bfloat16_policy):
    cfg = config_lib.apply(config_lib.Config(), {
        "model.name": SMALL, "train.batch_size": 4, "train.steps": 3,
        "train.moving_average_decay": 0.99, "runtime.precision": "mixed_bfloat16"})
    strategy = tf.distribute.get_strategy()
    state = state_lib.build(cfg, strategy, num_classes=10, precision="mixed_bfloat16",
                            total_steps=3, steps_per_epoch=359.25)
    assert state.model.layers[5].compute_dtype == "bfloat16"
    train = input_pipeline.build_dataset(input_pipeline.PipelineSpec(
        "sklearn_digits", "train", digits_dir, is_training=True, image_size=16, batch_size=4,
        num_classes=10, deterministic=True, shuffle_buffer_size=64, download=False))
    evaluate = input_pipeline.build_dataset(input_pipeline.PipelineSpec(
        "sklearn_digits", "test", digits_dir, image_size=16, batch_size=4, drop_remainder=True,
        deterministic=True, download=False))
    # Static shapes, as TPU programs need: the batch dimension is known.
    assert train.element_spec[0].shape == (4, 16, 16, 3)
    assert evaluate.element_spec[0].shape == (4, 16, 16, 3)

    train_steps = steps_lib.TrainSteps(strategy, state, label_smoothing=0.1,
                                       weight_decay=1e-5, jit=True)
    iterator = iter(train)
    # jit_compile=True: each step is one XLA program (TPUStrategy compiles the same function);
    # an op XLA cannot compile, or a dynamic shape it cannot bound, fails here.
    totals = train_steps.loop(iterator, tf.constant(3)).numpy()
    assert state.step == 3 and totals[2] == 12
    loss = totals[0] / totals[2]
    assert np.isfinite(loss) and 1.0 < loss < 20.0, loss  # cross-entropy of 10 classes, fresh

    evaluator = steps_lib.Evaluator(strategy, state, num_classes=10, jit=True,
                                    dataset_fn=lambda: evaluate.take(3))
    results = evaluator.evaluate()
    assert results["num_examples"] == 12 and results["step"] == 3 and results["weights"] == "ema"
    assert np.isfinite(results["loss"]) and 0.0 <= results["top_1_accuracy"] <= 1.0
