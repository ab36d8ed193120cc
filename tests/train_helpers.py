"""Helpers for the tests that run ``python -m train.main`` as real processes."""

import json
import os
import socket
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGENET_TRAIN, IMAGENET_VALIDATION = 1_281_167, 50_000  # imagenet2012 split sizes (TFDS)
SMALL = "efficientnet-lite0"  # fastest to trace; the default B0 is covered by the default run


def env(**extra):
    """The environment of a trainer process: the repository importable, no inherited TF_CONFIG."""
    values = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
    values.pop("TF_CONFIG", None)
    values.update(extra)
    return values


def command(*args):
    return [sys.executable, "-m", "train.main", *args]


def run_main(*args, timeout=900, **extra_env):
    """Runs the trainer to the end; returns the CompletedProcess (text stdout and stderr)."""
    return subprocess.run(command(*args), cwd=ROOT, env=env(**extra_env), capture_output=True,
                          text=True, timeout=timeout)


def check_ok(proc, stdout=None, stderr=None):
    stdout = proc.stdout if stdout is None else stdout
    stderr = proc.stderr if stderr is None else stderr
    assert proc.returncode == 0, f"exit {proc.returncode}\n{stdout[-3000:]}\n{stderr[-5000:]}"
    return proc


def read_json(*parts):
    with open(os.path.join(*parts)) as f:
        return json.load(f)


def checkpoint_tensors(path):
    """Every variable of a checkpoint: the model's (saved under 'model/' or, for the trainable
    ones, under 'optimizer/' where the checkpoint graph meets them first), the optimizer state,
    EMA shadows and RNG states."""
    import tensorflow as tf

    reader = tf.train.load_checkpoint(path)
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
            if name.split("/")[0] in ("model", "optimizer", "ema", "rng")}


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def run_two_workers(log_dir, args, *, timeout, during=None):
    """Two MultiWorkerMirroredStrategy trainer processes on loopback (TF_CONFIG worker 0 and 1),
    each writing to log_dir/w{index}.out|.err: files, not pipes, since a worker blocked on a full
    pipe would stall the collectives of both. ``during(procs)`` runs while they live (to signal
    one). Waits for both, checks that both exit 0, returns [(stdout, stderr)] by worker."""
    cluster = {"worker": [f"127.0.0.1:{p}" for p in free_ports(2)]}
    procs, logs, outputs = [], [], []
    try:
        for index in range(2):
            tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
            out = open(os.path.join(log_dir, f"w{index}.out"), "w+")
            err = open(os.path.join(log_dir, f"w{index}.err"), "w+")
            logs.append((out, err))
            procs.append(subprocess.Popen(command("--verbosity=0", *args), cwd=ROOT,
                                          env=env(TF_CONFIG=tf_config), stdout=out, stderr=err,
                                          text=True))
        if during is not None:
            during(procs)
        for proc, (out, err) in zip(procs, logs):
            proc.wait(timeout=timeout)
            out.seek(0)
            err.seek(0)
            outputs.append((out.read(), err.read()))
    finally:
        for proc, (out, err) in zip(procs, logs):
            if proc.poll() is None:
                proc.kill()
            out.close()
            err.close()
    for proc, (stdout, stderr) in zip(procs, outputs):
        check_ok(proc, stdout, stderr)
    return outputs
