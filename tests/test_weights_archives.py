"""Published archives as Google's files really are, beyond one clean checkpoint: variables the
model does not use, several model scopes, a required variable missing (the complete download is
kept: the loopback server's request log shows no second download), ``.tflite`` files and macOS
``._*`` AppleDouble files beside the checkpoint, a stale ``checkpoint`` state file, several
candidate checkpoints, and automl's uniquified ``head_1`` classifier scope.

Archives are built here in the official layouts from randomized, BN-calibrated models and
served by a real HTTP server on 127.0.0.1 (tests/weights_server.py).
"""

import io
import os
import tarfile
import tempfile

import numpy as np
import pytest
import tensorflow as tf

import efficientnet_tf
from efficientnet_tf.weights import download, published, tf_checkpoint
from test_weights_download import cache, check_equal, logits, served, target, url_path  # noqa: F401 (fixtures)
from test_weights_roundtrip import _ema_extras, trained_like

STATE = 'model_checkpoint_path: "{0}"\nall_model_checkpoint_paths: "{0}"\n'


def save(prefix, tensors):
    """A TF checkpoint holding exactly ``tensors`` (official names)."""
    os.makedirs(os.path.dirname(prefix), exist_ok=True)
    names = sorted(tensors)
    tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names, shape_and_slices=[""] * len(names),
                      tensors=[tf.constant(tensors[n]) for n in names])
    return prefix


def training_tensors(model, scope=None, rng_seed=3):
    """The official names with EMA shadows (true values), noisy raw values, slots, global_step."""
    scope = scope or model.name
    tensors = tf_checkpoint.checkpoint_tensors_from_model(model, scope)
    tensors.update(_ema_extras(model, scope, np.random.default_rng(rng_seed)))
    return tensors


def tar_folder(root, mode="w:gz"):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as tar:
        for name in sorted(os.listdir(root)):
            tar.add(os.path.join(root, name), arcname=name)
    return buffer.getvalue()


def build_archive(folder_name, files):
    """``files``: {relative path: tensors dict (a checkpoint prefix) | bytes | str}."""
    with tempfile.TemporaryDirectory() as tmp:
        for relative, content in files.items():
            path = os.path.join(tmp, folder_name, relative)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            if isinstance(content, dict):
                save(path, content)
            else:
                with open(path, "wb") as f:
                    f.write(content.encode() if isinstance(content, str) else content)
        return tar_folder(tmp)


def serve(served, variant, tag, data):  # noqa: F811 (the fixture's value)
    path = url_path(published.weight_set(variant, tag).url)
    served["server"].files[path] = data
    return path


def extras(model, rng):
    """What published checkpoints carry beyond the model: a training-only batch norm, counters,
    a second model scope (its own stem, so the loader must pick by the variant's name)."""
    scope = model.name
    out = {"global_step": np.array(7, np.int64), f"{scope}/train/step_counter": np.array(3, np.int64),
           f"{scope}/blocks_0/tpu_batch_normalization_9/gamma": rng.normal(size=8).astype("float32"),
           f"{scope}/blocks_0/tpu_batch_normalization_9/moving_mean": rng.normal(size=8).astype("float32")}
    for name, value in tf_checkpoint.checkpoint_tensors_from_model(model, "teacher").items():
        out[name] = rng.normal(0, 1, value.shape).astype(value.dtype)
    return out


