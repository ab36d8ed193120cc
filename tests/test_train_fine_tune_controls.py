"""Fine-tuning controls (#22): --freeze_backbone_steps (a real trainer process; its weights
read back from the checkpoints it wrote) and --init_checkpoint_modules=backbone, with their
validation."""

import os
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf

import efficientnet_tf
from efficientnet_tf import spec
from train import checkpoints, fine_tune, main, recovery
from train import config as config_lib
from train_helpers import SMALL, check_ok, checkpoint_tensors, run_main

TINY = [f"--model_name={SMALL}", "--image_size=16", "--config=data.eval_image_size=16",
        "--train_batch_size=8", "--eval_batch_size=120", "--config=data.seed=3",
        "--config=data.deterministic=true", "--config=runtime.seed=5",
        "--config=data.shuffle_buffer_size=64", "--config=runtime.progress_bar=false",
        "--config=runtime.steps_per_loop=4", "--config=runtime.checkpoint_every_steps=2",
        "--config=runtime.checkpoint_every_secs=3600", "--mode=train", "--train_steps=12",
        "--freeze_backbone_steps=6"]
CLASSIFIER = "predictions"  # efficientnet_tf.spec.CLASSIFIER (checked below)


def layer_weights(path, classes=10):
    """{'<layer>/<variable>': value} of the trainer's checkpoint ``path`` (raw weights)."""
    model = efficientnet_tf.build_model(SMALL, classes=classes, classifier_activation=None)
    tf.train.Checkpoint(model=model).read(path).expect_partial()
    return {f"{layer.name}/{var.name}": var.numpy() for layer in model.layers
            for var in layer.weights}


def split(weights):
    head = {k: v for k, v in weights.items() if k.startswith(CLASSIFIER + "/")}
    return head, {k: v for k, v in weights.items() if k not in head}


@pytest.fixture(scope="module")
def frozen_run(digits_dir, tmp_path_factory):
    model_dir = str(tmp_path_factory.mktemp("freeze") / "run")
    proc = check_ok(run_main(f"--model_dir={model_dir}", f"--data_dir={digits_dir}", *TINY))
    return model_dir, proc


@pytest.mark.integration
def test_backbone_stays_bit_identical_until_step_n_then_trains(frozen_run):
    """12 steps, --freeze_backbone_steps=6: at step 6 every backbone weight and BN moving
    statistic equals step 0 while the classifier moved; at step 12 the backbone moved too."""
    assert spec.CLASSIFIER == CLASSIFIER
    model_dir, proc = frozen_run
    assert ("Backbone frozen until step 6 (--freeze_backbone_steps): training the classifier "
            "only, batch norm in inference mode") in proc.stdout
    assert "Backbone unfrozen at step 6: training all layers" in proc.stdout
    start, frozen, end = (split(layer_weights(os.path.join(model_dir, f"ckpt-{s}")))
                          for s in (0, 6, 12))
    assert len(start[1]) > 200 and any("moving_mean" in k for k in start[1])
    for name, value in start[1].items():
        np.testing.assert_array_equal(frozen[1][name], value, err_msg=name)
    for name, value in start[0].items():
        assert not np.array_equal(frozen[0][name], value), name
    moved = [k for k, v in start[1].items() if not np.array_equal(end[1][k], v)]
    assert "stem_conv/kernel" in moved and "top_bn/moving_mean" in moved


@pytest.mark.slow
def test_resume_across_the_freeze_boundary_ends_like_the_uninterrupted_run(frozen_run, digits_dir,
                                                                          tmp_path):
    """Rerun from ckpt-4 (before N: frozen, unfreezes at 6) and from ckpt-6 (at N: unfrozen
    from the start): both end bit-identical to the uninterrupted run. Not in CI (two more
    trainer processes): pytest -m slow tests/test_train_fine_tune_controls.py"""
    model_dir, _ = frozen_run
    expected = checkpoint_tensors(os.path.join(model_dir, "ckpt-12"))
    for resume_at, frozen_first in ((4, True), (6, False)):
        copy = str(tmp_path / f"from{resume_at}")
        shutil.copytree(model_dir, copy)
        for folder in (copy, os.path.join(copy, "input")):
            for name in os.listdir(folder):
                if name.startswith("ckpt-") and int(name.split("-")[1].split(".")[0]) > resume_at:
                    os.remove(os.path.join(folder, name))
        os.remove(os.path.join(copy, "checkpoint"))  # the trainer finds ckpt-N on disk
        latest = os.path.join(copy, f"ckpt-{resume_at}")
        proc = check_ok(run_main(f"--model_dir={copy}", f"--data_dir={digits_dir}", *TINY))
        assert f"Resuming from {latest} (step {resume_at})" in proc.stdout
        assert ("Backbone frozen until step 6" in proc.stdout) == frozen_first
        assert ("Backbone unfrozen at step 6" in proc.stdout) == frozen_first
        final = checkpoint_tensors(os.path.join(copy, "ckpt-12"))
        assert final.keys() == expected.keys()
        for name in expected:
            np.testing.assert_array_equal(final[name], expected[name], err_msg=name)


# ------------------------------------------------------------------------- in-process


