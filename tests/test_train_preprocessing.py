"""train/preprocessing.py: crop arithmetic, train/eval outputs eagerly and inside tf.data, JPEG
and PNG inputs, determinism, and corrupt-image errors."""

import numpy as np
import pytest
import skimage.data
import tensorflow as tf

from efficientnet_tf import preprocessing as eval_lib
from train.augment import Augment
from train import preprocessing as pp

SEED = tf.constant([11, 5], tf.int64)


@pytest.fixture(scope="module")
def photo():
    return skimage.data.chelsea()  # 300 x 451 RGB photograph


@pytest.fixture(scope="module")
def jpeg(photo):
    return tf.io.encode_jpeg(photo, quality=90).numpy()


@pytest.fixture(scope="module")
def png(photo):
    return tf.io.encode_png(photo).numpy()


def _in_tf_data(fn, *tensors):
    ds = tf.data.Dataset.from_tensors(tensors).map(fn)
    return tf.nest.map_structure(lambda t: t.numpy(), next(iter(ds)))


def _legacy_bicubic(image, size):
    resized = tf.compat.v1.image.resize(image[None], [size, size],
                                        method=tf.compat.v1.image.ResizeMethod.BICUBIC)[0]
    return np.clip(resized.numpy(), 0, 255) / 255


# ------------------------------------------------------------------------ crop arithmetic


def test_center_crop_window_exact():
    # V1: crop = int(224 / (224 + 32) * 300) = int(262.5) = 262; offsets ((h - c) + 1) // 2.
    np.testing.assert_array_equal(eval_lib.center_crop_window(300, 451, pp.eval_config(224)), [19, 95, 262, 262])
    # V2 below 320: crop = int(300 / 332 * 300) = 271; offsets (h - c) // 2.
    np.testing.assert_array_equal(eval_lib.center_crop_window(300, 451, pp.eval_config(300, "v2")), [14, 90, 271, 271])
    # V2 at 384 >= 320: no crop.
    np.testing.assert_array_equal(eval_lib.center_crop_window(300, 451, pp.eval_config(384, "v2")), [0, 0, 300, 451])
    # Same numbers inside tf.data.
    window = _in_tf_data(lambda h, w: eval_lib.center_crop_window(h, w, pp.eval_config(224)), 300, 451)
    np.testing.assert_array_equal(window, [19, 95, 262, 262])
    # B7: 600 / 632 of the short side (crop padding 32, not tpu's later 0.875 fraction).
    np.testing.assert_array_equal(eval_lib.center_crop_window(632, 700, pp.eval_config(600)), [16, 50, 600, 600])


def test_crop_rule_for_model_follows_model_info():
    assert pp.crop_rule_for_model("efficientnet-b0") == pp.CROP_RULES["v1"]
    assert pp.crop_rule_for_model("efficientnet-lite0") == pp.CROP_RULES["v1"]
    assert pp.crop_rule_for_model("efficientnetv2-b0") == pp.CROP_RULES["v1"]
    assert pp.crop_rule_for_model("efficientnetv2-s") == pp.CROP_RULES["v2"]


@pytest.mark.parametrize("graph", [False, True])
def test_random_crop_windows_fall_inside_the_image(graph):
    height, width, size = 300, 451, 224
    fallback = eval_lib.center_crop_window(height, width, pp.eval_config(size)).numpy()
    seeds = tf.stack([tf.range(64, dtype=tf.int64), tf.fill([64], tf.constant(9, tf.int64))], 1)

    def windows(s):
        return tf.map_fn(lambda one: pp.random_crop_window(height, width, one, size), s,
                         fn_output_signature=tf.int32)

    out = _in_tf_data(windows, seeds) if graph else windows(seeds).numpy()
    y, x, h, w = out.T
    assert (y >= 0).all() and (x >= 0).all() and (h > 0).all() and (w > 0).all()
    assert (y + h <= height).all() and (x + w <= width).all()
    sampled = ~(out == fallback).all(axis=1)
    area = h * w / (height * width)
    aspect = w / h
    # Sampled crops respect the official ranges (integer rounding loosens them a little).
    assert (area[sampled] >= 0.08 - 0.01).all() and (area[sampled] <= 1.0).all()
    assert (aspect[sampled] >= 0.75 - 0.02).all() and (aspect[sampled] <= 4 / 3 + 0.02).all()
    assert sampled.mean() > 0.5 and len({tuple(o) for o in out}) > 32


