"""Small memory (#22): gradient accumulation (train.grad_accum_steps) gives the large batch's
update; gradient checkpointing (model.grad_checkpointing, efficientnet_tf/recompute.py) gives the
plain forward's gradients and BN statistics; both run in a real trainer process."""

import json
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from efficientnet_tf import fast, recompute, testing
from efficientnet_tf.spec import STEM_BN, STEM_CONV, model_spec
from train import config as config_lib
from train import main as train_main
from train import state as state_lib
from train import steps as steps_lib
from train_helpers import ROOT, SMALL, check_ok, env, read_json, run_main


def _state(seed=0, precision="float32", batch_size=32, **overrides):
    cfg = config_lib.apply(config_lib.Config(), {
        "model.name": SMALL, "train.batch_size": batch_size, "train.steps": 10,
        "model.freeze_bn": True, "model.dropout_rate": 0.0, "model.drop_connect_rate": 0.0,
        "train.lr_warmup_epochs": 0.0, "train.moving_average_decay": 0.99, **overrides})
    keras.utils.set_random_seed(seed)
    return state_lib.build(cfg, tf.distribute.get_strategy(), num_classes=10, precision=precision,
                           total_steps=10, steps_per_epoch=10.0)


def _batch(n=32, size=16, seed=0):
    rng = np.random.default_rng(seed)
    images = tf.constant(rng.uniform(size=(n, size, size, 3)).astype(np.float32))
    return images, tf.one_hot(rng.integers(0, 10, n), 10)


def _relative(got, want, start):
    """|(got - start) - (want - start)| / |want - start| over all arrays (float64)."""
    num = sum(np.sum((np.float64(g) - w) ** 2) for g, w in zip(got, want))
    den = sum(np.sum((np.float64(w) - s) ** 2) for w, s in zip(want, start))
    return float(np.sqrt(num / den))


def _one_step(images, labels, k, loop=None, precision="float32"):
    """One TrainSteps update of a fresh (seeded) state: {step, totals, weights, ema, start}."""
    state = _state(precision=precision)
    out = {"start": [v.numpy() for v in state.model.weights],
           "ema_start": [v.numpy() for v in state.ema_shadows],
           "trainable": len(state.model.trainable_variables)}
    train = steps_lib.TrainSteps(tf.distribute.get_strategy(), state, label_smoothing=0.1,
                                 weight_decay=1e-5, jit=False, grad_accum_steps=k, batch_size=32)
    if loop:
        assert train.micro_batch_loop == "while_loop"  # one device
        train.micro_batch_loop = loop
    out["totals"] = train.step(images, labels).numpy()
    out.update(step=state.step, weights=[v.numpy() for v in state.model.weights],
               ema=[v.numpy() for v in state.ema_shadows])
    return out


@pytest.mark.integration  # traces three train steps: over the fast tier's ~5 s
def test_accumulation_4x8_equals_one_step_of_32():
    """One update from 4 micro-batches of 8 is the update of the batch of 32 (BN frozen: its
    batch statistics would differ): weights, EMA shadows, step counter and metrics; the L2
    term and label smoothing included (the trainer's defaults). Both micro-batch loops: the
    tf.while_loop, and (2 x 16, to keep the traced graph small) the Python loop that the
    mirrored strategies get."""
    images, labels = _batch()
    want = _one_step(images, labels, 1)
    moved = [not np.array_equal(w, s) for w, s in zip(want["weights"], want["start"])]
    assert sum(moved) == want["trainable"] > 40  # the update is real; frozen BN stays put
    for k, loop in ((4, "while_loop"), (2, "python")):
        got = _one_step(images, labels, k, loop)
        assert got["step"] == want["step"] == 1  # one optimizer update, one EMA update
        assert got["totals"][2] == 32
        np.testing.assert_allclose(got["totals"], want["totals"], rtol=1e-5)  # loss, correct
        # measured ~1e-6 (float summation order)
        assert _relative(got["weights"], want["weights"], want["start"]) < 1e-3, loop
        assert _relative(got["ema"], want["ema"], want["ema_start"]) < 1e-3, loop


@pytest.mark.integration
def test_accumulation_under_float16_loss_scaling():
    """mixed_float16 with LossScaleOptimizer: the micro-batches' scaled gradients summed,
    unscaled and checked once give the large batch's update."""
    images, labels = _batch()
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        want = _one_step(images, labels, 1, precision="mixed_float16")
        got = _one_step(images, labels, 4, precision="mixed_float16")
    finally:
        keras.config.set_dtype_policy(previous)
    assert got["step"] == want["step"] == 1
    np.testing.assert_allclose(got["totals"], want["totals"], rtol=1e-2)
    assert _relative(got["weights"], want["weights"], want["start"]) < 2e-2  # float16 activations


