"""Converts weights from any supported source into our native ``.weights.h5`` once, so later
loads need neither torch nor the original files:

    python -m efficientnet_tf.convert --source=SOURCE --model_name=NAME --out=FILE.weights.h5

SOURCE is anything :func:`efficientnet_tf.load_weights` accepts ('imagenet', an official TF
checkpoint, a .pth/.pt/.bin/.safetensors state dict, a keras .h5/.keras/.weights.h5 file).
"""

from __future__ import annotations

import argparse
import os
import sys

import efficientnet_tf


def convert(source, model_name: str, out: str, include_top: bool = True, strict: bool = True):
    """Loads ``source`` into a fresh ``model_name`` and writes ``out``; returns the load report."""

    if not out.endswith(".weights.h5"):
        raise ValueError(f"--out={out!r} must end with .weights.h5 (the Keras 3 weights format)")
    model = efficientnet_tf.build_model(model_name, include_top=include_top)
    report = efficientnet_tf.load_weights(model, source, strict=strict)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    model.save_weights(out)
    return report


def main(argv=None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = argparse.ArgumentParser(prog="python -m efficientnet_tf.convert", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", required=True, help="weights to convert (or 'imagenet')")
    parser.add_argument("--model_name", required=True, help="variant, e.g. efficientnet-lite0")
    parser.add_argument("--out", required=True, help="output file, must end with .weights.h5")
    parser.add_argument("--no_top", action="store_true", help="build without the classifier")
    parser.add_argument("--no_strict", action="store_true",
                        help="load what matches instead of refusing incomplete or mismatched sources")
    args = parser.parse_args(argv)
    try:
        report = convert(args.source, args.model_name, args.out, include_top=not args.no_top,
                         strict=not args.no_strict)
    except (ValueError, OSError, ImportError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(report.describe())
    print(f"wrote {args.out} ({os.path.getsize(args.out):,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
