"""What a user needs to feed a variant, from the variant table and, when given, a weight set."""

from __future__ import annotations

import dataclasses
from typing import Dict, Optional

from efficientnet_tf import config as cfg
from efficientnet_tf.weights.pretrained import build_facts


def model_info(name: str, weights: Optional[str] = None) -> Dict[str, object]:
    """The facts a user needs to feed a variant: sizes, preprocessing and feature width; with
    ``weights`` (a published tag or its URL) those of that weight set, recorded under "weights"."""
    v = cfg.get_variant(name)
    record = None
    if weights is not None:
        weight_set = build_facts(name, weights)
        if weight_set is None:
            raise ValueError(f"weights={weights!r} is not a published weight set of {name!r}")
        record = weight_set.record()
        v = dataclasses.replace(v, resolution=record["resolution"], mean_rgb=tuple(record["mean_rgb"]),
                                stddev_rgb=tuple(record["stddev_rgb"]))
    info = cfg.variant_info(v)
    if record is not None:
        info["weights"] = record
    return info
