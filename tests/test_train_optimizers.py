"""Large-batch optimizers, gradient clipping and layer-wise learning-rate decay (#22).

Each optimizer's steps are compared with a numpy transcription of its published algorithm
(not with our code); clipping and layer decay are checked as exact arithmetic on the update.
"""

import json
import os
import re
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
import yaml

import efficientnet_tf
from train import config as config_lib
from train import main as train_main
from train import optimizers as opt_lib
from train_helpers import ROOT, SMALL, check_ok, env, read_json, run_main

RNG = np.random.default_rng(0)
W0 = RNG.normal(size=(3, 4)).astype(np.float32)  # a kernel: adapted and decayed
B0 = RNG.normal(size=(4,)).astype(np.float32)  # a bias: excluded from both
GRADS = [(RNG.normal(size=(3, 4)).astype(np.float32), RNG.normal(size=(4,)).astype(np.float32))
         for _ in range(2)]


def _two_steps(name, lr, **hyper):
    """Two steps of the table's ``name`` on (kernel, bias), the bias excluded; returns both."""
    w, b = keras.Variable(W0, name="kernel"), keras.Variable(B0, name="bias")
    spec = opt_lib.OPTIMIZERS[name]
    t = config_lib.TrainConfig(optimizer=name)
    optimizer = spec.build(t, lr, {**spec.hyper(t), **hyper}, [b])
    for gw, gb in GRADS:
        optimizer.apply_gradients([(tf.constant(gw), w), (tf.constant(gb), b)])
    return w.numpy(), b.numpy()


def test_lars_takes_the_tensorflow_tpu_steps():
    lr, mu, wd, eeta = 0.1, 0.9, 0.01, 0.02
    got = _two_steps("lars", lr, optimizer_weight_decay=wd, trust_coefficient=eeta)
    # You et al. 2017 as tensorflow/tpu lars_optimizer.py: trust ratio with the decay inside,
    # momentum on the scaled update; skip-listed variables: plain momentum, no decay.
    w, b = W0.astype(np.float64), B0.astype(np.float64)
    mw, mb = np.zeros_like(w), np.zeros_like(b)
    for gw, gb in GRADS:
        trust = eeta * np.linalg.norm(w) / (np.linalg.norm(gw) + wd * np.linalg.norm(w))
        mw = mu * mw + lr * trust * (gw + wd * w)
        w = w - mw
        mb = mu * mb + lr * gb
        b = b - mb
    np.testing.assert_allclose(got[0], w, rtol=1e-5)
    np.testing.assert_allclose(got[1], b, rtol=1e-5)


def _adam_moments(g, m, v, t, b1, b2):
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    return m, v, m / (1 - b1 ** t), v / (1 - b2 ** t)


def test_lamb_takes_the_paper_steps():
    lr, wd, b1, b2, eps = 0.01, 0.1, 0.9, 0.999, 1e-6
    got = _two_steps("lamb", lr, optimizer_weight_decay=wd)
    # You et al. 2019, Algorithm 2 (phi = identity): r = m_hat / (sqrt(v_hat) + eps) + wd * w,
    # w -= lr * |w| / |r| * r; the excluded bias: r without decay, no trust ratio.
    w, b = W0.astype(np.float64), B0.astype(np.float64)
    state = {"w": [0.0, 0.0], "b": [0.0, 0.0]}
    for t, (gw, gb) in enumerate(GRADS, start=1):
        mw, vw, m_hat, v_hat = _adam_moments(gw, *state["w"], t, b1, b2)
        state["w"] = [mw, vw]
        r = m_hat / (np.sqrt(v_hat) + eps) + wd * w
        w = w - lr * np.linalg.norm(w) / np.linalg.norm(r) * r
        mb, vb, m_hat, v_hat = _adam_moments(gb, *state["b"], t, b1, b2)
        state["b"] = [mb, vb]
        b = b - lr * m_hat / (np.sqrt(v_hat) + eps)
    np.testing.assert_allclose(got[0], w, rtol=1e-5)
    np.testing.assert_allclose(got[1], b, rtol=1e-5)


def test_adamw_takes_the_decoupled_steps():
    lr, wd, b1, b2, eps = 0.01, 0.05, 0.9, 0.999, 1e-8
    got = _two_steps("adamw", lr, optimizer_weight_decay=wd)
    # Loshchilov & Hutter, Algorithm 2, with the decay scaled by the learning rate as
    # torch.optim.AdamW (timm) does: w -= lr * wd * w, then the Adam step.
    w, b = W0.astype(np.float64), B0.astype(np.float64)
    state = {"w": [0.0, 0.0], "b": [0.0, 0.0]}
    for t, (gw, gb) in enumerate(GRADS, start=1):
        w = w - lr * wd * w
        mw, vw, m_hat, v_hat = _adam_moments(gw, *state["w"], t, b1, b2)
        state["w"] = [mw, vw]
        w = w - lr * m_hat / (np.sqrt(v_hat) + eps)
        mb, vb, m_hat, v_hat = _adam_moments(gb, *state["b"], t, b1, b2)
        state["b"] = [mb, vb]
        b = b - lr * m_hat / (np.sqrt(v_hat) + eps)
    np.testing.assert_allclose(got[0], w, rtol=1e-5)
    np.testing.assert_allclose(got[1], b, rtol=1e-5)