@pytest.mark.integration  # traces a train step
def test_accumulation_updates_bn_statistics_once_per_micro_batch():
    """What docs/training.md says of BN under accumulation: each micro-batch is normalized
    with its own statistics and moves the moving statistics, k times per update."""
    momentum, k = 0.5, 2
    state = _state(batch_size=8, **{"model.freeze_bn": False, "model.bn_momentum": momentum})
    model = state.model
    images, labels = _batch(8, 16)
    stem = keras.Model(model.input, model.get_layer(STEM_CONV).output)  # the stem BN's input
    means = [np.mean(stem(part).numpy(), axis=(0, 1, 2)) for part in np.split(images.numpy(), k)]
    bn = model.get_layer(STEM_BN)
    start = bn.moving_mean.numpy()
    train = steps_lib.TrainSteps(tf.distribute.get_strategy(), state, label_smoothing=0.1,
                                 weight_decay=1e-5, jit=False, grad_accum_steps=k, batch_size=8)
    train.step(images, labels)
    want = start
    for mean in means:  # one moving-average update per micro-batch
        want = momentum * want + (1 - momentum) * mean
    np.testing.assert_allclose(bn.moving_mean.numpy(), want, rtol=1e-4, atol=1e-5)
    whole = momentum * start + (1 - momentum) * np.mean(means, axis=0)  # one update of 8
    assert not np.allclose(bn.moving_mean.numpy(), whole, rtol=1e-3, atol=1e-4)
    assert state.step == 1


def test_accumulation_flags_are_validated_before_work():
    cfg = config_lib.apply(config_lib.Config(), {"train.grad_accum_steps": 0})
    with pytest.raises(ValueError, match=r"train.grad_accum_steps \(--grad_accum_steps\)=0 must be >= 1"):
        config_lib.validate(cfg)
    cfg = config_lib.apply(config_lib.Config(), {"train.batch_size": 12, "train.grad_accum_steps": 8})
    with pytest.raises(ValueError, match=r"=8 does not divide train.batch_size \(--train_batch_size\)=12"):
        config_lib.validate(cfg)
    config_lib.validate(config_lib.apply(config_lib.Config(), {"train.batch_size": 16,
                                                               "train.grad_accum_steps": 8}))
    # Per replica: 16 over 4 replicas is 4 images, which 8 micro-batches cannot split.
    with pytest.raises(ValueError, match=r"=8 does not divide the per-replica batch: "
                                         r"train.batch_size=16 over 4 replica\(s\) is 4"):
        steps_lib.check_accumulation(16, 4, 8)
    steps_lib.check_accumulation(16, 2, 8)
    # The flags map onto the keys and are validated with them (train.main, before any work).
    with pytest.raises(ValueError, match=r"=3 does not divide train.batch_size \(--train_batch_size\)=8"):
        train_main.resolve_config({"train_batch_size": 8, "grad_accum_steps": 3}, [])
    cfg = train_main.resolve_config({"train_batch_size": 8, "grad_accum_steps": 2,
                                     "grad_checkpointing": True}, [])
    assert cfg.train.grad_accum_steps == 2 and cfg.model.grad_checkpointing is True
    with pytest.raises(ValueError, match=r"=8 does not divide the per-replica batch"):
        train_main.check_run(train_main.resolve_config(
            {"train_batch_size": 8, "grad_accum_steps": 8}, []), "train", "unused", None, None, 2)
    defaults = config_lib.Config()
    assert defaults.train.grad_accum_steps == 1 and defaults.model.grad_checkpointing is False


@pytest.mark.parametrize("batchnorm", [pytest.param("fused", marks=pytest.mark.integration),
                                       "keras"])
