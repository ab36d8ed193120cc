"""AutoAugment (policy v0) and RandAugment on core TF ops, plus batch mixup and cutmix.

Image ops act on uint8 [H, W, 3] like the official code: google/automl
efficientnetv2/autoaugment.py (the same as tensorflow/tpu models/official/efficientnet/
autoaugment.py). tensorflow-addons' transforms are replaced by
tf.raw_ops.ImageProjectiveTransformV3 (nearest, constant fill), which gives what the
official wrap/unwrap trick gives. Randomness is stateless: random functions take a
`seed`, an int tensor of shape [2].
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Dict, Optional

import tensorflow as tf

_MAX_LEVEL = 10.0  # official `_MAX_LEVEL`
_REPLACE = 128  # official replace value [128, 128, 128] for empty pixels


# ----------------------------------------------------------------------------- pixel ops


def blend(image1, image2, factor):
    """image1 + factor * (image2 - image1), clipped to [0, 255], truncated to uint8."""
    image1 = tf.cast(image1, tf.float32)
    image2 = tf.cast(image2, tf.float32)
    return tf.cast(tf.clip_by_value(image1 + factor * (image2 - image1), 0.0, 255.0), tf.uint8)


def invert(image):
    return 255 - tf.convert_to_tensor(image)


def solarize(image, threshold=128):
    """Inverts pixels >= threshold (threshold compared in int32: the official 256 overflows)."""
    return tf.where(tf.cast(image, tf.int32) < threshold, image, 255 - image)


def solarize_add(image, addition=0, threshold=128):
    """Adds `addition` (clipped to [0, 255]) to pixels below threshold."""
    added = tf.cast(tf.clip_by_value(tf.cast(image, tf.int32) + addition, 0, 255), tf.uint8)
    return tf.where(tf.cast(image, tf.int32) < threshold, added, image)


def color(image, factor):
    """PIL ImageEnhance.Color: blend with the grayscale image."""
    degenerate = tf.image.grayscale_to_rgb(tf.image.rgb_to_grayscale(image))
    return blend(degenerate, image, factor)


def contrast(image, factor):
    """PIL ImageEnhance.Contrast: blend with the mean gray level.

    The official TF code takes sum(histogram) / 256 (= pixel count / 256) as the "mean", a
    known bug; we use the real mean of the grayscale image, as PIL does.
    """
    gray = tf.cast(tf.image.rgb_to_grayscale(image), tf.float32)
    mean = tf.round(tf.reduce_mean(gray))  # PIL: int(mean + 0.5)
    degenerate = tf.cast(tf.ones_like(image, tf.float32) * mean, tf.uint8)
    return blend(degenerate, image, factor)


def brightness(image, factor):
    """PIL ImageEnhance.Brightness: blend with black."""
    return blend(tf.zeros_like(image), image, factor)


def posterize(image, bits):
    """Keeps the top `bits` bits. Shift clamped to 7: TF's CPU kernel clamps an 8-bit shift of
    uint8 to 7, which is what the official code (bits = 0 at level 0..2) got."""
    shift = tf.constant(min(8 - int(bits), 7), tf.uint8)
    return tf.bitwise.left_shift(tf.bitwise.right_shift(image, shift), shift)


def autocontrast(image):
    """PIL ImageOps.autocontrast per channel: stretch [min, max] to [0, 255]."""
    image = tf.convert_to_tensor(image)
    lo = tf.cast(tf.reduce_min(image, axis=[0, 1]), tf.float32)
    hi = tf.cast(tf.reduce_max(image, axis=[0, 1]), tf.float32)
    scale = tf.math.divide_no_nan(255.0, hi - lo)
    stretched = tf.clip_by_value(tf.cast(image, tf.float32) * scale - lo * scale, 0.0, 255.0)
    return tf.where(hi > lo, tf.cast(stretched, tf.uint8), image)


def sharpness(image, factor):
    """PIL ImageEnhance.Sharpness: blend with the SMOOTH-filtered image (border pixels kept)."""
    image = tf.convert_to_tensor(image)
    kernel = tf.constant([[1, 1, 1], [1, 5, 1], [1, 1, 1]], tf.float32, shape=[3, 3, 1, 1]) / 13.
    kernel = tf.tile(kernel, [1, 1, 3, 1])
    smooth = tf.nn.depthwise_conv2d(tf.cast(image, tf.float32)[None], kernel, [1, 1, 1, 1],
                                    padding="VALID")[0]
    smooth = tf.cast(tf.clip_by_value(smooth, 0.0, 255.0), tf.uint8)
    inner = tf.pad(tf.ones_like(smooth, tf.bool), [[1, 1], [1, 1], [0, 0]])
    degenerate = tf.where(inner, tf.pad(smooth, [[1, 1], [1, 1], [0, 0]]), image)
    return blend(degenerate, image, factor)


def _equalize_channel(channel):
    """PIL ImageOps.equalize for one uint8 [H, W] channel (official LUT construction)."""
    channel = tf.cast(channel, tf.int32)
    histo = tf.histogram_fixed_width(channel, [0, 255], nbins=256)
    nonzero = tf.boolean_mask(histo, histo > 0)
    step = (tf.reduce_sum(nonzero) - nonzero[-1]) // 255

    def equalized():
        lut = (tf.cumsum(histo) + step // 2) // step
        lut = tf.clip_by_value(tf.concat([[0], lut[:-1]], 0), 0, 255)
        return tf.gather(lut, channel)

    return tf.cast(tf.cond(tf.equal(step, 0), lambda: channel, equalized), tf.uint8)


def equalize(image):
    image = tf.convert_to_tensor(image)
    return tf.stack([_equalize_channel(image[:, :, c]) for c in range(3)], axis=2)


def cutout(image, pad_size, seed, replace=_REPLACE):
    """Fills a (2*pad_size)^2 square centred uniformly in the image (clipped at borders)."""
    image = tf.convert_to_tensor(image)
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    seed_y, seed_x = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    cy = tf.random.stateless_uniform([], seed_y, 0, height, tf.int32)
    cx = tf.random.stateless_uniform([], seed_x, 0, width, tf.int32)
    rows = tf.range(height)[:, None]
    cols = tf.range(width)[None, :]
    inside = ((rows >= cy - pad_size) & (rows < cy + pad_size) &
              (cols >= cx - pad_size) & (cols < cx + pad_size))
    return tf.where(inside[:, :, None], tf.cast(replace, image.dtype), image)


# ---------------------------------------------------------------------------- affine ops


def transform(image, matrix, replace=_REPLACE):
    """Projective transform; matrix [a0, a1, a2, b0, b1, b2, c0, c1] maps output (x, y) to
    input ((a0 x + a1 y + a2) / k, (b0 x + b1 y + b2) / k), k = c0 x + c1 y + 1 (as in tfa)."""
    image = tf.convert_to_tensor(image)
    matrix = tf.reshape(tf.cast(tf.stack(matrix), tf.float32), [1, 8])
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=image[None], transforms=matrix, output_shape=tf.shape(image)[:2],
        fill_value=tf.cast(replace, tf.float32), interpolation="NEAREST", fill_mode="CONSTANT")
    return out[0]


def rotate(image, degrees, replace=_REPLACE):
    """Rotates about the centre (tfa.image.rotate's transform)."""
    image = tf.convert_to_tensor(image)
    radians = tf.cast(degrees, tf.float32) * (math.pi / 180.0)
    shape = tf.cast(tf.shape(image), tf.float32)
    h, w = shape[0] - 1.0, shape[1] - 1.0
    cos, sin = tf.cos(radians), tf.sin(radians)
    x_offset = (w - (cos * w - sin * h)) / 2.0
    y_offset = (h - (sin * w + cos * h)) / 2.0
    return transform(image, [cos, -sin, x_offset, sin, cos, y_offset, 0.0, 0.0], replace)


def translate_x(image, pixels, replace=_REPLACE):
    """Content moves left by `pixels` (official: tfa.translate(image, [-pixels, 0]))."""
    return transform(image, [1.0, 0.0, pixels, 0.0, 1.0, 0.0, 0.0, 0.0], replace)


def translate_y(image, pixels, replace=_REPLACE):
    return transform(image, [1.0, 0.0, 0.0, 0.0, 1.0, pixels, 0.0, 0.0], replace)


def shear_x(image, level, replace=_REPLACE):
    return transform(image, [1.0, level, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0], replace)


def shear_y(image, level, replace=_REPLACE):
    return transform(image, [1.0, 0.0, 0.0, level, 1.0, 0.0, 0.0, 0.0], replace)


# ------------------------------------------------------------------- levels and policies


@dataclasses.dataclass(frozen=True)
class AugmentParams:
    """Pixel constants of a policy (official `augmentation_params`)."""
    translate_const: float
    cutout_const: float
    replace: int = _REPLACE


AUTOAUGMENT_PARAMS = AugmentParams(translate_const=250, cutout_const=100)
RANDAUGMENT_PARAMS = AugmentParams(translate_const=100, cutout_const=40)


def _random_sign(value, seed):
    """value or -value with probability 1/2 (official `_randomly_negate_tensor`)."""
    flip = tf.random.stateless_uniform([], seed) < 0.5
    return tf.where(flip, -value, value)


def _enhance(level):
    return level / _MAX_LEVEL * 1.8 + 0.1


# name -> f(image, level, seed, params); level -> argument rules of official `level_to_arg`.
OPS = {
    "AutoContrast": lambda im, lv, sd, p: autocontrast(im),
    "Equalize": lambda im, lv, sd, p: equalize(im),
    "Invert": lambda im, lv, sd, p: invert(im),
    "Rotate": lambda im, lv, sd, p: rotate(
        im, _random_sign(lv / _MAX_LEVEL * 30.0, sd), p.replace),
    "Posterize": lambda im, lv, sd, p: posterize(im, int(lv / _MAX_LEVEL * 4)),
    "Solarize": lambda im, lv, sd, p: solarize(im, int(lv / _MAX_LEVEL * 256)),
    "SolarizeAdd": lambda im, lv, sd, p: solarize_add(im, int(lv / _MAX_LEVEL * 110)),
    "Color": lambda im, lv, sd, p: color(im, _enhance(lv)),
    "Contrast": lambda im, lv, sd, p: contrast(im, _enhance(lv)),
    "Brightness": lambda im, lv, sd, p: brightness(im, _enhance(lv)),
    "Sharpness": lambda im, lv, sd, p: sharpness(im, _enhance(lv)),
    "ShearX": lambda im, lv, sd, p: shear_x(
        im, _random_sign(lv / _MAX_LEVEL * 0.3, sd), p.replace),
    "ShearY": lambda im, lv, sd, p: shear_y(
        im, _random_sign(lv / _MAX_LEVEL * 0.3, sd), p.replace),
    "TranslateX": lambda im, lv, sd, p: translate_x(
        im, _random_sign(lv / _MAX_LEVEL * p.translate_const, sd), p.replace),
    "TranslateY": lambda im, lv, sd, p: translate_y(
        im, _random_sign(lv / _MAX_LEVEL * p.translate_const, sd), p.replace),
    "Cutout": lambda im, lv, sd, p: cutout(
        im, int(lv / _MAX_LEVEL * p.cutout_const), sd, p.replace),
}

# RandAugment's op list, in the official order.
RANDAUGMENT_OPS = ("AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize",
                   "Color", "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY",
                   "TranslateX", "TranslateY", "Cutout", "SolarizeAdd")

# AutoAugment policy v0 (official `policy_v0`): sub-policies of (op, probability, level).
POLICY_V0 = (
    (("Equalize", 0.8, 1), ("ShearY", 0.8, 4)),
    (("Color", 0.4, 9), ("Equalize", 0.6, 3)),
    (("Color", 0.4, 1), ("Rotate", 0.6, 8)),
    (("Solarize", 0.8, 3), ("Equalize", 0.4, 7)),
    (("Solarize", 0.4, 2), ("Solarize", 0.6, 2)),
    (("Color", 0.2, 0), ("Equalize", 0.8, 8)),
    (("Equalize", 0.4, 8), ("SolarizeAdd", 0.8, 3)),
    (("ShearX", 0.2, 9), ("Rotate", 0.6, 8)),
    (("Color", 0.6, 1), ("Equalize", 1.0, 2)),
    (("Invert", 0.4, 9), ("Rotate", 0.6, 0)),
    (("Equalize", 1.0, 9), ("ShearY", 0.6, 3)),
    (("Color", 0.4, 7), ("Equalize", 0.6, 0)),
    (("Posterize", 0.4, 6), ("AutoContrast", 0.4, 7)),
    (("Solarize", 0.6, 8), ("Color", 0.6, 9)),
    (("Solarize", 0.2, 4), ("Rotate", 0.8, 9)),
    (("Rotate", 1.0, 7), ("TranslateY", 0.8, 9)),
    (("ShearX", 0.0, 0), ("Solarize", 0.8, 4)),
    (("ShearY", 0.8, 0), ("Color", 0.6, 4)),
    (("Color", 1.0, 0), ("Rotate", 0.6, 2)),
    (("Equalize", 0.8, 4), ("Equalize", 0.0, 8)),
    (("Equalize", 1.0, 4), ("AutoContrast", 0.6, 2)),
    (("ShearY", 0.4, 7), ("SolarizeAdd", 0.6, 7)),
    (("Posterize", 0.8, 2), ("Solarize", 0.6, 10)),
    (("Solarize", 0.6, 8), ("Equalize", 0.6, 1)),
    (("Color", 0.8, 6), ("Rotate", 0.4, 5)),
)


def apply_op(name: str, image, level, seed, params: AugmentParams = RANDAUGMENT_PARAMS):
    """Applies op `name` at magnitude `level` (0..10 in the paper; larger extrapolates)."""
    if name not in OPS:
        raise ValueError(f"Unknown augmentation op {name!r}; valid: {sorted(OPS)}.")
    image = tf.convert_to_tensor(image)
    if image.dtype != tf.uint8:
        raise ValueError(f"Augmentation ops take uint8 images, got {image.dtype.name}.")
    out = OPS[name](image, float(level), seed, params)
    out.set_shape(image.shape)
    return out


def distort_with_autoaugment(image, seed, policy=POLICY_V0, params=AUTOAUGMENT_PARAMS):
    """Applies one uniformly chosen sub-policy; each of its ops fires with its probability."""
    image = tf.convert_to_tensor(image)
    seeds = tf.random.experimental.stateless_split(seed, 1 + 2 * max(map(len, policy)))
    choice = tf.random.stateless_uniform([], seeds[0], 0, len(policy), tf.int32)

    def branch(sub_policy):
        def run():
            out = image
            for i, (name, prob, level) in enumerate(sub_policy):
                fire = tf.random.stateless_uniform([], seeds[1 + 2 * i]) < prob
                op_seed = seeds[2 + 2 * i]
                out = tf.cond(fire, lambda o=out, n=name, lv=level, s=op_seed:
                              apply_op(n, o, lv, s, params), lambda o=out: o)
            return out
        return run

    out = tf.switch_case(choice, [branch(sub_policy) for sub_policy in policy])
    out.set_shape(image.shape)
    return out


def distort_with_randaugment(image, num_layers: int, magnitude: float, seed,
                             params=RANDAUGMENT_PARAMS, ops=RANDAUGMENT_OPS):
    """num_layers times: apply one uniformly chosen op at `magnitude` (official RandAugment:
    the op is always applied; its sampled probability is unused there)."""
    out = tf.convert_to_tensor(image)
    for layer_seed in tf.unstack(tf.random.experimental.stateless_split(seed, num_layers)):
        choice_seed, op_seed = tf.unstack(tf.random.experimental.stateless_split(layer_seed, 2))
        choice = tf.random.stateless_uniform([], choice_seed, 0, len(ops), tf.int32)
        branches = [lambda n=name, o=out, s=op_seed: apply_op(n, o, magnitude, s, params)
                    for name in ops]
        out = tf.switch_case(choice, branches)
        out.set_shape(image.shape)
    return out


# ------------------------------------------------------------------- the registry

# Per-image augmentations by name: fn(uint8 image, seed [2], settings: Augment) -> uint8 image.
# Adding one is a function and a @register("name"); config choices, flags' help and the docs
# list AUGMENTATIONS.
AUGMENTATIONS: Dict[str, Callable] = {}


def register(name: str):
    """Registers ``fn(image, seed, settings)`` as the per-image augmentation ``name``."""
    def add(fn):
        if name in AUGMENTATIONS:
            raise ValueError(f"augmentation {name!r} is registered twice")
        AUGMENTATIONS[name] = fn
        return fn
    return add


@register("autoaugment")
def _autoaugment(image, seed, settings):
    del settings  # policy v0 has its own magnitudes
    return distort_with_autoaugment(image, seed)


@register("randaugment")
def _randaugment(image, seed, settings):
    return distort_with_randaugment(image, settings.randaug_num_layers, settings.randaug_magnitude,
                                    seed)


AUGMENT_NAMES = tuple(AUGMENTATIONS)


def _check_range(key, value, low, high=None):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < low or (
            high is not None and value > high):
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{key}={value!r} must be a number {bound}")


@dataclasses.dataclass(frozen=True)
class Augment:
    """How training images are augmented: one per-image augmentation by name (or None) with its
    settings, and batch mixing. Validated when made.

    Args:
        name: a key of :data:`AUGMENTATIONS` or None.
        randaug_num_layers, randaug_magnitude: RandAugment's N and M (magnitude 0-30).
        mixup_alpha, cutmix_alpha: Beta parameters of mixup and CutMix (0: off).
        key_prefix: prefixed to the field names in error messages (e.g. "data.").

    Raises:
        ValueError: naming the field, the bad value and the valid ones.
    """
    name: Optional[str] = None
    randaug_num_layers: int = 2
    randaug_magnitude: float = 10.0
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    key_prefix: str = dataclasses.field(default="", compare=False, repr=False)

    def __post_init__(self):
        key = self.key_prefix
        if self.name is not None and self.name not in AUGMENTATIONS:
            raise ValueError(f"{key}augment_name={self.name!r} is not valid; valid values: "
                             f"{['None'] + list(AUGMENTATIONS)}")
        _check_range(f"{key}randaug_num_layers", self.randaug_num_layers, 0)
        _check_range(f"{key}randaug_magnitude", self.randaug_magnitude, 0, 30)
        _check_range(f"{key}mixup_alpha", self.mixup_alpha, 0)
        _check_range(f"{key}cutmix_alpha", self.cutmix_alpha, 0)

    @property
    def mixes(self) -> bool:
        """Whether batches are mixed (labels must then be one-hot)."""
        return bool(self.mixup_alpha or self.cutmix_alpha)

    def apply(self, image, seed):
        """The per-image augmentation on a uint8 [H, W, 3] image (unchanged when ``name`` is None)."""
        if self.name is None:
            return image
        return AUGMENTATIONS[self.name](image, seed, self)

    def mix(self, images, labels, seed):
        """Mixup or CutMix of a batch (see :func:`mix_batch`)."""
        return mix_batch(images, labels, self.mixup_alpha, self.cutmix_alpha, seed)


def distort_image(image, augment_name: str, seed, num_layers: int = 2, magnitude: float = 10):
    """The registered augmentation ``augment_name`` on a uint8 image."""
    if augment_name not in AUGMENTATIONS:  # a name is required here; None is not one
        raise ValueError(f"Unknown augment_name {augment_name!r}; valid: {list(AUGMENTATIONS)}.")
    return Augment(augment_name, num_layers, magnitude).apply(image, seed)


# ------------------------------------------------------------------------ random erasing

# timm RandomErasing (timm/data/random_erasing.py) defaults, the same as Model Garden's
# (official/vision/ops/augment.py RandomErasing): area 2%-1/3 of the image, aspect ratio
# 0.3-1/0.3 (log-uniform), one rectangle, 10 attempts to fit it.
ERASE_AREA_RANGE = (0.02, 1.0 / 3.0)
ERASE_ASPECT_RANGE = (0.3, 1.0 / 0.3)
ERASE_ATTEMPTS = 10


def random_erasing(image, seed, probability: float, fill_mean=(0.5, 0.5, 0.5),
                   fill_std=(0.5, 0.5, 0.5), area_range=ERASE_AREA_RANGE,
                   aspect_range=ERASE_ASPECT_RANGE, attempts: int = ERASE_ATTEMPTS):
    """Random erasing (arXiv:1708.04896) of a float image [H, W, 3].

    With ``probability``, one rectangle of area in ``area_range`` (a fraction of the image) and
    aspect ratio h/w in ``aspect_range`` is filled with per-pixel noise mean + std * N(0, 1)
    per channel; sizes round half to even, the first of ``attempts`` draws that fits strictly
    inside the image is used, none fitting leaves the image unchanged (timm's rules).
    """
    image = tf.convert_to_tensor(image, tf.float32)
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    seeds = tf.unstack(tf.random.experimental.stateless_split(seed, 6))
    apply = tf.random.stateless_uniform([], seeds[0]) < probability
    area = tf.cast(height * width, tf.float32) * tf.random.stateless_uniform(
        [attempts], seeds[1], area_range[0], area_range[1])
    aspect = tf.exp(tf.random.stateless_uniform(
        [attempts], seeds[2], math.log(aspect_range[0]), math.log(aspect_range[1])))
    heights = tf.cast(tf.round(tf.sqrt(area * aspect)), tf.int32)
    widths = tf.cast(tf.round(tf.sqrt(area / aspect)), tf.int32)
    fits = (heights < height) & (widths < width)
    first = tf.argmax(tf.cast(fits, tf.int32), output_type=tf.int32)
    h, w = heights[first], widths[first]
    # Top-left corner uniform over every position that keeps the rectangle inside.
    top = tf.random.stateless_uniform([], seeds[3], 0, tf.maximum(height - h + 1, 1), tf.int32)
    left = tf.random.stateless_uniform([], seeds[4], 0, tf.maximum(width - w + 1, 1), tf.int32)
    rows = tf.range(height)[:, None]
    cols = tf.range(width)[None, :]
    inside = (rows >= top) & (rows < top + h) & (cols >= left) & (cols < left + w)
    inside &= apply & tf.reduce_any(fits)
    noise = (tf.random.stateless_normal(tf.shape(image), seeds[5]) * tf.constant(fill_std)
             + tf.constant(fill_mean))
    return tf.where(inside[..., None], noise, image)


@dataclasses.dataclass(frozen=True)
class RandomErasing:
    """Random erasing of [0, 1] train images (timm ``--reprob``; see :func:`random_erasing`).

    probability: per image, in [0, 1].
    fill_mean, fill_std: the noise per channel on the [0, 1] scale. The model normalizes inside
      (``(255 x - mean_rgb) / stddev_rgb``), so mean_rgb / 255 and stddev_rgb / 255 give
      N(0, 1) noise after that normalization: timm's 'pixel' mode, which fills after its
      Normalize transform (:meth:`for_normalization`).
    """
    probability: float = 0.0
    fill_mean: tuple = (0.5, 0.5, 0.5)
    fill_std: tuple = (0.5, 0.5, 0.5)

    def __post_init__(self):
        _check_range("data.random_erasing_prob", self.probability, 0, 1)

    @classmethod
    def for_normalization(cls, probability: float, mean_rgb, stddev_rgb) -> "RandomErasing":
        """Noise that is N(0, 1) after the model's normalization by mean_rgb, stddev_rgb (0-255)."""
        return cls(probability, tuple(float(m) / 255.0 for m in mean_rgb),
                   tuple(float(s) / 255.0 for s in stddev_rgb))

    def apply(self, image, seed):
        """The erased float image (unchanged when probability is 0)."""
        if not self.probability:
            return image
        return random_erasing(image, seed, self.probability, self.fill_mean, self.fill_std)


# ------------------------------------------------------------------------ batch mixing


def sample_beta(shape, alpha: float, seed):
    """Beta(alpha, alpha) as X / (X + Y) with X, Y ~ Gamma(alpha) (stateless tf.random.gamma)."""
    seed_x, seed_y = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    x = tf.random.stateless_gamma(shape, seed_x, alpha=alpha)
    y = tf.random.stateless_gamma(shape, seed_y, alpha=alpha)
    return tf.math.divide_no_nan(x, x + y)


def mixup(images, labels, alpha: float, seed):
    """Mixup (arXiv:1710.09412) with the batch reversed, per-example weight lam ~ Beta and
    lam = max(lam, 1 - lam) as in automl efficientnetv2/datasets.py. Labels: one-hot float."""
    images = tf.convert_to_tensor(images)
    labels = tf.cast(labels, tf.float32)
    lam = sample_beta(tf.shape(images)[:1], alpha, seed)
    lam = tf.maximum(lam, 1.0 - lam)
    image_lam = tf.cast(tf.reshape(lam, [-1, 1, 1, 1]), images.dtype)
    images = images * image_lam + images[::-1] * (1.0 - image_lam)
    labels = labels * lam[:, None] + labels[::-1] * (1.0 - lam[:, None])
    return images, labels


def cutmix_masks(batch_size, height, width, alpha: float, seed):
    """Boolean [B, H, W] boxes of area about 1 - lam, lam ~ Beta, centres uniform, clipped
    at the borders (automl efficientnetv2/datasets.py `cutmix_mask`)."""
    seed_lam, seed_y, seed_x = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
    lam = sample_beta([batch_size], alpha, seed_lam)
    ratio = tf.sqrt(1.0 - lam)
    cut_h = tf.cast(ratio * tf.cast(height, tf.float32), tf.int32)
    cut_w = tf.cast(ratio * tf.cast(width, tf.float32), tf.int32)
    cy = tf.random.stateless_uniform([batch_size], seed_y, 0, height, tf.int32)
    cx = tf.random.stateless_uniform([batch_size], seed_x, 0, width, tf.int32)
    y1 = tf.clip_by_value(cy - cut_h // 2, 0, height)[:, None, None]
    y2 = tf.clip_by_value(cy + cut_h // 2, 0, height)[:, None, None]
    x1 = tf.clip_by_value(cx - cut_w // 2, 0, width)[:, None, None]
    x2 = tf.clip_by_value(cx + cut_w // 2, 0, width)[:, None, None]
    rows = tf.range(height)[None, :, None]
    cols = tf.range(width)[None, None, :]
    return (rows >= y1) & (rows < y2) & (cols >= x1) & (cols < x2)


def cutmix(images, labels, alpha: float, seed):
    """CutMix (arXiv:1905.04899) with the batch reversed. Labels mix by each example's actual
    pasted area (automl uses the batch-mean area; per example is the paper's rule)."""
    images = tf.convert_to_tensor(images)
    labels = tf.cast(labels, tf.float32)
    shape = tf.shape(images)
    masks = cutmix_masks(shape[0], shape[1], shape[2], alpha, seed)
    area = tf.reduce_mean(tf.cast(masks, tf.float32), axis=[1, 2])[:, None]
    images = tf.where(masks[..., None], images[::-1], images)
    labels = labels * (1.0 - area) + labels[::-1] * area
    return images, labels


def mix_batch(images, labels, mixup_alpha: float | None, cutmix_alpha: float | None, seed):
    """Mixup, cutmix, or both (first half of the batch mixup, second half cutmix, as automl)."""
    seed_mixup, seed_cutmix = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    if mixup_alpha and cutmix_alpha:
        half = tf.shape(images)[0] // 2
        images1, labels1 = mixup(images[:half], labels[:half], mixup_alpha, seed_mixup)
        images2, labels2 = cutmix(images[half:], labels[half:], cutmix_alpha, seed_cutmix)
        return tf.concat([images1, images2], 0), tf.concat([labels1, labels2], 0)
    if mixup_alpha:
        return mixup(images, labels, mixup_alpha, seed_mixup)
    if cutmix_alpha:
        return cutmix(images, labels, cutmix_alpha, seed_cutmix)
    return images, tf.cast(labels, tf.float32)
