"""The quiet console of the command-line jobs (efficientnet_tf/console.py): no TensorFlow banner,
absl lines or library warnings by default, details with ``-v``, progress bars and plain lines."""

import io
import logging as std_logging
import os
import re
import subprocess
import sys
import warnings

import pytest

from efficientnet_tf import console

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# absl / TF C++ log lines ("I1201 19:44:37.689 ...", "E0000 00:00:..."), absl's pre-init notice,
# Python warnings ("file.py:61: UserWarning: ...").
LOG_LINE = re.compile(r"^([IWEF]\d{4} \d\d:\d\d:\d\d|WARNING: All log messages|.*\.py:\d+: \w*Warning)")


def _env():
    return {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # as a user runs it


def _log_lines(text):
    return [line for line in text.splitlines() if LOG_LINE.match(line)]


def test_verbosity_from_argv():
    assert console.verbosity_from_argv(["--model_name=x"]) is None
    assert console.verbosity_from_argv(["-v", "0"]) == 0
    assert console.verbosity_from_argv(["-v=1", "x"]) == 1
    assert console.verbosity_from_argv(["--verbosity=-1"]) == -1
    assert console.verbosity_from_argv(["predict", "a.jpg", "--verbosity", "2"]) == 2
    assert console.verbosity_from_argv(["-v", "loud"]) is None  # the flag parser reports it


def test_only_the_project_jobs_hold_the_banner():
    assert console._started_as_entry_point(["python", "-m", "export.main", "--format=hub"])
    assert console._started_as_entry_point(["python", "-m", "efficientnet_tf", "predict", "x.jpg"])
    assert console._started_as_entry_point(["/venv/bin/python", "/venv/bin/efficientnet-tf", "list"])
    assert not console._started_as_entry_point(["python", "-m", "pytest", "tests"])
    assert not console._started_as_entry_point(["python", "my_script.py"])
    assert not console._started_as_entry_point(["python"])


def test_held_output_is_replayed_on_request(capfd):
    with console._hold_fd2() as captured:
        os.write(2, b"I0000 banner from C++\n")
    assert capfd.readouterr().err == ""
    assert captured == ["I0000 banner from C++\n"]
    console._held_banner.extend(captured)
    console._show_held_banner()
    assert capfd.readouterr().err == "I0000 banner from C++\n"
    assert console._held_banner == []


def test_progress_bar_on_a_terminal():
    stream = io.StringIO()
    bar = console.Progress("int8 calibration", total=8, stream=stream, tty=True)
    for _ in range(3):
        bar.advance()
    bar.note("image 4")
    bar.close()
    text = stream.getvalue()
    assert "\r\x1b[2K  int8 calibration [#########...............] 3/8 image 4" in text
    assert "\n" not in text and text.endswith("\r\x1b[2K")  # redrawn in place, cleared at the end


def test_progress_plain_lines_off_a_terminal():
    stream = io.StringIO()
    bar = console.Progress("calibration", total=25, stream=stream, tty=False, plain_every=10)
    bar.advance(10)
    bar.step_done("tflite: converting (int8)", 1.25)
    for _ in range(15):
        bar.advance()
    bar.close()
    lines = stream.getvalue().splitlines()
    assert [re.sub(r"\(\d+\.\ds\)", "(T)", line) for line in lines] == [
        "  calibration 10/25 (T)", "  tflite: converting (int8) (T)", "  calibration 20/25 (T)",
        "  calibration 25/25 (T)"]


def test_steps_show_only_on_a_quiet_job_console(monkeypatch, capsys):
    with console.step("hub: library call"):
        pass
    assert capsys.readouterr().err == ""  # library use (no setup()): absl INFO lines only, as before
    monkeypatch.setitem(console._state, "verbosity", console.QUIET)
    with console.progress("export") as bar:
        with console.step("hub/classification: writing the SavedModel"):
            assert bar.detail == "hub/classification: writing the SavedModel"
    with console.step("publish: packaging"):
        pass
    err = capsys.readouterr().err
    assert re.fullmatch(r"  hub/classification: writing the SavedModel \(\d+\.\ds\)\n"
                        r"  publish: packaging \(\d+\.\ds\)\n", err), err
    monkeypatch.setitem(console._state, "verbosity", 0)
    with console.step("verbose: absl reports it"):
        pass
    assert capsys.readouterr().err == ""


def test_quiet_setup_hides_library_warnings_and_keeps_ours():
    from absl import logging

    assert console.setup(None) == console.QUIET
    assert logging.get_verbosity() == logging.WARNING
    assert std_logging.getLogger("tensorflow").level == std_logging.ERROR
    with warnings.catch_warnings(record=True) as seen:
        warnings.warn_explicit("pkg_resources is deprecated", UserWarning, "hub.py", 61, module="tensorflow_hub")
        warnings.warn_explicit("our own warning", UserWarning, "main.py", 1, module="export.main")
    assert [str(w.message) for w in seen] == ["our own warning"]
    record = std_logging.LogRecord("absl", std_logging.WARNING, "x.py", 1, "sync_bn off with %d replicas", (2,), None)
    assert console._PlainFormatter().format(record) == "warning: sync_bn off with 2 replicas"


def test_verbose_setup_brings_details_back():
    from absl import logging

    assert console.setup(0) == 0 and console.verbose() and not console.shows_progress()
    assert logging.get_verbosity() == logging.INFO
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        warnings.warn_explicit("pkg_resources is deprecated", UserWarning, "hub.py", 61, module="tensorflow_hub")
    assert len(seen) == 1


@pytest.mark.slow
def test_cli_jobs_print_only_their_own_lines():
    """The predict CLI's package entry point and train.main (whose console.setup imports
    TensorFlow), run at once."""
    runs = {
        "info": [sys.executable, "-m", "efficientnet_tf", "info", "efficientnet-b0", "--image_size=32"],
        "train": [sys.executable, "-m", "train.main", "--train_steps=1", "--train_epochs=1"],
    }
    processes = {k: subprocess.Popen(c, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True) for k, c in runs.items()}
    out = {k: p.communicate(timeout=300) + (p.returncode,) for k, p in processes.items()}
    stdout, stderr, code = out["info"]
    assert code == 0, stderr[-3000:]
    assert "== efficientnet-b0" in stdout and "reduction_5" in stdout
    assert stderr == "" and _log_lines(stdout) == []
    stdout, stderr, code = out["train"]
    assert code == 2 and "error: Give --train_steps or --train_epochs, not both" in stderr
    assert _log_lines(stdout + stderr) == [], stderr


@pytest.mark.slow
def test_demo_prints_at_most_60_lines_and_no_log_lines(tmp_path):
    """README command 1 (35 s on an idle 2-core machine)."""
    done = subprocess.run([sys.executable, "-m", "export.demo", f"--export_dir={tmp_path / 'demo'}"], cwd=ROOT,
                          env=_env(), capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = (done.stdout + done.stderr).splitlines()
    assert _log_lines(done.stdout + done.stderr) == [], done.stderr
    assert len(lines) <= 60, "\n".join(lines)
    assert "all four paths agree on every top-1: True" in done.stdout


@pytest.mark.slow
def test_predict_cli_is_quiet_and_verbose_on_request():
    photo = os.path.join(os.path.dirname(__import__("skimage").__file__), "data", "chelsea.png")
    quiet = subprocess.run([sys.executable, "-m", "efficientnet_tf", "predict", photo], cwd=ROOT, env=_env(),
                           capture_output=True, text=True, timeout=600)
    assert quiet.returncode == 0, quiet.stderr[-3000:]
    assert "tiger cat" in quiet.stdout and quiet.stderr == "" and _log_lines(quiet.stdout) == []
    loud = subprocess.run([sys.executable, "-m", "efficientnet_tf", "predict", photo, "-v", "0"], cwd=ROOT,
                          env=_env(), capture_output=True, text=True, timeout=600)
    assert loud.returncode == 0 and "tiger cat" in loud.stdout
    assert len(loud.stderr.splitlines()) > 0  # TensorFlow's start-up lines are back
