"""EfficientNet training preprocessing: small pure functions from encoded image bytes to float
images.

Follows the official pipelines (numbers cited where used):
- V1 / Lite: tensorflow/tpu models/official/efficientnet/preprocessing.py, identical to
  google/automl efficientnetv2/preprocess_legacy.py: random-area crop computed on the
  encoded JPEG, horizontal flip, bicubic resize.
- V2: google/automl efficientnetv2/preprocessing.py: bilinear resize.

Evaluation, resizing and decoding are the library's (``efficientnet_tf.preprocessing``, which the
exporters and ``predict`` use too): the trainer evaluates exactly as a served model does. This
module adds what only training needs: the random-area crop, the flip and the augmentations.

Every random function takes a stateless `seed` (int tensor of shape [2]), so a pipeline is
reproducible for a given seed however it is parallelised. Outputs are float32 RGB in [0, 1]
(the model normalizes inside).
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf

import efficientnet_tf
from efficientnet_tf import config as lib_config
from efficientnet_tf import preprocessing as eval_lib
from train import augment

# Train crop of tensorflow/tpu preprocessing.py `_decode_and_random_crop`.
TRAIN_AREA_RANGE = (0.08, 1.0)
TRAIN_ASPECT_RATIO_RANGE = (3. / 4., 4. / 3.)
TRAIN_MAX_ATTEMPTS = 10
TRAIN_MIN_OBJECT_COVERED = 0.1


@dataclasses.dataclass(frozen=True)
class CropRule:
    """A family's crop and resize conventions (the quirks of its official code).

    crop_padding, crop_below: the eval centre crop's parameters, as efficientnet_tf.config's
      Variant has them (efficientnet_tf.config.eval_crop_fraction is the rule).
    legacy: tensorflow/tpu conventions (V1, Lite, V2-B0..B3): crop offsets ((h - crop) + 1) // 2
      and tf.compat.v1.image.resize (half_pixel_centers=False). automl V2-S/M/L/XL: offsets
      (h - crop) // 2 and TF2's tf.image.resize.
    """
    crop_padding: int = 32
    crop_below: int | None = None
    legacy: bool = True


# 'v1': tensorflow/tpu preprocessing.py = automl preprocess_legacy.py, used by V1, Lite and
# V2-B0..B3 (their "effnetv1_autoaug" recipe). 'v2': automl preprocessing.py (V2-S/M/L/XL).
CROP_RULES = {
    "v1": CropRule(),
    "v2": CropRule(crop_below=320, legacy=False),
}


def crop_rule_for_model(name: str) -> CropRule:
    """The CropRule of an efficientnet_tf variant from its model_info (crop_padding, crop_below)."""

    info = efficientnet_tf.model_info(name)
    base = CROP_RULES["v2"] if info["crop_below"] else CROP_RULES["v1"]
    return dataclasses.replace(base, crop_padding=info["crop_padding"],
                               crop_below=info["crop_below"])


class CorruptImageError(tf.errors.InvalidArgumentError):
    """An example's image bytes could not be decoded; the message names the example."""

    def __init__(self, message):
        super().__init__(None, None, message)


def get_crop_rule(rule: CropRule | str) -> CropRule:
    """Returns `rule` itself or a named rule ('v1', 'v2'; see CROP_RULES)."""
    if isinstance(rule, CropRule):
        return rule
    if rule not in CROP_RULES:
        raise ValueError(f"Unknown crop rule {rule!r}; valid: {sorted(CROP_RULES)} or a CropRule.")
    return CROP_RULES[rule]


def check_resize_method(method):
    if method not in eval_lib.RESIZE_METHODS:
        raise ValueError(f"Unknown resize_method {method!r}; valid: "
                         f"{list(eval_lib.RESIZE_METHODS)}.")


def eval_config(image_size: int, rule: CropRule | str = "v1",
                resize_method: str = "bicubic") -> eval_lib.EvalConfig:
    """The library's EvalConfig for a CropRule at `image_size`."""
    rule = get_crop_rule(rule)
    check_resize_method(resize_method)
    fraction = lib_config.eval_crop_fraction(int(image_size), rule.crop_padding, rule.crop_below)
    return eval_lib.EvalConfig(int(image_size), fraction, resize_method, legacy=rule.legacy)


