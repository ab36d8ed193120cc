"""Several formats in one command (``--format=A,B`` / ``all``) and write failures for real: a
file-size limit (RLIMIT_FSIZE, what a full disk looks like to the writer) during an export."""

import json
import os
import resource
import signal
import subprocess
import sys

import pytest

import export
from export import parse_formats

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LITE0 = ["--model_name=efficientnet-lite0", "--image_size=64"]


def _cli(*args, max_file_bytes=None):
    def limit():  # in the child only: writes past the limit fail with EFBIG
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_bytes, max_file_bytes))

    return subprocess.run([sys.executable, "-m", "export.main", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
                          preexec_fn=limit if max_file_bytes else None)


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
    for bad, shown in (("hub,onnx", "Unknown format 'onnx'"), ("hub,hub", "Bad format list"), ("", "Unknown format ''")):
        with pytest.raises(ValueError, match=shown) as err:
            parse_formats(bad)
        assert "valid values: hub, hub_tf1, saved_model, tflite" in str(err.value) and "'all'" in str(err.value)


def test_two_formats_one_build_and_a_summary_table(tmp_path):
    target = tmp_path / "lite0"
    done = _cli(*LITE0, f"--export_dir={target}", "--format=tflite,saved_model")
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(os.listdir(target)) == ["export_info.json", "saved_model", "tflite"]
    assert (target / "tflite" / "model.tflite").is_file() and (target / "saved_model" / "1" / "saved_model.pb").is_file()
    for fmt in ("tflite", "saved_model"):
        info = json.loads((target / fmt / "export_info.json").read_text())
        assert info["format"] == fmt and info["verification"]["checks"]
        assert all(check["passed"] for check in info["verification"]["checks"])
    top = json.loads((target / "export_info.json").read_text())
    assert list(top["formats"]) == ["tflite", "saved_model"] and top["model_name"] == "efficientnet-lite0"
    lines = done.stdout.splitlines()
    table = lines[next(i for i, line in enumerate(lines) if line.startswith("format "))::]
    assert table[0].split()[:3] == ["format", "written", "to"] and set(table[1]) <= {"-", " "}
    assert table[2].startswith("tflite ") and str(target / "tflite") in table[2] and " passed" in table[2]
    assert table[3].startswith("saved_model ") and str(target / "saved_model") in table[3]
    assert done.stderr.count("NO --weights GIVEN") == 1  # one build, one weight load for both formats
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".")]


def test_disk_full_during_export_leaves_nothing(tmp_path):
    # Python's own write (model.tflite) hits the limit: the error names DIR, nothing is left.
    target = tmp_path / "lite0"
    failed = _cli(*LITE0, f"--export_dir={target}", "--format=tflite", max_file_bytes=2**20)
    assert failed.returncode == 1, failed.stderr[-3000:]
    assert f"Writing the export to '{target}' failed: File too large" in failed.stderr
    assert os.listdir(tmp_path) == []


def test_disk_full_in_a_later_format_keeps_the_previous_export(tmp_path):
    # The first format (int8 TF-Lite, ~1 MiB) fits, TensorFlow's C++ writer of the second one's
    # variables (~14 MiB) hits the limit: the whole multi-format export fails, the previous export
    # at DIR (replaced only with --overwrite, and only after success) is untouched.
    target = tmp_path / "lite0"
    (target / "1").mkdir(parents=True)
    (target / "1" / "saved_model.pb").write_bytes(b"previous export")
    before = _tree(target)
    failed = _cli(*LITE0, f"--export_dir={target}", "--format=tflite,saved_model", "--quantize=int8",
                  "--num_classes=10", "--overwrite", max_file_bytes=8 * 2**20)
    assert failed.returncode == 1, failed.stderr[-3000:]
    assert f"Writing the export to '{target}' failed" in failed.stderr
    assert "the previous export there is untouched" in failed.stderr
    assert _tree(target) == before
    assert os.listdir(tmp_path) == ["lite0"]  # no temporary directory left behind


def test_unwritable_export_dir_is_refused_before_any_work(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    refused = _cli(*LITE0, f"--export_dir={blocker / 'lite0'}", "--format=tflite,hub")
    assert refused.returncode == 1, refused.stderr[-3000:]
    assert f"Cannot write export_dir '{blocker / 'lite0'}'" in refused.stderr
    assert "Built efficientnet-lite0" not in refused.stderr and "NO --weights GIVEN" not in refused.stderr
    assert sorted(os.listdir(tmp_path)) == ["file"]


@pytest.mark.slow
def test_all_formats(tmp_path):
    target = tmp_path / "b0"
    done = _cli("--model_name=efficientnet-b0", "--image_size=64", f"--export_dir={target}", "--format=all")
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(os.listdir(target)) == sorted([*export.FORMATS, "export_info.json"])
    for fmt in export.FORMATS:
        assert str(target / fmt) in done.stdout
