"""What survives what: SIGTERM/SIGINT (checkpoint at the current step, exit 0, the rerun ends
where an uninterrupted run ends), a full disk while checkpointing (clear error, the previous
checkpoint is what the rerun uses), damaged checkpoints (the newest readable one is restored),
one live training run per model_dir. Real processes and signals (sent to the python process
itself), real files, a real RLIMIT_FSIZE; tiny runs (Lite0 at 16 px, batch 8)."""

import glob
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from train_helpers import ROOT, SMALL, check_ok, checkpoint_tensors, command, env, read_json, run_main

TINY = [f"--model_name={SMALL}", "--image_size=16", "--config=data.eval_image_size=16",
        "--train_batch_size=8", "--eval_batch_size=120", "--config=eval.every_epochs=null",
        "--config=data.seed=3", "--config=data.deterministic=true", "--config=runtime.seed=5",
        "--config=data.shuffle_buffer_size=64", "--config=runtime.log_every_steps=1",
        "--config=runtime.progress_bar=false"]
# No periodic checkpoint between ckpt-0 and the end: what a signal saves is all there is.
RARE_CHECKPOINTS = ["--config=runtime.checkpoint_every_steps=1000",
                    "--config=runtime.checkpoint_every_secs=3600"]


def checkpoint_steps(model_dir):
    return sorted(int(p[:-len(".index")].rsplit("-", 1)[1])
                  for p in glob.glob(os.path.join(model_dir, "ckpt-*.index")))


def start(args, log_dir, name, **popen):
    """A trainer process writing to files (a full pipe would block it)."""
    out, err = open(log_dir / f"{name}.out", "w"), open(log_dir / f"{name}.err", "w")
    proc = subprocess.Popen(command("--verbosity=0", *args), cwd=ROOT, env=env(), stdout=out, stderr=err,
                            text=True, **popen)
    proc.logs = (log_dir / f"{name}.out", log_dir / f"{name}.err")
    return proc


def wait_for(proc, predicate, what, timeout=1500):
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"{what}: not seen before the process ended ({proc.poll()})\n"
                         + proc.logs[1].read_text()[-3000:])


def reached_step(proc, step):
    def seen():
        text = proc.logs[1].read_text()
        return any(f"step {s}/" in text for s in range(step, step + 8))
    return seen


def finish(proc, timeout=1500):
    try:
        proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.logs[0].read_text(), proc.logs[1].read_text()


def test_sigterm_saves_the_step_and_a_full_disk_loses_nothing(digits_dir, tmp_path):
    """SIGTERM mid-run: exit 0 with a checkpoint at the step it stopped (after the last periodic
    one, ckpt-0). The rerun, under RLIMIT_FSIZE, cannot write its checkpoint: it fails naming
    the path, leaves nothing of it, and the SIGTERM checkpoint stays the latest. The next rerun
    resumes from it and ends bit-identical to a run that was never interrupted."""
    common = [f"--data_dir={digits_dir}", "--train_steps=40", "--config=runtime.steps_per_loop=4",
              *TINY, *RARE_CHECKPOINTS]
    reference = str(tmp_path / "reference")
    check_ok(run_main(f"--model_dir={reference}", *common))

    model_dir = str(tmp_path / "run")
    args = [f"--model_dir={model_dir}", *common]
    proc = start(args, tmp_path, "sigterm")
    wait_for(proc, reached_step(proc, 4), "step 4")
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = finish(proc)
    assert proc.returncode == 0, stderr[-3000:]
    stopped = checkpoint_steps(model_dir)
    assert len(stopped) == 2 and stopped[0] == 0 and 4 <= stopped[1] < 40, stopped
    at = stopped[1]
    path = os.path.join(model_dir, f"ckpt-{at}")
    assert f"Stopped by SIGTERM at step {at}/40: saved {path}." in stdout
    assert os.path.exists(os.path.join(model_dir, "input", f"ckpt-{at}.index"))
    assert not os.path.exists(os.path.join(model_dir, "lock.json"))  # released

    # Disk full: every file may grow to 8 MB; the 54 MB model checkpoint cannot be written.
    limit = 8 * 1024 * 1024

    def small_files():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    full = subprocess.run(command(*args), cwd=ROOT, env=env(), capture_output=True, text=True,
                          timeout=600, preexec_fn=small_files)
    assert full.returncode == 1, full.stderr[-3000:]
    assert f"Resuming from {path} (step {at})" in full.stdout
    assert f"Could not write checkpoint {os.path.join(model_dir, 'ckpt-40')}" in full.stderr
    assert f"the previous checkpoint {path} is intact" in full.stderr
    assert checkpoint_steps(model_dir) == [0, at]
    assert not glob.glob(os.path.join(model_dir, "ckpt-40*"))  # nothing half-written
    assert not glob.glob(os.path.join(model_dir, "input", "ckpt-40*"))

    rerun = check_ok(run_main(*args, "--verbosity=0"))  # -v 0: the absl INFO line checked below
    assert f"Resuming from {path} (step {at})" in rerun.stdout
    assert (f"Restored the input position from "
            f"{os.path.join(model_dir, 'input', f'ckpt-{at}')}") in rerun.stderr
    assert read_json(model_dir, "eval_results.json") == read_json(reference, "eval_results.json")
    final, expected = (checkpoint_tensors(os.path.join(d, "ckpt-40")) for d in (model_dir, reference))
    assert final.keys() == expected.keys() and any(k.startswith("rng/") for k in final)
    for name in expected:
        np.testing.assert_array_equal(final[name], expected[name], err_msg=name)


