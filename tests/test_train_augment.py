"""train/augment.py: every op eagerly and inside tf.data, against PIL where PIL has the op,
the AutoAugment / RandAugment policies on a real photograph, and batch mixup / cutmix."""

import numpy as np
import pytest
import skimage.data
import tensorflow as tf
from PIL import Image, ImageEnhance, ImageOps

from train import augment

SEED = tf.constant([3, 7], tf.int64)


@pytest.fixture(scope="module")
def photo():
    """skimage's chelsea (300x451 RGB photograph) after a JPEG round trip, uint8."""
    jpeg = tf.io.encode_jpeg(skimage.data.chelsea(), quality=90)
    return tf.io.decode_jpeg(jpeg, channels=3).numpy()


def _in_tf_data(fn, *tensors):
    """Runs fn on one element inside Dataset.map (graph mode) and returns the numpy result."""
    ds = tf.data.Dataset.from_tensors(tensors).map(fn)
    return tf.nest.map_structure(lambda t: t.numpy(), next(iter(ds)))


def _max_diff(a, b):
    return int(np.abs(np.asarray(a, np.int64) - np.asarray(b, np.int64)).max())


@pytest.mark.parametrize("name", sorted(augment.OPS))
@pytest.mark.parametrize("level", [0, 7, 10])
def test_each_op_eager_equals_tf_data(photo, name, level):
    eager = augment.apply_op(name, photo, level, SEED).numpy()
    graph = _in_tf_data(lambda im, s: augment.apply_op(name, im, level, s), photo, SEED)
    assert eager.shape == photo.shape and eager.dtype == np.uint8
    np.testing.assert_array_equal(eager, graph)


@pytest.mark.parametrize("name", ["Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY",
                                  "Cutout", "Color", "Contrast", "Brightness", "Sharpness",
                                  "Posterize", "SolarizeAdd"])
def test_ops_change_the_photo_at_level_10(photo, name):
    # (Solarize at level 10 has threshold 256: a no-op, as in the official level rule.)
    out = augment.apply_op(name, photo, 10, SEED).numpy()
    assert (out != photo).mean() > 0.01


def test_pixel_ops_match_pil(photo):
    pil = Image.fromarray(photo)
    np.testing.assert_array_equal(augment.equalize(photo), ImageOps.equalize(pil))
    np.testing.assert_array_equal(augment.invert(photo), ImageOps.invert(pil))
    for bits in (1, 2, 4):
        np.testing.assert_array_equal(augment.posterize(photo, bits), ImageOps.posterize(pil, bits))
    for threshold in (0, 100, 256):
        np.testing.assert_array_equal(augment.solarize(photo, threshold),
                                      ImageOps.solarize(pil, threshold))
    # PIL computes the autocontrast LUT in float64, we in float32: off by one at most.
    assert _max_diff(augment.autocontrast(photo), ImageOps.autocontrast(pil)) <= 1
    for factor in (0.1, 0.5, 1.0, 1.9):
        np.testing.assert_array_equal(augment.contrast(photo, factor),
                                      ImageEnhance.Contrast(pil).enhance(factor))
        np.testing.assert_array_equal(augment.brightness(photo, factor),
                                      ImageEnhance.Brightness(pil).enhance(factor))
        # PIL rounds where the official code truncates.
        assert _max_diff(augment.color(photo, factor), ImageEnhance.Color(pil).enhance(factor)) <= 1
        assert _max_diff(augment.sharpness(photo, factor),
                         ImageEnhance.Sharpness(pil).enhance(factor)) <= 1


def test_geometric_ops_match_pil(photo):
    pil = Image.fromarray(photo)
    gray = (128, 128, 128)
    square = photo[:101, :101]
    # Positive angles turn counter-clockwise, as tfa.image.rotate and PIL do.
    np.testing.assert_array_equal(augment.rotate(square, 90.0), np.rot90(square, 1))
    np.testing.assert_array_equal(
        augment.translate_x(photo, 10.0),
        pil.transform(pil.size, Image.AFFINE, (1, 0, 10, 0, 1, 0), fillcolor=gray))
    np.testing.assert_array_equal(
        augment.translate_y(photo, -7.0),
        pil.transform(pil.size, Image.AFFINE, (1, 0, 0, 0, 1, -7), fillcolor=gray))
    # Nearest-neighbour sampling conventions differ at pixel boundaries only.
    cases = [(augment.rotate(photo, 10.0), pil.rotate(10, fillcolor=gray)),
             (augment.shear_x(photo, 0.2),
              pil.transform(pil.size, Image.AFFINE, (1, 0.2, 0, 0, 1, 0), fillcolor=gray)),
             (augment.shear_y(photo, -0.2),
              pil.transform(pil.size, Image.AFFINE, (1, 0, 0, -0.2, 1, 0), fillcolor=gray))]
    for ours, theirs in cases:
        assert (np.asarray(ours) != np.asarray(theirs)).any(axis=-1).mean() < 0.01


