"""Training speed: images/sec of a full train step (forward, loss, backward, optimizer update)
on synthetic data, ours vs keras.applications' same variant, interleaved in one run.

    python -m bench.train                     # B0 at 224, batch 32 (~2-3 min on 2 cores)
    python -m bench.train --no_plain_bn       # without the row for Keras' own BatchNormalization

Both models get the same step: a tf.function (no XLA: ~5x slower on this CPU) with the
official EfficientNet optimizer (RMSprop, rho 0.9, momentum 0.9, epsilon 1e-3; tensorflow/tpu
efficientnet main.py) and label-smoothed (0.1) softmax cross-entropy on logits. "ours" is what
train.main trains: the built model, whose batch norm runs TF's fused kernel; the plain-BN row
is its clone with Keras' own BatchNormalization (efficientnet_tf.fast.with_keras_batchnorm). Prints a
markdown table and writes bench/results/train.json.
"""

from __future__ import annotations

import argparse
import sys

from bench import common

common.setup_environment()

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import efficientnet_tf  # noqa: E402
from efficientnet_tf.fast import with_keras_batchnorm  # noqa: E402
from bench.inference import keras_applications_model  # noqa: E402

BASE, OURS, PLAIN = ("keras.applications", "ours (build_model's fused BN, as train.main trains)",
                     "ours with Keras' BatchNormalization")


def train_step_fn(model, num_classes: int):
    optimizer = keras.optimizers.RMSprop(learning_rate=0.016, rho=0.9, momentum=0.9,
                                         epsilon=1e-3)
    loss_fn = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1)
    variables = model.trainable_variables

    @tf.function(jit_compile=False)
    def step(images, labels):
        with tf.GradientTape() as tape:
            logits = model(images, training=True)
            loss = loss_fn(tf.one_hot(labels, num_classes), logits)
        grads = tape.gradient(loss, variables)
        optimizer.apply(grads, variables)
        return loss

    return step