def random_crop_window(height, width, seed, image_size: int, rule: CropRule | str = "v1",
                       area_range=TRAIN_AREA_RANGE,
                       aspect_ratio_range=TRAIN_ASPECT_RATIO_RANGE,
                       max_attempts=TRAIN_MAX_ATTEMPTS,
                       min_object_covered=TRAIN_MIN_OBJECT_COVERED):
    """Inception-style random-area crop window [y, x, h, w] (int32).

    When sampling fails, sample_distorted_bounding_box returns the whole image; like the
    official code we then use the eval center crop instead. (The official "bad" test also
    compares channel counts, so grayscale JPEGs never fall back there; we compare h and w only.)
    """
    height = tf.cast(height, tf.int32)
    width = tf.cast(width, tf.int32)
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.stack([height, width, 3]),
        bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
        seed=seed,
        min_object_covered=min_object_covered,
        aspect_ratio_range=aspect_ratio_range,
        area_range=area_range,
        max_attempts=max_attempts,
        use_image_if_no_bounding_boxes=True)
    window = tf.stack([begin[0], begin[1], size[0], size[1]])
    bad = tf.logical_and(tf.equal(size[0], height), tf.equal(size[1], width))
    fallback = eval_lib.center_crop_window(height, width, eval_config(image_size, rule))
    return tf.where(bad, fallback, window)


def decode_for_train(image_bytes, image_size: int, seed, rule: CropRule | str = "v1",
                     area_range=TRAIN_AREA_RANGE, aspect_ratio_range=TRAIN_ASPECT_RATIO_RANGE,
                     max_attempts=TRAIN_MAX_ATTEMPTS,
                     min_object_covered=TRAIN_MIN_OBJECT_COVERED):
    """The random-area crop of the image, decoded (uint8 [h, w, 3]); the only step that can
    fail on corrupt bytes."""
    return eval_lib.decode_window(
        image_bytes,
        lambda h, w: random_crop_window(h, w, seed, image_size, rule, area_range,
                                        aspect_ratio_range, max_attempts, min_object_covered))


def finish_for_train(image, image_size: int, seed, resize_method: str = "bicubic",
                     rule: CropRule | str = "v1", augmentation: augment.Augment | None = None,
                     random_flip: bool = True, erasing: augment.RandomErasing | None = None):
    """Resize, random flip, the per-image augmentation of ``augmentation`` -> [0, 1] float32,
    then random ``erasing`` (whose noise may leave [0, 1]).

    The order (crop, resize, flip, augment on uint8) is the official one; random erasing comes
    last, as in timm and Model Garden (after normalization there, on the model input here).
    """
    check_resize_method(resize_method)
    flip_seed, aug_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    # The official fallback center crop always resizes bicubic; we use `resize_method`.
    image = eval_lib.resize(image, eval_config(image_size, rule, resize_method))
    if random_flip:
        image = tf.image.stateless_random_flip_left_right(image, flip_seed)
    if augmentation is not None and augmentation.name is not None:
        image = tf.cast(tf.clip_by_value(image, 0.0, 255.0), tf.uint8)
        image = tf.cast(augmentation.apply(image, aug_seed), tf.float32)
    image = eval_lib.to_unit_range(image)
    if erasing is not None and erasing.probability:
        # A seed of its own, folded in so the flip and augmentation seeds stay what they were.
        image = erasing.apply(image, tf.random.experimental.stateless_fold_in(seed, 1))
    return image


def preprocess_for_train(image_bytes, image_size: int, seed, resize_method: str = "bicubic",
                         rule: CropRule | str = "v1", augmentation: augment.Augment | None = None,
                         random_flip: bool = True, erasing: augment.RandomErasing | None = None,
                         **crop_kwargs):
    """decode_for_train then finish_for_train (crop_kwargs: area_range, aspect_ratio_range,
    max_attempts, min_object_covered)."""
    check_resize_method(resize_method)
    crop_seed, finish_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    image = decode_for_train(image_bytes, image_size, crop_seed, rule, **crop_kwargs)
    return finish_for_train(image, image_size, finish_seed, resize_method, rule, augmentation,
                            random_flip, erasing)