# ------------------------------------------------------------------------ clipping


def _sgd_step(grads, *, clip=None, loss_scale=None):
    variables = [keras.Variable(W0), keras.Variable(B0)]
    optimizer, info = opt_lib.make_optimizer(
        config_lib.TrainConfig(optimizer="sgd", grad_clip_norm=clip), 0.5)
    if loss_scale:
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer, initial_scale=loss_scale)
        grads = [g * loss_scale for g in grads]  # what the tape gives for a scaled loss
    optimizer.build(variables)
    tf.function(lambda: optimizer.apply_gradients(zip(map(tf.constant, grads), variables)))()
    assert info["grad_clip_norm"] == clip
    return [v.numpy() for v in variables]


def test_clipping_by_global_norm_after_unscaling():
    grads = [g * 3 for g in GRADS[0]]
    norm = np.sqrt(sum(np.sum(np.square(g.astype(np.float64))) for g in grads))
    assert norm > 1
    expected = [v - 0.5 * g / norm for v, g in zip((W0, B0), grads)]  # clipped to norm 1
    for got in (_sgd_step(grads, clip=1.0), _sgd_step(grads, clip=1.0, loss_scale=2.0 ** 10)):
        for g, e in zip(got, expected):
            np.testing.assert_allclose(g, e, rtol=1e-5)
    unclipped = _sgd_step(grads)
    np.testing.assert_allclose(unclipped[0], W0 - 0.5 * grads[0], rtol=1e-5)
    assert not np.allclose(unclipped[0], expected[0])
    # a norm above the clip leaves the step as it was
    np.testing.assert_allclose(_sgd_step(grads, clip=2 * norm)[0], unclipped[0], rtol=1e-6)


@pytest.mark.integration
def test_clipping_uses_the_global_batch_norm_over_replicas():
    """Two replicas (logical CPUs) with different gradients: the clipped step is that of their
    sum, not of each replica's share (a subprocess: logical devices are set before TF starts)."""
    script = textwrap.dedent("""
        import json, numpy as np, tensorflow as tf, keras
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from train import config as config_lib, optimizers
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        with strategy.scope():
            var = keras.Variable(np.zeros(2, np.float32))
            opt, _ = optimizers.make_optimizer(
                config_lib.TrainConfig(optimizer="sgd", grad_clip_norm=1.0), 1.0)
            opt.build([var])
        def step():
            replica = tf.distribute.get_replica_context().replica_id_in_sync_group
            grad = tf.where(replica == 0, tf.constant([3.0, 0.0]), tf.constant([0.0, 4.0]))
            opt.apply_gradients([(grad, var)])
        tf.function(lambda: strategy.run(step))()
        print("RESULT", json.dumps(var.numpy().tolist()))
    """)
    proc = check_ok(subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env(),
                                   capture_output=True, text=True, timeout=300))
    result = json.loads(proc.stdout.split("RESULT")[1])
    # sum (3, 4) has norm 5: clipped to (0.6, 0.8); per replica it would be (1, 1)
    np.testing.assert_allclose(result, [-0.6, -0.8], rtol=1e-6)


# -------------------------------------------------------------------- layer-wise decay


@pytest.fixture(scope="module")
def lite0_and_grads():
    keras.utils.set_random_seed(0)
    model = efficientnet_tf.build_model(SMALL, weights=None, classes=3, input_shape=(16, 16, 3),
                                        classifier_activation=None)
    images = tf.random.stateless_uniform([4, 16, 16, 3], seed=(1, 2), maxval=255.0)
    labels = tf.one_hot([0, 1, 2, 0], 3)
    with tf.GradientTape() as tape:
        logits = model(images, training=True)
        loss = tf.reduce_mean(keras.losses.categorical_crossentropy(labels, logits, from_logits=True))
    grads = tape.gradient(loss, model.trainable_variables)
    return model, [g.numpy() for g in grads]


def _stated_scales(decay):
    """timm's scales for Lite0 (7 stages): stem decay**8 ... stage 7 decay**1, classifier 1."""
    names = ["stem"] + [f"stage{i}" for i in range(1, 8)] + ["classifier"]
    return {name: decay ** (len(names) - 1 - i) for i, name in enumerate(names)}


