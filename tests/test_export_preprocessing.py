"""efficientnet_tf.preprocessing (evaluation preprocessing shared by export, predict and train)
and efficientnet_tf.labels."""

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import efficientnet_tf
from efficientnet_tf import labels
from efficientnet_tf import preprocessing as pp


def _photos():
    import skimage.data

    return {"chelsea": skimage.data.chelsea(), "astronaut": skimage.data.astronaut(),
            "coffee": skimage.data.coffee()}


def _encode(array, fmt, **kwargs):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def encoded():
    """(name, format, bytes, original uint8 array) for three real photographs as JPEG and PNG."""
    return [(name, fmt, _encode(array, fmt), array) for name, array in _photos().items() for fmt in ("JPEG", "PNG")]


def _official_eval(array, size, padding, method):
    """Independent re-statement of tensorflow/tpu ``_decode_and_center_crop`` on a decoded image:
    numpy crop with the official offsets, then the TF1 resize ops the official code calls."""
    height, width = array.shape[:2]
    crop = int(np.float32(size / (size + padding)) * np.float32(min(height, width)))
    top, left = (height - crop + 1) // 2, (width - crop + 1) // 2
    window = array[top:top + crop, left:left + crop][None].astype(np.float32)
    resize = {"bicubic": tf.compat.v1.image.resize_bicubic, "bilinear": tf.compat.v1.image.resize_bilinear}[method]
    out = resize(window, [size, size], align_corners=False)[0].numpy()
    return np.clip(out, 0, 255) / 255.0


def test_eval_config_follows_model_info():
    for name in efficientnet_tf.list_models():
        info = efficientnet_tf.model_info(name)
        config = pp.eval_config(name)
        assert config.image_size == info["resolution"]
        assert config.crop_fraction == pytest.approx(info["eval_crop_fraction"], abs=1e-12)
        assert config.resize_method == info["resize_method"]
        assert config.legacy == (info["crop_below"] is None)
    assert pp.eval_config("efficientnet-b0").crop_fraction == pytest.approx(224 / 256)
    assert pp.eval_config("efficientnetv2-s").crop_fraction == 1.0  # 384 >= 320: no crop (automl)
    assert pp.eval_config("efficientnetv2-s", image_size=256).crop_fraction == pytest.approx(256 / 288)
    assert pp.eval_config("efficientnet-b2", image_size=100).image_size == 100
    with pytest.raises(ValueError, match="Unknown model name"):
        pp.eval_config("efficientnet-b9")
    with pytest.raises(ValueError, match="resize_method"):
        pp.EvalConfig(224, 0.875, "nearest", True)


@pytest.mark.parametrize("name", ["efficientnet-b0", "efficientnet-lite0"])
def test_png_matches_official_formula(encoded, name):
    config = pp.eval_config(name)
    for photo, fmt, data, array in encoded:
        if fmt != "PNG":
            continue
        expected = _official_eval(array, config.image_size, 32, config.resize_method)
        actual = pp.preprocess_bytes(data, config).numpy()
        assert actual.shape == (config.image_size, config.image_size, 3) and actual.dtype == np.float32
        np.testing.assert_allclose(actual, expected, atol=2e-6, err_msg=photo)


def test_v2_large_resizes_whole_image_with_half_pixel_centers(encoded):
    config = pp.eval_config("efficientnetv2-s", image_size=96)  # crop below 320 px: automl rule
    _, _, data, array = encoded[1]
    height, width = array.shape[:2]
    crop = int(np.float32(96 / 128) * np.float32(min(height, width)))
    top, left = (height - crop) // 2, (width - crop) // 2  # automl rounds the offset down
    expected = tf.image.resize(array[top:top + crop, left:left + crop].astype(np.float32), [96, 96], "bilinear")
    np.testing.assert_allclose(pp.preprocess_bytes(data, config).numpy(), np.clip(expected, 0, 255) / 255, atol=2e-6)
    full = pp.eval_config("efficientnetv2-s")
    assert pp.center_crop_window(300, 451, full).numpy().tolist() == [0, 0, 300, 451]


def test_same_as_the_trainers_eval_preprocessing(encoded):
    """The trainer evaluates as a served model preprocesses: its crop rules map to the same windows,
    resizes and outputs, bit for bit."""
    from train import preprocessing as train_pp

    for name in ("efficientnet-b0", "efficientnet-lite0", "efficientnetv2-s"):
        config = pp.eval_config(name, image_size=128)
        rule = train_pp.crop_rule_for_model(name)
        for photo, fmt, data, _ in encoded:
            theirs = train_pp.finish_for_eval(train_pp.decode_for_eval(data, 128, rule), 128,
                                              config.resize_method, rule).numpy()
            np.testing.assert_array_equal(pp.preprocess_bytes(data, config).numpy(), theirs, err_msg=f"{name} {photo} {fmt}")