def check_fused_bn(model_name: str) -> dict:
    """Fused BN computes the same train step: forward (training mode), gradients
    and moving statistics against the Keras model (dropout off, 2 images at 96 px)."""
    fused = efficientnet_tf.build_model(model_name, classifier_activation=None,
                                        dropout_rate=0, drop_connect_rate=0)
    model = with_keras_batchnorm(fused)
    images = tf.random.stateless_uniform((2, 96, 96, 3), seed=(1, 2))
    labels = tf.one_hot([3, 7], model.output.shape[-1])

    def forward_backward(m):
        with tf.GradientTape() as tape:
            logits = m(images, training=True)
            loss = tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(labels, logits))
        return logits, tape.gradient(loss, m.trainable_variables)

    (want, want_grads), (got, got_grads) = forward_backward(model), forward_backward(fused)

    def rel(a, b, s):
        return float(tf.reduce_max(tf.abs(a - b))) / s

    bns = [(a, b) for a, b in zip(model.layers, fused.layers)
           if isinstance(a, keras.layers.BatchNormalization)]
    diffs = {
        "logits": rel(got, want, float(tf.reduce_max(tf.abs(want)))),
        # relative L2 over all gradients: an element-wise max would flag relu6 gradients that
        # rounding moves across the clip point, and the zero gradients of BN betas followed
        # by another BN
        "gradients": float(tf.linalg.global_norm([g - w for g, w in zip(got_grads, want_grads)])
                           / tf.linalg.global_norm(want_grads)),
        "moving_variance": max(rel(b.moving_variance, a.moving_variance,
                                   float(tf.reduce_max(a.moving_variance))) for a, b in bns)}
    # Gradients get a looser limit: in randomly initialised relu6 (Lite) networks some channels
    # are nearly constant, and BN of such a channel amplifies the rounding differences of the
    # two mean/variance algorithms (measured up to 0.5% on Lite0, 2e-5 on B0).
    limits = {"logits": 1e-3, "gradients": 1e-2, "moving_variance": 1e-3}
    if any(not diffs[k] < limits[k] for k in limits):
        raise AssertionError(f"fused BN differs from the Keras model: {diffs} "
                             f"(limits {limits})")
    return {k: float(f"{v:.3g}") for k, v in diffs.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="efficientnet-b0")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--no_plain_bn", action="store_true",
                        help="skip the row for the model with Keras' own BatchNormalization")
    parser.add_argument("--output", default=None, help="JSON path (default bench/results/)")
    args = parser.parse_args(argv)
    argv = sys.argv[1:] if argv is None else argv

    result = common.header("train", argv)
    result["settings"] = {"model": args.model, "size": args.size, "batch": args.batch,
                          "dtype": "float32", "rounds": args.rounds,
                          "optimizer": "RMSprop(rho=0.9, momentum=0.9, epsilon=1e-3)",
                          "loss": "softmax cross-entropy on logits, label_smoothing=0.1",
                          "step": "tf.function(jit_compile=False), GradientTape"}
    classes = 1000
    shape = (args.size, args.size, 3)
    ours = efficientnet_tf.build_model(args.model, input_shape=shape, classifier_activation=None)
    ka = keras_applications_model(args.model, args.size, classifier_activation=None)
    rng = np.random.default_rng(0)
    images = tf.constant(rng.uniform(size=(args.batch, *shape)).astype(np.float32))
    labels = tf.constant(rng.integers(0, classes, size=args.batch).astype(np.int32))
    result["fused_bn_check_max_relative_diff"] = check_fused_bn(args.model)
    steps = {BASE: train_step_fn(ka, classes),
             OURS: train_step_fn(ours, classes)}  # built with fused BN, as train.main trains
    if not args.no_plain_bn:
        steps[PLAIN] = train_step_fn(with_keras_batchnorm(ours), classes)
    for name, step in steps.items():
        loss = float(step(images, labels))
        if not np.isfinite(loss):
            raise AssertionError(f"{name}: non-finite loss {loss}")
    times = common.interleaved({n: (lambda s=s: s(images, labels).numpy())
                                for n, s in steps.items()},
                               rounds=args.rounds, calls_per_round=1, warmup=1)
    rows = {n: common.summarize(t, args.batch) for n, t in times.items()}
    result["results"] = rows
    base = rows[BASE]["images_per_sec"]
    result["ratios"] = {n: round(r["images_per_sec"] / base, 3) for n, r in rows.items()
                        if n != BASE}
    macs = common.count_macs(ours)["total"]
    # A train step is ~3x the forward FLOPs (forward, grad wrt inputs, grad wrt weights).
    gflop = 3 * 2 * macs / 1e9
    peak = result["machine"]["peak"]["gflops"]
    result["flop_utilisation"] = {
        "train_gflop_per_image": round(gflop, 3), "peak_gflops": peak,
        **{n: round(r["images_per_sec"] * gflop / peak, 4) for n, r in rows.items()}}
    return common.finish("train", result, table, args.output)


def table(result):
    rows = []
    for name, row in result["results"].items():
        ratio = result["ratios"].get(name, 1.0)
        rows.append([name, row["batch"], row["images_per_sec"], row["p50_ms"],
                     row["cpu_ms_per_image"], f"{ratio:.2f}x",
                     f"{100 * result['flop_utilisation'][name]:.1f}%"])
    s = result["settings"]
    text = (f"train step, {s['model']} @ {s['size']}, batch {s['batch']}, float32 - "
            f"{common.machine_line(result)}\n\n")
    text += common.markdown_table(["model", "batch", "images/s", "step p50 ms", "CPU ms/image",
                                   "vs keras.applications", "of peak FLOP/s"], rows)
    if result.get("warning"):
        text += f"\n\nNote: {result['warning']}"
    return text


if __name__ == "__main__":
    main()
