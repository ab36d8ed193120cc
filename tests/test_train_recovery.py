"""Runs that heal themselves (train/recovery.py): real train.main processes with NaN images
planted in their training batches by tests/nan_launcher.py (the trainer's own input pipeline,
wrapped; see there why not a config key). Tiny runs: Lite0 at 16 px, batch 8."""

import glob
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from train import checkpoints, loop, recovery
from train import config as config_lib
from train import plan as plan_lib
from train_helpers import ROOT, SMALL, check_ok, checkpoint_tensors, env, read_json

LAUNCHER = os.path.join(ROOT, "tests", "nan_launcher.py")
TINY = [f"--model_name={SMALL}", "--image_size=16", "--config=data.eval_image_size=16",
        "--train_batch_size=8", "--eval_batch_size=120", "--config=eval.every_epochs=null",
        "--config=data.seed=3", "--config=data.deterministic=true", "--config=runtime.seed=5",
        "--config=data.shuffle_buffer_size=64", "--config=runtime.log_every_steps=1",
        "--config=runtime.progress_bar=false", "--config=runtime.steps_per_loop=4",
        "--config=runtime.checkpoint_every_steps=4", "--config=runtime.checkpoint_every_secs=3600"]


def run_planted(nan_batches, *args):
    return subprocess.run([sys.executable, LAUNCHER, "--verbosity=0", *TINY, *args], cwd=ROOT,
                          env=env(NAN_BATCHES=nan_batches), capture_output=True, text=True,
                          timeout=900)


def checkpoint_steps(model_dir):
    return sorted(int(p[:-len(".index")].rsplit("-", 1)[1])
                  for p in glob.glob(os.path.join(model_dir, "ckpt-*.index")))


def assert_finite(path):
    tensors = checkpoint_tensors(path)  # reads every tensor: the checkpoint is intact
    assert tensors
    for name, value in tensors.items():
        if np.issubdtype(np.asarray(value).dtype, np.floating):
            assert np.isfinite(value).all(), f"{path}: {name} is not finite"


@pytest.mark.integration
def test_a_nan_batch_is_recovered_from_and_the_run_finishes(digits_dir, tmp_path):
    """Batch 5 (step 6) is NaN: the loop of steps 5-8 ends with loss nan, ckpt-4 is restored,
    training goes on with batch 8 (the bad batch is not replayed) and reaches step 16; no
    checkpoint and no evaluation ever saw the NaN weights."""
    model_dir = str(tmp_path / "run")
    proc = check_ok(run_planted("5", f"--model_dir={model_dir}", f"--data_dir={digits_dir}",
                                "--train_steps=16", "--recovery_max_trials=2"))
    ckpt4 = os.path.join(model_dir, "ckpt-4")
    assert (f"Training diverged at step 8 (loss nan; the mean over steps 5-8): recovery 1/2, "
            f"restored {ckpt4} (step 4); continuing with the next batches.") in proc.stdout
    assert proc.stdout.count("Training diverged") == 1
    assert checkpoint_steps(model_dir) == [0, 4, 8, 12, 16]
    for step in checkpoint_steps(model_dir):
        assert_finite(os.path.join(model_dir, f"ckpt-{step}"))
    results = read_json(model_dir, "eval_results.json")
    assert results["step"] == 16 and np.isfinite(results["loss"])


@pytest.mark.integration
def test_a_permanent_nan_stops_after_the_trials_and_keeps_the_checkpoints(digits_dir, tmp_path):
    """Every batch from 5 on is NaN: one recovery to ckpt-4, then exit 1 with the error naming
    the step and the loss; ckpt-0 and ckpt-4 (and the input position of ckpt-4) are intact,
    readable and finite, nothing later was written."""
    model_dir = str(tmp_path / "run")
    proc = run_planted("5-", f"--model_dir={model_dir}", f"--data_dir={digits_dir}",
                       "--train_steps=40", "--recovery_max_trials=1", "--mode=train")
    assert proc.returncode == 1, proc.stderr[-3000:]
    ckpt4 = os.path.join(model_dir, "ckpt-4")
    assert proc.stdout.count("Training diverged at step 8 (loss nan") == 1
    assert "recovery 1/1" in proc.stdout
    assert (f"error: Training diverged at step 8 (loss nan; the mean over steps 5-8) with no "
            f"recovery left (runtime.recovery_max_trials=1, 1 used). Nothing was saved from the "
            f"diverged state: the last good checkpoint is {ckpt4}.") in proc.stderr
    assert "Traceback" not in proc.stderr
    assert checkpoint_steps(model_dir) == [0, 4]
    for step in (0, 4):
        assert_finite(os.path.join(model_dir, f"ckpt-{step}"))
    assert os.path.exists(os.path.join(model_dir, "input", "ckpt-4.index"))
    assert not os.path.exists(os.path.join(model_dir, "lock.json"))  # released


