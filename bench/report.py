"""The serving-performance results page and its charts, from the JSON the benchmarks wrote.

    python -m bench.report          # writes docs/performance-results.md and docs/img/*.svg
    python -m bench.report --check  # exit 1 when the page differs from what the results give

Run after bench.inference, bench.train and bench.input (and bench.stages, whose tables it adds
when present). Every figure on the page comes from bench/results/*.json.
    (python -m bench.report also writes docs/export.md's "which format for which runtime"
    table, between its generated-block markers, from inference_deploy.json and quantization.json,
    and docs/training.md's "Small memory" table from grad_checkpointing.json)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys

from bench import common
from bench.grad_checkpointing import table as memory_table
from bench.inference import goals_table, rows_table
from bench.stages import stages_table
from bench.workers import SETS


def _load(name):
    path = os.path.join(common.RESULTS_DIR, f"{name}.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} is missing: run `python -m bench.{name}` first")
    with open(path) as f:
        return json.load(f)


def _x(value):
    return f"{value:.2f}x"


def _inference_lines(inf) -> list:
    runtimes = {k: v for m in inf["versions"].get("runtimes", {}).values() if m for k, v in m.items()}
    loads = ", ".join(f"{k} {v:.1f}" for k, v in inf.get("load_average", {}).items())
    lines = [f"Measured on {common.machine_line(inf)}; "
             + ", ".join(f"{k} {v}" for k, v in sorted(runtimes.items()))
             + f". Command: `{inf['command']}` ({inf['settings']['rounds']} alternating rounds per "
             f"table, one worker process per runtime). Load average on {inf['machine']['cores']} "
             f"cores after each table: {loads}. TF worker's TF_ENABLE_ONEDNN_OPTS: "
             f"{inf['settings'].get('tf_onednn', 'default')}. Float32 everywhere (OpenVINO with "
             "INFERENCE_PRECISION_HINT=f32), random weights; peers run timm's counterpart "
             "(`torch.onnx.export`, dynamic batch). CPU ms/image is the worker process's CPU "
             "time, the figure least affected by other load.", "",
             "**Inference** (`python -m bench.inference`)", "", rows_table(inf), "",
             "**Goals** (ratios from the tables above; the range is the ratio's spread "
             "over the rounds, \"met\" only when the whole range clears the target)", "",
             goals_table(inf)]
    util, peak = inf["flop_utilisation"], inf["machine"]["peak"]
    flops = ", ".join(f"{inf['models'][k]['variant']} {v} GFLOP per image"
                      for k, v in util["gflop_per_image"].items())
    lines += ["", f"FLOPs: {flops} (2 x the multiply-adds counted from the layer shapes). Peak: "
              f"{peak['cores']} cores x {peak['ghz']} GHz x {peak['flops_per_cycle_per_core']} "
              f"FLOP/cycle ({peak['derivation']}) = {peak['gflops']} GFLOP/s; a large SGEMM "
              f"reaches {inf['matmul_gflops']} GFLOP/s here."]
    return lines


def _stages_lines() -> list:
    """bench.stages' tables, for the sets that have been run."""

    lines = []
    for set_name in SETS:
        if not os.path.exists(os.path.join(common.RESULTS_DIR, f"stages_{set_name}.json")):
            continue
        result = _load(f"stages_{set_name}")
        lines += ["", f"**Batch 1 stage by stage** (`{result['command']}`; "
                  f"{common.machine_line(result)}, load average "
                  f"{result['load_average_start'][0]:.1f})", "", stages_table(result)]
    return lines


def section() -> str:
    inf, train, inp = _load("inference"), _load("train"), _load("input")
    lines = _inference_lines(inf) + _stages_lines()
    lines += ["", "**Training step** (`python -m bench.train`, batch "
              f"{train['settings']['batch']}, {train['settings']['optimizer']}, "
              f"{train['settings']['loss']}; {common.machine_line(train)}, load average "
              f"{train['load_average_start'][0]:.1f})", ""]
    rows = []
    for name, row in train["results"].items():
        rows.append([name, row["images_per_sec"], row["p50_ms"], row["cpu_ms_per_image"],
                     _x(train["ratios"].get(name, 1.0))])
    lines.append(common.markdown_table(["model", "images/s", "step p50 ms", "CPU ms/image",
                                        "vs keras.applications"], rows))
    lines += ["", "**Training input pipeline** (`python -m bench.input`: read, decode + random "
              "crop, bicubic resize, flip, RandAugment "
              f"{inp['settings']['randaugment']['num_layers']}x"
              f"{inp['settings']['randaugment']['magnitude']:g}, batch; "
              f"{inp['images']['count']} real JPEG photos, "
              f"~{inp['images']['mean_bytes'] // 1000} kB; load average "
              f"{inp['load_average_start'][0]:.1f})",
              ""]
    rate = inp.get("train_images_per_sec")
    rows = [[name, r["images_per_sec"], r["cpu_ms_per_image"],
             f"{r['images_per_sec'] / rate:.0f}x" if rate else "-"]
            for name, r in inp["results"].items()]
    lines.append(common.markdown_table(
        ["threads", "images/s", "CPU ms/image", "vs the B0 training step"], rows))
    return "\n".join(lines)


