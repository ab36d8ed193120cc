"""Inference speed: our Keras model, our SavedModel export and our TF-Lite export against
keras.applications' same variant, interleaved in one run.

    python -m bench.inference                 # B0 at 224, batch 1 and 32 (~2-3 min on 2 cores)
    python -m bench.inference --sweep         # + micro-batch sizes and Keras execution modes

Prints a markdown table and writes bench/results/inference.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

from bench import common

common.setup_environment()

import keras  # noqa: E402
from absl import logging  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import efficientnet_tf  # noqa: E402
from bench import exporters  # noqa: E402
from efficientnet_tf.fast import FoldedModel  # noqa: E402

logging.set_verbosity(logging.WARNING)  # the exporter logs every step at INFO


def keras_applications_model(name: str, size: int, **kwargs):
    """keras.applications' constructor for one of our variant names (weights=None)."""
    family, _, variant = name.partition("-")
    constructor = {"efficientnet": "EfficientNet" + variant.upper(),
                   "efficientnetv2": "EfficientNetV2" + variant.upper()}.get(family)
    if constructor is None or not hasattr(keras.applications, constructor):
        raise ValueError(f"keras.applications has no counterpart of {name!r}")
    return getattr(keras.applications, constructor)(weights=None, input_shape=(size, size, 3),
                                                         **kwargs)


def graph_function(model):
    """How we run a Keras model for inference: one traced graph, reused for every batch size."""
    return tf.function(lambda x: model(x, training=False), reduce_retracing=True)


KA, KERAS, SAVED, FOLDED, TFLITE = ("keras.applications (TF)", "ours: Keras model (TF)",
                                    "ours: SavedModel (export/)",
                                    "ours: FoldedModel (efficientnet_tf.fast, TF)",
                                    "ours: TF-Lite (export/)")
BATCH1_ONLY = (TFLITE,)  # the TF-Lite export takes one image per call


def _relative_diff(got, want):
    want = np.asarray(want)
    return float(np.max(np.abs(np.asarray(got) - want)) / np.max(np.abs(want)))


