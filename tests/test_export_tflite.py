"""Format ``tflite``: float32, float16, dynamic-range and full-integer int8, EfficientNet-Lite0 with
its ImageNet weights; TF-Lite Metadata read back, and every variant run by LiteRT and by MediaPipe
Tasks' ImageClassifier on the real photographs."""

import os

import numpy as np
import pytest
from PIL import Image

import efficientnet_tf
from efficientnet_tf.preprocessing import eval_config, preprocess_array
from efficientnet_tf.spec import model_spec
from export import export_model, mediapipe_client, photos, tflite, tflite_metadata
from export import photos as photos_module
from export.job import prepare

pytestmark = pytest.mark.integration

EXPECTED_TOP1 = {name: photos.get(name).top1_any_of for name in ("chelsea", "coffee")}


@pytest.fixture(scope="module")
def model():
    model = efficientnet_tf.build_model("efficientnet-lite0")
    efficientnet_tf.load_weights(model, "imagenet")
    return model


@pytest.fixture(scope="module")
def photos():
    import skimage.data

    config = eval_config("efficientnet-lite0")
    return {name: preprocess_array(getattr(skimage.data, name)(), config).numpy() for name in EXPECTED_TOP1}


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def test_float32(model, photos, tmp_path):
    result = export_model(model, str(tmp_path / "float"), format="tflite")
    assert result.max_abs_diff["tflite_float32/probabilities"] <= 1e-4
    content = _read(tmp_path / "float" / "model.tflite")
    interpreter = tflite.interpreter(content)
    detail = interpreter.get_input_details()[0]
    assert detail["dtype"] == np.float32 and list(detail["shape"]) == [1, 224, 224, 3]
    images = np.stack(list(photos.values()))
    np.testing.assert_allclose(tflite.run(interpreter, images), model(images, training=False), atol=1e-4)
    with open(tmp_path / "float" / "labels.txt") as f:
        assert f.read().splitlines()[281] == "tabby"


def test_int8_full_integer(model, photos, tmp_path):
    result = export_model(model, str(tmp_path / "int8"), format="tflite", quantize="int8")
    content = _read(tmp_path / "int8" / "model.tflite")
    interpreter = tflite.interpreter(content)
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    assert inp["dtype"] == np.uint8 and out["dtype"] == np.uint8
    scale, zero_point = inp["quantization"]
    assert scale == pytest.approx(1 / 255, rel=0.02) and zero_point == 0  # raw 0-255 pixels
    float_types = {d["name"] for d in interpreter.get_tensor_details() if d["dtype"] == np.float32}
    assert not float_types, sorted(float_types)[:5]  # every op runs in integers
    assert len(content) < 0.35 * 4 * model.count_params()
    images = np.stack(list(photos.values()))
    probabilities = tflite.run(interpreter, images)
    expected = model(images, training=False).numpy()
    assert np.abs(probabilities - expected).max() < tflite.INT8_TOLERANCE.atol
    for name, top1 in zip(photos, probabilities.argmax(-1)):
        assert top1 in EXPECTED_TOP1[name], (name, top1)
    assert result.max_abs_diff["tflite_int8/probabilities"] <= result.limits["tflite_int8/probabilities"]


def test_calibration_batch_from_files_and_arrays(model, tmp_path):
    import skimage.data

    paths = []
    for name in ("chelsea", "camera"):  # camera is grayscale
        paths.append(str(tmp_path / f"{name}.png"))
        Image.fromarray(getattr(skimage.data, name)()).save(paths[-1])
    prepared = prepare(model, image_size=96)
    batch = tflite.calibration_batch(prepared, paths, count=10)
    assert batch.shape == (10, 96, 96, 3) and batch.dtype == np.float32
    assert 0.0 <= batch.min() and batch.max() <= 1.0
    assert len({float(b.sum()) for b in batch}) == 10  # crops and flips, not copies
    arrays = tflite.calibration_batch(prepared, [skimage.data.coffee(), skimage.data.coffee() / 255.0], count=2)
    np.testing.assert_allclose(arrays[0], arrays[1], atol=1e-6)


