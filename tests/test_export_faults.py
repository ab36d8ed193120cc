"""Several formats in one command (``--format=A,B`` / ``all``) and write failures for real: a
file-size limit (RLIMIT_FSIZE, what a full disk looks like to the writer) during an export."""

import json
import os
import re
import resource
import signal
import subprocess
import sys

import numpy as np
import pytest

import export
from efficientnet_tf.preprocessing import eval_config, preprocess_bytes
from efficientnet_tf.testing import seeded_model
from export import photos
from export import ExportWriteError, export_formats, export_model, parse_formats, summary_table

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LITE0 = ["--model_name=efficientnet-lite0", "--image_size=64"]


def _limit(max_file_bytes):
    def limit():  # in the child only: writes past the limit fail with EFBIG
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_bytes, max_file_bytes))
    return limit


def _cli(*args, max_file_bytes=None):
    return subprocess.run([sys.executable, "-m", "export.main", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
                          preexec_fn=_limit(max_file_bytes) if max_file_bytes else None)


def _tree(path):
    """{relative path: (size, mtime_ns)} of every file under ``path``."""
    out = {}
    for root, _, files in os.walk(path):
        for name in files:
            stat = os.stat(os.path.join(root, name))
            out[os.path.relpath(os.path.join(root, name), path)] = (stat.st_size, stat.st_mtime_ns)
    return out


def test_parse_formats():
    assert parse_formats("all") == list(export.FORMATS)
    assert parse_formats("tflite, hub") == ["tflite", "hub"]
    assert parse_formats(["saved_model"]) == ["saved_model"]
    for bad, shown in (("hub,coreml", "Unknown format 'coreml'"), ("hub,hub", "Bad format list"), ("", "Unknown format ''")):
        with pytest.raises(ValueError, match=shown) as err:
            parse_formats(bad)
        assert "valid values: hub, hub_tf1, saved_model, tflite" in str(err.value) and "'all'" in str(err.value)


@pytest.fixture(scope="module")
def lite0():
    calibration = np.random.default_rng(1).uniform(size=(4, 64, 64, 3)).astype("float32")
    return seeded_model("efficientnet-lite0", calibration)


def test_two_formats_one_job_and_a_summary_table(lite0, tmp_path):
    target = tmp_path / "lite0"
    results = export_formats(lite0, str(target), "tflite,saved_model", image_size=64)
    assert [r.format for r in results] == ["tflite", "saved_model"]
    assert [r.export_dir for r in results] == [str(target / "tflite"), str(target / "saved_model")]
    assert sorted(os.listdir(target)) == ["export_info.json", "saved_model", "tflite"]
    assert (target / "tflite" / "model.tflite").is_file() and (target / "saved_model" / "1" / "saved_model.pb").is_file()
    for result in results:
        info = json.loads((target / result.format / "export_info.json").read_text())
        assert info["format"] == result.format and len(info["verification"]["checks"]) == len(result.checks) > 0
        assert all(check["passed"] for check in info["verification"]["checks"])
        assert all(path.startswith(result.export_dir + os.sep) and os.path.isfile(path) for path in result.paths)
    top = json.loads((target / "export_info.json").read_text())
    assert [f["format"] for f in top["formats"]] == ["tflite", "saved_model"]
    assert top["model_name"] == "efficientnet-lite0" and top["default_image_size"] == [64, 64]
    table = summary_table(results).splitlines()
    assert table[0].split()[:3] == ["format", "written", "to"] and set(table[1]) <= {"-", " "}
    for line, result in zip(table[2:], results):
        assert line.startswith(result.format + " ") and result.export_dir in line
        assert f"{len(result.checks)}/{len(result.checks)} passed" in line
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".")]


WRITER = r"""
import sys
from export.atomic import atomic_export_dir
with atomic_export_dir(sys.argv[1], overwrite=True) as staging:
    with open(staging + "/model.tflite", "wb") as f:
        f.write(b"x" * 2**21)
"""


def test_disk_full_in_python_writes_leaves_nothing(tmp_path):
    # No TensorFlow here: Python's own write hits the limit (EFBIG, as ENOSPC on a full disk).
    for previous in (False, True):
        target = tmp_path / "out"
        if previous:
            target.mkdir()
            (target / "model.tflite").write_bytes(b"previous export")
        failed = subprocess.run([sys.executable, "-c", WRITER, str(target)], cwd=ROOT, capture_output=True,
                                text=True, timeout=120, preexec_fn=_limit(2**20))
        assert failed.returncode == 1
        assert f"ExportWriteError: Writing the export to '{target}' failed: File too large" in failed.stderr
        assert ("the previous export there is untouched" in failed.stderr) == previous
        assert os.listdir(tmp_path) == (["out"] if previous else [])
        if previous:
            assert os.listdir(target) == ["model.tflite"]
            assert (target / "model.tflite").read_bytes() == b"previous export"


@pytest.fixture(scope="module")
def lite0_weights(tmp_path_factory):
    """A seeded, calibrated Lite0 (10 classes, 64 px) as a weights file for the CLI: its int8
    export passes verification on every run (a fresh unseeded one sometimes did not)."""
    calibration = np.stack([preprocess_bytes(data, eval_config("efficientnet-lite0", image_size=64))
                            for _, data in photos.load()])
    model = seeded_model("efficientnet-lite0", calibration, classes=10)
    path = tmp_path_factory.mktemp("lite0") / "lite0.weights.h5"
    model.save_weights(str(path))
    return f"--weights={path}"


def test_disk_full_in_a_later_format_keeps_the_previous_export(tmp_path, lite0_weights):
    # The first format (int8 TF-Lite, ~1 MiB) fits, TensorFlow's C++ writer of the second one's
    # saved_model.pb (~14 MiB: its weights are graph constants) hits the limit: the whole
    # multi-format export fails, the previous export at DIR (replaced only with --overwrite, and
    # only after success) is untouched.
    target = tmp_path / "lite0"
    (target / "1").mkdir(parents=True)
    (target / "1" / "saved_model.pb").write_bytes(b"previous export")
    before = _tree(target)
    failed = _cli(*LITE0, lite0_weights, f"--export_dir={target}", "--format=tflite,saved_model", "--quantize=int8",
                  "--num_classes=10", "--overwrite", max_file_bytes=8 * 2**20)
    assert failed.returncode == 1, failed.stderr[-3000:]
    assert f"Writing the export to '{target}' failed" in failed.stderr
    assert re.search(r"saved_model/1/saved_model\.pb\S*; File too large", failed.stderr), failed.stderr[-2000:]
    assert "the previous export there is untouched" in failed.stderr
    assert _tree(target) == before
    assert os.listdir(tmp_path) == ["lite0"]  # no temporary directory left behind


def test_unwritable_export_dir_is_refused_before_any_work(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    for target in (blocker / "lite0", blocker / "deeper" / "lite0"):
        with pytest.raises(ExportWriteError, match=f"Cannot write export_dir '{target}': '{blocker}' is not a directory"):
            export_formats(None, str(target), "tflite,hub")  # before any work: the model is not even looked at
        with pytest.raises(ExportWriteError, match="is not a directory"):
            export_model(None, str(target), "tflite")
    assert sorted(os.listdir(tmp_path)) == ["file"]


@pytest.mark.slow
def test_all_formats(tmp_path):
    target = tmp_path / "b0"
    done = _cli("--model_name=efficientnet-b0", "--image_size=64", f"--export_dir={target}", "--format=all")
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(os.listdir(target)) == sorted([*export.FORMATS, "export_info.json"])
    for fmt in export.FORMATS:
        assert str(target / fmt) in done.stdout
