"""Published weight sets by tag: downloaded from a real HTTP server on loopback (the
$EFFICIENTNET_TF_WEIGHTS_MIRROR of storage.googleapis.com), verified, converted and cached.

The served archives are built here in the official layouts from randomized models (logits of
order one): tensorflow/tpu ``NAME/checkpoint`` + ``model.ckpt.*`` with ExponentialMovingAverage
shadows (the raw variables hold noise, so only the EMA reproduces the reference) for B0 (SE) and
Lite0; an automl V2 ``.tgz``; keras.applications legacy .h5 files written by tf_keras' save_weights
(top and notop). The reference for each is the model the tensors were written from.
"""

import dataclasses
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time

import numpy as np
import pytest

import efficientnet_tf
import efficientnet_tf.spec
from efficientnet_tf import __main__ as cli
from efficientnet_tf.weights import download, pretrained, published, tf_checkpoint
from helpers import relative_error
from test_weights_keras_files import keras_reference
from test_weights_roundtrip import _ema_extras, trained_like
from weights_server import WeightsServer, closed_port

pytestmark = pytest.mark.integration  # a loopback HTTP server

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 64
IMAGES = np.random.default_rng(7).uniform(0, 1, (2, SIZE, SIZE, 3)).astype("float32")


def url_path(url):
    return url[len(published.GCS):]


def tpu_archive(model, name, mode="w:gz"):
    """NAME/checkpoint, NAME/model.ckpt.index, NAME/model.ckpt.data-00000-of-00001 (official
    names, EMA shadows, optimizer slots, global_step) as tar.gz bytes."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = os.path.join(tmp, name)
        tf_checkpoint.write_checkpoint(model, os.path.join(folder, "model.ckpt"),
                                       extra=_ema_extras(model, model.name, np.random.default_rng(3)))
        with open(os.path.join(folder, "checkpoint"), "w") as f:
            f.write('model_checkpoint_path: "model.ckpt"\nall_model_checkpoint_paths: "model.ckpt"\n')
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode=mode) as tar:
            tar.add(folder, arcname=name)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def served():
    """The two servers (with and without Range support); archives are added by the fixtures
    below, built once per module and only when a test needs them."""
    server, no_range = WeightsServer(), WeightsServer(range_support=False)
    yield {"server": server, "no_range": no_range}
    server.close()
    no_range.close()


def _serve(served, variant, tag, data):
    for key in ("server", "no_range"):
        served[key].files[url_path(published.weight_set(variant, tag).url)] = data
    return data


@pytest.fixture(scope="module")
def b0_archive(served):
    data = tpu_archive(trained_like("efficientnet-b0"), "efficientnet-b0")
    for tag in ("autoaugment", "advprop"):
        _serve(served, "efficientnet-b0", tag, data)
    return data


@pytest.fixture(scope="module")
def lite0_archive(served):
    return _serve(served, "efficientnet-lite0", "imagenet",
                  tpu_archive(trained_like("efficientnet-lite0"), "efficientnet-lite0"))


@pytest.fixture(scope="module")
def v2_archive(served):
    return _serve(served, "efficientnetv2-b0", "imagenet", tpu_archive(trained_like("efficientnetv2-b0"),
                                                                        "efficientnetv2-b0"))


@pytest.fixture
def cache(tmp_path, monkeypatch, served):
    """A fresh $EFFICIENTNET_TF_HOME and the mirror pointed at the loopback server."""
    home = tmp_path / "home"
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):  # the loopback server directly
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.setenv(download.HOME_ENV, str(home))
    monkeypatch.setenv(download.MIRROR_ENV, served["server"].url)
    return home


def cached_files(home):
    return sorted(os.path.relpath(os.path.join(d, f), home) for d, _, fs in os.walk(home) for f in fs
                  if not d.endswith("locks"))


def logits(model, images=IMAGES):
    return model(images, training=False).numpy()


_TARGETS = {}


def target(name):
    """One model per variant to load into, shared by the tests (every successful strict load
    overwrites all of its variables and its normalization)."""
    if name not in _TARGETS:
        _TARGETS[name] = efficientnet_tf.build_model(name, classifier_activation=None)
    return _TARGETS[name]


def check_equal(reference, got):
    assert np.abs(reference).max() > 0.5  # logits of order one
    error = relative_error(reference, got)
    assert error <= 1e-4, error
    return error


def advprop_reference(images=IMAGES):
    """The source network's logits for inputs normalized to [-1, 1] (AdvProp's 2x - 1), fed
    through its own ImageNet mean/std layer: x' = ((2x - 1) std + mean) / 255."""
    reference = trained_like("efficientnet-b0")
    layer = reference.get_layer("preprocessing")
    mean, std = np.array(layer.mean), np.array(layer.std)
    return logits(reference, (((2.0 * images - 1.0) * std + mean) / 255.0).astype("float32"))