def test_failed_sampling_falls_back_to_center_crop():
    # A 300x451 image (aspect 1.5) cannot give a 99%-area crop with aspect <= 4/3.
    window = pp.random_crop_window(300, 451, SEED, 224, area_range=(0.99, 1.0))
    np.testing.assert_array_equal(window, eval_lib.center_crop_window(300, 451, pp.eval_config(224)))


# --------------------------------------------------------------------------------- eval


def test_eval_equals_manual_crop_and_legacy_bicubic(photo, jpeg):
    decoded = tf.io.decode_jpeg(jpeg, channels=3).numpy()
    expected = _legacy_bicubic(decoded[19:281, 95:357], 224)
    eager = eval_lib.preprocess_bytes(jpeg, pp.eval_config(224)).numpy()
    graph = _in_tf_data(lambda b: eval_lib.preprocess_bytes(b, pp.eval_config(224)), jpeg)
    np.testing.assert_allclose(eager, expected, atol=1e-6)
    np.testing.assert_array_equal(eager, graph)
    assert eager.dtype == np.float32 and eager.shape == (224, 224, 3)


def test_eval_v2_rule_uses_half_pixel_bilinear(png, photo):
    out = eval_lib.preprocess_bytes(png, pp.eval_config(384, "v2", "bilinear")).numpy()
    expected = tf.image.resize(photo, [384, 384], method="bilinear").numpy() / 255
    np.testing.assert_allclose(out, np.clip(expected, 0, 1), atol=1e-6)


def test_png_and_jpeg_give_the_same_crop(photo, png):
    from_png = eval_lib.preprocess_bytes(png, pp.eval_config(224)).numpy()
    np.testing.assert_allclose(from_png, _legacy_bicubic(photo[19:281, 95:357], 224), atol=1e-6)


# -------------------------------------------------------------------------------- train


@pytest.mark.parametrize("fmt,resize_method,augment_name", [("jpeg", "bicubic", None),
                                                            ("png", "bilinear", None),
                                                            ("jpeg", "bilinear", "randaugment")])
def test_train_shapes_range_and_eager_equals_tf_data(request, fmt, resize_method, augment_name):
    image_bytes = request.getfixturevalue(fmt)

    def fn(b, s):
        return pp.preprocess_for_train(b, 96, s, resize_method=resize_method,
                                       augmentation=Augment(augment_name, randaug_magnitude=9))

    eager = fn(image_bytes, SEED).numpy()
    graph = _in_tf_data(fn, image_bytes, SEED)
    assert eager.shape == (96, 96, 3) and eager.dtype == np.float32
    assert eager.min() >= 0.0 and eager.max() <= 1.0 and eager.std() > 0.01
    np.testing.assert_array_equal(eager, graph)


def test_train_is_deterministic_per_seed(jpeg):
    first = pp.preprocess_for_train(jpeg, 64, SEED).numpy()
    np.testing.assert_array_equal(first, pp.preprocess_for_train(jpeg, 64, SEED))
    others = {pp.preprocess_for_train(jpeg, 64, tf.constant([i, 2])).numpy().tobytes()
              for i in range(6)}
    assert len(others) == 6


