"""Format ``onnx``: ``DIR/1/model.onnx`` for ONNX Runtime, Triton and TensorRT.

Converted from the project's verified serving SavedModel (format ``saved_model``: the BN-folded
inference graph) by tf2onnx at opset ``OPSET``, then reloaded in ONNX Runtime and compared with
the Keras model. The ``serving_default`` signature carries over: input ``images`` float32
[batch, S, S, 3] in [0, 1] (batch free, S the export's image size), outputs ``probabilities``
[batch, classes], and the top-k ``classes`` (int32), ``scores`` and ``class_names`` (string).
``DIR/1/`` is the version folder of a Triton model repository entry. ``serving_bytes`` does not
carry over (ONNX has no image decoding): clients send decoded float images.

Optional dependencies: ``pip install efficientnet_tf[onnx]`` (tf2onnx, onnx, onnxruntime).
"""

from __future__ import annotations

import logging as py_logging
import os
import tempfile
from typing import Dict, List, Optional, Sequence

import numpy as np

from export import progress
from export.exporter import Exporter
from export.job import ExportJob
from export.verify import Tolerance, Verification
from export import serving
import tensorflow as tf

VERSION = "1"
FILENAME = "model.onnx"
# 17: the opset ONNX Runtime >= 1.11 and TensorRT >= 8.6 read; every op of our graph (Conv,
# Sigmoid, Mul, ReduceMean, Softmax, TopK, Gather, If) exists there unchanged.
OPSET = 17
INSTALL_HINT = "pip install efficientnet_tf[onnx]  (or: pip install tf2onnx onnx onnxruntime)"
OUTPUTS = ("class_names", "classes", "probabilities", "scores")
# Other kernels than TF's (MLAS in ONNX Runtime), same float32 math: TF-Lite's tolerance.
TOLERANCE = Tolerance(rtol=1e-3, atol=1e-4)
# A protobuf holds at most 2 GB; above this the weights would need ONNX's external data files.
MAX_WEIGHT_BYTES = 1800 * 2**20


