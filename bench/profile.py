"""Op-by-op profile of the batch-32 serving graph: our SavedModel under TensorFlow (a TF1 session,
as TF Serving runs it, with FULL_TRACE step stats) against OpenVINO's per-layer counters on our
OpenVINO export of the same SavedModel, grouped by op type.

    python -m bench.profile                      # B0 at 224, batch 32, 1 thread (~3 min)
    python -m bench.profile --set=v2s --batch=8  # V2-S at 384
    python -m bench.profile --threads=0          # all cores (noisier on a shared machine)

Runs TF and OpenVINO in two processes (bench.workers' rule). Prints both tables and writes
bench/results/profile.json.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile

import numpy as np

from bench import common
from bench.workers import SETS

common.setup_environment()


def _groups(times):
    """(op type, ms) pairs -> rows sorted by time: type, count, ms, share."""
    total = sum(ms for _, ms in times) or 1.0
    by = collections.defaultdict(lambda: [0, 0.0])
    for kind, ms in times:
        by[kind][0] += 1
        by[kind][1] += ms
    return [{"op": k, "count": c, "ms": round(ms, 2), "share": round(ms / total, 4)}
            for k, (c, ms) in sorted(by.items(), key=lambda kv: -kv[1][1])]


def profile_tf(saved_model_dir, batch, size, threads, runs):
    """Per op type: the executed kernels' time of one batch (median run), after grappler and
    oneDNN's graph rewrites, in a session like TF Serving's."""
    import tensorflow as tf
    config = tf.compat.v1.ConfigProto(intra_op_parallelism_threads=threads,
                                      inter_op_parallelism_threads=threads)
    x = np.random.default_rng(0).uniform(size=(batch, size, size, 3)).astype(np.float32)
    graph = tf.Graph()
    with tf.compat.v1.Session(graph=graph, config=config) as sess:
        meta = tf.compat.v1.saved_model.load(sess, ["serve"], saved_model_dir)
        sig = meta.signature_def["serving_default"]
        feed = sig.inputs["images"].name
        fetch = sig.outputs["probabilities"].name
        for _ in range(2):
            sess.run(fetch, {feed: x})
        options = tf.compat.v1.RunOptions(trace_level=tf.compat.v1.RunOptions.FULL_TRACE)
        profiles = []
        for _ in range(runs):
            metadata = tf.compat.v1.RunMetadata()
            sess.run(fetch, {feed: x}, options=options, run_metadata=metadata)
            times = []
            for dev in metadata.step_stats.dev_stats:
                for node in dev.node_stats:
                    kind = node.timeline_label.split("(")[0].split(" = ")[-1].strip() or node.node_name
                    if node.node_name in ("_SOURCE", "_SINK") or "RecvTensor" in kind:
                        continue
                    times.append((kind.split(":")[0], (node.op_end_rel_micros
                                                       - node.op_start_rel_micros) / 1e3))
            profiles.append(times)
    totals = [sum(ms for _, ms in t) for t in profiles]
    median = profiles[int(np.argsort(totals)[len(totals) // 2])]
    return {"total_op_ms": round(sum(ms for _, ms in median), 2), "by_type": _groups(median)}


def profile_openvino(xml, batch, size, threads, runs):
    import openvino as ov

    from export.openvino import CPU_CONFIG
    core = ov.Core()
    config = {**CPU_CONFIG, "PERF_COUNT": "YES"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = str(threads)
    compiled = core.compile_model(core.read_model(xml), "CPU", config)
    request = compiled.create_infer_request()
    x = np.random.default_rng(0).uniform(size=(batch, size, size, 3)).astype(np.float32)
    for _ in range(2):
        request.infer({0: x})
    profiles = []
    for _ in range(runs):
        request.infer({0: x})
        profiles.append([(f"{p.node_type} [{p.exec_type}]", p.real_time.total_seconds() * 1e3)
                         for p in request.profiling_info if p.status.name == "EXECUTED"])
    totals = [sum(ms for _, ms in t) for t in profiles]
    median = profiles[int(np.argsort(totals)[len(totals) // 2])]
    return {"total_op_ms": round(sum(ms for _, ms in median), 2), "by_type": _groups(median)}


def _child(which, args_json):
    args = json.loads(args_json)
    fn = profile_tf if which == "tf" else profile_openvino
    result = fn(args["path"], args["batch"], args["size"], args["threads"], args["runs"])
    print(json.dumps(result))


def _run_child(which, **kwargs):
    return common.run_child("bench.profile", which, **kwargs)


def table(result):
    parts = [common.machine_line(result)]
    for key, title in (("tensorflow", "TensorFlow session (TF Serving's runtime), our SavedModel"),
                       ("openvino", "OpenVINO, our openvino export")):
        prof = result[key]
        rows = [[r["op"], r["count"], r["ms"], f"{100 * r['share']:.1f}%"]
                for r in prof["by_type"][:14]]
        parts += ["", f"{title}: {prof['total_op_ms']} ms of op time for batch "
                  f"{result['settings']['batch']}", "",
                  common.markdown_table(["op type", "ops", "ms", "share"], rows)]
    return "\n".join(parts)


def main(argv=None):
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--child":
        return _child(sys.argv[2], sys.argv[3])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", default="b0", choices=sorted(SETS), help="model set (bench.workers)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="0: the runtimes' defaults")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--output", default=os.path.join(common.RESULTS_DIR, "profile.json"))
    args = parser.parse_args(argv)
    result = common.header("profile", sys.argv[1:] if argv is None else argv)
    result["settings"] = dict(vars(args), output=common.repo_relative(args.output))
    with tempfile.TemporaryDirectory(prefix="bench-profile-") as workdir:
        os.makedirs(os.path.join(workdir, args.set))
        for step in ("tf_export", "openvino_export"):  # the exports bench.inference times
            common.worker_step(step, [args.set], workdir)
        common_args = dict(batch=args.batch, size=SETS[args.set][1], threads=args.threads,
                           runs=args.runs)
        work = os.path.join(workdir, args.set)
        result["tensorflow"] = _run_child(
            "tf", path=os.path.join(work, "saved_model", "1"), **common_args)
        result["openvino"] = _run_child(
            "openvino", path=os.path.join(work, "openvino", "1", "model.xml"),
            **common_args)
    return common.finish("profile", result, table, args.output)


if __name__ == "__main__":
    main()
