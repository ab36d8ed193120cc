"""Input speed: images/sec of the training preprocessing (read, decode + random crop on the
JPEG, resize, flip, RandAugment, batch) on real JPEG photos, per core and on all cores,
against the training step rate of bench.train.

    python -m bench.input                     # B0 recipe at 224 (~1-2 min)

Uses train.input_pipeline.build_dataset (the trainer's own pipeline) on a folder of JPEGs.
The photos are the labelled ones of export/photos.py (shipped with scikit-image), scaled to
ImageNet's typical size (longer side 500 px) and JPEG-encoded at quality 90. Prints a
markdown table and writes bench/results/input.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

from bench import common

common.setup_environment()

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from bench.train import OURS  # noqa: E402
from export import photos  # noqa: E402
from train import input_pipeline  # noqa: E402
from train.augment import Augment  # noqa: E402

LONGER_SIDE = 500  # ImageNet train images are mostly 500x375 / 375x500
JPEG_QUALITY = 90


def write_jpegs(root: str, copies: int = 4) -> list[str]:
    """Writes root/<photo>/<i>.jpg: each listed photo, its longer side scaled to 500 px, as JPEG.

    ``copies`` differently cropped versions of each photo, so that sizes vary."""
    paths = []
    for photo in photos.labelled():
        image = tf.io.decode_image(photo.read_bytes(), channels=3, expand_animations=False)
        height, width = image.shape[:2]
        scale = LONGER_SIDE / max(height, width)
        image = tf.image.resize(image, (round(height * scale), round(width * scale)),
                                antialias=True)
        image = tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)
        folder = os.path.join(root, photo.name)
        os.makedirs(folder, exist_ok=True)
        for i in range(copies):
            h, w = image.shape[:2]
            cropped = image[: h - 8 * i, : w - 12 * i]  # slightly different sizes and bytes
            path = os.path.join(folder, f"{i}.jpg")
            tf.io.write_file(path, tf.io.encode_jpeg(cropped, quality=JPEG_QUALITY))
            paths.append(path)
    return paths


def training_dataset(root, args, check_corrupt=True):
    return input_pipeline.build_dataset(input_pipeline.PipelineSpec(
        root, None, is_training=True, image_size=args.size, batch_size=args.batch,
        resize_method="bicubic", crop_rule="v1",
        augmentation=Augment("randaugment", args.randaug_layers, args.randaug_magnitude),
        num_classes=1000, seed=0, check_corrupt=check_corrupt))


def one_core(ds):
    options = tf.data.Options()
    options.threading.private_threadpool_size = 1
    options.threading.max_intra_op_parallelism = 1
    options.autotune.cpu_budget = 1
    return ds.with_options(options)


def interleaved_rates(datasets, batch, seconds, rounds=5):
    """images/sec of each dataset, timed in alternating slices (A, B, C, A, B, C, ...) so that
    other load on the machine hits every configuration alike."""
    iterators = {name: iter(ds) for name, ds in datasets.items()}
    for iterator in iterators.values():
        for _ in range(3):  # warm-up: tracing, thread pools, autotune
            next(iterator)
    totals = {name: [0, 0.0, 0.0] for name in datasets}  # batches, wall, cpu
    for _ in range(rounds):
        for name, iterator in iterators.items():
            cpu0, start = time.process_time(), time.perf_counter()
            while time.perf_counter() - start < seconds / rounds:
                images, _ = next(iterator)
                totals[name][0] += 1
            totals[name][1] += time.perf_counter() - start
            totals[name][2] += time.process_time() - cpu0
            if images.shape[0] != batch or float(tf.reduce_max(images)) > 1.0:
                raise AssertionError(f"{name}: bad batch {images.shape}")
    return {name: {"images_per_sec": round(batch * n / wall, 1), "batches": n,
                   "cpu_ms_per_image": round(1e3 * cpu / (batch * n), 2)}
            for name, (n, wall, cpu) in totals.items()}


def train_rate(model):
    path = os.path.join(common.RESULTS_DIR, "train.json")
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    if data.get("settings", {}).get("model") != model:
        return None

    return data["results"][OURS]["images_per_sec"]  # what train.main trains


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="efficientnet-b0")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--randaug_layers", type=int, default=2)
    parser.add_argument("--randaug_magnitude", type=float, default=10)
    parser.add_argument("--seconds", type=float, default=15,
                        help="timing per configuration (in 5 interleaved slices)")
    parser.add_argument("--output", default=None, help="JSON path (default bench/results/)")
    args = parser.parse_args(argv)
    argv = sys.argv[1:] if argv is None else argv

    result = common.header("input", argv)
    result["settings"] = {
        "model": args.model, "size": args.size, "batch": args.batch,
        "pipeline": "train.input_pipeline.build_dataset(folder, is_training=True, "
                    "resize_method='bicubic', crop_rule='v1', augment_name='randaugment')",
        "randaugment": {"num_layers": args.randaug_layers, "magnitude": args.randaug_magnitude},
        "images": f"labelled photos of export/photos.py, longer side {LONGER_SIDE}, "
                  f"JPEG quality {JPEG_QUALITY}", "seconds_per_config": args.seconds}
    with tempfile.TemporaryDirectory() as root:
        paths = write_jpegs(root)
        sizes = [os.path.getsize(p) for p in paths]
        result["images"] = {"count": len(paths), "mean_bytes": int(np.mean(sizes))}
        datasets = {}
        for check in (True, False):
            label = "" if check else ", check_corrupt=False"
            ds = training_dataset(root, args, check_corrupt=check)
            datasets[f"1 core{label}"] = one_core(ds)
            datasets[f"all {os.cpu_count()} cores{label}"] = ds
        rows = interleaved_rates(datasets, args.batch, args.seconds)
    result["results"] = rows
    rate = train_rate(args.model)
    result["train_images_per_sec"] = rate
    if rate:
        result["ratios_vs_train_step"] = {k: round(v["images_per_sec"] / rate, 2)
                                          for k, v in rows.items()}
    return common.finish("input", result, table, args.output)


def table(result):
    rate = result["train_images_per_sec"]
    rows = [[name, r["images_per_sec"], r["cpu_ms_per_image"],
             f"{r['images_per_sec'] / rate:.1f}x" if rate else "-"]
            for name, r in result["results"].items()]
    s = result["settings"]
    text = (f"training input pipeline (decode+crop, bicubic resize to {s['size']}, flip, "
            f"RandAugment {s['randaugment']['num_layers']}x{s['randaugment']['magnitude']:g}), "
            f"batch {s['batch']} - {common.machine_line(result)}\n\n")
    text += common.markdown_table(["threads", "images/s", "CPU ms/image",
                                   f"vs train step ({rate} img/s)" if rate else "vs train step"],
                                  rows)
    if result.get("warning"):
        text += f"\n\nNote: {result['warning']}"
    return text


if __name__ == "__main__":
    main()