def _assert_step(delta, expected, before, what):
    """delta == expected up to the float32 rounding of the weights (a few ulps of |w|)."""
    bound = 4 * np.spacing(np.abs(before).astype(np.float32)) + 1e-5 * np.abs(expected)
    worst = np.max(np.abs(delta - expected) - bound)
    assert worst <= 0, f"{what}: off by {worst:.3g} beyond float32 rounding"


def _deltas(model, grads, train_cfg, lr):
    before = [v.numpy() for v in model.trainable_variables]
    optimizer, info = opt_lib.make_optimizer(train_cfg, lr, model)
    optimizer.apply_gradients(zip(map(tf.constant, grads), model.trainable_variables))
    deltas = [b - v.numpy() for b, v in zip(before, model.trainable_variables)]
    for var, value in zip(model.trainable_variables, before):
        var.assign(value)
    return deltas, info, before


def test_layer_decay_gives_each_stage_its_rate_with_sgd(lite0_and_grads):
    model, grads = lite0_and_grads
    decay, lr = 0.5, 0.1
    deltas, info, before = _deltas(
        model, grads, config_lib.TrainConfig(optimizer="sgd", layer_decay=decay), lr)
    stated = _stated_scales(decay)
    assert info["layer_decay"] == pytest.approx(stated)
    groups = dict(opt_lib.layer_groups(model))
    assert list(groups) == list(stated)
    index = {id(v): i for i, v in enumerate(model.trainable_variables)}
    seen = 0
    for name, variables in groups.items():
        for var in variables:
            i = index[id(var)]
            _assert_step(deltas[i], lr * stated[name] * grads[i], before[i], f"{name} {var.path}")
            seen += 1
    assert seen == len(model.trainable_variables)
    # timm puts the head (top conv / BN) with the last stage, the classifier alone at x1
    assert {v.path.split("/")[0] for v in groups["stage7"]} >= {"top_conv", "top_bn"}
    assert {v.path.split("/")[0] for v in groups["classifier"]} == {"predictions"}


def test_layer_decay_scales_the_rate_of_an_adaptive_optimizer(lite0_and_grads):
    """AdamW's first step (update and decoupled decay) is linear in the learning rate: with
    layer decay, each variable's step is its group's scale times the step without."""
    model, grads = lite0_and_grads
    plain, _, before = _deltas(model, grads, config_lib.TrainConfig(optimizer="adamw"), 1e-2)
    decayed, _, _ = _deltas(model, grads, config_lib.TrainConfig(optimizer="adamw", layer_decay=0.7),
                            1e-2)
    scales, _ = opt_lib.layer_scales(model, 0.7)
    scale_of = {id(v): s for v, s in scales}
    for var, p, d, b in zip(model.trainable_variables, plain, decayed, before):
        _assert_step(d, scale_of[id(var)] * p, b, var.path)
    assert len(set(scale_of.values())) == 9


def test_block_groups_are_timms_fine_grouping(lite0_and_grads):
    model, _ = lite0_and_grads
    groups = [name for name, _ in opt_lib.layer_groups(model, "block")]
    assert groups == ["stem"] + [f"block{i}" for i in range(16)] + ["classifier"]


# -------------------------------------------------------------------------- config


@pytest.mark.parametrize("flags,items,message", [
    ({"optimizer": "lion"}, [], "(--optimizer); valid values: ['rmsprop', 'adam', 'sgd', "
                                "'momentum', 'adamw', 'lamb', 'lars']"),
    ({"grad_clip_norm": -1.0}, [], "--grad_clip_norm"),
    ({"layer_decay": 1.5}, [], "--layer_decay"),
    ({"layer_decay": 0.0}, [], "--layer_decay"),
    ({"optimizer_weight_decay": 0.1, "dataset": "imagenet2012"}, [], "--optimizer_weight_decay) is not used by "
                                          "train.optimizer='rmsprop'; it is a setting of adamw, lamb, lars"),
    ({"optimizer": "lars"}, ["train.beta_1=0.9"], "train.beta_1=0.9 is not used by "
                                                  "train.optimizer='lars'; it is a setting of adamw, lamb"),
    ({"optimizer": "adamw"}, ["train.beta_2=1.0"], "train.beta_2=1.0 must be in [0, 1)"),
    ({}, ["train.layer_decay_groups=layer"], "valid values: ['stage', 'block']"),
])
def test_bad_settings_fail_before_any_work_naming_the_flag(flags, items, message):
    with pytest.raises(ValueError) as err:
        train_main.resolve_config(flags, items)
    assert message in str(err.value)


