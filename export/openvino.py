"""Format ``openvino``: ``DIR/1/model.xml`` + ``DIR/1/model.bin``, OpenVINO's IR in the versioned
layout OpenVINO Model Server reads (``<model_base_path>/<version>/``).

Built from the project's verified serving SavedModel (format ``saved_model``) with OpenVINO's own
converter (``openvino.convert_model``, its TensorFlow frontend), weights kept in float32, then
reloaded with the OpenVINO runtime and compared with the Keras model. What carries over is the
``serving_default`` signature: input ``images`` float32 [batch, S, S, 3] in [0, 1] (batch free,
S the export's image size), outputs ``probabilities``, ``classes``, ``scores``, ``class_names``.
The ``serving_bytes`` signature does not: its decode ops (DecodeImage and the crop/resize
around them) have no OpenVINO counterpart, so clients send decoded float images.

Optional dependency: ``pip install efficientnet_tf[openvino]``.
"""

from __future__ import annotations

import os
import tempfile
from typing import Dict, List, Optional, Sequence

import numpy as np

from export import progress, serving
from export.exporter import Exporter
from export.job import ExportJob
from export.verify import Tolerance, Verification, VerificationError

VERSION = "1"
XML, BIN = "model.xml", "model.bin"
INSTALL_HINT = "pip install efficientnet_tf[openvino]  (or: pip install openvino)"
# Other kernels than TF's (oneDNN/JIT in OpenVINO), same float32 math: TF-Lite's tolerance.
TOLERANCE = Tolerance(rtol=1e-3, atol=1e-4)
# float32 everywhere: on CPUs with bf16 units OpenVINO may otherwise pick bf16 kernels.
CPU_CONFIG = {"INFERENCE_PRECISION_HINT": "f32"}


def require_openvino():
    """The ``openvino`` module, or an ImportError saying how to install it."""
    try:
        import openvino
    except ImportError as err:
        raise ImportError(f"Export format 'openvino' needs the OpenVINO runtime, which is not "
                          f"installed ({err}). Install it with: {INSTALL_HINT}") from None
    return openvino


def compile_model(path_or_model, device: str = "CPU", config: Optional[Dict[str, str]] = None):
    """An OpenVINO compiled model (float32 on CPU) from an IR ``.xml``, a SavedModel directory
    (OpenVINO's TensorFlow reader) or an ``openvino.Model``."""
    ov = require_openvino()
    core = ov.Core()
    model = core.read_model(path_or_model) if isinstance(path_or_model, str) else path_or_model
    return core.compile_model(model, device, {**CPU_CONFIG, **(config or {})})


def run(compiled, images: np.ndarray) -> Dict[str, np.ndarray]:
    """One inference request on float images; outputs by tensor name."""
    request = compiled.create_infer_request()
    request.infer({0: np.ascontiguousarray(images, np.float32)})
    outputs = {}
    for port in compiled.outputs:
        value = request.get_tensor(port)
        data = value.str_data if str(port.get_element_type()) == "<Type: 'string'>" else value.data
        outputs[port.get_any_name()] = np.array(data, copy=True)
    return outputs


def export_openvino(saved_model_dir: str, out_dir: str, image_size: Optional[int] = None) -> List[str]:
    """Converts the serving SavedModel at ``saved_model_dir`` (its ``serving_default``) to
    ``out_dir/1/model.{xml,bin}``; ``image_size`` fixes the spatial input dims (batch stays
    free), which lets OpenVINO plan its kernels for that size. Returns the written paths."""
    ov = require_openvino()
    if not os.path.isfile(os.path.join(saved_model_dir, "saved_model.pb")):
        raise ValueError(f"{saved_model_dir!r} is not a SavedModel directory (no saved_model.pb)")
    kwargs = {}
    if image_size is not None:
        kwargs["input"] = [-1, image_size, image_size, 3]
    with progress.step("openvino: converting the SavedModel (openvino.convert_model)"):
        model = ov.convert_model(saved_model_dir, **kwargs)
    names = {p.get_any_name() for p in model.inputs}
    if names != {"images"}:
        raise VerificationError(f"Converted model has inputs {sorted(names)}, expected ['images']")
    version_dir = os.path.join(out_dir, VERSION)
    os.makedirs(version_dir, exist_ok=True)
    xml = os.path.join(version_dir, XML)
    ov.save_model(model, xml, compress_to_fp16=False)  # the default would halve the weights to fp16
    return [xml, os.path.join(version_dir, BIN)]