def test_translate_fills_with_gray_and_shifts_exactly():
    image = np.arange(6 * 8 * 3, dtype=np.uint8).reshape(6, 8, 3)
    out = augment.translate_x(image, 3.0).numpy()
    np.testing.assert_array_equal(out[:, :5], image[:, 3:])
    assert (out[:, 5:] == 128).all()


def test_solarize_add_and_cutout():
    image = np.full((20, 30, 3), 100, np.uint8)
    image[0, 0] = 200
    out = augment.solarize_add(image, 50).numpy()
    assert out[1, 1, 0] == 150 and out[0, 0, 0] == 200  # only pixels below 128 move
    out = augment.cutout(image, 4, SEED, replace=7).numpy()
    filled = (out == 7).all(axis=-1)
    rows, cols = np.nonzero(filled)
    assert 0 < filled.sum() <= 64
    assert rows.max() - rows.min() < 8 and cols.max() - cols.min() < 8


def test_level_to_argument_rules():
    image = np.full((4, 4, 3), 255, np.uint8)
    # Posterize level 10 -> 4 bits; level 0 -> 0 bits, which TF (and so the official code)
    # turns into keeping the top bit.
    assert augment.apply_op("Posterize", image, 10, SEED).numpy().max() == 0xF0
    assert augment.apply_op("Posterize", image, 0, SEED).numpy().max() == 0x80
    # Solarize level 10 -> threshold 256 (nothing inverted); level 0 -> everything inverted.
    assert augment.apply_op("Solarize", image, 10, SEED).numpy().min() == 255
    assert augment.apply_op("Solarize", image, 0, SEED).numpy().max() == 0
    # Enhance ops at level 5 -> factor 1.0 -> identity.
    np.testing.assert_array_equal(augment.apply_op("Brightness", image, 5, SEED), image)


def test_random_sign_uses_both_signs(photo):
    outs = {augment.apply_op("TranslateX", photo[:40, :40], 1, tf.constant([s, 0])).numpy()
            .tobytes() for s in range(12)}
    assert len(outs) == 2


def test_apply_op_errors():
    with pytest.raises(ValueError, match="Unknown augmentation op 'Blur'.*'AutoContrast'"):
        augment.apply_op("Blur", np.zeros((4, 4, 3), np.uint8), 5, SEED)
    with pytest.raises(ValueError, match="uint8"):
        augment.apply_op("Invert", np.zeros((4, 4, 3), np.float32), 5, SEED)
    with pytest.raises(ValueError, match="valid: \\['autoaugment', 'randaugment'\\]"):
        augment.distort_image(np.zeros((4, 4, 3), np.uint8), "augmix", SEED)


@pytest.mark.parametrize("name,kwargs", [("autoaugment", {}),
                                         ("randaugment", dict(num_layers=2, magnitude=10)),
                                         ("randaugment", dict(num_layers=1, magnitude=15))])
def test_policies_eager_and_tf_data(photo, name, kwargs):
    eager = augment.distort_image(photo, name, SEED, **kwargs).numpy()
    graph = _in_tf_data(lambda im, s: augment.distort_image(im, name, s, **kwargs), photo, SEED)
    assert eager.shape == photo.shape and eager.dtype == np.uint8
    np.testing.assert_array_equal(eager, graph)
    # Different seeds give different images; the same seed the same image.
    outs = [augment.distort_image(photo, name, tf.constant([i, 1]), **kwargs).numpy()
            for i in range(8)]
    assert len({o.tobytes() for o in outs}) >= 4
    np.testing.assert_array_equal(outs[0], augment.distort_image(photo, name, tf.constant([0, 1]),
                                                                 **kwargs))


def test_randaugment_visits_all_ops():
    """Over many seeds every RandAugment branch is chosen (same sampler as the policy)."""
    chosen = set()
    for i in range(400):
        layer_seed = tf.random.experimental.stateless_split(tf.constant([i, 5]), 1)[0]
        choice_seed = tf.random.experimental.stateless_split(layer_seed, 2)[0]
        chosen.add(int(tf.random.stateless_uniform([], choice_seed, 0, 16, tf.int32)))
    assert chosen == set(range(len(augment.RANDAUGMENT_OPS)))
    assert set(augment.RANDAUGMENT_OPS) == set(augment.OPS)


