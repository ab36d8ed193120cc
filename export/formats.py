"""The table of export formats: ``--format`` name -> exporter (protocol: ``export.exporter``).
Adding a format is one new module and one row here."""

from __future__ import annotations

from typing import Dict

from export import hub_tf1, hub_tf2, onnx, openvino, serving, tflite
from export.exporter import Exporter

FORMATS: Dict[str, Exporter] = {exporter.name: exporter for exporter in (
    hub_tf2.EXPORTER,
    hub_tf1.EXPORTER,
    serving.EXPORTER,
    tflite.EXPORTER,
    openvino.EXPORTER,  # optional dependency: its check() names the pip install
    onnx.EXPORTER,  # optional dependencies (tf2onnx, onnxruntime), likewise
)}
