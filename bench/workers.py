"""One worker process per runtime for bench.inference: TensorFlow, LiteRT, OpenVINO, ONNX Runtime
(and a one-shot torch process that writes timm's ONNX files). Runtimes are kept apart because
TF, OpenVINO and torch in one process crashed on the benchmark machine, and torch loaded beside
ONNX Runtime slowed it.

    python -m bench.workers RUNTIME SPEC_JSON      # started by bench.inference, not by hand

Protocol: the worker prints one JSON line per answer on its original stdout (everything the
libraries print goes to stderr): first {"ready": {candidate: facts}}, then for each request read
from stdin - {"warmup": name, "batch": B, "calls": K} or {"time": ...} - the call times.
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np

SETS = {  # model set -> (our variant, image size, timm's counterpart)
    "b0": ("efficientnet-b0", 224, "efficientnet_b0"),
    "v2s": ("efficientnetv2-s", 384, "efficientnetv2_s"),
}
# Row names (runtime: what runs), shared with bench.inference and bench.report.
KA = "keras.applications (TF)"
KERAS = "ours: Keras model (TF)"
PLAIN = "ours: Keras model with TF's fused BN (efficientnet_tf.fast.with_fused_batchnorm)"
SAVED = "ours: SavedModel (export/, TF)"
FOLDED = "ours: FoldedModel (efficientnet_tf.fast, TF)"
TFLITE = "ours: TF-Lite (export/, LiteRT)"
OV_IR = "ours: OpenVINO IR (export/)"
ORT_OURS = "ours: ONNX Runtime on our ONNX (export/)"
OV_SAVED = "peer: OpenVINO reading our SavedModel"
ORT_ONNX = "peer: ONNX Runtime on timm ONNX"
OV_ONNX = "peer: OpenVINO on timm ONNX"
BATCH1_ONLY = (TFLITE,)  # the TF-Lite export takes one image per call
PROBE = 2  # images of the numerical check every worker runs before timing


def probe_images(size):
    return np.random.default_rng(0).uniform(size=(PROBE, size, size, 3)).astype(np.float32)


def batch_images(batch, size):
    return np.random.default_rng(batch).uniform(size=(batch, size, size, 3)).astype(np.float32)


def _relative(got, want):
    want = np.asarray(want, np.float64)
    return float(np.abs(np.asarray(got, np.float64) - want).max() / np.abs(want).max())


# ------------------------------------------------------------------------------ TensorFlow


def our_model(variant, size):
    """Our model with seeded random weights whose outputs are of order one, like a trained
    net's (BN statistics calibrated on a batch), so that the numerical checks compare
    probabilities that are neither ~1/classes nor one-hot. A fresh init, uncalibrated, sent
    V2-S's logits to ~2000 for some seeds, where float rounding alone moves the probabilities
    by up to 1. Speed is unaffected."""
    import keras

    import efficientnet_tf
    from efficientnet_tf.testing import randomize_like_trained
    keras.utils.set_random_seed(0)
    model = efficientnet_tf.build_model(variant, input_shape=(size, size, 3))
    calibration = np.random.default_rng(1).uniform(size=(4, size, size, 3)).astype(np.float32)
    return randomize_like_trained(model, calibration)


def keras_applications_model(name: str, size: int, **kwargs):
    """keras.applications' constructor for one of our variant names (weights=None)."""
    import keras
    family, _, variant = name.partition("-")
    constructor = {"efficientnet": "EfficientNet" + variant.upper(),
                   "efficientnetv2": "EfficientNetV2" + variant.upper()}.get(family)
    if constructor is None or not hasattr(keras.applications, constructor):
        raise ValueError(f"keras.applications has no counterpart of {name!r}")
    return getattr(keras.applications, constructor)(weights=None, input_shape=(size, size, 3),
                                                         **kwargs)


def graph_function(model):
    """How we run a Keras model for inference: one traced graph, reused for every batch size."""
    import tensorflow as tf
    return tf.function(lambda x: model(x, training=False), reduce_retracing=True)


