"""Command line: ``python -m efficientnet_tf {list,info} ...``."""

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


def main(argv=None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = argparse.ArgumentParser(prog="python -m efficientnet_tf", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the variant names")
    info = sub.add_parser("info", help="build a variant and show its facts and endpoints")
    info.add_argument("model_name")
    info.add_argument("--image_size", type=int, default=None)
    args = parser.parse_args(argv)
    if args.command == "list":
        import efficientnet_tf

        print("\n".join(efficientnet_tf.list_models()))
        return 0
    try:
        return _info(args)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