# ------------------------------------------------------------------ formats
def test_tpu_v1_archive_by_tag_cli_prefetch_and_cache(cache, served, b0_archive, capsys):
    """`weights download` (CLI) -> verify -> convert; then weights="imagenet" (= autoaugment for
    B0) loads the cached conversion; list and verify show the cache."""
    assert cli.main(["weights", "download", "--model_name=efficientnet-b0", "--tag=imagenet"]) == 0
    out = capsys.readouterr()
    assert "Downloading efficientnet-b0 autoaugment" in out.err and "MB" in out.err
    converted = os.path.join(cache, "converted", "efficientnet-b0", "autoaugment.weights.h5")
    assert converted in out.out
    archive = download.cache_path(published.weight_set("efficientnet-b0", "autoaugment").url)
    assert download.read_record(archive)["sha256"] == hashlib.sha256(b0_archive).hexdigest()

    model = efficientnet_tf.build_model("efficientnet-b0", weights="imagenet", classifier_activation=None)
    check_equal(logits(trained_like("efficientnet-b0")), logits(model))
    record = pretrained.weights_record(model)
    assert record["tag"] == "autoaugment" and record["normalization"] == "model"
    assert record["url"].endswith("/ckptsaug/efficientnet-b0.tar.gz")
    assert record["sha256"] == hashlib.sha256(b0_archive).hexdigest()  # of the published file
    path = url_path(published.weight_set("efficientnet-b0", "autoaugment").url)
    assert len(served["server"].requests(path)) == 1  # the second load read the cache only

    assert cli.main(["weights", "list", "--model_name=efficientnet-b0"]) == 0
    listing = capsys.readouterr().out
    assert "autoaugment (= imagenet)" in listing and "converted" in listing and "advprop" in listing
    assert cli.main(["weights", "verify"]) == 0
    assert "0 bad file(s)" in capsys.readouterr().out
    with open(converted, "r+b") as f:  # tamper: the recorded sha256 no longer matches
        f.seek(4000)
        f.write(b"\x00" * 16)
    assert cli.main(["weights", "verify"]) == 1
    assert f"BAD {converted}: sha256" in capsys.readouterr().out


def test_lite_archive_by_url(cache, lite0_archive):
    """A table URL (the official https address; the mirror applies) gets the table's facts."""
    url = published.weight_set("efficientnet-lite0", "imagenet").url
    model = efficientnet_tf.build_model("efficientnet-lite0", weights=url, classifier_activation=None)
    check_equal(logits(trained_like("efficientnet-lite0")), logits(model))
    assert pretrained.weights_record(model)["url"] == url


def test_automl_v2_tgz(cache, v2_archive):
    model = efficientnet_tf.build_model("efficientnetv2-b0", weights="imagenet", include_top=False, pooling="avg")
    reference = trained_like("efficientnetv2-b0")
    features = efficientnet_tf.endpoints_model(reference)(IMAGES, training=False)["pooled_features"].numpy()
    check_equal(features, logits(model))
    assert cached_files(cache)[0] == os.path.join("converted", "efficientnetv2-b0", "imagenet-notop.weights.h5")