def decode_for_eval(image_bytes, image_size: int, rule: CropRule | str = "v1"):
    """The eval center crop by `rule`, decoded (from the encoded JPEG directly), uint8."""
    return eval_lib.decode_and_center_crop(image_bytes, eval_config(image_size, rule))


def finish_for_eval(image, image_size: int, resize_method: str = "bicubic",
                    rule: CropRule | str = "v1"):
    """Resize -> [0, 1] float32 (with decode_for_eval: the library's preprocessing of a served
    model, efficientnet_tf.preprocessing, without its image-format assertion)."""
    return eval_lib.to_unit_range(
        eval_lib.resize(image, eval_config(image_size, rule, resize_method)))


def preprocess_image(image_bytes, is_training: bool, image_size: int, seed=None,
                     example_id=None, **kwargs):
    """Train or eval preprocessing of one encoded image.

    seed: stateless seed [2] for training (drawn at random when None).
    example_id: named in the error raised for undecodable bytes when running eagerly. Inside
      tf.data use `try_or_flag` + `assert_decoded` (what input_pipeline does) for that.
    kwargs: forwarded to preprocess_for_train, or (resize_method, rule) to the eval crop and
      resize.
    """
    def run():
        if is_training:
            train_seed = seed
            if train_seed is None:
                train_seed = tf.random.uniform([2], maxval=2**31 - 1, dtype=tf.int32)
            return preprocess_for_train(image_bytes, image_size, train_seed, **kwargs)
        rule, resize_method = kwargs.get("rule", "v1"), kwargs.get("resize_method", "bicubic")
        return finish_for_eval(decode_for_eval(image_bytes, image_size, rule), image_size,
                               resize_method, rule)

    if not tf.executing_eagerly():
        return run()
    try:
        return run()
    except tf.errors.InvalidArgumentError as e:
        name = "unnamed example" if example_id is None else f"example <{_as_str(example_id)}>"
        raise CorruptImageError(
            f"Could not decode the image of {name} ({_describe_bytes(image_bytes)}): "
            f"{e.message}") from e


def try_or_flag(fn, failed_value):
    """Per-element try/except for tf.data.

    Returns `g(*args)` giving a one-element Dataset: `(fn(*args), True)`, or
    `(failed_value, False)` when fn raised. Use with Dataset.interleave / flat_map. Keep `fn`
    small: the per-element cost grows with the size of its graph.
    """
    def guarded(*args):
        ok = tf.data.Dataset.from_tensors(args).map(lambda *a: (fn(*a), True)).ignore_errors()
        failed = tf.data.Dataset.from_tensors((failed_value, False))
        return ok.concatenate(failed).take(1)
    return guarded


def assert_decoded(ok, example_id, image_bytes):
    """Op raising InvalidArgumentError naming the example when `ok` is False."""
    example_id = tf.convert_to_tensor(example_id)
    if example_id.dtype != tf.string:
        example_id = tf.strings.as_string(example_id)
    message = tf.strings.join([
        # No quotes: graph-mode Assert messages C-escape them.
        "Could not decode the image of example <", example_id, "> (",
        tf.strings.as_string(tf.strings.length(image_bytes)), " bytes, format by magic bytes: ",
        eval_lib.image_format(image_bytes), "). Pass skip_corrupt=True (--skip_corrupt) to skip and "
        "count such examples."])
    return tf.debugging.Assert(ok, [message])


def _as_str(value):
    if isinstance(value, tf.Tensor):
        value = value.numpy()
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _describe_bytes(image_bytes):
    image_bytes = tf.convert_to_tensor(image_bytes, tf.string)
    return (f"{int(tf.strings.length(image_bytes))} bytes, format by magic bytes: "
            f"{_as_str(eval_lib.image_format(image_bytes))}")
