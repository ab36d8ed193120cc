"""The README's speed section, from the JSON the benchmarks wrote (bench/results/).

    python -m bench.report        # after bench.inference, bench.train and bench.input
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


def section() -> str:
    inf, train, inp = _load("inference"), _load("train"), _load("input")
    s = inf["settings"]
    lines = [f"Measured on {common.machine_line(inf)}. EfficientNet-B0 at "
             f"{s['size']}x{s['size']}, float32; ratios are against keras.applications' "
             "EfficientNetB0 timed in the same run (rounds interleaved). "
             f"Load average during the runs: {inf['load_average_start'][0]:.1f} (inference), "
             f"{train['load_average_start'][0]:.1f} (training), "
             f"{inp['load_average_start'][0]:.1f} (input) on {inf['machine']['cores']} cores; "
             "CPU ms/image is the process CPU time, the figure least affected by other load.",
             "", "**Inference** (`python -m bench.inference`)", ""]
    rows = []
    util = inf["flop_utilisation"]
    for key, cands in inf["results"].items():
        for name, row in cands.items():
            ratio = inf["ratios"].get(key, {}).get(name)
            rows.append([name, row["batch"], row["images_per_sec"], row["p50_ms"], row["p90_ms"],
                         row["cpu_ms_per_image"], _x(ratio["throughput_x"]) if ratio else "1.00x",
                         f"{100 * util[key][name]['of_peak']:.0f}%"])
    lines.append(common.markdown_table(
        ["runtime", "batch", "images/s", "p50 ms", "p90 ms", "CPU ms/image",
         "vs keras.applications", "of peak FLOP/s"], rows))
    peak = inf["machine"]["peak"]
    lines += ["", f"FLOPs: {util['gflop_per_image']} GFLOP per image "
              f"({inf['macs_per_image']['total'] / 1e6:.0f} M multiply-adds, counted from the "
              f"layer shapes). Peak: {peak['cores']} cores x {peak['ghz']} GHz x "
              f"{peak['flops_per_cycle_per_core']} FLOP/cycle ({peak['derivation']}) = "
              f"{peak['gflops']} GFLOP/s; a large SGEMM reaches {inf['matmul_gflops']} GFLOP/s "
              "here.", "", "**Training step** (`python -m bench.train`, batch "
              f"{train['settings']['batch']}, {train['settings']['optimizer']}, "
              f"{train['settings']['loss']})", ""]
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
              f"~{inp['images']['mean_bytes'] // 1000} kB)",
              ""]
    rate = inp.get("train_images_per_sec")
    rows = [[name, r["images_per_sec"], r["cpu_ms_per_image"],
             f"{r['images_per_sec'] / rate:.0f}x" if rate else "-"]
            for name, r in inp["results"].items()]
    lines.append(common.markdown_table(
        ["threads", "images/s", "CPU ms/image", "vs the B0 training step"], rows))
    return "\n".join(lines)


def main(argv=None):
    del argv
    print(section())


if __name__ == "__main__":
    main(sys.argv[1:])
