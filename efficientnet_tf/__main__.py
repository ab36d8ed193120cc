"""Command line: ``python -m efficientnet_tf {list,info,predict} ...``."""

from __future__ import annotations

import argparse
import os
import sys
import time


def _info(args) -> int:
    import numpy as np

    import efficientnet_tf

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
    from efficientnet_tf.predict import format_top_k, init_model, predict_top_k

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
                         help="'imagenet' or a weights file / TF checkpoint (see efficientnet_tf.load_weights)")
    predict.add_argument("--top_k", type=int, default=5)
    args = parser.parse_args(argv)
    if args.command == "list":
        import efficientnet_tf

        print("\n".join(efficientnet_tf.list_models()))
        return 0
    from efficientnet_tf import console

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