def spread_weights(model, seed=0):
    """Gives BN statistics and the classifier values far from their fresh-init ones, so that the
    export checks compare probabilities that are not all ~1/classes (speed is unaffected)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.gamma.assign(rng.uniform(0.5, 1.5, n).astype(np.float32))
            layer.beta.assign(rng.normal(0, 0.1, n).astype(np.float32))
            layer.moving_mean.assign(rng.normal(0, 0.1, n).astype(np.float32))
            layer.moving_variance.assign(rng.uniform(0.5, 1.5, n).astype(np.float32))
    head = model.get_layer("predictions")
    head.kernel.assign(head.kernel * 30.0)


def build_candidates(args, workdir):
    """name -> callable(numpy batch) -> numpy probabilities, plus facts about the exports."""
    size = args.size
    ours = efficientnet_tf.build_model(args.model, input_shape=(size, size, 3))
    spread_weights(ours)
    ka = keras_applications_model(args.model, size)
    ka_fn, ours_fn = graph_function(ka), graph_function(ours)
    candidates = {KA: lambda x: ka_fn(x).numpy(), KERAS: lambda x: ours_fn(x).numpy()}
    exports = {}
    candidates[SAVED], exports["saved_model"] = exporters.saved_model_runner(
        ours, os.path.join(workdir, "saved_model"))
    folded = FoldedModel(ours)
    candidates[FOLDED] = lambda x: folded(x).numpy()
    candidates[TFLITE], exports["tflite"] = exporters.tflite_runner(
        ours, os.path.join(workdir, "tflite"), args.tflite_threads)

    # Same numbers before timing anything: each export against the Keras model (probabilities).
    probe = np.random.default_rng(0).uniform(size=(2, size, size, 3)).astype(np.float32)
    want = ours_fn(probe).numpy()
    checks = {}
    for name, limit in ((SAVED, 1e-4), (FOLDED, 1e-4), (TFLITE, 1e-3)):
        checks[name] = _relative_diff(candidates[name](probe), want)
        if not checks[name] <= limit:
            raise AssertionError(f"{name}: outputs differ from the Keras model by "
                                 f"{checks[name]:.3g} (relative) > {limit}")
    return ours, ka, candidates, {"max_relative_diff_vs_keras": checks}, exports


def run_batch(candidates, batch, size, rounds):
    x = np.random.default_rng(batch).uniform(size=(batch, size, size, 3)).astype(np.float32)
    calls = max(1, 8 // batch)  # several calls per round at small batches
    times = common.interleaved({n: (lambda f=f: f(x)) for n, f in candidates.items()
                                if batch == 1 or n not in BATCH1_ONLY},
                               rounds=rounds, calls_per_round=calls)
    return {name: common.summarize(t, batch) for name, t in times.items()}


def sweep(ours, ka, size, rounds):
    """Micro-batch sizes of the folded graph and ways of running a Keras model, at batch 32."""
    x32 = np.random.default_rng(0).uniform(size=(32, size, size, 3)).astype(np.float32)
    x1 = x32[:1]
    cands = {}
    for micro in (None, 1, 2, 4, 8, 16):
        folded = FoldedModel(ours, micro_batch=micro)
        cands[f"folded micro_batch={micro}"] = lambda x, f=folded: f(x).numpy()
    ka_fn = graph_function(ka)
    cands["keras.applications tf.function"] = lambda x: ka_fn(x).numpy()
    result = {}
    times = common.interleaved({n: (lambda f=f: f(x32)) for n, f in cands.items()},
                               rounds=rounds, calls_per_round=1)
    result["micro_batch_sweep"] = {n: common.summarize(t, 32) for n, t in times.items()}
    modes = {}
    for label, model in (("ours", ours), ("keras.applications", ka)):
        fn = graph_function(model)
        modes[f"{label} tf.function"] = lambda x, fn=fn: fn(x).numpy()
        modes[f"{label} predict"] = lambda x, m=model: m.predict(x, batch_size=len(x), verbose=0)
        modes[f"{label} predict_on_batch"] = lambda x, m=model: m.predict_on_batch(x)
        modes[f"{label} eager __call__"] = lambda x, m=model: m(x, training=False).numpy()
    xla = tf.function(lambda x: ours(x, training=False), jit_compile=True)
    for batch, x in ((1, x1), (32, x32)):
        cands = dict(modes)
        if batch == 1:  # XLA on this CPU: ~25 s per batch of 32, so batch 1 only
            cands["ours tf.function(jit_compile=True)"] = lambda x: xla(x).numpy()
        times = common.interleaved({n: (lambda f=f: f(x)) for n, f in cands.items()},
                                   rounds=max(2, rounds // 2), calls_per_round=max(1, 8 // batch))
        result[f"keras_modes_batch{batch}"] = {n: common.summarize(t, batch)
                                               for n, t in times.items()}
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="efficientnet-b0")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch_sizes", default="1,32")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--tflite_threads", type=int, default=os.cpu_count())
    parser.add_argument("--intra_op", type=int, default=None,
                        help="tf.config.threading intra-op threads (default: TF's, all cores)")
    parser.add_argument("--inter_op", type=int, default=None,
                        help="tf.config.threading inter-op threads (default: TF's)")
    parser.add_argument("--sweep", action="store_true",
                        help="also time micro-batch sizes and Keras execution modes")
    parser.add_argument("--output", default=None, help="JSON path (default bench/results/)")
    args = parser.parse_args(argv)
    argv = sys.argv[1:] if argv is None else argv
    if args.intra_op is not None:
        tf.config.threading.set_intra_op_parallelism_threads(args.intra_op)
    if args.inter_op is not None:
        tf.config.threading.set_inter_op_parallelism_threads(args.inter_op)

    result = common.header("inference", argv)
    result["settings"] = {"model": args.model, "size": args.size, "dtype": "float32",
                          "rounds": args.rounds, "tflite_threads": args.tflite_threads,
                          "keras_execution": "tf.function(model(x, training=False))",
                          "weights": "None (random init; speed does not depend on them)"}
    with tempfile.TemporaryDirectory() as workdir:
        ours, ka, candidates, checks, exports = build_candidates(args, workdir)
        result["exports"] = exports
        result["checks"] = checks
        macs = common.count_macs(ours)
        result["macs_per_image"] = macs
        result["matmul_gflops"] = common.matmul_gflops()
        result["results"] = {}
        for batch in [int(b) for b in args.batch_sizes.split(",")]:
            result["results"][f"batch{batch}"] = run_batch(candidates, batch, args.size,
                                                           args.rounds)
        if args.sweep:
            result.update(sweep(ours, ka, args.size, args.rounds))
    result["ratios"] = ratios(result["results"])
    result["flop_utilisation"] = utilisation(result)
    return common.finish("inference", result, table, args.output)


def ratios(results):
    out = {}
    base = KA
    for key, rows in results.items():
        for name, row in rows.items():
            if name == base:
                continue
            out.setdefault(key, {})[name] = {
                "throughput_x": round(row["images_per_sec"] / rows[base]["images_per_sec"], 3),
                "p50_latency_x": round(row["p50_ms"] / rows[base]["p50_ms"], 3)}
    return out


def utilisation(result):
    """Achieved FLOP/s against the nominal peak (wall clock: what the machine delivered), and
    per CPU-second against one core's peak (robust to other processes sharing the cores)."""
    peak = result["machine"]["peak"]
    gflop_per_image = 2 * result["macs_per_image"]["total"] / 1e9
    core_peak = peak["gflops"] / max(peak["cores"], 1)
    out = {"gflop_per_image": round(gflop_per_image, 3), "peak_gflops": peak["gflops"],
           "matmul_gflops": result["matmul_gflops"]}
    for key, rows in result["results"].items():
        for name, row in rows.items():
            achieved = row["images_per_sec"] * gflop_per_image
            per_cpu_second = gflop_per_image / (row["cpu_ms_per_image"] / 1e3)
            out.setdefault(key, {})[name] = {
                "gflops": round(achieved, 1),
                "of_peak": round(achieved / peak["gflops"], 4) if peak["gflops"] else None,
                "of_matmul": round(achieved / result["matmul_gflops"], 4),
                "gflops_per_cpu_second": round(per_cpu_second, 1),
                "of_core_peak_per_cpu_second": round(per_cpu_second / core_peak, 4)}
    return out


def table(result):
    rows = []
    for key, cands in result["results"].items():
        for name, row in cands.items():
            ratio = result["ratios"].get(key, {}).get(name)
            rows.append([name, row["batch"], row["images_per_sec"], row["p50_ms"], row["p90_ms"],
                         row["cpu_ms_per_image"],
                         f"{ratio['throughput_x']:.2f}x" if ratio else "1.00x",
                         f"{100 * result['flop_utilisation'][key][name]['of_peak']:.1f}%"])
    text = common.markdown_table(["runtime", "batch", "images/s", "p50 ms", "p90 ms",
                                  "CPU ms/image", "throughput vs keras.applications",
                                  "of peak FLOP/s"], rows)
    text = f"{result['settings']['model']} @ {result['settings']['size']}, float32 - " \
           f"{common.machine_line(result)}\n\n" + text
    if result.get("warning"):
        text += f"\n\nNote: {result['warning']}"
    return text


if __name__ == "__main__":
    main()