def tf_candidates(spec):
    """Our Keras model, its exports (written here for the other workers too) and
    keras.applications; the Keras model's probe outputs saved for the other workers' checks."""
    import tensorflow as tf
    from absl import logging

    from bench import common
    from efficientnet_tf.fast import FoldedModel, with_fused_batchnorm
    from export import export_model
    logging.set_verbosity(logging.WARNING)
    if spec.get("intra_op"):
        tf.config.threading.set_intra_op_parallelism_threads(spec["intra_op"])
    if spec.get("inter_op"):
        tf.config.threading.set_inter_op_parallelism_threads(spec["inter_op"])
    cands, facts = {}, {}
    for set_name in spec["sets"]:
        variant, size, _ = SETS[set_name]
        work = os.path.join(spec["workdir"], set_name)
        ours = our_model(variant, size)
        ka, ours_fn = keras_applications_model(variant, size), graph_function(ours)
        ka_fn = graph_function(ka)
        cands[(set_name, KA)] = lambda x, f=ka_fn: f(tf.constant(x)).numpy()
        cands[(set_name, KERAS)] = lambda x, f=ours_fn: f(tf.constant(x)).numpy()
        if spec.get("plain_bn"):
            plain_fn = graph_function(with_fused_batchnorm(ours))
            cands[(set_name, PLAIN)] = lambda x, f=plain_fn: f(tf.constant(x)).numpy()
        export_model(ours, os.path.join(work, "saved_model"), format="saved_model", image_size=size)
        signature = tf.saved_model.load(os.path.join(work, "saved_model", "1")).signatures[
            "serving_default"]
        cands[(set_name, SAVED)] = (
            lambda x, s=signature: s(images=tf.constant(x))["probabilities"].numpy())
        if set_name == "b0":
            folded = FoldedModel(ours)
            cands[(set_name, FOLDED)] = lambda x, f=folded: f(tf.constant(x)).numpy()
        export_model(ours, os.path.join(work, "tflite"), format="tflite", image_size=size)
        if "onnxruntime" in spec.get("runtimes", ("onnxruntime",)):  # format onnx, from the SavedModel above
            from export.onnx import convert_saved_model
            os.makedirs(os.path.join(work, "onnx"), exist_ok=True)
            convert_saved_model(os.path.join(work, "saved_model", "1"), os.path.join(work, "onnx", "model.onnx"),
                                size)
        np.save(os.path.join(work, "probe_probabilities.npy"), ours_fn(probe_images(size)).numpy())
        macs = common.count_macs(ours)
        facts[set_name] = {"macs_per_image": macs, "variant": variant, "size": size}
    return cands, facts


def tf_export_main(spec):
    """Only our SavedModel export of each set (for bench.profile)."""
    from export import export_model
    for set_name in spec["sets"]:
        variant, size, _ = SETS[set_name]
        ours = our_model(variant, size)
        export_model(ours, os.path.join(spec["workdir"], set_name, "saved_model"),
                     format="saved_model", image_size=size)


def openvino_export_main(spec):
    """Our openvino export of each set's SavedModel (a process of its own: the converter
    imports TensorFlow, which must not share a process with the OpenVINO timing worker)."""
    from export.openvino import export_openvino
    for set_name in spec["sets"]:
        work = os.path.join(spec["workdir"], set_name)
        export_openvino(os.path.join(work, "saved_model", "1"), os.path.join(work, "openvino"),
                        SETS[set_name][1])


# ------------------------------------------------------------------------------ peers


def torch_onnx_main(spec):
    """timm's model (random init) exported with torch.onnx.export, dynamic batch."""
    import timm
    import torch
    for set_name in spec["sets"]:
        _, size, timm_name = SETS[set_name]
        path = os.path.join(spec["workdir"], set_name, "timm.onnx")
        model = timm.create_model(timm_name, pretrained=False).eval()
        example = torch.rand(1, 3, size, size)
        with torch.no_grad():
            torch.onnx.export(model, (example,), path, input_names=["images"],
                              output_names=["logits"], dynamo=False, opset_version=17,
                              dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}})


def nchw(x):
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def litert_candidates(spec):
    from export.tflite import interpreter
    cands = {}
    for set_name in spec["sets"]:
        work = os.path.join(spec["workdir"], set_name)
        with open(os.path.join(work, "tflite", "model.tflite"), "rb") as f:
            interp = interpreter(f.read(), num_threads=spec.get("tflite_threads"))
        inp, out = interp.get_input_details()[0], interp.get_output_details()[0]

        def run(images, interp=interp, inp=inp, out=out):
            results = []
            for image in images:
                interp.set_tensor(inp["index"], np.ascontiguousarray(image[None]))
                interp.invoke()
                results.append(interp.get_tensor(out["index"])[0])
            return np.stack(results)
        cands[(set_name, TFLITE)] = run
    return cands, {}


def openvino_candidates(spec):
    import openvino as ov

    from export.openvino import CPU_CONFIG
    core = ov.Core()
    cands = {}
    for set_name in spec["sets"]:
        work = os.path.join(spec["workdir"], set_name)
        for name, path, layout in (
                (OV_IR, os.path.join(work, "openvino", "1", "model.xml"), "nhwc"),
                (OV_SAVED, os.path.join(work, "saved_model", "1"), "nhwc"),
                (OV_ONNX, os.path.join(work, "timm.onnx"), "nchw")):
            compiled = core.compile_model(core.read_model(path), "CPU", CPU_CONFIG)
            request = compiled.create_infer_request()
            port = compiled.output("probabilities") if layout == "nhwc" else compiled.outputs[0]

            def run(x, request=request, port=port, layout=layout):
                request.infer({0: x if layout == "nhwc" else nchw(x)})
                return np.array(request.get_tensor(port).data, copy=True)
            cands[(set_name, name)] = run
    return cands, {}


