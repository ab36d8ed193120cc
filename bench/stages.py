"""Batch-1 latency stage by stage: our TF-Lite export under LiteRT (XNNPACK) against ONNX Runtime
on timm's ONNX, the fastest peer at batch 1 in bench.inference.

LiteRT's Python API has no op profiler, and XNNPACK runs the whole float graph as one delegated
node, so both runtimes are profiled the one way they allow alike: each times prefixes of its
network cut at the end of the stem, of every stage and of the head (TF-Lite files converted from
our model cut there; timm's ONNX cut with onnx.utils.extract_model), and a stage's time is the
difference of two prefixes' median latencies. ONNX Runtime's own node profiler adds the op types
inside each stage. Calls keep their input and output in the runtime's buffers (no per-call
copies); the stem row includes a call's fixed cost, and a TF-Lite call that only slices its input
is timed too. Swish in TF-Lite is two ops (LOGISTIC, MUL); each prefix is also converted with the
MUL left out, a diagnostic with wrong outputs whose time difference is what that MUL costs.

    python -m bench.stages                 # B0 at 224 (~2 min)
    python -m bench.stages --set=v2s       # V2-S at 384 (~5 min)

One process per runtime and round (bench.workers' rule), rounds alternating. Prints the table and
writes bench/results/stages_SET.json (or --output); bench.report adds it to docs/performance-results.md.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import re
import sys
import tempfile
from unittest import mock

import numpy as np

from bench import common
from bench import workers as w

common.setup_environment()

STEM, HEAD = "stem", "head"


def _stage(index):
    return f"stage {index}"


# ------------------------------------------------------------------------------ children


@contextlib.contextmanager
def _swish_as_sigmoid():
    """Diagnostic only, wrong outputs: stands in for export.trace.plain_swish and traces swish
    as sigmoid(x) alone, so that timing the result says what the separate MUL of
    x * sigmoid(x) costs (TF-Lite has no swish op; XNNPACK runs LOGISTIC and MUL as two passes)."""
    import tensorflow as tf
    from keras.src import backend as keras_backend
    original = keras_backend.nn.silu
    keras_backend.nn.silu = tf.sigmoid
    try:
        yield
    finally:
        keras_backend.nn.silu = original


def cut_ours(set_name, workdir):
    """TF process: our model (bench's seeded weights) cut after the stem, each stage and the
    head, each prefix converted to TF-Lite, as exported and with swish's MUL left out (the
    diagnostic above). Returns per cut its name, output shape, MACs and the two files, and the
    path of a TF-Lite model that only slices its input (a call's fixed cost)."""
    import keras
    import tensorflow as tf

    from efficientnet_tf import spec as spec_lib
    from export import tflite
    variant, size, _ = w.SETS[set_name]
    model = w.our_model(variant, size)
    spec = spec_lib.model_spec(model)
    last_of_stage = {}
    for block in spec.blocks:
        last_of_stage[block.stage] = block.output
    cuts = [(STEM, spec_lib.STEM_ACTIVATION)]
    cuts += [(_stage(s), layer) for s, layer in sorted(last_of_stage.items())]
    cuts.append((HEAD, None))

    def write(fn, name):
        path = os.path.join(workdir, name)
        with open(path, "wb") as f:
            f.write(tflite.converter_for(fn, size).convert())
        return path

    stages = []
    for i, (name, layer) in enumerate(cuts):
        prefix = model if layer is None else keras.Model(model.input, model.get_layer(layer).output)
        stage = {"stage": name, "shape": list(prefix.output.shape[1:]),
                 "macs": common.count_macs(prefix)["total"],
                 "tflite": write(lambda x, m=prefix: m(x, training=False), f"ours_{i}.tflite")}
        with mock.patch.object(tflite.trace, "plain_swish", _swish_as_sigmoid):
            stage["tflite_no_swish_mul"] = write(lambda x, m=prefix: m(x, training=False),
                                                 f"ours_{i}_no_swish_mul.tflite")
        stages.append(stage)
    return {"stages": stages,
            "call": write(lambda x: x[:, :1, :1, :] + tf.constant(1.0), "call.tflite")}


def _timm_section(node_name):
    """timm's module path in an ONNX node name -> our stage name ("/blocks/blocks.3/..." is
    stage 4; conv_stem and bn1 the stem; the rest the head)."""
    match = re.search(r"blocks\.(\d+)", node_name)
    if match:
        return _stage(int(match.group(1)) + 1)
    if "conv_stem" in node_name or "bn1" in node_name:
        return STEM
    return HEAD


def cut_timm(onnx_path, stages, workdir):
    """timm's ONNX cut where each section (stem, stage i) ends: the last node output of that
    section that the following sections read. The head is the whole model. Each cut's output
    shape must be our cut's (NCHW against NHWC), or the stages would not correspond."""
    import onnx
    import onnx.utils
    names = [s["stage"] for s in stages]
    graph = onnx.load(onnx_path).graph
    produced_in = {}
    for node in graph.node:
        for out in node.output:
            produced_in[out] = _timm_section(node.name)
    sections = [n for n in names if n != HEAD]
    found = sorted(set(produced_in.values()) - {HEAD})
    if sorted(sections) != found:
        raise ValueError(f"timm's ONNX has sections {found}; our model has {sorted(sections)}")
    ends = {}
    for node in graph.node:
        here = _timm_section(node.name)
        for inp in node.input:
            there = produced_in.get(inp)
            if there is not None and there != here:
                ends[there] = inp  # the last such read wins: the section's output
    paths = []
    for i, stage in enumerate(stages):
        name = stage["stage"]
        path = onnx_path if name == HEAD else os.path.join(workdir, f"timm_{i}.onnx")
        if name != HEAD:
            onnx.utils.extract_model(onnx_path, path, ["images"], [ends[name]])
        dims = [d.dim_value for d in
                onnx.load(path).graph.output[0].type.tensor_type.shape.dim][1:]
        ours = stage["shape"] if len(stage["shape"]) == 1 else [stage["shape"][-1], *stage["shape"][:-1]]
        if dims != ours:
            raise ValueError(f"{name}: timm's cut at {ends.get(name, 'the output')!r} has shape "
                             f"{dims}, ours (as NCHW) {ours}")
        paths.append(path)
    return paths


def _one_at_a_time(make_runs, calls):
    """Median ms per call of each prefix, timed one after another with only that prefix's
    runtime object alive: an idle ONNX Runtime session's thread pool spins and would take the
    cores from the one being timed."""
    p50s = []
    for make in make_runs:
        run = make()
        times = common.interleaved({"run": run}, rounds=1, calls_per_round=calls, warmup=5)
        p50s.append(round(float(np.median(times["run"]["wall"])) * 1e3, 4))
        del run
    return p50s


def _litert_run(path, size):
    from export.tflite import interpreter
    with open(path, "rb") as f:
        interp = interpreter(f.read(), num_threads=os.cpu_count())
    interp.set_tensor(interp.get_input_details()[0]["index"], w.batch_images(1, size))
    return interp.invoke


def time_litert(paths, size, calls):
    return _one_at_a_time([lambda p=p: _litert_run(p, size) for p in paths], calls)


def _ort_session(path, profile_prefix=None):
    import onnxruntime as ort
    options = ort.SessionOptions()  # bench.inference's settings
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if profile_prefix:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def _bound(session, size):
    """A run of the session on one bound input into a preallocated output: no copies per call."""
    import onnxruntime as ort
    image = ort.OrtValue.ortvalue_from_numpy(w.nchw(w.batch_images(1, size)))
    out = session.get_outputs()[0]
    shape = [1 if not isinstance(d, int) else d for d in out.shape]
    result = ort.OrtValue.ortvalue_from_shape_and_type(shape, np.float32)
    binding = session.io_binding()
    binding.bind_ortvalue_input("images", image)
    binding.bind_ortvalue_output(out.name, result)
    return lambda: session.run_with_iobinding(binding)


def time_onnxruntime(paths, size, calls):
    return _one_at_a_time([lambda p=p: _bound(_ort_session(p), size) for p in paths], calls)


def profile_onnxruntime(path, size, calls, workdir):
    """ONNX Runtime's node profiler on the whole model: ms per call by section and op type."""
    warmup = 3
    session = _ort_session(path, os.path.join(workdir, "ort_profile"))
    run = _bound(session, size)
    for _ in range(warmup + calls):
        run()
    with open(session.end_profiling()) as f:
        events = json.load(f)
    runs = sorted((e for e in events if e.get("name") == "model_run"), key=lambda e: e["ts"])
    start = runs[warmup - 1]["ts"] + runs[warmup - 1]["dur"]  # after the warm-up calls
    events = sorted((e for e in events if e["ts"] > start), key=lambda e: e["ts"])
    by = collections.defaultdict(float)
    section = STEM
    for event in events:  # in execution order
        if event.get("cat") != "Node" or not event["name"].endswith("_kernel_time"):
            continue
        if event["name"].startswith("/"):  # a timm module's node; the layout reorders ORT
            section = _timm_section(event["name"])  # inserts belong where they run
        by[(section, event["args"].get("op_name", "?"))] += event["dur"] / 1e3 / calls
    return [{"stage": s, "op": op, "ms": round(ms, 3)} for (s, op), ms in
            sorted(by.items(), key=lambda kv: -kv[1])]


def _child(which, args_json):
    a = json.loads(args_json)
    if which == "cut_ours":
        result = cut_ours(a["set"], a["workdir"])
    elif which == "cut_timm":
        result = cut_timm(a["onnx"], a["stages"], a["workdir"])
    elif which == "litert":
        result = time_litert(a["paths"], a["size"], a["calls"])
    elif which == "onnxruntime":
        result = time_onnxruntime(a["paths"], a["size"], a["calls"])
    elif which == "ort_profile":
        result = profile_onnxruntime(a["path"], a["size"], a["calls"], a["workdir"])
    else:
        raise ValueError(f"unknown child {which!r}")
    print(json.dumps(result))


def _run_child(which, **kwargs):
    return common.run_child("bench.stages", which, **kwargs)


# ------------------------------------------------------------------------------ results


def _differences(cumulative):
    return [cumulative[0]] + [b - a for a, b in zip(cumulative, cumulative[1:])]


RUNTIMES = ("litert", "litert_no_swish_mul", "onnxruntime")


def summarize(stages, rounds):
    """Per stage: each runtime's ms (difference of the median prefix latencies over rounds),
    the TF-Lite/ORT ratio with its range over rounds, GFLOP/s of each; the cost of TF-Lite's
    separate swish MUL (the diagnostic's difference)."""
    median = {rt: list(np.median(np.asarray([r[rt] for r in rounds]), axis=0)) for rt in RUNTIMES}
    per_round = [{rt: _differences(r[rt]) for rt in RUNTIMES} for r in rounds]
    lite, ort = _differences(median["litert"]), _differences(median["onnxruntime"])
    no_mul = _differences(median["litert_no_swish_mul"])
    rows = []
    prev_macs = 0
    for i, stage in enumerate(stages):
        macs = stage["macs"] - prev_macs
        prev_macs = stage["macs"]
        ratios = [r["litert"][i] / r["onnxruntime"][i] for r in per_round
                  if r["onnxruntime"][i] > 0]
        rows.append({
            "stage": stage["stage"], "output_shape": stage["shape"], "mmacs": round(macs / 1e6, 1),
            "tflite_ms": round(lite[i], 3), "onnxruntime_ms": round(ort[i], 3),
            "tflite_over_ort": round(lite[i] / ort[i], 3) if ort[i] > 0 else None,
            "ratio_range": [round(min(ratios), 3), round(max(ratios), 3)] if ratios else None,
            "tflite_swish_mul_ms": round(lite[i] - no_mul[i], 3),
            "tflite_gflops": round(2 * macs / lite[i] / 1e6, 1) if lite[i] > 0 else None,
            "onnxruntime_gflops": round(2 * macs / ort[i] / 1e6, 1) if ort[i] > 0 else None})
    whole = {rt: round(float(median[rt][-1]), 3) for rt in RUNTIMES}
    whole["litert_call"] = round(float(np.median([r["litert_call"] for r in rounds])), 3)
    whole["tflite_over_ort"] = round(whole["litert"] / whole["onnxruntime"], 3)
    whole["ratio_range"] = [round(min(r["litert"][-1] / r["onnxruntime"][-1] for r in rounds), 3),
                            round(max(r["litert"][-1] / r["onnxruntime"][-1] for r in rounds), 3)]
    return {"stages": rows, "whole_model_ms": whole}


def table(result):
    return common.machine_line(result) + "\n\n" + stages_table(result)


def stages_table(result):
    """The stage table and ORT's op types (bench.report puts them in docs/performance-results.md)."""
    s = result["summary"]
    rows = [[r["stage"], "x".join(map(str, r["output_shape"])), r["mmacs"], r["tflite_ms"],
             r["onnxruntime_ms"], r["tflite_over_ort"],
             "–".join(map(str, r["ratio_range"] or [])), r["tflite_swish_mul_ms"],
             r["tflite_gflops"], r["onnxruntime_gflops"]] for r in s["stages"]]
    whole = s["whole_model_ms"]
    rows.append(["whole model", "", round(sum(r["mmacs"] for r in s["stages"]), 1),
                 whole["litert"], whole["onnxruntime"], whole["tflite_over_ort"],
                 "–".join(map(str, whole["ratio_range"])),
                 round(whole["litert"] - whole["litert_no_swish_mul"], 3), "", ""])
    by_stage = collections.defaultdict(list)
    for r in result["onnxruntime_profile"]:
        by_stage[r["stage"]].append(f"{r['op']} {r['ms']:.3f}")
    ops = [[r["stage"], ", ".join(by_stage[r["stage"]][:4])] for r in s["stages"]]
    settings = result["settings"]
    variant, size, _ = w.SETS[settings["set"]]
    return "\n".join([
        f"{settings['set']} ({variant} at {size}), batch 1, {settings['rounds']} rounds of "
        f"{settings['calls']} calls per prefix, {settings['threads']} threads; ms per call. "
        f"TF-Lite without swish's MUL (a diagnostic with wrong outputs): whole model "
        f"{whole['litert_no_swish_mul']} ms; a TF-Lite call that only slices its input: "
        f"{whole['litert_call']} ms.", "",
        common.markdown_table(["stage", "output", "MMACs", "TF-Lite ms", "ORT ms", "TF-Lite/ORT",
                               "per-round range", "TF-Lite swish MUL ms", "TF-Lite GFLOP/s",
                               "ORT GFLOP/s"], rows),
        "", "ONNX Runtime's node profiler, ms per call by op type (profiling adds overhead):", "",
        common.markdown_table(["stage", "top op types"], ops)])


def main(argv=None):
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--child":
        return _child(sys.argv[2], sys.argv[3])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", default="b0", choices=sorted(w.SETS), help="model set (bench.workers)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=200, help="calls per prefix and round")
    parser.add_argument("--output", default=None,
                        help="JSON path (default: bench/results/stages_SET.json)")
    args = parser.parse_args(argv)
    for flag in ("rounds", "calls"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag} must be at least 1, got {getattr(args, flag)}")
    result = common.header("stages", sys.argv[1:] if argv is None else argv)
    result["settings"] = dict(vars(args), threads=os.cpu_count())
    size = w.SETS[args.set][1]
    with tempfile.TemporaryDirectory(prefix="bench-stages-") as workdir:
        work = os.path.join(workdir, args.set)
        os.makedirs(work)
        common.worker_step("torch_onnx", [args.set], workdir)
        onnx_path = os.path.join(work, "timm.onnx")
        print(f"[stages] cutting our model and timm's ONNX ({args.set})", flush=True)
        ours = _run_child("cut_ours", set=args.set, workdir=work)
        stages = ours["stages"]
        timm_paths = _run_child("cut_timm", onnx=onnx_path, stages=stages, workdir=work)
        lite_paths = ([s["tflite"] for s in stages] + [s["tflite_no_swish_mul"] for s in stages]
                      + [ours["call"]])
        rounds = []
        for r in range(args.rounds):
            lite = _run_child("litert", paths=lite_paths, size=size, calls=args.calls)
            rounds.append({
                "litert": lite[:len(stages)], "litert_no_swish_mul": lite[len(stages):-1],
                "litert_call": lite[-1],
                "onnxruntime": _run_child("onnxruntime", paths=timm_paths, size=size,
                                          calls=args.calls)})
            print(f"[stages] round {r + 1}/{args.rounds}: whole model TF-Lite "
                  f"{rounds[-1]['litert'][-1]:.2f} ms, ORT {rounds[-1]['onnxruntime'][-1]:.2f} ms",
                  flush=True)
        result["prefix_ms"] = rounds
        result["summary"] = summarize(stages, rounds)
        result["onnxruntime_profile"] = _run_child("ort_profile", path=onnx_path, size=size,
                                                   calls=args.calls, workdir=work)
        for stage in stages:
            del stage["tflite"], stage["tflite_no_swish_mul"]
        result["stages"] = stages
    return common.finish("stages", result, table,
                         args.output or os.path.join(common.RESULTS_DIR, f"stages_{args.set}.json"))


if __name__ == "__main__":
    main()