def test_recompute_gives_the_plain_gradients_and_bn_statistics(batchnorm):
    """B0 with drop-connect on: the checkpointed forward's gradients, loss and BN moving
    statistics after the step equal the plain model's (the recomputation draws the forward's
    drop-connect masks and does not update the statistics again). The trainer's fused BN in
    a tf.function (as TrainSteps runs it); Keras' BN (model.fused_bn=false) eagerly."""
    images, labels = _batch(8, 32)
    model = testing.seeded_model("efficientnet-b0", images, classes=10,
                                 classifier_activation=None, drop_connect_rate=0.5)
    if batchnorm == "fused":
        model = fast.with_fused_batchnorm(model)
    initial = [v.numpy() for v in model.weights + model.non_trainable_variables]

    def run(forward):
        def step():
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(keras.losses.categorical_crossentropy(
                    labels, forward(images, training=True), from_logits=True))
            return loss, tape.gradient(loss, model.trainable_variables)

        step = tf.function(step) if batchnorm == "fused" else step
        for v, value in zip(model.weights + model.non_trainable_variables, initial):
            v.assign(value)  # the same weights, statistics and dropout seed states
        loss, grads = step()
        return loss.numpy(), [g.numpy() for g in grads], [v.numpy() for v in model.weights], step

    loss, grads, after, step = run(model)
    # Not vacuous: the drop-connect masks matter (the next call draws others: another loss).
    assert step()[0].numpy() != pytest.approx(loss, rel=1e-4)
    loss_r, grads_r, after_r, _ = run(recompute.CheckpointedForward(model))
    assert loss_r == pytest.approx(loss, rel=1e-5)
    assert len(grads_r) == len(grads) == len(model.trainable_variables)
    norm = np.sqrt(sum(np.sum(np.float64(g) ** 2) for g in grads))
    diff = np.sqrt(sum(np.sum((np.float64(a) - b) ** 2) for a, b in zip(grads_r, grads)))
    assert diff / norm < 1e-4  # measured 0 (the same ops in the same order)
    for a, b, v in zip(after_r, after, model.weights):  # BN moving statistics updated once
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=v.path)
    assert any(not np.array_equal(a, b) for a, b in zip(after, initial))  # they did move


def test_checkpointed_forward_reads_the_blocks_from_the_spec():
    built = testing.seeded_model(SMALL, _batch(2, 16)[0], classes=10)
    forward = recompute.CheckpointedForward(built)
    assert len(forward.blocks) == len(model_spec(built).blocks)
    # The parts share the model's layers and variables: nothing is copied.
    assert {id(v) for v in built.weights} == {
        id(v) for part in (forward.stem, *forward.blocks, forward.head) for v in part.weights}
    images = _batch(2, 16)[0]
    np.testing.assert_allclose(forward(images, training=False), built(images, training=False),
                               rtol=1e-5, atol=1e-6)


# The one-replica trainer process with --grad_accum_steps and --grad_checkpointing runs together
# with the large-batch flags: tests/test_train_optimizers.py
# test_lars_run_with_clipping_layer_decay_accumulation_and_checkpointing.


# Two logical CPUs trace the step once per replica and micro-batch (measured 5 min of wall
# time on a loaded 2-core machine): slow tier. Covers the Python micro-batch loop with
# synchronized BN and the recomputation under MirroredStrategy.
@pytest.mark.slow
def test_train_main_with_accumulation_and_checkpointing_on_two_replicas(digits_dir, tmp_path):
    model_dir = str(tmp_path / "run")
    check_ok(run_main(
        f"--model_dir={model_dir}", f"--data_dir={digits_dir}", f"--model_name={SMALL}",
        "--image_size=16", "--train_batch_size=8", "--train_steps=2", "--mode=train",
        "--grad_accum_steps=2", "--grad_checkpointing", "--num_cpu_devices=2",
        "--config=runtime.steps_per_loop=2"))
    info = read_json(model_dir, "run_info.json")
    assert (info["strategy"], info["replicas"], info["sync_bn"]) == ("MirroredStrategy", 2, True)
    assert tf.train.latest_checkpoint(model_dir).endswith("ckpt-2")


# Builds and trains B4 at 224 px in two processes (minutes on 2 cores): the figure in
# docs/training.md comes from `python -m bench.grad_checkpointing`; this rechecks the saving.
@pytest.mark.slow
def test_checkpointing_lowers_peak_memory_on_b4(tmp_path):
    output = str(tmp_path / "memory.json")
    proc = subprocess.run([sys.executable, "-m", "bench.grad_checkpointing", "--steps=2",
                           "--cases=plain,grad_checkpointing", f"--output={output}"],
                          cwd=ROOT, env=env(), capture_output=True, text=True, timeout=1800)
    check_ok(proc)
    with open(output) as f:
        results = json.load(f)["results"]
    plain, checkpointed = results["plain"], results["grad_checkpointing"]
    # Measured (B4, 224 px, batch 8): see bench/results/grad_checkpointing.json.
    assert checkpointed["step_peak_mib"] < 0.7 * plain["step_peak_mib"]
