"""What every benchmark shares: machine/version/date facts, interleaved timing, FLOP counting,
the CPU's peak, JSON output and markdown tables."""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
import subprocess
import sys
import time
from typing import Callable, Dict, List, Sequence

import numpy as np

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ------------------------------------------------------------------------------ machine facts


def _cpuinfo() -> Dict[str, str]:
    facts = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    break  # first processor only
                key, _, value = line.partition(":")
                facts[key.strip()] = value.strip()
    except OSError:
        pass
    return facts


def _lscpu() -> Dict[str, str]:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return {}
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in out.splitlines())}


def peak_flops(cpu: Dict[str, object]) -> Dict[str, object]:
    """Nominal float32 peak = cores x clock x FLOPs/cycle/core, with FLOPs/cycle from the ISA.

    FLOPs/cycle = 2 (an FMA is a multiply and an add) x FMA pipes x float32 lanes per vector.
    AMD family 26 (Zen 5, EPYC 9005): two FMA pipes with a native 512-bit datapath -> 2x2x16
    = 64. Family 25 (Zen 3/4): two 256-bit FMA pipes (Zen 4 splits AVX-512 into two 256-bit
    halves) -> 32. Other AVX-512 CPUs: assumed two 512-bit FMA ports (Xeon Gold/Platinum) -> 64.
    AVX2+FMA: two 256-bit FMA pipes -> 32. The clock is the one /proc/cpuinfo reports (under a
    hypervisor usually the nominal TSC rate; boost clocks would raise the peak).
    """
    flags = set(str(cpu.get("flags", "")).split())
    family = cpu.get("cpu_family")
    vendor = cpu.get("vendor")
    if vendor == "AuthenticAMD" and family == 26:
        per_cycle, why = 64, "AMD Zen 5 (family 26): 2 FMA pipes x 16 fp32 lanes (512-bit) x 2"
    elif vendor == "AuthenticAMD" and family == 25:
        per_cycle, why = 32, "AMD Zen 3/4 (family 25): 2 FMA pipes x 8 fp32 lanes (256-bit) x 2"
    elif "avx512f" in flags:
        per_cycle, why = 64, "AVX-512: assumed 2 FMA ports x 16 fp32 lanes x 2"
    elif "fma" in flags and "avx2" in flags:
        per_cycle, why = 32, "AVX2+FMA: 2 FMA pipes x 8 fp32 lanes x 2"
    else:
        per_cycle, why = 8, "SSE: 4 lanes x 2 (mul + add)"
    ghz = float(cpu.get("mhz") or 0) / 1000.0
    cores = int(cpu.get("cores") or 0)
    return {"flops_per_cycle_per_core": per_cycle, "derivation": why, "ghz": round(ghz, 3),
            "cores": cores, "gflops": round(cores * ghz * per_cycle, 1)}


def machine_info() -> Dict[str, object]:
    cpu, lscpu = _cpuinfo(), _lscpu()
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count()
    flags = cpu.get("flags", "")
    info = {
        "cpu_model": cpu.get("model name") or lscpu.get("Model name") or platform.processor(),
        "vendor": cpu.get("vendor_id"),
        "cpu_family": int(cpu["cpu family"]) if "cpu family" in cpu else None,
        "cpu_model_number": int(cpu["model"]) if "model" in cpu else None,
        "mhz": float(cpu["cpu MHz"]) if "cpu MHz" in cpu else None,
        "cores": cores,
        "threads_per_core": lscpu.get("Thread(s) per core"),
        "l2": lscpu.get("L2 cache"), "l3": lscpu.get("L3 cache"),
        "hypervisor": lscpu.get("Hypervisor vendor"),
        "isa": [f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile")
                if f in flags.split()],
        "memory_gib": _memory_gib(),
        "platform": platform.platform(),
    }
    info["peak"] = peak_flops({**info, "flags": flags})
    return info