# -------------------------------------------------------------- the guard, in-process


def test_guard_decisions_follow_model_gardens_rules(tmp_path):
    """-1 checks nothing; the bound applies from recovery_begin_steps, a non-finite loss always;
    with float16 loss scaling a non-finite loss with finite weights was a skipped step."""
    class State:  # what LossGuard reads of a TrainState
        def __init__(self):
            self.model = type("M", (), {"weights": [tf.Variable([1.0, 2.0])]})()
            self.optimizer = type("O", (), {"variables": [tf.Variable(0, dtype=tf.int64)]})()
            self.ema_shadows, self.best_top1 = [], tf.Variable(-1.0)

    store = checkpoints.CheckpointStore(str(tmp_path))

    def guard(**kw):
        args = dict(loss_upper_bound=100.0, max_trials=0, begin_steps=10, loss_scaled=False)
        return recovery.LossGuard(State(), store, **{**args, **kw})

    assert guard(max_trials=-1).problem(float("nan"), 20) is None
    assert guard().problem(float("nan"), 1) == "loss nan"
    assert guard().problem(1e3, 5) is None  # before recovery_begin_steps
    assert guard().problem(1e3, 10) == "loss 1000 above runtime.loss_upper_bound=100"
    assert guard().problem(2.5, 10) is None
    assert guard(loss_scaled=True).problem(float("inf"), 10) is None
    bad = guard(loss_scaled=True)
    bad.state.model.weights[0].assign([1.0, float("nan")])
    assert bad.problem(float("inf"), 10) == "loss inf, non-finite weights"
    assert bad.problem(2.5, 10) is None  # the loss is fine: the weights are checked before saves
    assert bad.state_problem(2.5) == "loss 2.5, non-finite weights"
    assert guard().state_problem(2.5) is None
    with pytest.raises(recovery.TrainingDivergedError, match="at step 8 \\(loss nan; the mean "
                       "over steps 5-8\\) with no recovery left \\(runtime.recovery_max_trials=0, "
                       "0 used\\)"):
        bad.recover("loss nan", 4, 8)


def test_an_iterator_made_after_a_recovery_does_not_replay_the_trained_batches(digits_dir,
                                                                               tmp_path):
    """A recovery that goes back a stage makes a new iterator for steps trained before: it must
    not read the saved input position (which would replay the batches after it, the bad ones
    among them) nor reuse a seed. Without a recovery the saved position is read (a resume)."""
    cfg = config_lib.apply(config_lib.Config(), {
        "model.name": SMALL, "data.image_size": 16, "data.data_dir": digits_dir,
        "train.batch_size": 8, "train.steps": 16, "data.seed": 3, "data.deterministic": True,
        "data.shuffle_buffer_size": 64})
    config_lib.validate(cfg)
    plan = plan_lib.make_plan(cfg, "train")
    store = checkpoints.CheckpointStore(str(tmp_path))
    inputs = loop.TrainInput(cfg, tf.distribute.get_strategy(), store, plan)
    assert inputs.checkpointed
    stage = plan.stages[0]

    def images(iterator, count):
        return [next(iterator)[0].numpy() for _ in range(count)]

    first = inputs.iterator(stage, 0)
    trained = images(first, 2)
    tf.train.Checkpoint(iterator=first).write(store.input_path(2))  # as ckpt-2 saves it
    trained += images(first, 4)
    np.testing.assert_array_equal(images(inputs.iterator(stage, 2), 1)[0], trained[2])
    for step, recoveries in ((2, 1), (0, 1), (2, 2)):  # (0: back to ckpt-0)
        after = images(inputs.iterator(stage, step, recovery=recoveries), 4)
        for batch in after:
            assert not any(np.array_equal(batch, old) for old in trained)
        trained += after