def _patched_keras_hashes(monkeypatch, variant, top, notop):
    """The keras row with the test files' md5 in place of keras' published ones."""
    row = published.WEIGHT_SETS[(variant, "keras")]
    md5 = {name: hashlib.md5(data).hexdigest() for name, data in (("top", top), ("notop", notop))}
    new = dataclasses.replace(row, hash="md5:" + md5["top"], notop_hash="md5:" + md5["notop"])
    monkeypatch.setitem(published.WEIGHT_SETS, (variant, "keras"), new)
    monkeypatch.setitem(published._BY_URL, row.url, (new, True))
    monkeypatch.setitem(published._BY_URL, row.notop_url, (new, False))


def test_keras_h5_top_and_notop_md5_checked(cache, served, monkeypatch):
    import tf_keras

    reference = keras_reference("EfficientNetB0", v1=True, applications=tf_keras.applications)
    notop = tf_keras.applications.EfficientNetB0(include_top=False, weights=None, input_shape=(SIZE, SIZE, 3))
    with_weights = [layer for layer in reference.layers if layer.weights]
    for layer, source in zip([layer for layer in notop.layers if layer.weights], with_weights):
        layer.set_weights(source.get_weights())  # notop = top without its classifier, same order
    files = {}
    with tempfile.TemporaryDirectory() as tmp:
        for key, keras_model in (("top", reference), ("notop", notop)):
            keras_model.save_weights(os.path.join(tmp, f"{key}.h5"))
            files[key] = open(os.path.join(tmp, f"{key}.h5"), "rb").read()
    row = published.weight_set("efficientnet-b0", "keras")
    served["server"].files[url_path(row.url)] = files["top"]
    served["server"].files[url_path(row.notop_url)] = files["notop"]

    # keras' published md5 does not match these files: rejected, nothing cached
    with pytest.raises(download.DownloadError) as err:
        efficientnet_tf.load_weights(target("efficientnet-b0"), "keras")
    assert f"md5 {hashlib.md5(files['top']).hexdigest()}, expected {row.hash[4:]}" in str(err.value)
    assert "nothing was cached" in str(err.value)
    assert not [f for f in cached_files(cache) if not f.startswith("tmp")]

    _patched_keras_hashes(monkeypatch, "efficientnet-b0", files["top"], files["notop"])
    model = target("efficientnet-b0")
    assert efficientnet_tf.load_weights(model, "keras").ok
    check_equal(reference(IMAGES * 255.0, training=False).numpy(), logits(model))
    headless = efficientnet_tf.build_model("efficientnet-b0", weights="keras", include_top=False)
    check_equal(notop(IMAGES * 255.0, training=False).numpy(), logits(headless))
    assert pretrained.weights_record(headless)["url"] == row.notop_url


# ------------------------------------------------------------------ transfer failures
@pytest.mark.parametrize("which", ["server", "no_range"])
def test_dropped_download_resumes(cache, served, b0_archive, monkeypatch, which):
    server = served[which]
    monkeypatch.setenv(download.MIRROR_ENV, server.url)
    url = published.weight_set("efficientnet-b0", "advprop").url
    half = len(b0_archive) // 2
    server.drop_after[url_path(url)] = half
    before = len(server.requests(url_path(url)))
    path = download.fetch(url)
    assert open(path, "rb").read() == b0_archive
    first, second = server.requests(url_path(url))[before:]
    assert first == (url_path(url), None, 200)
    if which == "server":
        assert second == (url_path(url), f"bytes={half}-", 206)  # resumed where it broke off
    else:
        assert second[1] == f"bytes={half}-" and second[2] == 200  # ignored Range: started over
    assert not os.path.exists(path + ".part")