def onnxruntime_candidates(spec):
    import onnxruntime as ort
    cands = {}
    for set_name in spec["sets"]:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = ort.InferenceSession(os.path.join(spec["workdir"], set_name, "timm.onnx"),
                                       options, providers=["CPUExecutionProvider"])
        cands[(set_name, ORT_ONNX)] = lambda x, s=session: s.run(None, {"images": nchw(x)})[0]
        ours = os.path.join(spec["workdir"], set_name, "onnx", "model.onnx")
        if os.path.exists(ours):
            session = ort.InferenceSession(ours, options, providers=["CPUExecutionProvider"])
            cands[(set_name, ORT_OURS)] = lambda x, s=session: s.run(["probabilities"], {"images": x})[0]
    return cands, {}


def _versions(runtime):
    if runtime == "tf":
        import keras
        import tensorflow as tf
        return {"tensorflow": tf.__version__, "keras": keras.__version__}
    if runtime == "litert":
        from importlib.metadata import version
        return {"ai_edge_litert": version("ai-edge-litert")}
    if runtime == "openvino":
        import openvino
        return {"openvino": openvino.__version__.split("-")[0]}
    if runtime == "onnxruntime":
        import onnxruntime
        return {"onnxruntime": onnxruntime.__version__}
    return {}


CANDIDATES = {"tf": tf_candidates, "litert": litert_candidates, "openvino": openvino_candidates,
              "onnxruntime": onnxruntime_candidates}
ONE_SHOT = {"torch_onnx": torch_onnx_main, "openvino_export": openvino_export_main,
            "tf_export": tf_export_main}


def _check(cands, spec):
    """Ours against the Keras model's probe probabilities (written by the TF worker); peers run
    other weights, so only their shapes and finiteness are checked."""
    checks = {}
    for (set_name, name), fn in cands.items():
        size = SETS[set_name][1]
        got = fn(probe_images(size))
        if not np.all(np.isfinite(got)) or got.shape[0] != PROBE:
            raise AssertionError(f"{name} ({set_name}): bad output {got.shape}")
        if name.startswith("ours"):
            want = np.load(os.path.join(spec["workdir"], set_name, "probe_probabilities.npy"))
            checks[f"{set_name}/{name}"] = _relative(got, want)
            if not checks[f"{set_name}/{name}"] <= 1e-3:
                raise AssertionError(f"{name} ({set_name}) differs from the Keras model by "
                                     f"{checks[f'{set_name}/{name}']:.3g} (relative)")
    return checks


def serve(runtime, spec, proto):
    cands, facts = CANDIDATES[runtime](spec)
    checks = _check(cands, spec)
    names = {f"{s}/{n}": (s, n) for s, n in cands}
    proto.write(json.dumps({"ready": sorted(names), "facts": facts, "checks": checks,
                            "versions": _versions(runtime), "pid": os.getpid()}) + "\n")
    proto.flush()
    inputs = {}
    for line in sys.stdin:
        request = json.loads(line)
        key = request.get("time") or request.get("warmup")
        set_name, name = names[key]
        batch = request["batch"]
        x = inputs.get((set_name, batch))
        if x is None:
            inputs.clear()
            x = inputs[(set_name, batch)] = batch_images(batch, SETS[set_name][1])
        fn, wall, cpu = cands[(set_name, name)], [], []
        for _ in range(request["calls"]):
            cpu0, wall0 = time.process_time(), time.perf_counter()
            fn(x)
            wall1, cpu1 = time.perf_counter(), time.process_time()
            wall.append(wall1 - wall0)
            cpu.append(cpu1 - cpu0)
        proto.write(json.dumps({"wall": wall, "cpu": cpu}) + "\n")
        proto.flush()


def main(argv):
    runtime, spec = argv[0], json.loads(argv[1])
    proto = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # library chatter on stdout would corrupt the protocol
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if runtime in ONE_SHOT:
        ONE_SHOT[runtime](spec)
        proto.write(json.dumps({"done": runtime}) + "\n")
        proto.flush()
        return
    if runtime not in CANDIDATES:
        raise ValueError(f"Unknown runtime {runtime!r}; valid: {sorted(CANDIDATES) + sorted(ONE_SHOT)}")
    serve(runtime, spec, proto)


if __name__ == "__main__":
    main(sys.argv[1:])
