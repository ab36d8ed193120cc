"""Format ``tflite``: float32 and full-integer int8, EfficientNet-Lite0 with its ImageNet weights."""

import os

import numpy as np
import pytest
from PIL import Image

import efficientnet_tf
from efficientnet_tf.preprocessing import eval_config, preprocess_array
from export import export_model, photos, tflite
from export.job import prepare

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
        export_model(model, str(tmp_path / "x"), format="onnx")
    assert not os.path.exists(tmp_path / "x")
