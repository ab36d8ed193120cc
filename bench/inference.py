"""Inference speed on CPU: our Keras model and exports (SavedModel, TF-Lite, OpenVINO IR) against
keras.applications and the runtimes people serve EfficientNet with instead (ONNX Runtime and
OpenVINO on timm's ONNX export, OpenVINO reading our SavedModel) and ONNX Runtime on our own ONNX
export, one worker process per runtime (bench.workers), rounds alternating between all rows of a
batch size.

    python -m bench.inference --quick         # B0 only, 2 rounds: a development check (~4 min)
    python -m bench.inference                 # B0 at 224 and V2-S at 384, batch 1 and 32

Prints markdown tables and writes bench/results/inference.json (bench.report turns it into the
docs/performance-results.md).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

from bench import common
from bench import workers as w

common.setup_environment()

keras_applications_model = w.keras_applications_model  # bench.train's import
OUR_EXPORTS = (w.SAVED, w.TFLITE, w.OV_IR, w.ORT_OURS)
PEERS = (w.ORT_ONNX, w.OV_ONNX, w.OV_SAVED)
RUNTIMES = ("tf", "litert", "openvino", "onnxruntime")
NEEDS = {"litert": ("tf",), "openvino": ("tf", "torch_onnx", "openvino_export"),
         "onnxruntime": ("torch_onnx",)}


class Worker:
    """A bench.workers process; ``ask`` sends one JSON request and returns its JSON answer."""

    def __init__(self, runtime, spec, workdir):
        self.runtime = runtime
        env = dict(os.environ)
        if runtime == "tf" and spec.get("onednn") in ("on", "off"):
            env["TF_ENABLE_ONEDNN_OPTS"] = "1" if spec["onednn"] == "on" else "0"
        self.log_path = os.path.join(workdir, f"{runtime}.log")
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.workers", runtime, json.dumps(spec)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, text=True,
            cwd=common.REPO_ROOT, env=env)

    def read(self):
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            with open(self.log_path) as f:
                tail = f.read()[-3000:]
            raise RuntimeError(f"bench worker {self.runtime!r} exited with status "
                               f"{self.proc.returncode}; its log ends:\n{tail}")
        return json.loads(line)

    def ask(self, request):
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        return self.read()

    def close(self):
        if self.proc.stdin and not self.proc.stdin.closed:
            self.proc.stdin.close()
        self.proc.wait(timeout=120)
        self._log.close()


def start_workers(runtimes, spec, workdir):
    """Writes the artifacts (exports, ONNX files) and starts the timing workers; returns
    {runtime: Worker} and their ready messages."""
    ready, live = {}, {}
    needed = {"tf"} | {n for r in runtimes for n in NEEDS.get(r, ())}
    first = [Worker(r, spec, workdir) for r in ("tf", "torch_onnx") if r in needed]
    for worker in first:  # TF exports while torch writes the ONNX files
        ready[worker.runtime] = worker.read()
        if worker.runtime == "torch_onnx":
            worker.close()
        else:
            live[worker.runtime] = worker
    if "openvino_export" in needed:
        converter = Worker("openvino_export", spec, workdir)
        ready["openvino_export"] = converter.read()
        converter.close()
    started = [Worker(r, spec, workdir) for r in runtimes if r != "tf"]
    for worker in started:
        ready[worker.runtime] = worker.read()
        live[worker.runtime] = worker
    if "tf" not in runtimes:
        live.pop("tf").close()
    return live, ready


def time_batch(live, owners, set_name, batch, rounds):
    """Alternating rounds over every row of (set, batch): per row the call times and the mean
    time of each round (for the spread of the ratios)."""
    names = [k for k in owners if k.startswith(f"{set_name}/")
             and (batch == 1 or k.split("/", 1)[1] not in w.BATCH1_ONLY)]
    calls = max(1, 8 // batch)
    for key in names:
        live[owners[key]].ask({"warmup": key, "batch": batch, "calls": 2})
    times = {k: {"wall": [], "cpu": [], "round_s": []} for k in names}
    for _ in range(rounds):
        for key in names:
            answer = live[owners[key]].ask({"time": key, "batch": batch, "calls": calls})
            times[key]["wall"] += answer["wall"]
            times[key]["cpu"] += answer["cpu"]
            times[key]["round_s"].append(float(np.mean(answer["wall"])))
    rows = {}
    for key, t in times.items():
        row = common.summarize(t, batch)
        row["round_ms"] = [round(s * 1e3, 2) for s in t["round_s"]]
        rows[key.split("/", 1)[1]] = row
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="development check: B0 only, 2 rounds (ratios only indicative)")
    parser.add_argument("--sets", default=None, help=f"model sets, of {sorted(w.SETS)}")
    parser.add_argument("--batch_sizes", default="1,32")
    parser.add_argument("--rounds", type=int, default=None, help="default 6 (quick: 2)")
    parser.add_argument("--runtimes", default=",".join(RUNTIMES),
                        help=f"timing workers, of {list(RUNTIMES)}")
    parser.add_argument("--tflite_threads", type=int, default=os.cpu_count())
    parser.add_argument("--intra_op", type=int, default=None, help="TF intra-op threads")
    parser.add_argument("--inter_op", type=int, default=None, help="TF inter-op threads")
    parser.add_argument("--onednn", default="default", choices=("on", "off", "default"),
                        help="TF_ENABLE_ONEDNN_OPTS of the TF worker (default: TF's choice, on "
                        "only for CPUs with AVX512_VNNI/BF16/AMX). 'on' fuses swish into the "
                        "convolutions (bench.profile) and was faster at batch 32 but much slower "
                        "at batch 1 on an AVX2-only EPYC (docs/performance.md)")
    parser.add_argument("--output", default=None, help="JSON path (default bench/results/)")
    args = parser.parse_args(argv)
    argv = sys.argv[1:] if argv is None else argv
    sets = (args.sets or ("b0" if args.quick else "b0,v2s")).split(",")
    runtimes = args.runtimes.split(",")
    for value, valid, what in ((sets, w.SETS, "set"), (runtimes, RUNTIMES, "runtime")):
        bad = sorted(set(value) - set(valid))
        if bad:
            raise SystemExit(f"Unknown {what}(s) {bad}; valid: {sorted(valid)}")
    rounds = args.rounds or (2 if args.quick else 6)

    result = common.header("inference", argv)
    result["settings"] = {"sets": {s: dict(zip(("model", "size", "timm"), w.SETS[s])) for s in sets},
                          "dtype": "float32", "rounds": rounds, "quick": args.quick,
                          "tflite_threads": args.tflite_threads,
                          "keras_execution": "tf.function(model(x, training=False))",
                          "openvino_config": "CPU, INFERENCE_PRECISION_HINT=f32, defaults otherwise",
                          "weights": "random init (speed does not depend on them)"}
    result["matmul_gflops"] = common.matmul_gflops()
    result["settings"]["tf_onednn"] = args.onednn
    spec = {"sets": sets, "runtimes": runtimes, "tflite_threads": args.tflite_threads, "plain_bn": True, "onednn": args.onednn,
            "intra_op": args.intra_op, "inter_op": args.inter_op}
    with tempfile.TemporaryDirectory(prefix="bench-inference-") as workdir:
        spec["workdir"] = workdir
        for s in sets:
            os.makedirs(os.path.join(workdir, s))
        live, ready = start_workers(runtimes, spec, workdir)
        try:
            owners = {key: r for r, msg in ready.items() if r in live for key in msg["ready"]}
            result["versions"]["runtimes"] = {r: m.get("versions") for r, m in ready.items()}
            result["checks"] = {r: m.get("checks") for r, m in ready.items() if m.get("checks")}
            result["models"] = ready["tf"]["facts"]
            result["results"], result["load_average"] = {}, {}
            for s in sets:
                for batch in [int(b) for b in args.batch_sizes.split(",")]:
                    key = f"{s}/batch{batch}"
                    result["results"][key] = time_batch(live, owners, s, batch, rounds)
                    result["load_average"][key] = round(os.getloadavg()[0], 2)
        finally:
            for worker in live.values():
                worker.close()
    result["ratios"] = ratios(result["results"])
    result["flop_utilisation"] = utilisation(result)
    result["goals"] = goals(result["results"])
    return common.finish("inference", result, table, args.output)


def ratios(results):
    """Throughput and p50 latency of every row against keras.applications' in the same table."""
    out = {}
    for key, rows in results.items():
        base = rows.get(w.KA)
        for name, row in rows.items():
            if base is None or name == w.KA:
                continue
            out.setdefault(key, {})[name] = {
                "throughput_x": round(row["images_per_sec"] / base["images_per_sec"], 3),
                "p50_latency_x": round(row["p50_ms"] / base["p50_ms"], 3)}
    return out


