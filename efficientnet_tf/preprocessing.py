"""Evaluation preprocessing as small pure TF functions: image in, float32 [S, S, 3] in [0, 1] out.

Shared by the exporters (the serving signature on encoded bytes), prediction and the trainer's
evaluation. Each variant's rule comes from ``efficientnet_tf.model_info``, and a weight set
may bring its own (``eval_config(name, weights=record)``; automl's 21k and 21k-ft1k sets):

- centre crop of ``S / (S + crop_padding)`` of the shorter side (``eval_crop_fraction`` at the
  variant's resolution), skipped when ``S >= crop_below`` (V2-S/M/L/XL at 384+ px);
- resize to S x S with the variant's ``resize_method`` (bicubic V1, bilinear Lite and V2).

Two quirks of the official code are kept, per family:
- V1, Lite and V2-B0..B3 (tensorflow/tpu ``efficientnet/preprocessing.py``
  ``_decode_and_center_crop``; automl ``efficientnetv2/preprocess_legacy.py``): crop offsets
  ``(h - crop + 1) // 2`` and ``tf.compat.v1`` resizing, i.e. ``half_pixel_centers=False``.
- V2-S/M/L/XL (automl ``efficientnetv2/preprocessing.py`` ``preprocess_for_eval``): offsets
  ``(h - crop) // 2`` and TF2 ``tf.image.resize`` (half-pixel centres).

The crop size is computed like the official code: the Python ratio times the float32 shorter
side, truncated to int32. Bicubic overshoot is clipped so outputs stay in [0, 1] (the TF-Hub
input convention; the network's own ``preprocessing`` layer normalizes from there).
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Optional, Union

import tensorflow as tf

from efficientnet_tf.config import eval_crop_fraction, get_variant

RESIZE_METHODS = ("bicubic", "bilinear")
_MAGIC = {  # first bytes of the formats tf.io.decode_image reads
    "JPEG": b"\xff\xd8\xff",
    "PNG": b"\x89PNG\r\n\x1a\n",
    "GIF": b"GIF8",
    "BMP": b"BM",
}


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """How one variant's evaluation images are made (see :func:`eval_config`)."""

    image_size: int
    crop_fraction: float  # of the shorter side; 1.0 = no crop, resize the whole image
    resize_method: str  # "bicubic" | "bilinear"
    legacy: bool  # tensorflow/tpu conventions: offsets rounded up, half_pixel_centers=False

    def __post_init__(self):
        if isinstance(self.image_size, bool) or not isinstance(self.image_size, int) or self.image_size < 1:
            raise ValueError(f"image_size must be a positive integer, got {self.image_size!r}")
        if not 0.0 < self.crop_fraction <= 1.0:
            raise ValueError(f"crop_fraction must be in (0, 1], got {self.crop_fraction!r}")
        if self.resize_method not in RESIZE_METHODS:
            raise ValueError(f"Unknown resize_method {self.resize_method!r}; valid: {list(RESIZE_METHODS)}")


def eval_config(model_name: str, image_size: Optional[int] = None,
                weights: Optional[Mapping[str, object]] = None) -> EvalConfig:
    """The evaluation rule of a variant, at its resolution or at ``image_size``.

    ``weights``: the record of a loaded weight set (``model_spec(model).weights``, or
    ``model_info(name, weights=TAG)["weights"]``); its ``eval_preprocessing`` and resolution take
    the place of the variant's (automl evaluates its 21k-ft1k sets uncropped, for example).
    At the rule's resolution the crop fraction equals ``model_info(...)['eval_crop_fraction']``;
    at another size the official formula is applied to that size. Raises ValueError for an
    unknown variant or a size that is not a positive integer.
    """
    variant = get_variant(model_name)
    rule = (weights or {}).get("eval_preprocessing")
    default_size = (weights or {}).get("resolution") or variant.resolution
    size = default_size if image_size is None else image_size
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"image_size must be a positive integer, got {image_size!r}")
    if rule:
        fraction = eval_crop_fraction(size, rule["crop_padding"], rule["crop_below"])
        return EvalConfig(size, fraction, rule["resize_method"], legacy=bool(rule["legacy"]))
    # automl's V2-S/M/L/XL pipeline is the only non-legacy one (it is also the only one with
    # crop_below); V2-B0..B3 were trained with the legacy V1 recipe.
    return EvalConfig(size, variant.eval_crop_fraction(size), variant.resize_method,
                      legacy=variant.crop_below is None)


