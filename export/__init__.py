"""Exporters: an efficientnet_tf Keras model -> TF-Hub modules (TF2 and TF1 formats), a TF Serving
SavedModel, or TF-Lite. Every export is reloaded and compared with the Keras model before it is
moved into place.

    from export import export_model
    result = export_model(model, "/tmp/b0_hub", format="hub")
    print(result.summary())

Command line: ``python -m export.main --help``.
"""

from __future__ import annotations

import gc
import os
import time
from typing import Optional, Sequence

from absl import logging

from export.common import (FORMATS, INFO_FILENAME, QUANTIZE_MODES, ExportResult, VerificationError,
                           atomic_export_dir, prepare, reference_batch, reference_outputs, write_json)

LAYOUT = {
    "hub": "DIR/classification and DIR/feature_vector: TF2 reusable SavedModels for hub.KerasLayer",
    "hub_tf1": "DIR: TF1 Hub module (tfhub_module.pb; tag sets {} and {'train'})",
    "saved_model": "DIR/1: SavedModel for TF Serving (tag 'serve'; serving_default, serving_bytes)",
    "tflite": "DIR/model.tflite (+ labels.txt)",
    "openvino": "DIR/1/model.xml + model.bin: OpenVINO IR for OpenVINO Model Server (float32)",
}


def _check_choice(name, value, valid):
    if value not in valid:
        raise ValueError(f"Unknown {name} {value!r}; valid values: {', '.join(str(v) for v in valid)}")


def export_model(model, export_dir: str, format: str = "hub", *, model_name: Optional[str] = None,
                 image_size: Optional[int] = None, overwrite: bool = False, quantize: Optional[str] = None,
                 class_names: Optional[Sequence[str]] = None, calibration_images: Optional[Sequence] = None,
                 weights: Optional[str] = None) -> ExportResult:
    """Exports ``model`` (an efficientnet_tf Keras model, float32) in ``format`` to ``export_dir``.

    model_name: the variant (default: ``model.name``); gives the default image size and the
      evaluation preprocessing of the serving signature.
    image_size: the documented input size and the size the export is verified at (default: the
      variant's resolution); TF-Lite models take exactly this size.
    overwrite: replace an existing ``export_dir`` (only once the new export has been verified).
    quantize: ``"int8"`` for full-integer TF-Lite; None otherwise.
    class_names: names of the classes (default: ImageNet labels for 1000 classes).
    calibration_images: int8 representative data (files, encoded bytes or arrays).
    weights: a description of where the weights came from, recorded in ``export_info.json``.

    Raises ValueError on bad arguments, FileExistsError when ``export_dir`` exists and not
    ``overwrite``, VerificationError when the reloaded export does not match the model (nothing is
    left at ``export_dir`` then).
    """
    from export import hub_tf1, hub_tf2, openvino, serving, tflite

    _check_choice("format", format, FORMATS)
    if quantize is not None:
        _check_choice("quantize", quantize, QUANTIZE_MODES)
        if format != "tflite":
            raise ValueError(f"quantize={quantize!r} applies to format 'tflite' only, not {format!r}")
    if calibration_images is not None and quantize is None:
        raise ValueError("calibration_images are only used with quantize='int8'")
    if format == "openvino":
        openvino.require_openvino()  # before any work: a clear error when it is not installed
    started = time.perf_counter()
    prepared = prepare(model, model_name, image_size, class_names, weights)
    export_dir = os.path.abspath(os.fspath(export_dir))
    logging.info("Exporting %s as %s to %s (%s)", prepared.model_name, format, export_dir, LAYOUT[format])
    results, limits, notes = {}, {}, []
    with atomic_export_dir(export_dir, overwrite) as staging:
        batch = reference_batch(prepared)
        reference = reference_outputs(prepared, batch)
        if format == "hub":
            hub_tf2.export(prepared, staging)
            hub_tf2.verify(prepared, staging, batch, reference, results, limits)
        elif format == "hub_tf1":
            hub_tf1.export(prepared, staging)
            hub_tf1.verify(prepared, staging, batch, reference, results, limits)
        elif format == "saved_model":
            serving.export(prepared, staging)
            notes += serving.verify(prepared, staging, batch, reference, results, limits)
        elif format == "openvino":
            openvino.export(prepared, staging)
            notes += openvino.verify(prepared, staging, batch, reference, results, limits)
        else:
            tflite.export(prepared, staging, quantize, calibration_images)
            notes += tflite.verify(prepared, staging, batch, reference, results, limits, quantize)
        gc.collect()  # drop the reloaded objects before the directory moves
        seconds = time.perf_counter() - started
        write_json(os.path.join(staging, INFO_FILENAME), dict(
            prepared.info(), format=format, layout=LAYOUT[format], quantize=quantize, export_seconds=round(seconds, 1),
            verification={"batch": f"{len(batch)} images ({len(batch) - 1} photographs, 1 noise)",
                          "max_abs_diff": results, "limits": limits}))
        paths = sorted(os.path.relpath(os.path.join(root, f), staging)
                       for root, _, files in os.walk(staging) for f in files)
    result = ExportResult(format, export_dir, prepared.model_name, prepared.image_size,
                          [os.path.join(export_dir, p) for p in paths], results, limits,
                          time.perf_counter() - started, quantize, notes)
    logging.info("Exported and verified %s in %.1fs: %s", export_dir, result.seconds, "; ".join(
        f"{key} max-abs diff {diff:.3g} (limit {limit:.3g})" for key, diff, limit in result.worst.values()))
    return result


__all__ = ["ExportResult", "FORMATS", "QUANTIZE_MODES", "VerificationError", "export_model"]
