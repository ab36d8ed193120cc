"""Random erasing (train/augment.py random_erasing, timm --reprob): eagerly and inside tf.data,
deterministic per seed, one rectangle of the stated size on a real photograph and nothing else
changed, noise that is N(0, 1) after the model's normalization, and its place in the train
preprocessing (after crop, flip and RandAugment; the other seeds unchanged)."""

import numpy as np
import pytest
import skimage.data
import tensorflow as tf

import efficientnet_tf
from train import augment, config, input_pipeline, preprocessing

SEED = tf.constant([3, 7], tf.int64)
B0 = efficientnet_tf.model_info("efficientnet-b0")
ERASING = augment.RandomErasing.for_normalization(1.0, B0["mean_rgb"], B0["stddev_rgb"])


@pytest.fixture(scope="module")
def photo():
    """skimage's chelsea (300x451 RGB photograph) as float32 in [0, 1]."""
    return skimage.data.chelsea().astype(np.float32) / 255.0


def erased(image, seed, erasing=ERASING):
    return erasing.apply(tf.constant(image), tf.constant(seed, tf.int64)).numpy()


def changed_box(before, after):
    """(top, left, height, width) of the changed pixels, checking that they fill that box
    exactly; None when nothing changed."""
    changed = np.any(before != after, axis=-1)
    if not changed.any():
        return None
    rows, cols = np.flatnonzero(changed.any(1)), np.flatnonzero(changed.any(0))
    top, left = rows[0], cols[0]
    h, w = rows[-1] - top + 1, cols[-1] - left + 1
    assert changed.sum() == h * w, "the changed pixels are not one rectangle"
    return top, left, h, w


def test_eager_equals_tf_data(photo):
    graph = next(iter(tf.data.Dataset.from_tensors((photo, SEED)).map(ERASING.apply))).numpy()
    np.testing.assert_array_equal(erased(photo, SEED), graph)


def test_deterministic_per_seed(photo):
    np.testing.assert_array_equal(erased(photo, [1, 2]), erased(photo, [1, 2]))
    assert not np.array_equal(erased(photo, [1, 2]), erased(photo, [1, 3]))


def test_one_rectangle_of_the_stated_size_on_a_photo(photo):
    height, width = photo.shape[:2]
    boxes = [changed_box(photo, erased(photo, [seed, 0])) for seed in range(20)]
    assert sum(b is not None for b in boxes) >= 18  # 10 attempts to fit almost always succeed
    for top, left, h, w in filter(None, boxes):
        assert 0 <= top and top + h <= height and 0 <= left and left + w <= width
        # area 2%-1/3 and aspect 0.3-3.3, up to the rounding of h and w to whole pixels
        assert 0.02 * 0.9 <= h * w / (height * width) <= 1 / 3 * 1.1, (h, w)
        assert 0.3 * 0.9 <= h / w <= 1 / 0.3 * 1.1, (h, w)


def test_fill_is_standard_normal_after_the_model_normalization(photo):
    after = erased(photo, SEED)
    top, left, h, w = changed_box(photo, after)
    assert h * w > 2000
    model_input = (after[top:top + h, left:left + w] * 255.0 - np.array(B0["mean_rgb"])) / np.array(
        B0["stddev_rgb"])
    assert abs(model_input.mean()) < 0.05 and abs(model_input.std() - 1.0) < 0.05


def test_probability(photo):
    small = photo[:64, :64]
    erasing = augment.RandomErasing(0.25)
    hits = np.mean([changed_box(small, erased(small, [s, 9], erasing)) is not None
                    for s in range(200)])
    assert 0.15 < hits < 0.35, hits
    np.testing.assert_array_equal(erased(small, SEED, augment.RandomErasing(0.0)), small)


@pytest.mark.parametrize("probability", [1.5, -0.1])
def test_bad_probability_names_the_key_with_one_message(probability):
    """RandomErasing owns the range check; config.validate gives the same message."""
    with pytest.raises(ValueError, match="data.random_erasing_prob") as made:
        augment.RandomErasing(probability)
    cfg = config.apply(config.Config(), {"data.random_erasing_prob": probability})
    with pytest.raises(ValueError) as validated:
        config.validate(cfg)
    assert str(validated.value) == str(made.value)


@pytest.mark.parametrize("augment_name", [None, "randaugment"])
def test_erasing_comes_last_in_the_train_preprocessing(augment_name):
    image = tf.constant(skimage.data.chelsea()[:200, :200])
    common = dict(resize_method="bilinear", augmentation=augment.Augment(augment_name))
    plain = preprocessing.finish_for_train(image, 64, SEED, **common).numpy()
    off = preprocessing.finish_for_train(image, 64, SEED, erasing=augment.RandomErasing(0.0),
                                         **common).numpy()
    on = preprocessing.finish_for_train(image, 64, SEED, erasing=ERASING, **common).numpy()
    np.testing.assert_array_equal(plain, off)  # off: the same crop, flip and augmentation
    assert changed_box(plain, on) is not None  # on: the same image but one rectangle


def test_train_pipeline_erases_before_batching(digits_dir):
    def first_batch(erasing):
        spec = input_pipeline.PipelineSpec(
            "sklearn_digits", "train", digits_dir, is_training=True, image_size=32,
            batch_size=8, num_classes=10, deterministic=True, download=False,
            random_erasing=erasing)
        return next(iter(input_pipeline.build_dataset(spec)))

    plain, on = first_batch(None), first_batch(ERASING)
    np.testing.assert_array_equal(plain[1], on[1])
    boxes = [changed_box(a, b) for a, b in zip(plain[0].numpy(), on[0].numpy())]
    assert sum(b is not None for b in boxes) >= 6
