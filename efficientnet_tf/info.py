"""What a user needs to feed a variant, from the variant table and, when given, a weight set."""

from __future__ import annotations

import dataclasses
from typing import Dict, Optional

from efficientnet_tf import config as cfg
from efficientnet_tf.weights.pretrained import build_facts


def model_info(name: str, weights: Optional[str] = None) -> Dict[str, object]:
    """The facts a user needs to feed a variant: sizes, preprocessing and feature width; with
    ``weights`` (a published tag or its URL) those of that weight set (resolution, crop, resize
    method, normalization), recorded under "weights". Raises ValueError for an unknown variant
    or a ``weights`` that is not one of its published sets."""
    v = cfg.get_variant(name)
    record = None
    if weights is not None:
        weight_set = build_facts(name, weights)
        if weight_set is None:
            raise ValueError(f"weights={weights!r} is not a published weight set of {name!r}")
        record = weight_set.record()
        pre = record["eval_preprocessing"]  # the set's own evaluation rule (automl 21k, 21k-ft1k)
        v = dataclasses.replace(v, resolution=record["resolution"], mean_rgb=tuple(record["mean_rgb"]),
                                stddev_rgb=tuple(record["stddev_rgb"]), crop_padding=pre["crop_padding"],
                                crop_below=pre["crop_below"], resize_method=pre["resize_method"])
    info = cfg.variant_info(v)
    if record is not None:
        info["weights"] = record
    return info