def test_autoaugment_policy_v0_table():
    assert len(augment.POLICY_V0) == 25
    for sub_policy in augment.POLICY_V0:
        for name, prob, level in sub_policy:
            assert name in augment.OPS and 0.0 <= prob <= 1.0 and 0 <= level <= 10


# --------------------------------------------------------------------------- mixing


def _batch(batch_size=8, num_classes=None, size=16):
    """Images constant per example (value = index / batch), distinct one-hot labels."""
    values = np.arange(batch_size, dtype=np.float32) / batch_size
    images = np.broadcast_to(values[:, None, None, None], (batch_size, size, size, 3)).copy()
    num_classes = num_classes or batch_size
    labels = np.eye(num_classes, dtype=np.float32)[np.arange(batch_size) % num_classes]
    return images, labels


def test_sample_beta_moments():
    x = augment.sample_beta([20000], 0.2, SEED).numpy()
    assert 0.0 <= x.min() and x.max() <= 1.0
    assert abs(x.mean() - 0.5) < 0.02
    assert abs(x.var() - 1.0 / (4 * (2 * 0.2 + 1))) < 0.01  # Beta(a, a) variance


def _check_mixup(images, labels, out_images, out_labels):
    np.testing.assert_allclose(out_labels.sum(axis=1), 1.0, rtol=1e-6)
    lam = out_labels[np.arange(len(labels)), labels.argmax(1)]
    # Each image is lam * own + (1 - lam) * the reversed batch's, lam >= 0.5.
    expected = lam[:, None, None, None] * images + (1 - lam[:, None, None, None]) * images[::-1]
    np.testing.assert_allclose(out_images, expected, atol=1e-5)
    assert (lam >= 0.5 - 1e-6).all()


def _check_cutmix(images, labels, out_images, out_labels):
    np.testing.assert_allclose(out_labels.sum(axis=1), 1.0, rtol=1e-6)
    partner = images[::-1]
    for i in range(len(images)):
        if images[i, 0, 0, 0] == partner[i, 0, 0, 0]:
            continue
        pasted = np.isclose(out_images[i, :, :, 0], partner[i, 0, 0, 0]).mean()
        own = labels[i].argmax()
        if own == labels[::-1][i].argmax():
            continue
        np.testing.assert_allclose(out_labels[i, own], 1.0 - pasted, atol=1e-6)


def test_mixup_eager_and_tf_data():
    images, labels = _batch()
    out = augment.mixup(images, labels, 0.2, SEED)
    _check_mixup(images, labels, *(t.numpy() for t in out))
    graph = _in_tf_data(lambda i, l, s: augment.mixup(i, l, 0.2, s), images, labels, SEED)
    np.testing.assert_array_equal(out[0].numpy(), graph[0])
    _check_mixup(images, labels, *graph)


def test_cutmix_eager_and_tf_data():
    images, labels = _batch(batch_size=7)
    out = augment.cutmix(images, labels, 1.0, SEED)
    _check_cutmix(images, labels, *(t.numpy() for t in out))
    graph = _in_tf_data(lambda i, l, s: augment.cutmix(i, l, 1.0, s), images, labels, SEED)
    np.testing.assert_array_equal(out[1].numpy(), graph[1])
    _check_cutmix(images, labels, *graph)
    # Over many seeds the pasted area is sometimes partial (not just 0 or the whole image).
    masks = augment.cutmix_masks(200, 16, 16, 1.0, SEED).numpy().mean(axis=(1, 2))
    assert ((masks > 0.05) & (masks < 0.95)).mean() > 0.5


def test_mix_batch_both_splits_the_batch():
    images, labels = _batch(batch_size=8)
    out_images, out_labels = (t.numpy() for t in augment.mix_batch(images, labels, 0.2, 1.0, SEED))
    np.testing.assert_allclose(out_labels.sum(axis=1), 1.0, rtol=1e-6)
    _check_mixup(images[:4], labels[:4], out_images[:4], out_labels[:4])
    _check_cutmix(images[4:], labels[4:], out_images[4:], out_labels[4:])
    same_images, same_labels = augment.mix_batch(images, labels, None, None, SEED)
    np.testing.assert_array_equal(same_images, images)
    np.testing.assert_array_equal(same_labels, labels)