# ------------------------------------------------------------------ published sets: tolerant
@pytest.mark.integration
def test_extra_variables_and_second_scope_ignored_with_one_warning(cache, served, capsys):  # noqa: F811
    model = trained_like("efficientnet-b0")
    tensors = training_tensors(model)
    tensors.update(extras(model, np.random.default_rng(5)))
    # tensorflow/tpu#922: NoisyStudent B1/B2/B4 unpack to noisy-student-efficientnet-bN/
    data = build_archive("noisy-student-efficientnet-b0", {"model.ckpt": tensors, "checkpoint": STATE.format("model.ckpt")})
    serve(served, "efficientnet-b0", "noisy-student", data)
    capsys.readouterr()
    loaded = target("efficientnet-b0")
    report = efficientnet_tf.load_weights(loaded, "noisy-student")
    assert report.ok
    check_equal(logits(model), logits(loaded))
    warnings = [line for line in capsys.readouterr().err.splitlines() if "does not use" in line]
    unused = 1 + 2 + len(tf_checkpoint.checkpoint_tensors_from_model(model, "teacher"))  # counter, BN, scope
    assert len(warnings) == 1 and f"{unused} variable(s) the model does not use were ignored" in warnings[0]
    assert "efficientnet-b0 noisy-student" in warnings[0]

    # the same checkpoint as a user's file is strict ...
    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            tar.extractall(tmp, filter="data")
        folder = os.path.join(tmp, "noisy-student-efficientnet-b0")
        with pytest.raises(ValueError, match=r"unexpected in the source \(%d\)" % unused) as err:
            efficientnet_tf.load_weights(loaded, folder)
        assert "teacher/" in str(err.value)
        # ... unless strict=False
        fresh = efficientnet_tf.build_model("efficientnet-b0", classifier_activation=None)
        report = efficientnet_tf.load_weights(fresh, folder, strict=False)
        assert len(report.unexpected) == unused and not report.missing and not report.mismatched
        assert {"efficientnet-b0/train/step_counter", "teacher/stem/conv2d/kernel"} <= set(report.unexpected)
        check_equal(logits(model), logits(fresh))


@pytest.mark.integration
def test_missing_variable_fails_and_keeps_the_download(cache, served):  # noqa: F811
    model = trained_like("efficientnet-b0")
    tensors = {k: v for k, v in training_tensors(model).items() if "head/dense/bias" not in k}
    path = serve(served, "efficientnet-b0", "baseline",
                 build_archive("efficientnet-b0", {"model.ckpt": tensors, "checkpoint": STATE.format("model.ckpt")}))
    archive = download.cache_path(published.weight_set("efficientnet-b0", "baseline").url)
    before = len(served["server"].requests(path))
    for _ in range(2):
        with pytest.raises(ValueError) as err:
            efficientnet_tf.load_weights(target("efficientnet-b0"), "baseline")
        message = str(err.value)
        assert "missing from the source (1): predictions/bias" in message
        assert f"kept at {archive}" in message and "nothing was converted" in message
        assert os.path.isfile(archive)
    assert len(served["server"].requests(path)) - before == 1  # the second try read the kept file
    assert not os.path.exists(os.path.join(cache, "converted", "efficientnet-b0", "baseline.weights.h5"))


# ------------------------------------------------------------------ archive contents
@pytest.mark.integration
def test_lite_archive_with_tflite_appledouble_and_stale_state_file(cache, served):  # noqa: F811
    model = trained_like("efficientnet-lite0")
    junk = b"\x00\x05\x16\x07" + os.urandom(60)  # an AppleDouble header and resource bytes
    data = build_archive("efficientnet-lite0", {
        "model.ckpt": training_tensors(model),
        "checkpoint": STATE.format("/bigstore/train/efficientnet-lite0/model.ckpt-218000"),  # stale
        "._checkpoint": junk, "._model.ckpt.index": junk, "._model.ckpt.data-00000-of-00001": junk,
        "efficientnet-lite0-fp32.tflite": os.urandom(256), "efficientnet-lite0-int8.tflite": os.urandom(256),
        "._efficientnet-lite0-fp32.tflite": junk,
    })
    url = published.weight_set("efficientnet-lite0", "imagenet").url
    served["server"].files[url_path(url)] = data
    loaded = target("efficientnet-lite0")
    assert efficientnet_tf.load_weights(loaded, url).ok
    check_equal(logits(model), logits(loaded))