def test_defaults_and_recipes_are_unchanged():
    cfg = train_main.resolve_config({"model_name": "efficientnet-b0", "dataset": "imagenet2012"}, [])
    t = cfg.train
    assert (t.optimizer, t.grad_clip_norm, t.layer_decay, t.weight_decay) == ("rmsprop", None, None, 1e-5)
    optimizer, info = opt_lib.make_optimizer(t, 0.1)
    assert type(optimizer) is keras.optimizers.RMSprop  # no hooks when nothing asks for them
    assert info["l2_loss_term"] and (optimizer.rho, optimizer.momentum, optimizer.epsilon) == (0.9, 0.9, 1e-3)
    assert opt_lib.OPTIMIZERS["adamw"].l2_loss is False and opt_lib.OPTIMIZERS["lamb"].l2_loss is False


def test_flags_reach_the_config():
    cfg = train_main.resolve_config({"optimizer": "lamb", "grad_clip_norm": 1.0, "layer_decay": 0.8,
                                     "optimizer_weight_decay": 1e-4}, [])
    t = cfg.train
    assert (t.optimizer, t.grad_clip_norm, t.layer_decay, t.optimizer_weight_decay) == (
        "lamb", 1.0, 0.8, 1e-4)
    assert opt_lib.OPTIMIZERS["lamb"].hyper(t) == {
        "optimizer_weight_decay": 1e-4, "beta_1": 0.9, "beta_2": 0.999, "optimizer_epsilon": 1e-6}


@pytest.mark.integration
def test_lars_run_with_clipping_layer_decay_accumulation_and_checkpointing(digits_dir, tmp_path):
    """One real trainer process for the large-batch and small-memory flags together (Lite0 at
    16 px, batch 8 as 2 micro-batches, blocks recomputed): it finishes and records them."""
    model_dir = str(tmp_path)
    proc = check_ok(run_main(
        f"--model_dir={model_dir}", f"--data_dir={digits_dir}", f"--model_name={SMALL}",
        "--mode=train", "--train_steps=3", "--train_batch_size=8", "--image_size=16",
        "--optimizer=lars", "--grad_clip_norm=1", "--layer_decay=0.8",
        "--grad_accum_steps=2", "--grad_checkpointing", "--config=runtime.steps_per_loop=3"))
    with open(os.path.join(model_dir, "config.yaml")) as f:
        written = yaml.safe_load(f)
    train_cfg = written["train"]
    assert (train_cfg["optimizer"], train_cfg["grad_clip_norm"], train_cfg["layer_decay"],
            train_cfg["grad_accum_steps"], written["model"]["grad_checkpointing"]) == (
        "lars", 1.0, 0.8, 2, True)
    info = read_json(model_dir, "run_info.json")["optimizer"]
    assert info["name"] == "lars" and info["grad_clip_norm"] == 1.0
    assert info["layer_decay"] == pytest.approx(_stated_scales(0.8))
    assert "Layer-wise learning-rate scales: stem x0.1678, stage1 x0.2097" in proc.stdout
    assert os.path.exists(os.path.join(model_dir, "ckpt-3.index"))


def test_the_docs_table_follows_the_optimizer_table():
    with open(os.path.join(ROOT, "docs", "training.md")) as f:
        text = f.read()
    section = text.split("## Large-batch optimizers")[1].split("\n## ")[0]
    rows = {line.split("|")[1].strip(): line for line in section.splitlines()
            if line.startswith("| `")}
    documented = {name.strip(" `") for names in rows for name in names.split(",")}
    assert documented == set(opt_lib.OPTIMIZERS)
    for name, spec in opt_lib.OPTIMIZERS.items():
        row = next(line for names, line in rows.items() if f"`{name}`" in names)
        for key, value in spec.defaults.items():
            found = re.search(rf"{key} ([0-9.e+-]+)", row)
            assert found and float(found.group(1)) == value, (name, key)


def test_decay_and_trust_ratio_exclusions_are_bn_parameters_and_biases(lite0_and_grads):
    model, _ = lite0_and_grads
    excluded = opt_lib.excluded_variables(model, config_lib.TrainConfig().weight_decay_exclude)
    assert {v.path.rsplit("/", 1)[1] for v in excluded} == {"gamma", "beta", "bias"}
    kernels = [v for v in model.trainable_variables if v.path.endswith("kernel")]
    assert len(excluded) + len(kernels) == len(model.trainable_variables)


def test_lamb_without_decay_and_exclusions_equals_keras_lamb():
    """Keras' Lamb differs only in where it decays and in excluding nothing: without either,
    the two take the same steps (a cross-check with a library implementation)."""
    ours = [keras.Variable(W0), keras.Variable(B0)]
    theirs = [keras.Variable(W0), keras.Variable(B0)]
    lamb = opt_lib.LAMB(0.01, epsilon=1e-6, weight_decay_rate=0.0)
    reference = keras.optimizers.Lamb(0.01, epsilon=1e-6)
    for gw, gb in GRADS:
        lamb.apply_gradients(zip([tf.constant(gw), tf.constant(gb)], ours))
        reference.apply_gradients(zip([tf.constant(gw), tf.constant(gb)], theirs))
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6)
