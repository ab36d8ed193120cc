"""The README's speed section, from the JSON the benchmarks wrote (bench/results/).

    python -m bench.report        # after bench.inference, bench.train and bench.input (and
                                  # bench.stages, whose tables it adds when present)
    python -m bench.report --deploy   # docs/export.md's "which format for which runtime" table,
                                      # from inference_deploy.json and quantization.json
"""

from __future__ import annotations

import json
import os
import sys

from bench import common


def _load(name):
    path = os.path.join(common.RESULTS_DIR, f"{name}.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} is missing: run `python -m bench.{name}` first")
    with open(path) as f:
        return json.load(f)


def _x(value):
    return f"{value:.2f}x"


def _inference_lines(inf) -> list:
    from bench.inference import goals_table, rows_table

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
             "**Issue 13's goals** (ratios from the tables above; the range is the ratio's spread "
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
    from bench.stages import stages_table
    from bench.workers import SETS

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


def main(argv=None):
    if argv and "--deploy" in argv:
        print(deploy_section())
        return
    print(section())


if __name__ == "__main__":
    main(sys.argv[1:])
