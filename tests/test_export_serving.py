"""Format ``saved_model``: TF Serving SavedModel with a float and an encoded-bytes signature.

Uses the ImageNet weights of EfficientNet-Lite0 (the offline pretrained weights this project
ships through efficientnet_tf.load_weights), so predictions on real photographs mean something.
"""

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import efficientnet_tf
from efficientnet_tf.labels import imagenet_labels
from export import export_model, photos

PHOTOS = {name: photos.get(name).top1_any_of for name in ("chelsea", "coffee", "astronaut")}  # astronaut: none


def _photos():
    import skimage.data

    return {name: getattr(skimage.data, name)() for name in PHOTOS}


def _encode(array, fmt):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt)
    return buffer.getvalue()


def _independent_eval_preprocessing(data, size=224, padding=32):
    """Decode the whole file (PNG: PIL; JPEG: TF's libjpeg, since PIL's JPEG decoder differs by up to
    5 levels on most pixels), numpy crop with tensorflow/tpu's offsets, TF1 bilinear resize (Lite)."""
    if data.startswith(b"\x89PNG"):
        array = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    else:
        array = tf.io.decode_jpeg(data, channels=3).numpy()
    height, width = array.shape[:2]
    crop = int(np.float32(size / (size + padding)) * np.float32(min(height, width)))
    top, left = (height - crop + 1) // 2, (width - crop + 1) // 2
    window = array[top:top + crop, left:left + crop][None].astype(np.float32)
    resized = tf.compat.v1.image.resize_bilinear(window, [size, size], align_corners=False)[0].numpy()
    return np.clip(resized, 0, 255) / 255.0


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = efficientnet_tf.build_model("efficientnet-lite0")
    efficientnet_tf.load_weights(model, "imagenet")
    path = str(tmp_path_factory.mktemp("serving") / "lite0")
    result = export_model(model, path, format="saved_model", weights="imagenet")
    module = tf.saved_model.load(os.path.join(path, "1"), tags=["serve"])
    return model, result, path, module


def test_layout_and_float_round_trip(exported):
    model, result, path, module = exported
    assert os.path.isfile(os.path.join(path, "1", "saved_model.pb"))
    assert set(module.signatures) == {"serving_default", "serving_bytes"}
    assert all(result.max_abs_diff[k] <= result.limits[k] for k in result.max_abs_diff)
    with open(os.path.join(path, "export_info.json")) as f:
        assert json.load(f)["weights"] == "imagenet"
    x = np.random.default_rng(0).uniform(0, 1, (2, 224, 224, 3)).astype(np.float32)
    outputs = module.signatures["serving_default"](images=tf.constant(x))
    expected = model(x, training=False).numpy()  # softmax model
    np.testing.assert_allclose(outputs["probabilities"], expected, atol=1e-5)
    assert outputs["classes"].shape == (2, 5) and outputs["class_names"].shape == (2, 5)
    np.testing.assert_array_equal(outputs["classes"][:, 0], expected.argmax(-1))
    np.testing.assert_allclose(outputs["scores"][:, 0], expected.max(-1), atol=1e-5)


def test_bytes_signature_matches_float_path_on_photographs(exported):
    _, _, _, module = exported
    names = imagenet_labels()
    for photo, array in _photos().items():
        for fmt in ("JPEG", "PNG"):
            data = _encode(array, fmt)
            by_bytes = module.signatures["serving_bytes"](image_bytes=tf.constant([data]))
            images = tf.constant(_independent_eval_preprocessing(data)[None].astype(np.float32))
            by_float = module.signatures["serving_default"](images=images)
            top1 = int(by_bytes["classes"][0, 0])
            assert top1 == int(by_float["classes"][0, 0]), (photo, fmt)
            assert by_bytes["class_names"][0, 0].numpy().decode() == names[top1]
            # PNG: same pixels, same math. JPEG: decode_and_crop_jpeg (what serving does, like the
            # official pipeline) and a full decode differ on ~0.2% of pixels at the window border.
            atol = 1e-5 if fmt == "PNG" else 0.02
            np.testing.assert_allclose(by_bytes["probabilities"], by_float["probabilities"], atol=atol)
            if PHOTOS[photo]:
                assert top1 in PHOTOS[photo], (photo, fmt, names[top1])


def test_bad_bytes_fail_cleanly_and_serving_goes_on(exported):
    _, _, _, module = exported
    serve = module.signatures["serving_bytes"]
    jpeg = _encode(_photos()["chelsea"], "JPEG")
    good = serve(image_bytes=tf.constant([jpeg]))["probabilities"].numpy()
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"image_bytes\[1\] is not an image"):
        serve(image_bytes=tf.constant([jpeg, b"<html>not an image</html>"]))
    with pytest.raises(tf.errors.InvalidArgumentError):
        serve(image_bytes=tf.constant([jpeg[: len(jpeg) // 2]]))  # a truncated JPEG
    np.testing.assert_array_equal(serve(image_bytes=tf.constant([jpeg]))["probabilities"].numpy(), good)
    with pytest.raises(tf.errors.InvalidArgumentError, match="not compatible with expected shape"):
        module.signatures["serving_default"](images=tf.zeros([1, 224, 224, 4]))
    assert serve(image_bytes=tf.constant([], tf.string))["probabilities"].shape == (0, 1000)


def test_saved_model_cli_run(exported, tmp_path):
    _, _, path, _ = exported
    data = _encode(_photos()["chelsea"], "PNG")
    np.save(tmp_path / "bytes.npy", np.array([data], dtype=object), allow_pickle=True)
    np.save(tmp_path / "images.npy", _independent_eval_preprocessing(data)[None].astype(np.float32))
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    for signature, inputs in (("serving_bytes", f"image_bytes={tmp_path / 'bytes.npy'}"),
                              ("serving_default", f"images={tmp_path / 'images.npy'}")):
        run = subprocess.run([cli, "run", "--dir", os.path.join(path, "1"), "--tag_set", "serve",
                              "--signature_def", signature, "--inputs", inputs],
                             capture_output=True, text=True, timeout=120, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
        assert run.returncode == 0, run.stderr[-2000:]
        shown = run.stdout.split("Result for output key class_names:")[1]
        assert any(name in shown.split("Result for output key")[0] for name in ("tabby", "tiger cat")), shown


def test_weights_are_constants_up_to_the_limit_and_variables_above(exported, tmp_path, monkeypatch):
    """Lite0's 4.7M weights go into the graph as constants (no variables to read per call);
    a model over serving.CONSTANTS_LIMIT (V2-XL, L2: protobuf's 2 GB) keeps them as variables,
    with the same outputs."""
    from export import serving

    model, result, path, module = exported
    assert len(module.variables) == 0 and "saved_model weights: graph constants" in result.notes
    monkeypatch.setattr(serving, "CONSTANTS_LIMIT", 4 * model.count_params() - 1)
    large = export_model(model, str(tmp_path / "as_variables"), format="saved_model")
    assert any(n.startswith("saved_model weights: variables") for n in large.notes)
    reloaded = tf.saved_model.load(str(tmp_path / "as_variables" / "1"), tags=["serve"])
    assert len(reloaded.variables) == 2 * sum(
        type(l).__name__ in ("Conv2D", "DepthwiseConv2D") for l in model.layers) + 2
    x = tf.constant(np.random.default_rng(3).uniform(0, 1, (2, 224, 224, 3)).astype(np.float32))
    np.testing.assert_allclose(reloaded.signatures["serving_default"](images=x)["probabilities"],
                               module.signatures["serving_default"](images=x)["probabilities"],
                               atol=1e-5)