def _resolve(config: Union[EvalConfig, str]) -> EvalConfig:
    if isinstance(config, EvalConfig):
        return config
    if isinstance(config, str):
        return eval_config(config)
    raise ValueError(f"Expected an EvalConfig or a model name, got {config!r}")


def image_format(image_bytes):
    """'JPEG', 'PNG', 'GIF', 'BMP' or 'unknown' (string tensor) from the magic bytes."""
    image_bytes = tf.convert_to_tensor(image_bytes, tf.string)
    result = tf.constant("unknown")
    for name, magic in reversed(list(_MAGIC.items())):
        head = tf.strings.substr(image_bytes, 0, len(magic))
        result = tf.where(tf.equal(head, magic), tf.constant(name), result)
    return result


def is_image(image_bytes):
    """True (bool tensor) when the bytes start like a JPEG, PNG, GIF or BMP file."""
    return tf.not_equal(image_format(image_bytes), "unknown")


def center_crop_window(height, width, config: Union[EvalConfig, str]):
    """The evaluation crop [offset_y, offset_x, size_y, size_x] (int32) of a height x width image."""
    config = _resolve(config)
    height = tf.cast(height, tf.int32)
    width = tf.cast(width, tf.int32)
    if config.crop_fraction == 1.0:
        return tf.stack([0, 0, height, width])
    shorter = tf.cast(tf.minimum(height, width), tf.float32)
    size = tf.cast(config.crop_fraction * shorter, tf.int32)
    size = tf.maximum(size, 1)
    extra = 1 if config.legacy else 0
    return tf.stack([(height - size + extra) // 2, (width - size + extra) // 2, size, size])


def decode_image(image_bytes):
    """Encoded JPEG/PNG/GIF/BMP -> uint8 RGB [h, w, 3]. Grayscale is replicated, alpha dropped,
    animated GIFs give their first frame."""
    image = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def decode_and_center_crop(image_bytes, config: Union[EvalConfig, str]):
    """Decodes only the evaluation crop of an image: uint8 RGB [crop, crop, 3].

    JPEG: the window comes from the header and only it is decoded (``decode_and_crop_jpeg``, as
    the official pipeline does; libjpeg's output inside the window can differ by a level or two
    from decoding everything). Other formats: full decode, then slice.
    """
    config = _resolve(config)
    return decode_window(image_bytes, lambda h, w: center_crop_window(h, w, config))


def decode_window(image_bytes, window_fn):
    """Decodes the window ``window_fn(height, width)`` ([y, x, h, w], int32) of an encoded image:
    uint8 RGB [h, w, 3]. The trainer's random crops use it too.

    JPEG: the window comes from the header and only it is decoded. Other formats: full decode,
    then slice.
    """
    image_bytes = tf.convert_to_tensor(image_bytes, tf.string)

    def jpeg():
        shape = tf.image.extract_jpeg_shape(image_bytes)
        window = window_fn(shape[0], shape[1])
        return tf.image.decode_and_crop_jpeg(image_bytes, window, channels=3)

    def other():
        image = decode_image(image_bytes)
        shape = tf.shape(image)
        window = window_fn(shape[0], shape[1])
        return tf.slice(image, [window[0], window[1], 0], [window[2], window[3], 3])

    image = tf.cond(tf.io.is_jpeg(image_bytes), jpeg, other)
    image.set_shape([None, None, 3])
    return image


def resize(image, config: Union[EvalConfig, str]):
    """[h, w, 3] (any real dtype, 0-255 scale) -> float32 [S, S, 3] with the variant's method."""
    config = _resolve(config)
    size = [config.image_size, config.image_size]
    images = tf.cast(image, tf.float32)[None]
    if config.legacy:
        legacy = {"bicubic": tf.raw_ops.ResizeBicubic, "bilinear": tf.raw_ops.ResizeBilinear}
        images = legacy[config.resize_method](images=images, size=size, align_corners=False,
                                              half_pixel_centers=False)
    else:
        images = tf.image.resize(images, size, method=config.resize_method)
    image = tf.cast(images[0], tf.float32)
    image.set_shape([config.image_size, config.image_size, 3])
    return image


def to_unit_range(image):
    """0-255 scale -> float32 in [0, 1], clipping the overshoot of bicubic resizing."""
    return tf.clip_by_value(tf.cast(image, tf.float32), 0.0, 255.0) / 255.0


def preprocess_bytes(image_bytes, config: Union[EvalConfig, str]):
    """One encoded image (scalar string) -> float32 [S, S, 3] in [0, 1].

    Bytes that are not a JPEG, PNG, GIF or BMP raise InvalidArgumentError saying so.
    """
    config = _resolve(config)
    image_bytes = _checked_image_bytes(tf.convert_to_tensor(image_bytes, tf.string), "The input")
    return to_unit_range(resize(decode_and_center_crop(image_bytes, config), config))


def _checked_image_bytes(image_bytes, label, label_inputs=()):
    """``image_bytes`` behind an assertion that they look like an image (InvalidArgumentError)."""
    message = tf.strings.format(
        label + " is not an image: expected JPEG, PNG, GIF or BMP bytes, got {} bytes starting with {}",
        (*label_inputs, tf.strings.length(image_bytes), tf.strings.substr(image_bytes, 0, 8)))
    check = tf.debugging.Assert(is_image(image_bytes), [message])
    with tf.control_dependencies([check]):
        return tf.identity(image_bytes)


def preprocess_bytes_batch(image_bytes, config: Union[EvalConfig, str]):
    """A batch of encoded images (string [N]) -> float32 [N, S, S, 3] in [0, 1].

    Errors name the position of the bad element in the batch.
    """
    config = _resolve(config)
    image_bytes = tf.convert_to_tensor(image_bytes, tf.string)
    image_bytes = tf.ensure_shape(image_bytes, [None])
    indices = tf.range(tf.shape(image_bytes)[0])

    def one(args):
        data, index = args
        data = _checked_image_bytes(data, "image_bytes[{}]", (index,))
        return to_unit_range(resize(decode_and_center_crop(data, config), config))

    spec = tf.TensorSpec([config.image_size, config.image_size, 3], tf.float32)
    return tf.map_fn(one, (image_bytes, indices), fn_output_signature=spec)


def to_rgb(image):
    """[h, w], [h, w, 1], [h, w, 3] or [h, w, 4] -> [h, w, 3]; other ranks/channels raise ValueError."""
    image = tf.convert_to_tensor(image)
    shape = image.shape
    if shape.rank == 2:
        image = image[..., None]
    elif shape.rank != 3:
        raise ValueError(f"Expected one image of shape (height, width[, channels]), got shape {tuple(shape)}; "
                         "for a batch, preprocess each image.")
    channels = image.shape[-1]
    if channels == 1:
        return tf.image.grayscale_to_rgb(image)
    if channels == 4:
        return image[..., :3]
    if channels == 3:
        return image
    raise ValueError(f"Expected 1 (grayscale), 3 (RGB) or 4 (RGBA) channels, got shape {tuple(shape)}")


def preprocess_array(image, config: Union[EvalConfig, str]):
    """An already-decoded image -> float32 [S, S, 3] in [0, 1] (centre crop, then resize).

    uint8 (and other integer) images are on the 0-255 scale; floating-point images are taken to
    be in [0, 1] already. Grayscale and RGBA are accepted (see :func:`to_rgb`).
    """
    config = _resolve(config)
    image = to_rgb(image)
    if image.dtype.is_floating:
        image = tf.cast(image, tf.float32) * 255.0
    elif image.dtype == tf.uint16 or not image.dtype.is_integer:
        raise ValueError(f"Expected a uint8 (0-255) or floating-point ([0, 1]) image, got dtype {image.dtype.name}")
    shape = tf.shape(image)
    window = center_crop_window(shape[0], shape[1], config)
    image = tf.slice(image, [window[0], window[1], 0], [window[2], window[3], 3])
    return to_unit_range(resize(image, config))


__all__ = ["EvalConfig", "RESIZE_METHODS", "center_crop_window", "decode_and_center_crop", "decode_image",
           "decode_window", "eval_config", "image_format", "is_image", "preprocess_array", "preprocess_bytes",
           "preprocess_bytes_batch", "resize", "to_rgb", "to_unit_range"]