def test_second_run_is_refused_while_the_first_lives_and_sigint_stops_it(digits_dir, tmp_path):
    """A run on a model_dir another live run trains in fails at once (exit 2) naming the
    holder; Ctrl-C (SIGINT) on the first ends it like SIGTERM: a checkpoint, exit 0."""
    model_dir = str(tmp_path / "run")
    args = [f"--model_dir={model_dir}", f"--data_dir={digits_dir}", "--train_steps=400",
            "--config=runtime.steps_per_loop=1", *TINY, *RARE_CHECKPOINTS]
    first = start(args, tmp_path, "first")
    try:
        wait_for(first, reached_step(first, 1), "step 1")
        second = run_main(*args, timeout=600)
        assert first.poll() is None, "the first run ended before the second was started"
        assert second.returncode == 2, second.stderr[-3000:]
        assert (f"--model_dir={model_dir} is in use by process {first.pid} on this host"
                in second.stderr)
        assert os.path.join(model_dir, "lock.json") in second.stderr
    finally:
        first.send_signal(signal.SIGINT)
    stdout, stderr = finish(first)
    assert first.returncode == 0, stderr[-3000:]
    at = checkpoint_steps(model_dir)[-1]
    assert at >= 1 and f"Stopped by SIGINT at step {at}/400" in stdout


# ------------------------------------------------------------------ the lock, in-process


def test_stale_lock_is_taken_over_and_a_live_one_refused(tmp_path, capsys):
    from train import lock

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # its pid names no process now
    path = tmp_path / "lock.json"
    path.write_text(json.dumps({"host": socket.gethostname(), "pid": gone.pid,
                                "since": "2026-01-01T00:00:00Z", "command": "train.main"}))
    with lock.ModelDirLock(str(tmp_path)) as held:
        assert held.held and json.loads(path.read_text())["pid"] == os.getpid()
    assert "Taking over the stale lock" in capsys.readouterr().err
    assert not path.exists()  # released on exit

    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        path.write_text(json.dumps({"host": socket.gethostname(), "pid": alive.pid,
                                    "start_time": lock._start_time(alive.pid),
                                    "since": "2026-01-01T00:00:00Z", "command": "train.main"}))
        with pytest.raises(lock.ModelDirInUseError, match=f"in use by process {alive.pid} on this host"):
            lock.ModelDirLock(str(tmp_path)).acquire()
        path.write_text(json.dumps({"host": "elsewhere", "pid": 1, "since": "x", "command": "c"}))
        with pytest.raises(lock.ModelDirInUseError, match="on host elsewhere"):
            lock.ModelDirLock(str(tmp_path)).acquire()
    finally:
        alive.kill()
        alive.wait()


# --------------------------------------------------------- damaged checkpoints, in-process


def test_damaged_latest_checkpoint_falls_back_to_the_newest_readable(tmp_path, capsys):
    import tensorflow as tf

    from train import checkpoints

    model_dir = str(tmp_path)
    value = tf.Variable(tf.zeros([1000]))
    store = checkpoints.CheckpointStore(model_dir)
    store.attach(tf.train.Checkpoint(value=value), keep=5)
    for step in (1, 2, 3):
        value.assign(tf.fill([1000], float(step)))
        store.save(step)
    data = glob.glob(os.path.join(model_dir, "ckpt-3.data-*"))[0]
    with open(data, "r+b") as f:  # truncated: a write cut short
        f.truncate(os.path.getsize(data) // 2)
    os.remove(os.path.join(model_dir, "ckpt-2.index"))  # missing index
    value.assign(tf.zeros([1000]))
    assert store.restore() == os.path.join(model_dir, "ckpt-1")
    np.testing.assert_array_equal(value.numpy(), 1.0)
    out = capsys.readouterr().out
    assert f"checkpoint {os.path.join(model_dir, 'ckpt-3')} cannot be read" in out
    assert f"checkpoint {os.path.join(model_dir, 'ckpt-2')} cannot be read" in out
    # A rerun saves again over the damaged numbers; nothing stays stuck on them.
    value.assign(tf.fill([1000], 3.0))
    store.save(3)
    assert store.restore() == os.path.join(model_dir, "ckpt-3")
    os.remove(os.path.join(model_dir, "ckpt-1.index"))
    os.remove(os.path.join(model_dir, "ckpt-3.index"))
    with pytest.raises(checkpoints.NoReadableCheckpointError, match="No checkpoint in .* can be read"):
        store.restore()