def test_train_crop_is_a_resized_window_of_the_image(jpeg):
    """Without flip/augment the output is the resize of the sampled window."""
    crop_seed, finish_seed = tf.unstack(tf.random.experimental.stateless_split(SEED, 2))
    window = pp.random_crop_window(300, 451, crop_seed, 128)
    # (decode_and_crop_jpeg equals decode-then-slice except for chroma upsampling at the
    # window's edges, so the reference decodes the window the same way.)
    expected = _legacy_bicubic(tf.image.decode_and_crop_jpeg(jpeg, window, channels=3), 128)
    out = pp.preprocess_for_train(jpeg, 128, SEED).numpy()
    flip_seed, _ = tf.unstack(tf.random.experimental.stateless_split(finish_seed, 2))
    flipped = tf.image.stateless_random_flip_left_right(tf.ones([1, 2, 1]) * [[[0], [1]]],
                                                        flip_seed).numpy()[0, 0, 0] == 1
    np.testing.assert_allclose(out, expected[:, ::-1] if flipped else expected, atol=1e-6)


def test_flip_happens_about_half_the_time(png):
    image = np.zeros((40, 40, 3), np.uint8)
    image[:, :20] = 255  # left half white
    image_bytes = tf.io.encode_png(image)
    lefts = [pp.preprocess_for_train(image_bytes, 32, tf.constant([i, 0]),
                                     area_range=(1.0, 1.0), aspect_ratio_range=(1.0, 1.0))
             .numpy()[16, 2, 0] > 0.5 for i in range(40)]
    assert 10 < sum(lefts) < 30


# ----------------------------------------------------------------------------- errors


def test_unknown_resize_method_and_crop_rule():
    with pytest.raises(ValueError, match="'cubic'.*'bicubic', 'bilinear'"):
        pp.eval_config(224, "v1", "cubic")
    with pytest.raises(ValueError, match="Unknown crop rule 'v3'.*'v1', 'v2'"):
        pp.get_crop_rule("v3")


def test_corrupt_image_eager_error_names_the_example(jpeg):
    truncated = jpeg[:2000]
    with pytest.raises(pp.CorruptImageError, match="example <train/n01/img_7.JPEG>.*jpeg"):
        pp.preprocess_image(truncated, is_training=False, image_size=64,
                            example_id="train/n01/img_7.JPEG")
    with pytest.raises(tf.errors.InvalidArgumentError, match="example <x-1>.*unknown"):
        pp.preprocess_image(b"not an image at all", is_training=True, image_size=64,
                            example_id=tf.constant("x-1"))


def test_try_or_flag_and_assert_decoded_inside_tf_data(jpeg, png):
    bad = jpeg[:2000]
    images = tf.constant([jpeg, bad, png, b"garbage"])
    ids = tf.constant(["a", "b", "c", "d"])
    guarded = pp.try_or_flag(lambda b: pp.decode_for_eval(b, 64), tf.zeros([0, 0, 3], tf.uint8))
    ds = tf.data.Dataset.from_tensor_slices(images).interleave(
        guarded, cycle_length=2, block_length=1, num_parallel_calls=2, deterministic=True)
    flags = [bool(ok) for _, ok in ds]
    assert flags == [True, False, True, False]

    def check(image_bytes, example_id):
        ok = next(iter(guarded(image_bytes)))[1]
        return pp.assert_decoded(ok, example_id, image_bytes)

    check(images[0], ids[0])  # eager: no error
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match="example <b> \\(2000 bytes, format by magic bytes: JPEG\\)"):
        check(images[1], ids[1])

    def check_in_graph(out, example):
        with tf.control_dependencies([pp.assert_decoded(out[1], example[1], example[0])]):
            return tf.identity(out[1])

    checked = tf.data.Dataset.zip((ds, tf.data.Dataset.from_tensor_slices((images, ids))))
    iterator = iter(checked.map(check_in_graph))
    assert bool(next(iterator))
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match="Could not decode the image of example <b>"):
        next(iterator)


def test_image_format_by_magic_bytes(jpeg, png):
    samples = [jpeg, png, b"GIF89a...", b"BMxx", b"??"]
    assert [eval_lib.image_format(s).numpy() for s in samples] == [b"JPEG", b"PNG", b"GIF", b"BMP",
                                                              b"unknown"]
