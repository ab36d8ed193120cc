"""The accuracy cost of quantized exports on real labeled data: EfficientNet-B0 trained by
``train.main`` on the embedded digits (once per module, 110 steps: ~69% top-1), exported to int8
TF-Lite and evaluated float vs quantized on the 360 held-out digits; bad --eval_data fails
before any work."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import efficientnet_tf
from efficientnet_tf.digits import digits_images_and_labels, split_indices
from export import export_model
from train_helpers import ROOT, check_ok, env, read_json, run_main

SIZE = 48  # the digits recipe's eval size

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def digits_run(digits_dir, tmp_path_factory):
    model_dir = str(tmp_path_factory.mktemp("digits_b0"))
    check_ok(run_main(f"--model_dir={model_dir}", f"--data_dir={digits_dir}", "--train_steps=110",
                      "--config=runtime.steps_per_loop=22"))
    from train.fine_tune import model_from_model_dir

    model = model_from_model_dir(model_dir)
    weights = os.path.join(model_dir, "digits_b0.weights.h5")
    model.save_weights(weights)
    return model, read_json(model_dir, "eval_results.json"), weights


def test_int8_float_vs_quantized_top1_on_held_out_digits(digits_run, tmp_path):
    model, trainer_eval, _ = digits_run
    images, labels = digits_images_and_labels()
    calibration = list(images[split_indices(labels)["train"][:48]])  # calibrated on training digits
    out = tmp_path / "int8"
    result = export_model(model, str(out), format="tflite", quantize="int8", image_size=SIZE,
                          eval_data="digits", calibration_images=calibration, max_accuracy_drop=100)
    cost = result.accuracy["eval"]
    assert cost["source"] == "digits" and cost["images"] == 360
    # The float model's top-1 is the trainer's own evaluation of the same 360 digits.
    assert cost["float_top1"] == pytest.approx(100 * trainer_eval["top_1_accuracy"], abs=0.3)
    assert cost["float_top1"] > 40  # trained: the comparison means something
    assert cost["drop_points"] == pytest.approx(cost["float_top1"] - cost["quantized_top1"], abs=0.02)
    assert result.accuracy["photos"]["images"] >= 1
    with open(out / "export_info.json") as f:
        info = json.load(f)
    assert info["accuracy_cost"]["eval"] == cost
    check = [c for c in info["verification"]["checks"] if c["name"] == "tflite_int8/top1_drop_points"]
    assert check and check[0]["passed"] and check[0]["limit"] == 100
    assert "top-1" in result.accuracy_text() and "->" in result.accuracy_text()


def test_impossible_max_accuracy_drop_fails_cleanly_with_both_numbers(digits_run, tmp_path):
    # Calibrated on the default photographs, not on digits: int8 loses tens of points (37 measured).
    _, _, weights = digits_run
    target = tmp_path / "never"
    proc = run_main_export(f"--weights={weights}", f"--export_dir={target}", "--max_accuracy_drop=0")
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "nothing was written" in proc.stderr
    message = [line for line in proc.stderr.splitlines() if "points of top-1" in line][0]
    float_top1, quantized_top1 = map(float, re.findall(r"float model ([\d.]+)%, quantized ([\d.]+)%", message)[0])
    assert float_top1 > quantized_top1 and "max_accuracy_drop=0" in message
    assert os.listdir(tmp_path) == []


def test_eval_data_folder_of_class_folders(digits_run, tmp_path):
    from PIL import Image

    model = digits_run[0]
    images, labels = digits_images_and_labels()
    test = split_indices(labels)["test"][:60]
    root = tmp_path / "digits_folder"
    for i in test:  # root/<class name>/<file>: the model's class names are class_0 ... class_9
        (root / f"class_{labels[i]}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[i]).save(root / f"class_{labels[i]}" / f"{i}.png")
    result = export_model(model, str(tmp_path / "dynamic"), format="tflite", quantize="dynamic", image_size=SIZE,
                          eval_data=str(root), max_accuracy_drop=100)
    cost = result.accuracy["eval"]
    assert cost["source"] == str(root) and cost["images"] == 60
    assert 0 <= cost["quantized_top1"] <= 100 and cost["float_top1"] > 20


def run_main_export(*args):
    return subprocess.run([sys.executable, "-m", "export.main", "--model_name=efficientnet-b0", "--num_classes=10",
                           f"--image_size={SIZE}", "--format=tflite", "--quantize=int8", "--eval_data=digits", *args],
                          cwd=ROOT, env=env(), capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def small_model():
    return efficientnet_tf.build_model("efficientnet-b0", classes=10, input_shape=(SIZE, SIZE, 3))


@pytest.mark.parametrize("eval_data,message", [
    ("no_such_dataset_anywhere", "is not 'digits', an existing folder root/<class>/, or a TFDS dataset name"),
    ("/no/such/folder", "is not a folder root/<class>/"),
    ("mnist", "the TFDS dataset is not prepared"),  # a TFDS name, never downloaded here (no network)
])
def test_eval_data_that_does_not_exist(small_model, tmp_path, eval_data, message):
    with pytest.raises(ValueError, match=message):
        export_model(small_model, str(tmp_path / "x"), format="tflite", quantize="int8", eval_data=eval_data)
    assert os.listdir(tmp_path) == []


def test_eval_data_with_other_classes_than_the_model(small_model, tmp_path):
    from PIL import Image

    root = tmp_path / "data"
    for name in ("cat", "class_3"):
        (root / name).mkdir(parents=True)
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / name / "a.png")
    with pytest.raises(ValueError, match=r"class folders \['cat'\] that are not classes of the model"):
        export_model(small_model, str(tmp_path / "x"), format="tflite", quantize="int8", eval_data=str(root))
    big = efficientnet_tf.build_model("efficientnet-b0", classes=12, input_shape=(SIZE, SIZE, 3))
    with pytest.raises(ValueError, match="'digits' has 10 classes"):
        export_model(big, str(tmp_path / "x"), format="tflite", quantize="int8", eval_data="digits")
    with pytest.raises(ValueError, match="needs quantize"):
        export_model(small_model, str(tmp_path / "x"), format="tflite", eval_data="digits")
    with pytest.raises(ValueError, match="max_accuracy_drop must be"):
        export_model(small_model, str(tmp_path / "x"), format="tflite", quantize="int8", max_accuracy_drop=-1)
    assert sorted(os.listdir(tmp_path)) == ["data"]