@pytest.mark.integration
def test_several_candidate_checkpoints_are_an_error_naming_them(cache, served):  # noqa: F811
    model = trained_like("efficientnet-b0")
    tensors = training_tensors(model)
    serve(served, "efficientnet-b0", "advprop",
          build_archive("efficientnet-b0", {"model.ckpt-1000": tensors, "model.ckpt-2000": tensors}))
    with pytest.raises(ValueError, match="several checkpoints") as err:
        efficientnet_tf.load_weights(target("efficientnet-b0"), "advprop")
    message = str(err.value)
    assert "efficientnet-b0/model.ckpt-1000" in message and "efficientnet-b0/model.ckpt-2000" in message
    assert "kept at" in message


def _tiny(prefix):
    return save(prefix, {"v": np.zeros(2, np.float32)})


def test_find_checkpoint_rules(tmp_path):
    root = tmp_path / "a"
    _tiny(str(root / "model.ckpt-1"))
    _tiny(str(root / "model.ckpt-2"))
    with pytest.raises(ValueError, match=r"several checkpoints .*model.ckpt-1.*model.ckpt-2"):
        tf_checkpoint.find_checkpoint(str(root))
    (root / "checkpoint").write_text(STATE.format("model.ckpt-2"))  # the state file decides
    assert tf_checkpoint.find_checkpoint(str(root)) == str(root / "model.ckpt-2")
    (root / "checkpoint").write_text(STATE.format("model.ckpt-9"))  # stale: names nothing here
    with pytest.raises(ValueError, match="several checkpoints"):
        tf_checkpoint.find_checkpoint(str(root))
    os.remove(str(root / "model.ckpt-1.data-00000-of-00001"))  # incomplete pairs are no candidates
    assert tf_checkpoint.find_checkpoint(str(root)) == str(root / "model.ckpt-2")
    (root / "checkpoint").write_bytes(b"\x00\x05\x16\x07 not a text proto {{{")  # damaged: ignored
    assert tf_checkpoint.checkpoint_prefix(str(root)) == str(root / "model.ckpt-2")
    (root / "._model.ckpt-3.index").write_bytes(b"\x00\x05\x16\x07")
    assert tf_checkpoint.find_checkpoint(str(root)) == str(root / "model.ckpt-2")
    os.makedirs(tmp_path / "empty")
    assert tf_checkpoint.find_checkpoint(str(tmp_path / "empty")) is None
    nested = tmp_path / "n"
    _tiny(str(nested / "deep" / "x" / "model.ckpt"))
    assert tf_checkpoint.find_checkpoint(str(nested)) is None
    assert tf_checkpoint.find_checkpoint(str(nested), recursive=True) == str(nested / "deep" / "x" / "model.ckpt")


# ------------------------------------------------------------------ scopes
@pytest.mark.integration  # builds and randomizes two models (~6 s)
def test_several_scopes_pick_the_variant_or_name_them(tmp_path):
    model = trained_like("efficientnet-b0")
    tensors = training_tensors(model)
    for name, value in tf_checkpoint.checkpoint_tensors_from_model(model, "efficientnet-b4").items():
        tensors[name] = np.zeros_like(value)
    prefix = save(str(tmp_path / "two" / "model.ckpt"), tensors)
    found = tf_checkpoint.read_for_model(target("efficientnet-b0"), prefix)
    assert found.scope == "efficientnet-b0" and all(n.startswith("efficientnet-b4/") for n in found.unused)
    lite = target("efficientnet-lite0")
    with pytest.raises(ValueError, match=r"several model scopes \['efficientnet-b0', 'efficientnet-b4'\] "
                                         r"and none is 'efficientnet-lite0'"):
        tf_checkpoint.read_for_model(lite, prefix)


