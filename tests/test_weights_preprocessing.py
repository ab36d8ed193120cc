"""Evaluation preprocessing belongs to the weight set: automl evaluates its 21k-ft1k sets by
resizing the whole image (bilinear, no crop; ``preprocess_for_finetune``) and its 21k sets with
``preprocess_for_eval`` at 224 (crop 224/256, bilinear, half-pixel), V2-B0..B3 included, while
the 1k sets of V2-B0..B3 keep the V1 recipe. model_info, the predict API and the exports'
serving_bytes take the rule from the loaded set; checked on real photographs against automl's
rule written out here with TF ops.
"""

import dataclasses
import os

import numpy as np
import pytest
import tensorflow as tf

import efficientnet_tf
from efficientnet_tf import preprocessing
from efficientnet_tf.predict import predict_top_k, preprocess_image
from efficientnet_tf.testing import randomize_like_trained
from efficientnet_tf.weights import pretrained, published
from export import export_model, photos

V2B0 = "efficientnetv2-b0"


def record(variant, tag):
    return published.weight_set(variant, tag).record()


def automl_finetune(data, size):
    """automl preprocess_for_finetune at eval: (x / 255 - 0.5) / 0.5, tf.image.resize to size."""
    image = (tf.cast(tf.io.decode_image(data, channels=3), tf.float32) / 255.0 - 0.5) / 0.5
    return tf.image.resize(image, [size, size]).numpy()