def verify_openvino(out_dir: str, images: np.ndarray, expected: np.ndarray, record: Verification,
                    tolerance: Tolerance = TOLERANCE, class_names: Optional[Sequence[str]] = None) -> Verification:
    """Reloads ``out_dir/1/model.xml`` with the OpenVINO runtime and compares its probabilities
    with ``expected`` (the Keras model's); the top-k outputs must agree with them. Records every
    check in ``record`` (VerificationError on the first that fails)."""
    xml = os.path.join(out_dir, VERSION, XML)
    with progress.step("openvino: reloading with the OpenVINO runtime and comparing"):
        compiled = compile_model(xml)
        outputs = run(compiled, images)
    record.equal("openvino/outputs", sorted({"probabilities", "classes", "scores"} & set(outputs)),
                 ["classes", "probabilities", "scores"], f"OpenVINO model has outputs {sorted(outputs)}")
    record.close("openvino/probabilities", expected, outputs["probabilities"], tolerance)
    top1 = outputs["classes"][:, 0]
    record.equal("openvino/classes_are_top1", bool(np.array_equal(top1, outputs["probabilities"].argmax(-1))), True,
                 f"openvino classes {top1} are not the most probable ones")
    record.notes.append(f"openvino top-1 agrees with Keras on {int((top1 == np.asarray(expected).argmax(-1)).sum())} "
                        f"of {len(images)} verification images")
    if class_names is not None and "class_names" in outputs:
        got = [n.decode() if isinstance(n, bytes) else str(n) for n in outputs["class_names"][:, 0]]
        record.equal("openvino/class_names", got, [class_names[i] for i in top1],
                     f"openvino class_names {got} do not name classes {list(top1)}")
    return record


def export(job: ExportJob, staging_dir: str) -> List[str]:
    """The serving SavedModel (written and verified like format ``saved_model``, in a scratch
    directory), converted to ``staging_dir/1/``."""

    require_openvino()
    with tempfile.TemporaryDirectory(prefix="openvino-src-") as scratch:
        serving.export(job, scratch)
        serving.verify(job, scratch)
        return export_openvino(os.path.join(scratch, serving.VERSION), staging_dir, job.image_size)


def verify(job: ExportJob, staging_dir: str) -> Verification:
    expected = job.scores(job.reference["logits"]).numpy()
    record = verify_openvino(staging_dir, job.batch, expected, Verification(OpenVINOExporter.name),
                             TOLERANCE, job.class_names)
    ov = require_openvino()
    record.notes.append(f"openvino {ov.__version__.split('-')[0]}: {VERSION}/{XML} + {BIN} "
                        f"({os.path.getsize(os.path.join(staging_dir, VERSION, BIN)) / 2**20:.1f} MiB float32); "
                        "serving_bytes (image decoding) is not carried over")
    return record


class OpenVINOExporter(Exporter):
    name = "openvino"
    layout = "DIR/1/model.xml + model.bin: OpenVINO IR for OpenVINO Model Server (float32)"

    def check(self, job: ExportJob) -> None:
        super().check(job)
        require_openvino()  # a clear ImportError before any work
        if not job.num_classes:
            raise ValueError("Format openvino is converted from the serving SavedModel, which serves a classifier; "
                             "the model has none (include_top=False).")

    def export(self, job: ExportJob, out_dir: str) -> None:
        export(job, out_dir)

    def verify(self, job: ExportJob, out_dir: str) -> Verification:
        return verify(job, out_dir)


EXPORTER = OpenVINOExporter()
