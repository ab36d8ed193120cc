"""Memory and time of the trainer's step with gradient checkpointing or gradient accumulation,
against the plain step, on a larger variant; each case in its own process.

    python -m bench.grad_checkpointing             # B4 at 224 px, batch 8 (~5 min on 2 cores)
    python -m bench.grad_checkpointing --cases=plain,grad_checkpointing --steps=2

Each case is the trainer's own step (``train.steps.TrainSteps`` on ``train.state.build``'s
state: fused BN, RMSprop, EMA, L2 weight decay, label smoothing; float32, no XLA) on synthetic
images, in a fresh process so that no case inherits another's memory. Memory: the process's
peak resident set (``resource.getrusage`` ``ru_maxrss``) and, what the cases differ in, the
step's share of it: that peak minus the resident set once the model, optimizer slots and EMA
exist (before the first step). Time: one more process runs every case's step on one shared
state, interleaved (plain, checkpointed, accumulated, plain, ...), the median of ``--steps``
rounds after a tracing one.
Prints a markdown table and writes bench/results/grad_checkpointing.json; the table in
docs/training.md is generated from it by ``python -m bench.report``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys

from bench import common

common.setup_environment()

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from train import config as config_lib  # noqa: E402
from train import state as state_lib  # noqa: E402
from train import steps as steps_lib  # noqa: E402

CASES = {  # name -> config overrides on top of the plain step
    "plain": {},
    "grad_checkpointing": {"model.grad_checkpointing": True},
    "grad_accum_steps=4": {"train.grad_accum_steps": 4},
}


def _rss_mib() -> float:
    """The current resident set of this process (Linux /proc), MiB."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def _trainer_step(settings: dict, cases):
    """The trainer's state (built once) and a TrainSteps per case, with a batch of images."""
    batch, size, classes = settings["batch"], settings["size"], 1000
    base = {"model.name": settings["model"], "train.batch_size": batch, "train.steps": 1000}
    strategy = tf.distribute.get_strategy()
    keras.utils.set_random_seed(0)
    cfg = config_lib.apply(config_lib.Config(), base)
    state = state_lib.build(cfg, strategy, num_classes=classes, precision="float32",
                            total_steps=1000, steps_per_epoch=100.0)
    steps = {}
    for case in cases:
        cfg = config_lib.apply(config_lib.Config(), {**base, **CASES[case]})
        config_lib.validate(cfg)
        steps[case] = steps_lib.TrainSteps(
            strategy, state, label_smoothing=cfg.train.label_smoothing,
            weight_decay=cfg.train.weight_decay, jit=False,
            grad_accum_steps=cfg.train.grad_accum_steps,
            grad_checkpointing=cfg.model.grad_checkpointing, batch_size=batch)
    rng = np.random.default_rng(0)
    images = tf.constant(rng.uniform(size=(batch, size, size, 3)).astype(np.float32))
    labels = tf.one_hot(rng.integers(0, classes, batch), classes)
    return state, steps, images, labels


def child(which: str, settings: dict) -> dict:
    """In this process: one case's memory (build, the tracing step, one more step), or with
    ``which='timing'`` every case's step time, interleaved on one shared state."""
    if which == "timing":
        cases = settings["cases"]
        _, steps, images, labels = _trainer_step(settings, cases)
        times = common.interleaved(
            {case: (lambda s=steps[case]: s.step(images, labels).numpy()) for case in cases},
            rounds=settings["steps"], calls_per_round=1, warmup=1)
        return {case: common.summarize(t, settings["batch"]) for case, t in times.items()}
    state, steps, images, labels = _trainer_step(settings, [which])
    built = _rss_mib()
    losses = [float(steps[which].step(images, labels).numpy()[0]) / settings["batch"]
              for _ in range(2)]
    if not np.all(np.isfinite(losses)):
        raise AssertionError(f"{which}: non-finite loss {losses}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {"overrides": CASES[which], "built_mib": round(built, 1), "peak_mib": round(peak, 1),
            "step_peak_mib": round(peak - built, 1), "first_loss": round(losses[0], 4),
            "updates": state.step}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="efficientnet-b4")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per case")
    parser.add_argument("--cases", default=",".join(CASES),
                        help=f"comma-separated, from: {', '.join(CASES)}")
    parser.add_argument("--output", default=None, help="JSON path (default bench/results/)")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)  # CASE SETTINGS_JSON
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child[0], json.loads(args.child[1]))))
        return None
    argv = sys.argv[1:] if argv is None else argv
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in cases if c not in CASES]
    if unknown or not cases:
        parser.error(f"--cases: unknown {unknown}; valid: {', '.join(CASES)}")

    settings = {"model": args.model, "size": args.size, "batch": args.batch, "steps": args.steps,
                "dtype": "float32", "step": "train.steps.TrainSteps, tf.function, no XLA",
                "memory": "peak RSS (ru_maxrss) of a process per case (the tracing step and "
                          "one more); step's share = peak - RSS before the first step",
                "time": "median of --steps steps per case, interleaved in one process"}
    result = common.header("grad_checkpointing", argv)
    result["settings"] = settings
    result["results"] = {case: common.run_child("bench.grad_checkpointing", case, **settings)
                         for case in cases}
    timing = common.run_child("bench.grad_checkpointing", "timing", cases=cases, **settings)
    for case, row in timing.items():
        result["results"][case]["step_s"] = round(row["p50_ms"] / 1000, 3)
        result["results"][case]["step_cpu_ms_per_image"] = row["cpu_ms_per_image"]
    plain = result["results"].get("plain")
    if plain:
        result["ratios"] = {case: {"step_peak": round(r["step_peak_mib"] / plain["step_peak_mib"], 3),
                                   "peak": round(r["peak_mib"] / plain["peak_mib"], 3),
                                   "step_time": round(r["step_s"] / plain["step_s"], 3),
                                   "step_cpu": round(r["step_cpu_ms_per_image"]
                                                     / plain["step_cpu_ms_per_image"], 3)}
                            for case, r in result["results"].items()}
    return common.finish("grad_checkpointing", result, table, args.output)


def table(result) -> str:
    """The results as a markdown table (also what docs/training.md shows)."""
    s, ratios = result["settings"], result.get("ratios", {})
    rows = []
    for case, r in result["results"].items():
        ratio = ratios.get(case, {})
        rows.append([case, f"{r['peak_mib']:.0f}", f"{r['step_peak_mib']:.0f}",
                     f"{ratio['step_peak']:.2f}x" if ratio else "-", f"{r['step_s']:.2f}",
                     f"{ratio['step_time']:.2f}x" if ratio else "-",
                     f"{r['step_cpu_ms_per_image']:.0f}",
                     f"{ratio['step_cpu']:.2f}x" if ratio else "-"])
    text = (f"train step, {s['model']} @ {s['size']} px, batch {s['batch']}, {s['dtype']} - "
            f"{common.machine_line(result)}\n\n")
    text += common.markdown_table(["case", "peak RSS MiB", "step's share MiB", "vs plain",
                                   "step s (p50)", "vs plain", "CPU ms/image", "vs plain"], rows)
    if result.get("warning"):
        text += f"\n\nNote: {result['warning']}"
    return text


if __name__ == "__main__":
    main()