def test_bad_arguments(model, tmp_path):
    with pytest.raises(ValueError, match="quantize='int8' applies to format 'tflite' only"):
        export_model(model, str(tmp_path / "x"), format="hub", quantize="int8")
    with pytest.raises(ValueError, match="valid values: int8"):
        export_model(model, str(tmp_path / "x"), format="tflite", quantize="int4")
    with pytest.raises(ValueError, match="valid values: hub, hub_tf1, saved_model, tflite"):
        export_model(model, str(tmp_path / "x"), format="coreml")
    assert not os.path.exists(tmp_path / "x")


@pytest.mark.parametrize("quantize,max_bytes_per_param", [("float16", 2.2), ("dynamic", 1.3)])
def test_float16_and_dynamic_range(model, photos, tmp_path, quantize, max_bytes_per_param):
    result = export_model(model, str(tmp_path / quantize), format="tflite", quantize=quantize)
    content = _read(tmp_path / quantize / "model.tflite")
    assert len(content) < max_bytes_per_param * model.count_params()
    interpreter = tflite.interpreter(content)
    assert interpreter.get_input_details()[0]["dtype"] == np.float32  # float in, float out
    images = np.stack(list(photos.values()))
    for name, top1 in zip(photos, tflite.run(interpreter, images).argmax(-1)):
        assert top1 in EXPECTED_TOP1[name], (name, top1)
    assert result.quantize == quantize
    assert any("mediapipe ImageClassifier top-1" in n for n in result.notes)


@pytest.mark.parametrize("quantize", [None, "float16", "dynamic", "int8"])
def test_metadata_and_mediapipe_image_classifier(model, tmp_path, quantize):
    out = tmp_path / (quantize or "float32")
    export_model(model, str(out), format="tflite", quantize=quantize)
    content = _read(out / "model.tflite")
    meta = mediapipe_client.read_metadata(content)  # MediaPipe's own schema code reads it back
    assert meta.minParserVersion.decode() == tflite_metadata.MIN_PARSER_VERSION
    image = meta.subgraphMetadata[0].inputTensorMetadata[0]
    norm = image.processUnits[0].options
    assert (list(norm.mean), list(norm.std)) == ([0.0], [255.0])  # pixels -> [0, 1], the model's input
    spec = model_spec(model)  # the weight set's normalization follows inside the model, as stated
    assert f"mean_rgb {list(spec.mean_rgb)}" in image.description.decode()
    assert f"stddev_rgb {list(spec.stddev_rgb)}" in image.description.decode()
    assert image.content.contentProperties.defaultSize.width == 224
    output = meta.subgraphMetadata[0].outputTensorMetadata[0]
    assert output.associatedFiles[0].name.decode() == "labels.txt"
    labels = tflite_metadata.associated_files(content)["labels.txt"].decode().splitlines()
    assert labels[281] == "tabby" and len(labels) == 1000

    images = tflite.photo_images(prepare(model))
    found = mediapipe_client.classify(str(out / "model.tflite"), images)
    names = [photo for photo, _ in photos_module.load()]
    for name, top in zip(names, found):
        index, label, score = top[0]
        assert label == labels[index]
        if name in EXPECTED_TOP1:
            assert index in EXPECTED_TOP1[name], (name, top)
    if quantize is None:  # float: MediaPipe's scores are Keras' probabilities
        keras = model(images.astype(np.float32) / 255.0, training=False).numpy()
        np.testing.assert_array_equal([t[0][0] for t in found], keras.argmax(-1))
        np.testing.assert_allclose([t[0][2] for t in found], keras.max(-1), atol=1e-3)


def test_mediapipe_refuses_a_tflite_without_metadata(model, tmp_path):
    path = tmp_path / "bare.tflite"
    path.write_bytes(tflite.convert(prepare(model, image_size=96)))
    with pytest.raises(Exception, match="NormalizationOptions"):
        mediapipe_client.classify(str(path), np.zeros((1, 96, 96, 3), np.uint8))


def test_quantize_for_a_format_without_it(model, tmp_path):
    for mode in ("float16", "dynamic"):
        with pytest.raises(ValueError, match=f"quantize='{mode}' applies to format 'tflite' only, not 'saved_model'"):
            export_model(model, str(tmp_path / "x"), format="saved_model", quantize=mode)
    assert not os.path.exists(tmp_path / "x")