# The runtime each deployment target runs, as its row in bench.inference (bench.workers' names).
DEPLOY = (
    ("TF Serving", "saved_model", "ours: SavedModel (export/, TF)"),
    ("OpenVINO Model Server", "openvino", "ours: OpenVINO IR (export/)"),
    ("Triton / ONNX Runtime / TensorRT", "onnx", "ours: ONNX Runtime on our ONNX (export/)"),
    ("MediaPipe / LiteRT (phones)", "tflite", "ours: TF-Lite (export/, LiteRT)"),
    ("TF-Hub consumers (hub.KerasLayer, TFSMLayer)", "hub", "ours: Keras model (TF)"),
)


def deploy_section() -> str:
    """The table of docs/export.md: per deployment target the format, B0's measured batch-1 and
    batch-32 figures (bench.inference) and TF-Lite's quantized variants' accuracy cost
    (bench.quantization)."""
    inf, quant = _load("inference_deploy"), _load("quantization")
    key = next(iter(inf["models"]))
    model = inf["models"][key]
    rows = []
    for target, fmt, row_name in DEPLOY:
        one = inf["results"].get(f"{key}/batch1", {}).get(row_name)
        many = inf["results"].get(f"{key}/batch32", {}).get(row_name)
        rows.append([target, f"`{fmt}`", f"{one['p50_ms']:.1f}" if one else "-",
                     f"{many['images_per_sec']:.0f}" if many else "- (one image per call)",
                     "float32: same outputs (verified)"])
    base = quant["results"]["float32"]
    for mode, row in quant["results"].items():
        if mode == "float32":
            continue
        rows.append(["MediaPipe / LiteRT (phones)", f"`tflite --quantize={mode}`", "-", "-",
                     f"{row['float_top1']:.2f}% -> {row['quantized_top1']:.2f}% top-1 "
                     f"({0.0 - row['drop_points'] + 0.0:+.2f} points); {row['bytes'] / base['bytes']:.2f}x the size; "
                     f"LiteRT at {quant['settings']['image_size']} px {row['litert_batch1_ms']:.2f} ms "
                     f"(float32 {base['litert_batch1_ms']:.2f})"])
    head = (f"{model['variant']} at {model['size']} px, random weights, float32 "
            f"(`{inf['command']}`, {common.machine_line(inf)}, load average "
            f"{inf['load_average_start'][0]:.1f}); accuracy: {quant['settings']['model']} trained "
            f"{quant['settings']['train_steps']} steps on the digits, top-1 on the 360 held-out digits, "
            f"float model -> export (`{quant['command']}`).")
    table = common.markdown_table(["deploy with", "--format", "batch 1 p50 ms", "batch 32 images/s",
                                   "accuracy"], rows)
    return head + "\n\n" + table


PAGE = os.path.join(common.REPO_ROOT, "docs", "performance-results.md")
IMAGES = os.path.join(common.REPO_ROOT, "docs", "img")


def page() -> str:
    """The whole generated page (markdown), charts referenced by their file names."""
    charts = "".join(f"![{title}](img/{name}.svg)\n\n" for name, title in CHARTS)
    return ("# Performance results\n\n<!-- Generated by `python -m bench.report` from "
            "bench/results/*.json: edit the benchmarks or the report, not this page. -->\n\n"
            + charts + section() + "\n")


CHARTS = (("inference_batch1", "Batch-1 p50 latency per runtime (ms, lower is better)"),
          ("inference_batch32", "Batch-32 throughput per runtime (images/s, higher is better)"))