def test_truncated_archive_is_rejected_then_a_good_one_loads(cache, served, b0_archive):
    path = url_path(published.weight_set("efficientnet-b0", "advprop").url)
    served["server"].truncate[path] = len(b0_archive) * 2 // 3  # complete-looking, cut short
    model = target("efficientnet-b0")
    try:
        with pytest.raises(ValueError, match="truncated or not a valid archive") as err:
            efficientnet_tf.load_weights(model, "advprop")
        assert "nothing was cached" in str(err.value)
        assert not [f for f in cached_files(cache) if not f.startswith("tmp")]
    finally:
        del served["server"].truncate[path]
    assert efficientnet_tf.load_weights(model, "advprop").ok
    assert pretrained.weights_record(model)["tag"] == "advprop"
    spec = efficientnet_tf.spec.model_spec(model)
    assert model.get_layer("preprocessing").mean == [127.5] * 3 and spec.mean_rgb == (127.5,) * 3  # [-1, 1]
    check_equal(advprop_reference(), logits(model))


def test_404_is_a_clear_error(cache):
    url = published.weight_set("efficientnet-b1", "baseline").url
    with pytest.raises(download.DownloadError) as err:
        download.fetch(url)
    message = str(err.value)
    assert "HTTP 404" in message and download.mirrored(url) in message
    assert download.cache_path(url) in message  # where to put the file by hand
    assert not os.path.exists(download.cache_path(url) + ".part")


def test_unreachable_mirror_fails_fast_naming_the_file(cache, monkeypatch):
    monkeypatch.setenv(download.MIRROR_ENV, f"http://127.0.0.1:{closed_port()}")
    row = published.weight_set("efficientnet-b0", "noisy-student")
    started = time.monotonic()
    with pytest.raises(download.DownloadError) as err:
        download.fetch(row.url, row.hash)
    assert time.monotonic() - started < 30
    message = str(err.value)
    assert download.mirrored(row.url) in message and download.cache_path(row.url) in message
    assert "no size or hash is published" in message and download.MIRROR_ENV in message


# ------------------------------------------------------------------ concurrency and cache
LOAD = """
import sys, numpy as np, efficientnet_tf
model = efficientnet_tf.build_model("efficientnet-b0", weights="autoaugment", classifier_activation=None)
np.save(sys.argv[2], model(np.load(sys.argv[1]), training=False).numpy())
"""