def _round_ratios(a, b):
    """a / b per round (mean call times): the spread of a ratio within one run."""
    r = np.asarray(a["round_ms"]) / np.asarray(b["round_ms"])
    return [round(float(r.min()), 3), round(float(np.median(r)), 3), round(float(r.max()), 3)]


def _fastest(rows, names, by):
    present = [n for n in names if n in rows]
    if not present:
        return None
    if by == "latency":
        return min(present, key=lambda n: rows[n]["p50_ms"])
    return max(present, key=lambda n: rows[n]["images_per_sec"])


def goals(results):
    """Issue 13's targets, each as measured ratio, its per-round spread (min, median, max) and
    whether the whole spread clears the target (beyond this run's noise)."""
    out = {}

    def add(key, label, a, b, target, lower_is_better, rows):
        if a is None or b is None:
            return
        ratio = (rows[a]["p50_ms"] / rows[b]["p50_ms"] if lower_is_better
                 else rows[a]["images_per_sec"] / rows[b]["images_per_sec"])
        # Per round: time ratio; for throughput the inverse (b's time over a's).
        spread = _round_ratios(rows[a], rows[b]) if lower_is_better else \
            [round(1 / x, 3) for x in reversed(_round_ratios(rows[a], rows[b]))]
        met = spread[2] <= target if lower_is_better else spread[0] >= target
        out.setdefault(key, []).append({
            "goal": label, "ours": a, "other": b, "ratio": round(ratio, 3), "round_spread": spread,
            "target": f"{'<=' if lower_is_better else '>='} {target}", "met_beyond_noise": met})

    for key, rows in results.items():
        batch = next(iter(rows.values()))["batch"]
        if batch == 1:
            add(key, "fastest export's p50 latency vs fastest peer's",
                _fastest(rows, OUR_EXPORTS, "latency"), _fastest(rows, PEERS, "latency"), 0.9,
                True, rows)
            add(key, "Keras model p50 latency vs keras.applications'", w.KERAS, w.KA, 1.0, True,
                rows)
        else:
            add(key, "fastest export's throughput vs fastest peer's",
                _fastest(rows, OUR_EXPORTS, "throughput"), _fastest(rows, PEERS, "throughput"),
                1.1, False, rows)
            if w.ORT_ONNX in rows:
                add(key, "TF SavedModel throughput vs ONNX Runtime", w.SAVED, w.ORT_ONNX, 1.1,
                    False, rows)
            add(key, "Keras model throughput vs keras.applications", w.KERAS, w.KA, 1.3, False,
                rows)
    return out