def _require(module: str, what: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(f"Export format 'onnx' needs {what}, which is not installed ({err}). "
                          f"Install it with: {INSTALL_HINT}") from None


def require_converter():
    """The ``tf2onnx`` module, or an ImportError saying how to install it."""
    _require("onnx", "the onnx package")
    return _require("tf2onnx", "the tf2onnx converter")


def require_runtime():
    """The ``onnxruntime`` module, or an ImportError saying how to install it."""
    return _require("onnxruntime", "ONNX Runtime")


def session(path: str, threads: Optional[int] = None):
    """An ONNX Runtime CPU session for ``path`` (``threads``: intra-op threads, default ORT's)."""
    ort = require_runtime()
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def run(sess, images: np.ndarray) -> Dict[str, np.ndarray]:
    """Runs a session on float images [batch, S, S, 3]; outputs by name."""
    names = [o.name for o in sess.get_outputs()]
    values = sess.run(names, {sess.get_inputs()[0].name: np.ascontiguousarray(images, np.float32)})
    return dict(zip(names, values))


def convert_saved_model(saved_model_dir: str, path: str, image_size: int, opset: int = OPSET) -> None:
    """Converts ``serving_default`` of the SavedModel at ``saved_model_dir`` to the ONNX file
    ``path`` with input ``images`` [batch (free), image_size, image_size, 3]."""
    tf2onnx = require_converter()
    import onnx
    from tf2onnx import tf_loader

    if not os.path.isfile(os.path.join(saved_model_dir, "saved_model.pb")):
        raise ValueError(f"{saved_model_dir!r} is not a SavedModel directory (no saved_model.pb)")
    quiet = py_logging.getLogger("tf2onnx")
    level = quiet.level
    quiet.setLevel(py_logging.ERROR)  # tf2onnx logs every rewrite at INFO
    try:
        graph_def, inputs, outputs, renames = tf_loader.from_saved_model(
            saved_model_dir, None, None, tag="serve", signatures=["serving_default"],
            return_tensors_to_rename=True)
        if len(inputs) != 1:
            raise ValueError(f"serving_default has inputs {inputs}; expected one (images)")
        model, _ = tf2onnx.convert.from_graph_def(
            graph_def, name="efficientnet", input_names=inputs, output_names=outputs, opset=opset,
            shape_override={inputs[0]: [None, image_size, image_size, 3]}, tensors_to_rename=renames)
    finally:
        quiet.setLevel(level)
    onnx.checker.check_model(model)
    onnx.save(model, path)


def export(job: ExportJob, staging_dir: str) -> List[str]:
    """The serving SavedModel (written and verified like format ``saved_model``, in a scratch
    directory), converted to ``staging_dir/1/model.onnx``."""

    require_converter()
    version_dir = os.path.join(staging_dir, VERSION)
    os.makedirs(version_dir, exist_ok=True)
    path = os.path.join(version_dir, FILENAME)
    with tempfile.TemporaryDirectory(prefix="onnx-src-") as scratch:
        serving.export(job, scratch)
        serving.verify(job, scratch)
        with progress.step(f"onnx: converting the SavedModel (tf2onnx, opset {OPSET})"):
            convert_saved_model(os.path.join(scratch, serving.VERSION), path, job.image_size)
    return [path]


def verify_onnx(path: str, images: np.ndarray, expected: np.ndarray, record: Verification, image_size: int,
                class_names: Optional[Sequence[str]] = None, tolerance: Tolerance = TOLERANCE) -> Verification:
    """Reloads ``path`` in ONNX Runtime: input ``images`` [free batch, S, S, 3], the
    serving_default outputs, probabilities within ``tolerance`` of ``expected`` at the full batch
    and at batch 1, top-k consistent with them. Records every check (VerificationError on the
    first that fails)."""
    import onnx

    with progress.step("onnx: reloading in ONNX Runtime and comparing"):
        opset = {o.domain: o.version for o in onnx.load(path, load_external_data=False).opset_import}.get("")
        record.equal("onnx/opset", opset, OPSET, f"ONNX file has opset {opset}, expected {OPSET}")
        sess = session(path)
        inp = sess.get_inputs()[0]
        free_batch = isinstance(inp.shape[0], str) or inp.shape[0] is None
        record.equal("onnx/input", (inp.name, inp.type, free_batch, list(inp.shape[1:])),
                     ("images", "tensor(float)", True, [image_size, image_size, 3]),
                     f"ONNX input is {inp.name} {inp.type} {inp.shape}")
        outputs = run(sess, images)
        record.equal("onnx/outputs", sorted(outputs), sorted(OUTPUTS), f"ONNX model has outputs {sorted(outputs)}")
        record.close("onnx/probabilities", expected, outputs["probabilities"], tolerance)
        single = run(sess, images[:1])
        record.close("onnx/probabilities_batch1", expected[:1], single["probabilities"], tolerance)
        top1 = outputs["classes"][:, 0]
        record.equal("onnx/classes_are_top1", top1.tolist(), outputs["probabilities"].argmax(-1).tolist(),
                     f"onnx classes {top1} are not the most probable ones")
        if class_names is not None:
            got = [n.decode() if isinstance(n, bytes) else str(n) for n in outputs["class_names"][:, 0]]
            record.equal("onnx/class_names", got, [class_names[i] for i in top1],
                         f"onnx class_names {got} do not name classes {list(top1)}")
        record.notes.append(f"onnx top-1 agrees with Keras on {int((top1 == np.asarray(expected).argmax(-1)).sum())} "
                            f"of {len(images)} verification images")
    return record


def verify(job: ExportJob, staging_dir: str) -> Verification:
    expected = tf.nn.softmax(job.reference["logits"], axis=-1).numpy()
    path = os.path.join(staging_dir, VERSION, FILENAME)
    record = verify_onnx(path, job.batch, expected, Verification(ONNXExporter.name), job.image_size, job.class_names)
    ort = require_runtime()
    record.notes.append(f"onnx opset {OPSET}, {os.path.getsize(path) / 2**20:.1f} MiB float32, checked in "
                        f"onnxruntime {ort.__version__}; serving_bytes (image decoding) is not carried over")
    return record


class ONNXExporter(Exporter):
    name = "onnx"
    layout = f"DIR/1/model.onnx: ONNX (opset {OPSET}) for ONNX Runtime / Triton / TensorRT (float32)"

    def check(self, job: ExportJob) -> None:
        super().check(job)
        require_converter()  # a clear ImportError before any work
        require_runtime()
        if not job.num_classes:
            raise ValueError("Format onnx is converted from the serving SavedModel, which serves a classifier; "
                             "the model has none (include_top=False).")
        if 4 * job.endpoints.count_params() > MAX_WEIGHT_BYTES:
            raise ValueError(f"Format onnx: {job.model_name} has {4 * job.endpoints.count_params() / 2**30:.1f} GiB "
                             f"of weights, beyond what one ONNX protobuf holds ({MAX_WEIGHT_BYTES / 2**30:.2f} GiB)")

    def export(self, job: ExportJob, out_dir: str) -> None:
        export(job, out_dir)

    def verify(self, job: ExportJob, out_dir: str) -> Verification:
        return verify(job, out_dir)


EXPORTER = ONNXExporter()
