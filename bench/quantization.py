"""What TF-Lite quantization costs, measured on real labeled data: EfficientNet-B0 trained by
``train.main`` on the embedded digits, exported as TF-Lite float32, float16, dynamic-range and
int8 (calibrated on training digits) through export/ with ``eval_data="digits"``; per variant the
file size, float vs quantized top-1 on the 360 held-out digits, the top-1 agreement with the
float model on the photographs and LiteRT's batch-1 latency.

    python -m bench.quantization              # ~5 min on 2 cores
    python -m bench.quantization --train_steps=670   # the full digits recipe (~69% at 110 steps)

Prints a markdown table and writes bench/results/quantization.json (``bench.report --deploy``
turns it and bench/results/inference_deploy.json into docs/export.md's table).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from bench import common
from train import digits_dataset
from export import tflite
from efficientnet_tf.digits import digits_images_and_labels, split_indices
from export import export_model
from train.fine_tune import model_from_model_dir

MODES = (None, "float16", "dynamic", "int8")
SIZE = 48  # the digits recipe's evaluation size


def _train(model_dir: str, steps: int) -> None:
    data_dir = os.path.join(model_dir, "tfds")
    digits_dataset.SklearnDigits(data_dir=data_dir).download_and_prepare()
    subprocess.run([sys.executable, "-m", "train.main", f"--model_dir={model_dir}/run", f"--data_dir={data_dir}",
                    f"--train_steps={steps}", "--config=runtime.steps_per_loop=22"], check=True,
                   cwd=common.REPO_ROOT, stdout=subprocess.DEVNULL)


def _latency_ms(path: str, calls: int = 50) -> float:
    with open(path, "rb") as f:
        interp = tflite.interpreter(f.read(), num_threads=1)
    x = np.random.default_rng(0).uniform(size=(1, SIZE, SIZE, 3)).astype(np.float32)
    tflite.run(interp, x)
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        tflite.run(interp, x)
        times.append(time.perf_counter() - start)
    return round(1e3 * float(np.median(times)), 3)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train_steps", type=int, default=110)
    parser.add_argument("--output", default=None, help="JSON path (default bench/results/)")
    args = parser.parse_args(argv)
    argv = sys.argv[1:] if argv is None else argv

    result = common.header("quantization", argv)
    result["settings"] = {"model": "efficientnet-b0", "image_size": SIZE, "train_steps": args.train_steps,
                          "eval_data": "digits (360 held-out)", "calibration": "48 training digits",
                          "litert_threads": 1}
    images, labels = digits_images_and_labels()
    calibration = list(images[split_indices(labels)["train"][:48]])
    rows = {}
    with tempfile.TemporaryDirectory(prefix="bench-quantization-") as work:
        _train(work, args.train_steps)
        model = model_from_model_dir(os.path.join(work, "run"))
        for mode in MODES:
            out = os.path.join(work, mode or "float32")
            options = dict(quantize=mode, eval_data="digits", calibration_images=calibration,
                           max_accuracy_drop=100) if mode else {}
            if mode != "int8":
                options.pop("calibration_images", None)
            exported = export_model(model, out, format="tflite", image_size=SIZE, **options)
            path = os.path.join(out, "model.tflite")
            row = {"bytes": os.path.getsize(path), "litert_batch1_ms": _latency_ms(path),
                   "mediapipe": [n for n in exported.notes if n.startswith("mediapipe")]}
            if exported.accuracy:
                row.update(exported.accuracy.get("eval", {}), photos=exported.accuracy.get("photos"))
            rows[mode or "float32"] = row
    result["results"] = rows
    return common.finish("quantization", result, table, args.output)


def table(result) -> str:
    base = result["results"]["float32"]["bytes"]
    rows = []
    for mode, row in result["results"].items():
        rows.append([mode, f"{row['bytes'] / 2**20:.1f} MiB ({row['bytes'] / base:.2f}x)",
                     f"{row['float_top1']:.2f}%" if "float_top1" in row else "-",
                     f"{row['quantized_top1']:.2f}%" if "quantized_top1" in row else "-",
                     f"{row['drop_points']:+.2f}" if "drop_points" in row else "-",
                     f"{row['photos']['top1_agreement']:.0%}" if row.get("photos") else "-",
                     row["litert_batch1_ms"]])
    return (f"{common.machine_line(result)}\n\n" + common.markdown_table(
        ["TF-Lite", "size", "float top-1", "export top-1", "drop (points)", "agrees on photos",
         "LiteRT batch-1 ms (1 thread)"], rows))


if __name__ == "__main__":
    main()