@pytest.mark.slow  # two TensorFlow processes at once
def test_two_processes_load_at_once(cache, served, b0_archive, tmp_path):
    np.save(tmp_path / "images.npy", IMAGES)
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
    path = url_path(published.weight_set("efficientnet-b0", "autoaugment").url)
    before = len(served["server"].requests(path))
    procs = [subprocess.Popen([sys.executable, "-c", LOAD, str(tmp_path / "images.npy"), str(tmp_path / f"{i}.npy")],
                              env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
    reference = logits(trained_like("efficientnet-b0"))
    for i in range(2):
        check_equal(reference, np.load(tmp_path / f"{i}.npy"))
    assert len(served["server"].requests(path)) - before == 1  # downloaded once, under the lock
    assert not [f for f in cached_files(cache) if ".part" in f or ".tmp-" in f]


def test_cache_hit_with_the_server_gone(cache, lite0_archive, monkeypatch):
    first = efficientnet_tf.build_model("efficientnet-lite0", weights=published.weight_set(
        "efficientnet-lite0", "imagenet").url, classifier_activation=None)
    archive = download.cache_path(published.weight_set("efficientnet-lite0", "imagenet").url)
    download.remove(archive)  # only the converted file is left
    monkeypatch.setenv(download.MIRROR_ENV, f"http://127.0.0.1:{closed_port()}")
    again = efficientnet_tf.build_model("efficientnet-lite0", weights=published.weight_set(
        "efficientnet-lite0", "imagenet").url, classifier_activation=None)
    np.testing.assert_array_equal(logits(first), logits(again))
    assert cached_files(cache) == [os.path.join("converted", "efficientnet-lite0", "imagenet.weights.h5"),
                                   os.path.join("converted", "efficientnet-lite0", "imagenet.weights.h5.json")]


# ------------------------------------------------------------------ AdvProp normalization
@pytest.mark.slow  # export.main in a subprocess: build, fold, save, reload, verify
def test_advprop_normalization_reaches_the_serving_signature(cache, b0_archive, tmp_path):
    """export.main --weights=advprop: the exported serving signature normalizes to [-1, 1]."""
    import tensorflow as tf

    out = tmp_path / "export"
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([sys.executable, "-m", "export.main", "--model_name=efficientnet-b0", "--weights=advprop",
                             "--format=saved_model", f"--image_size={SIZE}", f"--export_dir={out}"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    info = json.load(open(out / "export_info.json"))
    assert info["weight_set"]["tag"] == "advprop" and info["weight_set"]["normalization"] == "inception"
    assert info["weight_set"]["url"].endswith("/advprop/efficientnet-b0.tar.gz") and info["weight_set"]["sha256"]
    assert info["normalization_inside_model"] == {"mean_rgb": [127.5] * 3, "stddev_rgb": [127.5] * 3}

    expected = tf.nn.softmax(advprop_reference()).numpy()
    reference = trained_like("efficientnet-b0")
    served_probs = tf.saved_model.load(str(out / "1")).signatures["serving_default"](images=tf.constant(IMAGES))
    got = served_probs["probabilities"].numpy()
    assert np.abs(expected - got).max() <= 1e-4 * np.abs(expected).max() + 1e-6
    plain = tf.nn.softmax(logits(reference)).numpy()  # what the ImageNet normalization would give
    assert np.abs(plain - got).max() > 100 * (1e-4 * np.abs(expected).max() + 1e-6)


# ------------------------------------------------------------------ the table
def test_table_facts_and_tag_errors():
    assert published.weight_set("efficientnet-b2", "imagenet").tag == "autoaugment"
    assert published.weight_set("efficientnet-b8", "imagenet").tag == "advprop"
    assert published.weight_set("efficientnet-l2", "imagenet").tag == "noisy-student"
    assert published.weight_set("efficientnetv2-xl", "imagenet").tag == "imagenet21k-ft1k"
    assert published.weight_set("efficientnet-l2", "noisy-student-475").image_size() == 475
    assert efficientnet_tf.model_info("efficientnet-l2", weights="noisy-student-475")["resolution"] == 475
    assert published.weight_set("efficientnet-b3", "advprop").mean_std() == ((127.5,) * 3, (127.5,) * 3)
    v21k = published.weight_set("efficientnetv2-b0", "imagenet21k")
    assert (v21k.classes, v21k.labels, v21k.mean_std()[0]) == (21843, "imagenet21k", (128.0,) * 3)
    keras_rows = [w for w in published.all_sets() if w.tag == "keras"]
    assert len(keras_rows) == 15 and all(w.hash.startswith("md5:") and len(w.hash) == 36 for w in keras_rows)
    for ws in published.all_sets():
        assert ws.url.startswith(published.GCS + "/") and published.by_url(ws.url)[0] is ws
    with pytest.raises(ValueError, match="its tags: advprop, imagenet"):
        published.weight_set("efficientnet-b8", "baseline")
    with pytest.raises(ValueError, match="not a tag. Valid tags: baseline, autoaugment"):
        efficientnet_tf.load_weights(target("efficientnet-b0"), "autoaugmnet")
    with pytest.raises(ValueError, match="21843-class classifier; the model has 10"):
        efficientnet_tf.build_model("efficientnetv2-b0", weights="imagenet21k", classes=10)


def test_imagenet21k_labels_and_head():
    from efficientnet_tf import labels

    names, synsets = labels.imagenet21k_labels(), labels.imagenet21k_synsets()
    assert len(names) == len(synsets) == 21843
    assert synsets[0] == "n00004475" and names[0] == "organism"
    # 999 of the 1k synsets are in Google's 21k list (it lacks n04399382, teddy bear), and
    # their names agree with the 1k label file
    one_k = dict(zip(open(os.path.join(ROOT, "efficientnet_tf/data/imagenet_synsets.txt")).read().split(),
                     labels.imagenet_labels()))
    index = {s: i for i, s in enumerate(synsets)}
    assert sorted(set(one_k) - set(index)) == ["n04399382"]
    assert all(names[index[s]] == name for s, name in one_k.items() if s in index)
    assert labels.class_names(21843) == names