def test_eager_equals_tf_data_and_batch(encoded):
    config = pp.eval_config("efficientnet-b0", image_size=96)
    data = [d for _, _, d, _ in encoded]
    eager = np.stack([pp.preprocess_bytes(d, config).numpy() for d in data])
    in_data = np.stack(list(tf.data.Dataset.from_tensor_slices(data).map(
        lambda b: pp.preprocess_bytes(b, config)).as_numpy_iterator()))
    batch = tf.function(lambda b: pp.preprocess_bytes_batch(b, config))(tf.constant(data)).numpy()
    # Graph mode may rewrite x / 255 as x * (1 / 255) (grappler): one float32 ulp at most.
    np.testing.assert_allclose(in_data, eager, rtol=0, atol=1.2e-7)
    np.testing.assert_allclose(batch, eager, rtol=0, atol=1.2e-7)
    assert 0.0 <= eager.min() and eager.max() <= 1.0


def test_decoded_arrays(encoded):
    config = pp.eval_config("efficientnet-b0", image_size=96)
    for photo, fmt, data, array in encoded:
        decoded = tf.io.decode_image(data, channels=3).numpy()
        from_array = pp.preprocess_array(decoded, config).numpy()
        from_bytes = pp.preprocess_bytes(data, config).numpy()
        # PNG: identical. JPEG: decode_and_crop_jpeg decodes only the window; libjpeg's chroma
        # upsampling at the window border may move a few pixel levels.
        tolerance = 0 if fmt == "PNG" else 0.05
        np.testing.assert_allclose(from_array, from_bytes, atol=tolerance, err_msg=f"{photo} {fmt}")
        if fmt == "PNG":  # floats in [0, 1] mean the same as uint8
            np.testing.assert_allclose(pp.preprocess_array(decoded / 255.0, config), from_array, atol=1e-5)


def test_grayscale_and_rgba_become_rgb():
    config = pp.eval_config("efficientnet-lite0", image_size=64)
    rgb = _photos()["coffee"]
    gray = rgb.mean(-1).astype(np.uint8)
    rgba = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 128, np.uint8)], -1)
    gray_out = pp.preprocess_bytes(_encode(gray, "PNG"), config).numpy()
    assert gray_out.shape == (64, 64, 3)
    np.testing.assert_array_equal(gray_out[..., 0], gray_out[..., 2])
    gray_jpeg = pp.preprocess_bytes(_encode(gray, "JPEG"), config).numpy()  # a 1-channel JPEG
    np.testing.assert_array_equal(gray_jpeg[..., 0], gray_jpeg[..., 1])
    assert np.abs(gray_jpeg - gray_out).mean() < 0.01  # lossy, but the same picture
    rgba_out = pp.preprocess_bytes(_encode(rgba, "PNG"), config).numpy()
    np.testing.assert_array_equal(rgba_out, pp.preprocess_bytes(_encode(rgb, "PNG"), config).numpy())
    np.testing.assert_array_equal(pp.preprocess_array(gray, config).numpy(), gray_out)
    np.testing.assert_array_equal(pp.preprocess_array(gray[..., None], config).numpy(), gray_out)
    np.testing.assert_array_equal(pp.preprocess_array(rgba, config).numpy(), rgba_out)


def test_bad_inputs_are_named():
    config = pp.eval_config("efficientnet-b0", image_size=64)
    with pytest.raises(tf.errors.InvalidArgumentError, match="is not an image"):
        pp.preprocess_bytes(b"definitely not an image", config)
    jpeg = _encode(_photos()["chelsea"], "JPEG")
    fn = tf.function(lambda b: pp.preprocess_bytes_batch(b, config))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"image_bytes\[1\] is not an image"):
        fn(tf.constant([jpeg, b"GIF9 nope"]))
    assert fn(tf.constant([jpeg])).shape == (1, 64, 64, 3)  # still usable afterwards
    with pytest.raises(tf.errors.InvalidArgumentError):
        pp.preprocess_bytes(jpeg[: len(jpeg) // 3], config)  # truncated JPEG
    with pytest.raises(ValueError, match="shape"):
        pp.preprocess_array(np.zeros((2, 32, 32, 3), np.uint8), config)
    with pytest.raises(ValueError, match="channels"):
        pp.preprocess_array(np.zeros((32, 32, 2), np.uint8), config)
    with pytest.raises(ValueError, match="uint8"):
        pp.preprocess_array(np.zeros((32, 32, 3), np.uint16), config)
    assert [f.decode() for f in pp.image_format(tf.constant([jpeg, b"\x89PNG\r\n\x1a\nxx", b"BMxx", b"xx"])).numpy()] \
        == ["JPEG", "PNG", "BMP", "unknown"]


def test_labels():
    names = labels.imagenet_labels()
    assert len(names) == 1000
    assert (names[0], names[1], names[281], names[967], names[999]) == (
        "tench", "goldfish", "tabby", "espresso", "toilet tissue")
    assert labels.class_names(1000) == names
    assert labels.class_names(3) == ("class_0", "class_1", "class_2")
    assert labels.class_names(2, ["cat", "dog"]) == ("cat", "dog")
    with pytest.raises(ValueError, match="3 class names for a classifier with 2"):
        labels.class_names(2, ["a", "b", "c"])
    with pytest.raises(ValueError, match="positive integer"):
        labels.class_names(0)


def test_read_labels(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_text("cat\ndog\n\n")
    assert labels.read_labels(str(path)) == ("cat", "dog")
    path.write_text("cat\n\ndog\n")
    with pytest.raises(ValueError, match="one non-empty class name per line"):
        labels.read_labels(str(path))
