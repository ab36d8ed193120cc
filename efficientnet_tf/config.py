"""The EfficientNet family as data: block specs, the variant table, and the scaling rules.

One builder (``builder.py``) turns a :class:`Variant` into layers; nothing else in the package
knows the shape of the networks. Training recipes (train size, augmentation, epochs) live in
``train/``, not here.

Sources of the numbers:
- V1 blocks and (width, depth, resolution, dropout): tensorflow/tpu
  ``models/official/efficientnet/efficientnet_builder.py`` and google/automl
  ``efficientnetv2/effnetv2_configs.py`` (``v1_b0_block_str``, ``efficientnetv1_params``).
- Lite: tensorflow/tpu ``efficientnet/lite/efficientnet_lite_builder.py`` (relu6, no SE,
  stem and head not scaled, first and last stage repeats not scaled).
- V2: google/automl ``efficientnetv2/effnetv2_configs.py`` (``v2_*_block``, ``efficientnetv2_params``)
  and ``effnetv2_model.py`` (BN momentum 0.9, no 10% rounding rule).
- Preprocessing facts: automl ``preprocessing.py`` (V2-S/M/L/XL: (x-128)/128, bilinear, centre
  crop only below 320 px) and ``preprocess_legacy.py`` (V1 rules, used by V2-B0..B3 through
  their ``effnetv1_autoaug`` recipe); tensorflow/tpu lite (mean 127, std 128).
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Dict, List, Optional, Sequence, Tuple

MBCONV = "mbconv"
FUSED = "fused"
BLOCK_KINDS = (MBCONV, FUSED)


@dataclasses.dataclass(frozen=True)
class BlockSpec:
    """One stage of blocks before scaling: ``repeats`` copies, the first with ``stride``."""

    kind: str
    repeats: int
    kernel: int
    stride: int
    expand: int
    in_filters: int
    out_filters: int
    se_ratio: float = 0.0

    def __post_init__(self):
        if self.kind not in BLOCK_KINDS:
            raise ValueError(f"BlockSpec.kind={self.kind!r}; valid kinds: {BLOCK_KINDS}")
        for field in ("repeats", "kernel", "stride", "expand", "in_filters", "out_filters"):
            if getattr(self, field) < 1:
                raise ValueError(f"BlockSpec.{field} must be >= 1, got {getattr(self, field)}")
        if not 0.0 <= self.se_ratio <= 1.0:
            raise ValueError(f"BlockSpec.se_ratio must be in [0, 1], got {self.se_ratio}")


# The compact string form used by the official code: r<repeats>_k<kernel>_s<stride>_e<expand>_
# i<in>_o<out>[_se<ratio>][_c1 for fused]. ``decode_block`` and ``encode_block`` are inverses
# (tests/test_config.py checks the round trip over every variant).
_BLOCK_KEYS = {"r", "k", "s", "e", "i", "o", "se", "c"}


def decode_block(text: str) -> BlockSpec:
    """Parses ``'r2_k3_s2_e6_i16_o24_se0.25'`` (automl notation) into a :class:`BlockSpec`."""
    options = {}
    for op in text.split("_"):
        match = re.fullmatch(r"([a-z]+)(\d+(?:\.\d+)?)", op)
        if not match or match.group(1) not in _BLOCK_KEYS:
            raise ValueError(f"Bad block string {text!r}: cannot parse {op!r}; keys are {sorted(_BLOCK_KEYS)}")
        options[match.group(1)] = match.group(2)
    missing = {"r", "k", "s", "e", "i", "o"} - set(options)
    if missing:
        raise ValueError(f"Bad block string {text!r}: missing {sorted(missing)}")
    conv_type = int(options.get("c", 0))
    if conv_type not in (0, 1):
        raise ValueError(f"Bad block string {text!r}: c must be 0 (mbconv) or 1 (fused)")
    return BlockSpec(
        kind=FUSED if conv_type else MBCONV,
        repeats=int(options["r"]),
        kernel=int(options["k"]),
        stride=int(options["s"]),
        expand=int(options["e"]),
        in_filters=int(options["i"]),
        out_filters=int(options["o"]),
        se_ratio=float(options.get("se", 0.0)),
    )


def encode_block(block: BlockSpec) -> str:
    """The inverse of :func:`decode_block`."""
    parts = [
        f"r{block.repeats}", f"k{block.kernel}", f"s{block.stride}", f"e{block.expand}",
        f"i{block.in_filters}", f"o{block.out_filters}",
    ]
    if block.se_ratio:
        parts.append(f"se{block.se_ratio:g}")
    if block.kind == FUSED:
        parts.append("c1")
    return "_".join(parts)


def decode_blocks(texts: Sequence[str]) -> Tuple[BlockSpec, ...]:
    return tuple(decode_block(t) for t in texts)


@dataclasses.dataclass(frozen=True)
class Variant:
    """Everything that defines one network of the family (and how its inputs are prepared)."""

    name: str
    family: str  # "v1" | "lite" | "v2"
    blocks: Tuple[BlockSpec, ...]
    width: float
    depth: float
    resolution: int  # the evaluation image size
    dropout_rate: float
    drop_connect_rate: float = 0.2
    bn_momentum: float = 0.99
    bn_epsilon: float = 1e-3
    activation: str = "swish"
    ten_percent_rule: bool = True  # round_filters never rounds down by more than 10% (V1/Lite)
    fix_stem_head: bool = False  # Lite: stem/head widths and first/last stage depth not scaled
    head_filters: int = 1280
    depth_divisor: int = 8
    # Preprocessing the weights were trained with, on the 0-255 scale.
    mean_rgb: Tuple[float, float, float] = (0.485 * 255, 0.456 * 255, 0.406 * 255)
    stddev_rgb: Tuple[float, float, float] = (0.229 * 255, 0.224 * 255, 0.225 * 255)
    resize_method: str = "bicubic"
    crop_padding: int = 32  # eval centre crop = resolution / (resolution + crop_padding) of min side
    crop_below: Optional[int] = None  # V2-S/M/L/XL crop only when resolution < this

    @property
    def stem_filters(self) -> int:
        return round_filters(self.blocks[0].in_filters, self, skip=self.fix_stem_head)

    @property
    def num_features(self) -> int:
        return round_filters(self.head_filters, self, skip=self.fix_stem_head)

    def stage_repeats(self) -> List[int]:
        """Repeats per stage after depth scaling."""
        last = len(self.blocks) - 1
        return [
            b.repeats if self.fix_stem_head and i in (0, last) else round_repeats(b.repeats, self.depth)
            for i, b in enumerate(self.blocks)
        ]

    def eval_crop_fraction(self, image_size: Optional[int] = None) -> float:
        """Fraction of the shorter image side kept by the evaluation centre crop at ``image_size``
        (default: the variant's resolution); 1.0 = no crop."""
        size = self.resolution if image_size is None else image_size
        return eval_crop_fraction(size, self.crop_padding, self.crop_below)


def eval_crop_fraction(image_size: int, crop_padding: int, crop_below: Optional[int] = None) -> float:
    """The one statement of the evaluation crop rule: keep ``S / (S + crop_padding)`` of the
    shorter side, or all of it when ``S >= crop_below`` (automl V2-S/M/L/XL at 320+ px)."""
    if crop_below is not None and image_size >= crop_below:
        return 1.0
    return image_size / (image_size + crop_padding)


def round_filters(filters: int, variant: Variant, skip: bool = False) -> int:
    """Scales a channel count by the variant's width and rounds to the divisor.

    V1/Lite also keep the official rule that rounding down may not lose more than 10%
    (tensorflow/tpu ``round_filters``); V2 (automl ``round_filters``) has no such rule.
    """
    if skip:
        return filters
    divisor = variant.depth_divisor
    scaled = filters * variant.width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if variant.ten_percent_rule and rounded < 0.9 * scaled:
        rounded += divisor
    return int(rounded)


def round_repeats(repeats: int, depth: float) -> int:
    """Depth scaling: ceil(depth * repeats), as every official implementation does."""
    return int(math.ceil(depth * repeats))


def drop_connect_rates(num_blocks: int, rate: float) -> List[float]:
    """Drop-path rate per block: rate * i / N, i.e. survival 1 - rate*i/N (official ramp)."""
    return [rate * i / num_blocks for i in range(num_blocks)]


def block_letters(index: int) -> str:
    """0 -> 'a', 25 -> 'z', 26 -> 'aa': keras.applications' ``block2a`` style past 26 repeats."""
    letters = ""
    index += 1
    while index:
        index, rem = divmod(index - 1, 26)
        letters = chr(97 + rem) + letters
    return letters


def block_letters_index(letters: str) -> int:
    """'a' -> 0, 'z' -> 25, 'aa' -> 26: the inverse of :func:`block_letters`."""
    value = 0
    for char in letters:
        value = value * 26 + (ord(char) - 96)
    return value - 1


# ----------------------------------------------------------------------------- the table
_V1_BLOCKS = decode_blocks([
    "r1_k3_s1_e1_i32_o16_se0.25",
    "r2_k3_s2_e6_i16_o24_se0.25",
    "r2_k5_s2_e6_i24_o40_se0.25",
    "r3_k3_s2_e6_i40_o80_se0.25",
    "r3_k5_s1_e6_i80_o112_se0.25",
    "r4_k5_s2_e6_i112_o192_se0.25",
    "r1_k3_s1_e6_i192_o320_se0.25",
])
_LITE_BLOCKS = tuple(dataclasses.replace(b, se_ratio=0.0) for b in _V1_BLOCKS)

_V2_BASE_BLOCKS = decode_blocks([
    "r1_k3_s1_e1_i32_o16_c1",
    "r2_k3_s2_e4_i16_o32_c1",
    "r2_k3_s2_e4_i32_o48_c1",
    "r3_k3_s2_e4_i48_o96_se0.25",
    "r5_k3_s1_e6_i96_o112_se0.25",
    "r8_k3_s2_e6_i112_o192_se0.25",
])
_V2_S_BLOCKS = decode_blocks([
    "r2_k3_s1_e1_i24_o24_c1",
    "r4_k3_s2_e4_i24_o48_c1",
    "r4_k3_s2_e4_i48_o64_c1",
    "r6_k3_s2_e4_i64_o128_se0.25",
    "r9_k3_s1_e6_i128_o160_se0.25",
    "r15_k3_s2_e6_i160_o256_se0.25",
])
_V2_M_BLOCKS = decode_blocks([
    "r3_k3_s1_e1_i24_o24_c1",
    "r5_k3_s2_e4_i24_o48_c1",
    "r5_k3_s2_e4_i48_o80_c1",
    "r7_k3_s2_e4_i80_o160_se0.25",
    "r14_k3_s1_e6_i160_o176_se0.25",
    "r18_k3_s2_e6_i176_o304_se0.25",
    "r5_k3_s1_e6_i304_o512_se0.25",
])
_V2_L_BLOCKS = decode_blocks([
    "r4_k3_s1_e1_i32_o32_c1",
    "r7_k3_s2_e4_i32_o64_c1",
    "r7_k3_s2_e4_i64_o96_c1",
    "r10_k3_s2_e4_i96_o192_se0.25",
    "r19_k3_s1_e6_i192_o224_se0.25",
    "r25_k3_s2_e6_i224_o384_se0.25",
    "r7_k3_s1_e6_i384_o640_se0.25",
])
_V2_XL_BLOCKS = decode_blocks([
    "r4_k3_s1_e1_i32_o32_c1",
    "r8_k3_s2_e4_i32_o64_c1",
    "r8_k3_s2_e4_i64_o96_c1",
    "r16_k3_s2_e4_i96_o192_se0.25",
    "r24_k3_s1_e6_i192_o256_se0.25",
    "r32_k3_s2_e6_i256_o512_se0.25",
    "r8_k3_s1_e6_i512_o640_se0.25",
])

_LITE = dict(
    family="lite", blocks=_LITE_BLOCKS, activation="relu6", fix_stem_head=True,
    mean_rgb=(127.0, 127.0, 127.0), stddev_rgb=(128.0, 128.0, 128.0), resize_method="bilinear",
)
_V2 = dict(family="v2", bn_momentum=0.9, ten_percent_rule=False)
# V2-B0..B3 were trained with automl's "effnetv1_autoaug" recipe, i.e. V1 preprocessing.
_V2_LARGE = dict(
    _V2, mean_rgb=(128.0, 128.0, 128.0), stddev_rgb=(128.0, 128.0, 128.0),
    resize_method="bilinear", crop_below=320,
)

_VARIANTS: Dict[str, Variant] = {}


def _add(name, width, depth, resolution, dropout, **kw):
    kw.setdefault("family", "v1")
    kw.setdefault("blocks", _V1_BLOCKS)
    _VARIANTS[name] = Variant(name=name, width=width, depth=depth, resolution=resolution,
                              dropout_rate=dropout, **kw)


# name, width, depth, eval resolution, dropout
_add("efficientnet-b0", 1.0, 1.0, 224, 0.2)
_add("efficientnet-b1", 1.0, 1.1, 240, 0.2)
_add("efficientnet-b2", 1.1, 1.2, 260, 0.3)
_add("efficientnet-b3", 1.2, 1.4, 300, 0.3)
_add("efficientnet-b4", 1.4, 1.8, 380, 0.4)
_add("efficientnet-b5", 1.6, 2.2, 456, 0.4)
_add("efficientnet-b6", 1.8, 2.6, 528, 0.5)
_add("efficientnet-b7", 2.0, 3.1, 600, 0.5)
_add("efficientnet-b8", 2.2, 3.6, 672, 0.5)
_add("efficientnet-l2", 4.3, 5.3, 800, 0.5)
_add("efficientnet-lite0", 1.0, 1.0, 224, 0.2, **_LITE)
_add("efficientnet-lite1", 1.0, 1.1, 240, 0.2, **_LITE)
_add("efficientnet-lite2", 1.1, 1.2, 260, 0.3, **_LITE)
_add("efficientnet-lite3", 1.2, 1.4, 280, 0.3, **_LITE)
_add("efficientnet-lite4", 1.4, 1.8, 300, 0.3, **_LITE)
_add("efficientnetv2-b0", 1.0, 1.0, 224, 0.2, blocks=_V2_BASE_BLOCKS, **_V2)
_add("efficientnetv2-b1", 1.0, 1.1, 240, 0.2, blocks=_V2_BASE_BLOCKS, **_V2)
_add("efficientnetv2-b2", 1.1, 1.2, 260, 0.3, blocks=_V2_BASE_BLOCKS, **_V2)
_add("efficientnetv2-b3", 1.2, 1.4, 300, 0.3, blocks=_V2_BASE_BLOCKS, **_V2)
_add("efficientnetv2-s", 1.0, 1.0, 384, 0.2, blocks=_V2_S_BLOCKS, **_V2_LARGE)
_add("efficientnetv2-m", 1.0, 1.0, 480, 0.3, blocks=_V2_M_BLOCKS, **_V2_LARGE)
_add("efficientnetv2-l", 1.0, 1.0, 480, 0.4, blocks=_V2_L_BLOCKS, **_V2_LARGE)
_add("efficientnetv2-xl", 1.0, 1.0, 512, 0.4, blocks=_V2_XL_BLOCKS, **_V2_LARGE)


def list_models() -> List[str]:
    """The official names of every buildable variant, in table order."""
    return list(_VARIANTS)


def get_variant(name: str) -> Variant:
    """Looks up a variant by its official name; unknown names list the valid ones."""
    try:
        return _VARIANTS[name]
    except (KeyError, TypeError):
        raise ValueError(f"Unknown model name {name!r}. Valid names: {', '.join(_VARIANTS)}") from None


def variant_info(v: Variant) -> Dict[str, object]:
    """The table's facts of one variant as plain values (what ``model_info`` reports)."""
    return {
        "name": v.name,
        "family": v.family,
        "resolution": v.resolution,
        "input_shape": (v.resolution, v.resolution, 3),
        "input_range": (0.0, 1.0),
        "eval_crop_fraction": v.eval_crop_fraction(),
        "crop_padding": v.crop_padding,
        "crop_below": v.crop_below,
        "resize_method": v.resize_method,
        "mean_rgb": v.mean_rgb,
        "stddev_rgb": v.stddev_rgb,
        "num_features": v.num_features,
        "activation": v.activation,
        "dropout_rate": v.dropout_rate,
        "drop_connect_rate": v.drop_connect_rate,
        "bn_momentum": v.bn_momentum,
        "bn_epsilon": v.bn_epsilon,
        "blocks": [encode_block(b) for b in v.blocks],
    }