def _memory_gib():
    try:
        with open("/proc/meminfo") as f:
            kib = int(re.search(r"MemTotal:\s+(\d+)", f.read()).group(1))
        return round(kib / 2 ** 20, 1)
    except (OSError, AttributeError):
        return None


def versions() -> Dict[str, object]:
    import keras
    import tensorflow as tf

    import efficientnet_tf
    try:
        commit = subprocess.run(["git", "-C", REPO_ROOT, "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = None
    return {"python": platform.python_version(), "tensorflow": tf.__version__,
            "keras": keras.__version__, "numpy": np.__version__,
            "efficientnet_tf": efficientnet_tf.__version__, "git_commit": commit,
            "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default (on for x86 Linux)"),
            "threads": _threads()}


def _threads():
    import tensorflow as tf
    return {"inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
            "intra_op": tf.config.threading.get_intra_op_parallelism_threads()}


def header(benchmark: str, argv: Sequence[str]) -> Dict[str, object]:
    return {"benchmark": benchmark,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join([os.path.basename(sys.executable), "-m", f"bench.{benchmark}",
                                 *argv]),
            "machine": machine_info(), "versions": versions(),
            "load_average_start": [round(x, 2) for x in os.getloadavg()]}


def busy_warning() -> str | None:
    load = os.getloadavg()[0]
    cores = os.cpu_count() or 1
    if load > 0.5 * cores:
        return (f"load average {load:.1f} on {cores} cores: other processes are running; "
                "absolute figures are pessimistic, ratios from one interleaved run stay fair")
    return None


def finish(name: str, result: Dict[str, object], table, path: str | None = None):
    """The end of every benchmark: load warning, JSON written, table and JSON path printed."""
    result["warning"] = busy_warning()
    written = write_json(name, result, path)
    print(table(result))
    print(f"\nJSON: {written}")
    return result


def repo_relative(path: str) -> str:
    """PATH relative to the repository when it lies inside it (results files name no machine's
    paths), else unchanged."""
    full = os.path.abspath(path)
    inside = os.path.commonpath([full, REPO_ROOT]) == REPO_ROOT
    return os.path.relpath(full, REPO_ROOT) if inside else path


def write_json(name: str, payload: Dict[str, object], path: str | None = None) -> str:
    """Writes a benchmark's results atomically (temporary file, then rename); returns the path."""
    payload = dict(payload, load_average_end=[round(x, 2) for x in os.getloadavg()])
    path = path or os.path.join(RESULTS_DIR, f"{name}.json")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    partial = f"{path}.partial"
    with open(partial, "w") as f:
        json.dump(payload, f, indent=1, sort_keys=False, default=_jsonable)
        f.write("\n")
    os.replace(partial, path)
    return path


def _jsonable(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serializable: {type(value)}")


def worker_step(step: str, sets, workdir: str) -> None:
    """Runs one of bench.workers' one-shot steps (``tf_export``, ``openvino_export``,
    ``torch_onnx``) for the model sets, writing into WORKDIR/SET/ (which must exist)."""
    subprocess.run([sys.executable, "-m", "bench.workers", step,
                    json.dumps({"sets": list(sets), "workdir": workdir})],
                   check=True, cwd=REPO_ROOT, stdout=subprocess.DEVNULL)


def run_child(module: str, which: str, **kwargs):
    """Runs ``python -m MODULE --child WHICH KWARGS_JSON`` (a benchmark's own process for one
    runtime) and returns the JSON its last stdout line holds; its stderr tail on failure."""
    out = subprocess.run([sys.executable, "-m", module, "--child", which, json.dumps(kwargs)],
                         capture_output=True, text=True, cwd=REPO_ROOT)
    if out.returncode:
        raise RuntimeError(f"{module} child {which!r} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------ timing


def interleaved(candidates: Dict[str, Callable[[], object]], rounds: int, calls_per_round: int,
                warmup: int = 2) -> Dict[str, Dict[str, List[float]]]:
    """Times each candidate in alternating rounds (A, B, C, A, B, C, ...) so that slow drifts
    of the machine (other processes, clocks) hit all of them alike.

    Each callable runs one batch and must block until its result exists. Returns per
    candidate the wall seconds and process CPU seconds of every call.
    """
    for fn in candidates.values():
        for _ in range(warmup):
            fn()
    times = {name: {"wall": [], "cpu": []} for name in candidates}
    for _ in range(rounds):
        for name, fn in candidates.items():
            for _ in range(calls_per_round):
                cpu0, wall0 = time.process_time(), time.perf_counter()
                fn()
                wall1, cpu1 = time.perf_counter(), time.process_time()
                times[name]["wall"].append(wall1 - wall0)
                times[name]["cpu"].append(cpu1 - cpu0)
    return times


def summarize(times: Dict[str, List[float]], batch: int) -> Dict[str, float]:
    """images/sec (all images / all time), p50/p90 latency per call in ms, CPU ms per image."""
    wall = np.asarray(times["wall"])
    cpu = np.asarray(times["cpu"])
    return {"batch": batch, "calls": int(wall.size),
            "images_per_sec": round(float(batch * wall.size / wall.sum()), 2),
            "p50_ms": round(float(np.percentile(wall, 50)) * 1e3, 2),
            "p90_ms": round(float(np.percentile(wall, 90)) * 1e3, 2),
            "cpu_ms_per_image": round(float(cpu.sum() / (batch * wall.size)) * 1e3, 2)}


# ------------------------------------------------------------------------------ FLOPs


def count_macs(model) -> Dict[str, int]:
    """Multiply-accumulates of one image through a model with a fixed input size, counted from
    the layer shapes (convolutions, depthwise convolutions, dense layers; the elementwise ops -
    BN, activations, SE multiply, adds - are left out as they are not multiply-accumulates)."""
    import keras
    macs = {"conv": 0, "depthwise": 0, "dense": 0}
    for layer in model.layers:
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            _, h, w, c = layer.output.shape
            k = layer.kernel_size[0] * layer.kernel_size[1]
            macs["depthwise"] += h * w * c * k
        elif isinstance(layer, keras.layers.Conv2D):
            _, h, w, cout = layer.output.shape
            cin = layer.input.shape[-1]
            k = layer.kernel_size[0] * layer.kernel_size[1]
            macs["conv"] += h * w * cout * cin * k // layer.groups
        elif isinstance(layer, keras.layers.Dense):
            macs["dense"] += layer.input.shape[-1] * layer.units
    macs["total"] = sum(macs.values())
    return macs


def matmul_gflops(size: int = 2048, seconds: float = 2.0) -> float:
    """Achieved float32 GFLOP/s of a large TF matmul (oneDNN SGEMM): a practical CPU peak."""
    import tensorflow as tf
    a = tf.random.uniform((size, size))
    b = tf.random.uniform((size, size))
    fn = tf.function(lambda a, b: tf.reduce_sum(tf.matmul(a, b)))
    fn(a, b).numpy()
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn(a, b).numpy()
        runs += 1
    return round(2 * size ** 3 * runs / (time.perf_counter() - start) / 1e9, 1)


# ------------------------------------------------------------------------------ tables


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(columns) + " |",
             "|" + "|".join("---" if i == 0 else "---:" for i in range(len(columns))) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(_cell(v) for v in row) + " |")
    return "\n".join(lines)


def _cell(value):
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def machine_line(head: Dict[str, object]) -> str:
    m, v = head["machine"], head["versions"]
    return (f"{m['cpu_model']} (family {m['cpu_family']} model {m['cpu_model_number']}), "
            f"{m['cores']} cores @ {m['mhz']:.0f} MHz, {', '.join(m['isa'])}; "
            f"TensorFlow {v['tensorflow']}, Keras {v['keras']}; {head['date'][:10]}")


def setup_environment():
    """Quiet TF logs before TensorFlow is imported (no effect on speed)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