def utilisation(result):
    """Achieved FLOP/s against the nominal peak (wall clock), and per CPU-second against one
    core's peak. FLOPs are our model's (timm's counterparts differ by ~1%: same architecture)."""
    peak = result["machine"]["peak"]
    core_peak = peak["gflops"] / max(peak["cores"], 1)
    out = {"peak_gflops": peak["gflops"], "matmul_gflops": result["matmul_gflops"]}
    for key, rows in result["results"].items():
        set_name = key.split("/")[0]
        gflop = 2 * result["models"][set_name]["macs_per_image"]["total"] / 1e9
        out.setdefault("gflop_per_image", {})[set_name] = round(gflop, 3)
        for name, row in rows.items():
            achieved = row["images_per_sec"] * gflop
            per_cpu_second = gflop / (row["cpu_ms_per_image"] / 1e3)
            out.setdefault(key, {})[name] = {
                "gflops": round(achieved, 1),
                "of_peak": round(achieved / peak["gflops"], 4) if peak["gflops"] else None,
                "of_matmul": round(achieved / result["matmul_gflops"], 4),
                "gflops_per_cpu_second": round(per_cpu_second, 1),
                "of_core_peak_per_cpu_second": round(per_cpu_second / core_peak, 4)}
    return out


def rows_table(result):
    rows = []
    for key, cands in result["results"].items():
        set_name = key.split("/")[0]
        model = f"{result['models'][set_name]['variant']} @ {result['models'][set_name]['size']}"
        for name, row in sorted(cands.items(), key=lambda kv: -kv[1]["images_per_sec"]):
            ratio = result["ratios"].get(key, {}).get(name)
            rows.append([model, name, row["batch"], row["images_per_sec"], row["p50_ms"],
                         row["p90_ms"], row["cpu_ms_per_image"],
                         f"{ratio['throughput_x']:.2f}x" if ratio else "1.00x",
                         f"{100 * result['flop_utilisation'][key][name]['of_peak']:.0f}%"])
    return common.markdown_table(["model", "runtime", "batch", "images/s", "p50 ms", "p90 ms",
                                  "CPU ms/image", "vs keras.applications", "of peak FLOP/s"], rows)


def goals_table(result):
    rows = []
    for key, items in result["goals"].items():
        for g in items:
            rows.append([key, g["goal"], f"{g['ratio']:.2f}x", g["target"],
                         "-".join(f"{x:.2f}" for x in (g["round_spread"][0], g["round_spread"][2])),
                         "met" if g["met_beyond_noise"] else "not met", f"{g['ours']} / {g['other']}"])
    return common.markdown_table(["table", "goal", "measured", "target",
                                  "per-round range", "beyond noise", "rows"], rows)


def table(result):
    text = f"{common.machine_line(result)}\n\n{rows_table(result)}\n\n{goals_table(result)}"
    if result.get("warning"):
        text += f"\n\nNote: {result['warning']}"
    return text


if __name__ == "__main__":
    main()