def write_charts(out_dir: str = IMAGES) -> list:
    """Bar charts of bench.inference's tables, one per batch size, as SVG."""
    import matplotlib  # optional, heavy: only the report draws

    matplotlib.use("Agg")
    matplotlib.rcParams["svg.hashsalt"] = "efficientnet_tf"  # stable element ids
    from matplotlib import pyplot as plt

    inf = _load("inference")
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for (name, title), (batch, field) in zip(CHARTS, ((1, "p50_ms"), (32, "images_per_sec"))):
        keys = [k for k in inf["results"] if k.endswith(f"/batch{batch}")]
        fig, axes = plt.subplots(1, len(keys), figsize=(6 * len(keys), 4.5), squeeze=False)
        for ax, key in zip(axes[0], keys):
            rows = sorted(inf["results"][key].items(), key=lambda kv: kv[1][field])
            labels = [label.replace(" (", "\n(") for label, _ in rows]
            colours = ["tab:blue" if label.startswith("ours") else "tab:gray" for label, _ in rows]
            ax.barh(labels, [row[field] for _, row in rows], color=colours)
            set_name = key.split("/")[0]
            ax.set_title(f"{inf['models'][set_name]['variant']} @ {inf['models'][set_name]['size']}")
            ax.tick_params(axis="y", labelsize=7)
        fig.suptitle(f"{title}; blue: ours, grey: peers ({inf['date'][:10]})")
        fig.tight_layout()
        path = os.path.join(out_dir, f"{name}.svg")
        fig.savefig(f"{path}.partial", format="svg", metadata={"Date": None})
        os.replace(f"{path}.partial", path)
        plt.close(fig)
        written.append(path)
    return written


EXPORT_PAGE = os.path.join(common.REPO_ROOT, "docs", "export.md")
DEPLOY_START = ("<!-- generated: python -m bench.report (bench/results/inference_deploy.json, "
                "quantization.json) -->")
DEPLOY_END = "<!-- end of generated table -->"


def with_deploy_table(text: str) -> str:
    """docs/export.md's text with the block between its markers replaced by deploy_section()."""
    start, end = text.index(DEPLOY_START) + len(DEPLOY_START), text.index(DEPLOY_END)
    return text[:start] + "\n" + deploy_section() + "\n" + text[end:]


# Small memory (#22): docs/training.md's table from bench.grad_checkpointing.
TRAINING_PAGE = os.path.join(common.REPO_ROOT, "docs", "training.md")
MEMORY_START = "<!-- generated: python -m bench.report (bench/results/grad_checkpointing*.json) -->"


def memory_section() -> str:
    """The "Small memory" tables of docs/training.md: one per bench.grad_checkpointing results
    file (``grad_checkpointing.json``, then ``grad_checkpointing_<name>.json`` by name)."""
    names = sorted(os.path.basename(p)[:-len(".json")] for p in os.listdir(common.RESULTS_DIR)
                   if re.fullmatch(r"grad_checkpointing(_\w+)?\.json", os.path.basename(p)))
    if not names:
        _load("grad_checkpointing")  # raises, naming the command to run
    tables = []
    for name in names:
        result = _load(name)
        tables.append(f"`{result['command']}`, load average "
                      f"{result['load_average_start'][0]:.1f}: "
                      + memory_table(dict(result, warning=None)))
    return "\n\n".join(tables)


def with_memory_table(text: str) -> str:
    start, end = text.index(MEMORY_START) + len(MEMORY_START), text.index(DEPLOY_END, text.index(MEMORY_START))
    return text[:start] + "\n" + memory_section() + "\n" + text[end:]


def generated_pages():
    """{path: the text it should hold} for every generated page."""
    with open(EXPORT_PAGE) as f:
        export_page = f.read()
    with open(TRAINING_PAGE) as f:
        training_page = f.read()
    return {PAGE: page(), EXPORT_PAGE: with_deploy_table(export_page),
            TRAINING_PAGE: with_memory_table(training_page)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="compare docs/performance-results.md with the results; write nothing")
    args = parser.parse_args(argv)
    generated = generated_pages()
    if args.check:
        stale = []
        for path, text in generated.items():
            with open(path) as f:
                if f.read() != text:
                    stale.append(common.repo_relative(path))
        if stale:
            print(f"out of date: {', '.join(stale)}; run `python -m bench.report`")
            return 1
        print("the generated pages match bench/results/")
        return 0
    for path, text in generated.items():
        with open(f"{path}.partial", "w") as f:
            f.write(text)
        os.replace(f"{path}.partial", path)
        print(f"wrote {common.repo_relative(path)}")
    for path in write_charts():
        print(f"wrote {common.repo_relative(path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