@pytest.mark.integration  # builds and randomizes two models (~6 s)
def test_automl_uniquified_head_scope_loads(tmp_path):
    """A checkpoint from automl's own graph-mode training names the classifier head_1/dense."""
    model = trained_like("efficientnetv2-b0")
    tensors = {name.replace("/head/dense/", "/head_1/dense/"): value for name, value in training_tensors(model).items()}
    assert "efficientnetv2-b0/head_1/dense/kernel/ExponentialMovingAverage" in tensors
    assert not [n for n in tensors if "/head/dense/" in n]
    prefix = save(str(tmp_path / "automl" / "model-1000"), tensors)
    loaded = target("efficientnetv2-b0")
    report = efficientnet_tf.load_weights(loaded, prefix)  # strict: every name has its place
    assert report.ok and report.loaded == len(loaded.weights)
    check_equal(logits(model), logits(loaded))


def test_unpacking_without_tarfiles_data_filter(tmp_path, monkeypatch):
    """Pythons before 3.10.12 / 3.11.4 have no tarfile.data_filter (PEP 706): the fallback
    refuses members that would land outside the folder and skips links."""
    from efficientnet_tf.weights import pretrained

    monkeypatch.delattr(tarfile, "data_filter")
    good = io.BytesIO()
    with tarfile.open(fileobj=good, mode="w:gz") as tar:
        for name, data in (("a/model.ckpt.index", b"x"), ("a/sub/file", b"yy")):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o4755
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("a/link")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    (tmp_path / "good.tgz").write_bytes(good.getvalue())
    pretrained.unpack(str(tmp_path / "good.tgz"), str(tmp_path / "out"), "test")
    assert (tmp_path / "out" / "a" / "sub" / "file").read_bytes() == b"yy"
    assert not os.path.lexists(tmp_path / "out" / "a" / "link")
    assert os.stat(tmp_path / "out" / "a" / "model.ckpt.index").st_mode & 0o7777 == 0o644
    evil = io.BytesIO()
    with tarfile.open(fileobj=evil, mode="w") as tar:
        info = tarfile.TarInfo("../escaped")
        tar.addfile(info, io.BytesIO(b""))
    (tmp_path / "evil.tar").write_bytes(evil.getvalue())
    with pytest.raises(pretrained.ArchiveError, match="outside the folder"):
        pretrained.unpack(str(tmp_path / "evil.tar"), str(tmp_path / "out2"), "test")
    assert not (tmp_path / "escaped").exists()


@pytest.mark.integration
def test_loaded_set_records_its_rule_even_from_an_older_cache(cache, served):  # noqa: F811
    """weights="imagenet21k-ft1k" records the set's evaluation rule on the model; a conversion
    cached before the rule existed gets the table's facts on the next load."""
    import json

    from efficientnet_tf.weights import pretrained

    model = trained_like("efficientnetv2-b0")
    serve(served, "efficientnetv2-b0", "imagenet21k-ft1k",
          build_archive("efficientnetv2-b0-21k-ft1k", {"model.ckpt": training_tensors(model),
                                                      "checkpoint": STATE.format("model.ckpt")}))
    first = efficientnet_tf.build_model("efficientnetv2-b0", weights="imagenet21k-ft1k", classifier_activation=None)
    assert pretrained.weights_record(first)["eval_preprocessing"]["crop_fraction"] == 1.0
    converted = os.path.join(cache, "converted", "efficientnetv2-b0", "imagenet21k-ft1k.weights.h5")
    record = json.load(open(converted + ".json"))
    for key in ("eval_preprocessing", "scores"):
        del record["weights"][key]
    download.write_record(converted, record)
    again = efficientnet_tf.build_model("efficientnetv2-b0", weights="imagenet21k-ft1k", classifier_activation=None)
    got = pretrained.weights_record(again)
    assert got["eval_preprocessing"]["resize_method"] == "bilinear" and got["scores"] == "softmax"
    assert got["sha256"] == record["weights"]["sha256"]
    check_equal(logits(first), logits(again))