def test_freeze_trains_the_classifier_only_and_restores_each_layers_own_trainable():
    model = efficientnet_tf.build_model(SMALL, classes=3, input_shape=(16, 16, 3))
    model.get_layer("stem_bn").trainable = False  # as model.freeze_bn sets it
    everything = len(model.trainable_variables)
    freeze = fine_tune.BackboneFreeze(model, 6)
    assert freeze.apply(0) and not freeze.apply(5)
    assert [v.path for v in model.trainable_variables] == [
        v.path for v in model.get_layer(CLASSIFIER).trainable_variables]
    assert freeze.boundary(2) == 6 and freeze.boundary(6) is None
    assert freeze.apply(6) and len(model.trainable_variables) == everything
    assert not model.get_layer("stem_bn").trainable and model.get_layer("stem_conv").trainable
    whole = fine_tune.BackboneFreeze(model, -1)
    assert whole.apply(10**6) and whole.boundary(0) is None
    assert not fine_tune.BackboneFreeze(model, 0).apply(0)
    assert isinstance(model.get_layer(CLASSIFIER), keras.layers.Dense)


@pytest.mark.integration  # three Lite0 builds: over the fast tier's ~5 s per test
def test_backbone_only_init_keeps_the_fresh_classifier_even_when_classes_match(capsys):
    """--init_checkpoint_modules=backbone: every layer but the classifier (weights and BN
    statistics) equals the source, the classifier equals a fresh init with the same seed."""
    def build(seed):
        keras.utils.set_random_seed(seed)
        return efficientnet_tf.build_model(SMALL, classes=10, input_shape=(16, 16, 3))

    source = build(0)
    source.name = "source"
    rng = np.random.default_rng(0)
    for var in source.weights:  # BN statistics too (fresh ones are all 0 / 1)
        var.assign(rng.uniform(0.5, 1.5, var.shape).astype(np.float32))
    fresh, model = build(1), build(1)
    fine_tune.load_init_weights(model, source, modules="backbone")
    for layer in model.layers:
        like = fresh if layer.name == CLASSIFIER else source
        for var, want in zip(layer.weights, like.get_layer(layer.name).weights):
            np.testing.assert_array_equal(var.numpy(), want.numpy(), err_msg=var.path)
    assert model.get_layer(CLASSIFIER).weights
    assert ("Initialized the backbone from source; the classifier keeps its fresh "
            "initialisation (--init_checkpoint_modules=backbone)") in capsys.readouterr().out


@pytest.mark.parametrize("flags, message", [
    ({"init_checkpoint_modules": "head"}, "--init_checkpoint_modules (model.init_checkpoint_modules)="
                                          "'head' is not valid; valid values: all, backbone"),
    ({"init_checkpoint_modules": "backbone"}, "--init_checkpoint_modules=backbone needs "
                                              "--init_weights (model.init_weights)"),
    ({"freeze_backbone_steps": -2}, "--freeze_backbone_steps (train.freeze_backbone_steps)=-2 is "
                                    "not valid; valid values: 0 (off), N > 0"),
    ({"recovery_max_trials": -3}, "--recovery_max_trials (runtime.recovery_max_trials)=-3 is not "
                                  "valid; valid values: -1 (off, the default), 0 (stop"),
    ({"loss_upper_bound": float("nan")}, "--loss_upper_bound (runtime.loss_upper_bound)=nan must"),
    ({"recovery_begin_steps": -1}, "--recovery_begin_steps (runtime.recovery_begin_steps)=-1 must"),
])
def test_bad_values_name_the_flag_and_the_valid_ones(flags, message):
    with pytest.raises(ValueError) as err:
        main.resolve_config(flags, [])
    assert message in str(err.value)


def test_defaults_are_off_and_the_default_run_pays_no_state_check(tmp_path):
    """Existing runs do not change (#22): nothing frozen, all weights initialised, and the
    divergence guard off (-1, where Model Garden's default is 0): it neither judges a NaN loss
    nor reduces over the variables before a save. Explicit values are recorded."""
    cfg = main.resolve_config({"init_weights": "imagenet", "init_checkpoint_modules": "backbone",
                               "freeze_backbone_steps": 100, "recovery_max_trials": 3}, [])
    assert "init_checkpoint_modules: backbone" in config_lib.to_yaml(cfg)
    assert "freeze_backbone_steps: 100" in config_lib.to_yaml(cfg)
    assert "recovery_max_trials: 3" in config_lib.to_yaml(cfg)
    default = config_lib.Config()
    assert (default.model.init_checkpoint_modules, default.train.freeze_backbone_steps) == ("all", 0)
    r = default.runtime
    assert (r.loss_upper_bound, r.recovery_begin_steps, r.recovery_max_trials) == (1e6, 0, -1)

    class NanState:  # what LossGuard would read of a TrainState, already diverged
        model = type("M", (), {"weights": [tf.Variable([float("nan")])]})()
        optimizer = type("O", (), {"variables": []})()
        ema_shadows, best_top1 = [], tf.Variable(-1.0)

    guard = recovery.LossGuard(NanState(), checkpoints.CheckpointStore(str(tmp_path)),
                               loss_upper_bound=r.loss_upper_bound, max_trials=r.recovery_max_trials,
                               begin_steps=r.recovery_begin_steps, loss_scaled=True)
    assert not guard.enabled

    def reduce_over_the_variables():
        raise AssertionError("the default run checked the state")

    guard.state_is_finite = reduce_over_the_variables
    assert guard.problem(float("nan"), 8) is None and guard.problem(None, 8) is None
    assert guard.state_problem(2.5) is None