def automl_eval(data, size):
    """automl preprocess_for_eval: crop size / (size + 32) below 320 px at ((h - c) // 2,
    (w - c) // 2), tf.image.resize; then (x - 128) / 128."""
    image = tf.io.decode_image(data, channels=3)
    height, width = image.shape[0], image.shape[1]
    if size < 320:
        crop = int(size / (size + 32) * np.float32(min(height, width)))
        image = image[(height - crop) // 2:(height - crop) // 2 + crop, (width - crop) // 2:(width - crop) // 2 + crop]
    return ((tf.image.resize(tf.cast(image, tf.float32), [size, size]) - 128.0) / 128.0).numpy()


def test_model_info_takes_the_rule_of_the_set():
    plain = efficientnet_tf.model_info(V2B0)
    assert plain["resize_method"] == "bicubic" and plain["eval_crop_fraction"] == 224 / 256  # the V1 recipe
    ft = efficientnet_tf.model_info(V2B0, weights="imagenet21k-ft1k")
    assert (ft["resolution"], ft["eval_crop_fraction"], ft["resize_method"]) == (224, 1.0, "bilinear")
    assert ft["weights"]["eval_preprocessing"] == {"crop_padding": 0, "crop_below": None, "resize_method": "bilinear",
                                                   "legacy": False, "crop_fraction": 1.0}
    pre = efficientnet_tf.model_info("efficientnetv2-b2", weights="imagenet21k")
    assert (pre["resolution"], pre["eval_crop_fraction"], pre["resize_method"]) == (224, 224 / 256, "bilinear")
    assert pre["weights"]["eval_preprocessing"]["legacy"] is False
    # sets that keep their variant's rule
    assert efficientnet_tf.model_info(V2B0, weights="imagenet")["resize_method"] == "bicubic"
    big = efficientnet_tf.model_info("efficientnetv2-s", weights="imagenet21k-ft1k")
    assert (big["resolution"], big["eval_crop_fraction"]) == (384, 1.0)
    assert efficientnet_tf.model_info("efficientnet-b0", weights="advprop")["eval_crop_fraction"] == 224 / 256
    rules = {(w.tag, w.eval_rule) for w in published.all_sets() if w.eval_rule != "model"}
    assert rules == {("imagenet21k", "automl"), ("imagenet21k-ft1k", "automl-ft")}
    with pytest.raises(ValueError, match="unknown eval_rule 'automl-v3'; valid: model, automl, automl-ft"):
        dataclasses.replace(published.weight_set(V2B0, "imagenet"), eval_rule="automl-v3")


@pytest.mark.parametrize("tag", ["imagenet21k-ft1k", "imagenet21k"])
def test_preprocessing_equals_automls_rule_on_real_photos(tag):
    weights = record(V2B0, tag)
    config = preprocessing.eval_config(V2B0, weights=weights)
    variant_rule = preprocessing.eval_config(V2B0, 224)
    for name, data in photos.load()[:4]:
        ours = preprocessing.preprocess_bytes(data, config).numpy()
        if tag == "imagenet21k-ft1k":
            theirs = (automl_finetune(data, 224) + 1.0) / 2.0  # [-1, 1] -> our [0, 1]
        else:
            theirs = (automl_eval(data, 224) * 128.0 + 128.0) / 255.0
        assert np.abs(ours - theirs).max() <= 1e-5, name
        old = preprocessing.preprocess_bytes(data, variant_rule).numpy()
        assert np.abs(old - theirs).max() > 0.05, name  # the variant's V1 rule is far from it
        np.testing.assert_allclose(preprocess_image(data, V2B0, weights), ours, atol=1e-6)


@pytest.mark.integration  # builds, exports and reloads a SavedModel
def test_prediction_and_serving_bytes_follow_the_loaded_set(tmp_path):
    found = photos.load()[:3]
    automl = np.stack([(automl_finetune(data, 224) + 1.0) / 2.0 for _, data in found]).astype("float32")
    model = efficientnet_tf.build_model(V2B0, classifier_activation=None)
    calibration = np.stack([preprocessing.preprocess_bytes(data, V2B0).numpy() for _, data in photos.load()])
    randomize_like_trained(model, calibration.astype("float32"))  # at 224 px on photos, like the export's batch
    pretrained.remember(model, record(V2B0, "imagenet21k-ft1k"))  # what load_weights records
    logits = model(automl, training=False).numpy()
    expected = tf.nn.log_softmax(logits).numpy()  # compared as log-probabilities: logits up to a constant

    top = predict_top_k(model, [data for _, data in found], k=3)
    for row, best in zip(expected, top):
        assert [p["pred_label"] for p in best] == list(np.argsort(-row, kind="stable")[:3])
        assert abs(np.log(best[0]["pred_score"]) - row.max()) <= 1e-4

    export_model(model, str(tmp_path / "serving"), format="saved_model", weights="imagenet21k-ft1k")
    served = tf.saved_model.load(os.path.join(str(tmp_path / "serving"), "1"))
    by_bytes = served.signatures["serving_bytes"](image_bytes=tf.constant([data for _, data in found]))
    got = np.log(by_bytes["probabilities"].numpy())
    assert np.abs(got - expected).max() <= 1e-3
    cropped = np.stack([preprocessing.preprocess_bytes(data, V2B0).numpy() for _, data in found])
    old_rule = tf.nn.log_softmax(model(cropped, training=False)).numpy()
    assert np.abs(old_rule - expected).max() > 20e-3  # the variant's V1 rule: 20x the tolerance off


@pytest.mark.integration  # a 21,843-class model (~5 s)
def test_imagenet21k_predictions_report_sigmoid_scores():
    """automl's ImageNet-21k heads are multi-label (sigmoid loss): scores are sigmoid(logit),
    the top-k is the softmax's."""
    assert record(V2B0, "imagenet21k")["scores"] == "sigmoid"
    assert {record(V2B0, tag)["scores"] for tag in ("imagenet", "imagenet21k-ft1k")} == {"softmax"}
    model = efficientnet_tf.build_model(V2B0, classes=published.IMAGENET21K_CLASSES)  # a softmax layer on top
    found = [data for _, data in photos.load()[:2]]
    batch = np.stack([preprocess_image(data, V2B0, record(V2B0, "imagenet21k")) for data in found])
    randomize_like_trained(model, batch)  # calibrated on the photos themselves: logits of order one
    pretrained.remember(model, record(V2B0, "imagenet21k"))
    logits = tf.keras.Model(model.input, model.get_layer("predictions").output)(batch).numpy().astype(np.float64)
    top = predict_top_k(model, found, k=5)
    for row, best in zip(logits, top):
        order = np.argsort(-row, kind="stable")[:5]
        assert [p["pred_label"] for p in best] == list(order)
        np.testing.assert_allclose([p["pred_score"] for p in best], 1 / (1 + np.exp(-row[order])), rtol=1e-5)
        assert best[0]["pred_class"] == efficientnet_tf.labels.class_names(published.IMAGENET21K_CLASSES)[order[0]]

    from export.job import prepare

    job = prepare(model)  # what every exporter's probabilities come from
    np.testing.assert_allclose(job.scores(logits[:1]).numpy(), 1 / (1 + np.exp(-logits[:1])), rtol=1e-6)
