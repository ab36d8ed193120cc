"""Exporters: an efficientnet_tf Keras model -> every format in ``export.formats.FORMATS``
(``python -m export.main --helpfull`` lists them with their layouts). Every export is reloaded
and compared with the Keras model before it is moved into place; a quantized one is accepted on
its measured accuracy cost (``export.accuracy``).

    from export import export_model, export_formats
    result = export_model(model, "/tmp/b0_hub", format="hub")      # DIR holds the format
    print(result.summary())
    results = export_formats(model, "/tmp/b0", ["hub", "tflite"])   # DIR/hub, DIR/tflite
    print(summary_table(results))

Command line: ``python -m export.main --help``.

The format protocol (``export/exporter.py``): each format is an :class:`~export.exporter.Exporter`
with ``name`` (the ``--format`` value), ``layout`` (one line: what is written under DIR),
``quantize_modes``, ``check(job)`` (ValueError before any work), ``export(job, out_dir)`` (write
into an empty temporary directory) and ``verify(job, out_dir) -> Verification`` (reload, compare
with ``job.reference`` on ``job.batch``, return the record of checks; raise VerificationError on
the first failing one). ``job`` is an :class:`~export.job.ExportJob`: the model, its endpoints
model, variant, image size, classes, weights description and options. Adding a format: one
module defining ``EXPORTER = MyExporter()`` and one row in ``export/formats.py`` ``FORMATS``;
import optional heavy dependencies (a converter, a runtime) inside its methods, so that the
other formats work without them.

The parts: ``job.py`` (the job and its facts), ``verify.py`` (tolerances, comparisons, check
records), ``atomic.py`` (temp + rename directories, JSON), ``photos.py`` (the photo catalog),
``trace.py`` (tracing Keras into TF graphs), ``progress.py`` (console steps).
"""

from __future__ import annotations

import gc
import os
import time
from typing import List, Optional, Sequence, Union

import numpy as np
from absl import logging

from export.atomic import ExportWriteError, atomic_export_dir, check_target, write_json
from export.exporter import INFO_FILENAME, ExportResult, summary_table
from export.accuracy import DEFAULT_MAX_DROP
from export.job import QUANTIZE_MODES, ExportJob, prepare
from export.verify import VerificationError
from export.formats import FORMATS
from export import accuracy

ALL = "all"


def parse_formats(formats: Union[str, Sequence[str]]) -> List[str]:
    """``"hub"``, ``"hub,tflite"``, ``"all"`` or a list of names -> the list of format names
    (unknown names are a ValueError listing the valid ones)."""

    names = [f.strip() for f in formats.split(",")] if isinstance(formats, str) else list(formats)
    if names == [ALL]:
        return list(FORMATS)
    unknown = [n for n in names if n not in FORMATS]
    if unknown or not names or len(set(names)) != len(names):
        what = f"Unknown format {unknown[0]!r}" if unknown else f"Bad format list {formats!r}"
        raise ValueError(f"{what}; valid values: {', '.join(FORMATS)}, a comma-separated list of them "
                         f"(each once), or {ALL!r}")
    return names


def check_quantize(quantize: Optional[str], names: Sequence[str], eval_data: Optional[str] = None,
                   max_accuracy_drop: float = DEFAULT_MAX_DROP) -> None:
    """ValueError before any work for a quantize mode no named format implements, or accuracy
    options that cannot apply."""

    if isinstance(max_accuracy_drop, bool) or not isinstance(max_accuracy_drop, (int, float)) \
            or not 0 <= max_accuracy_drop <= 100:
        raise ValueError(f"max_accuracy_drop must be a number of points in [0, 100], got {max_accuracy_drop!r}")
    if quantize is None:
        if eval_data is not None:
            raise ValueError(f"eval_data={eval_data!r} measures what quantization costs; it needs quantize "
                             f"(valid values: {', '.join(QUANTIZE_MODES)})")
        return
    if quantize not in QUANTIZE_MODES:
        raise ValueError(f"Unknown quantize {quantize!r}; valid values: {', '.join(QUANTIZE_MODES)}")
    takers = [n for n in names if quantize in FORMATS[n].quantize_modes]
    if not takers:
        valid = [n for n, e in FORMATS.items() if quantize in e.quantize_modes]
        raise ValueError(f"quantize={quantize!r} applies to format {' or '.join(map(repr, valid))} only, "
                         f"not {', '.join(map(repr, names))}")


def _attach_eval_data(job: ExportJob, eval_data: Optional[str], max_accuracy_drop: float) -> None:
    """Loads and checks the evaluation data against the model's classes (before any work)."""

    job.max_accuracy_drop = float(max_accuracy_drop)
    if eval_data is not None:
        job.eval_data = os.fspath(eval_data)
        job.eval_set = accuracy.load(job.eval_data, job.num_classes, job.class_names)


# Trained EfficientNets give logits of order 10 on photographs; random weights without
# calibrated batch-norm statistics reached ~2000 (V2-S), where float rounding alone moves
# outputs past the tolerances.
ILL_CONDITIONED_LOGITS = 100.0


def _conditioning_hint(job: ExportJob) -> str:
    logits = job.reference.get("logits")
    if logits is None:
        return ""
    largest = float(np.abs(logits).max())
    if largest <= ILL_CONDITIONED_LOGITS:
        return ""
    return (f". The model's logits reach {largest:.4g} on the verification batch (a trained "
            f"EfficientNet's are of order 10): float rounding alone is amplified that far by "
            f"weights like these (untrained, or batch-norm statistics never calibrated), so "
            f"check the weights (--weights) before suspecting the exporter")


def _export_one(job: ExportJob, name: str, staging: str, final: str) -> ExportResult:
    """Exports and verifies ``name`` into ``staging`` (an empty directory that becomes ``final``)."""

    exporter = FORMATS[name]
    quantize = job.quantize if job.quantize in exporter.quantize_modes else None
    started = time.perf_counter()
    logging.info("Exporting %s as %s to %s (%s)", job.model_name, name, final, exporter.layout)
    exporter.export(job, staging)
    gc.collect()
    try:
        record = exporter.verify(job, staging)
    except VerificationError as err:
        raise VerificationError(f"format {name}: {err}{_conditioning_hint(job)}", err.checks) from err
    cost = None
    if quantize and job.num_classes:
        try:  # the measured cost decides whether a quantized export is accepted
            cost = accuracy.measure(job, lambda images: exporter.predict(job, staging, images), record,
                                    f"{name}_{quantize}")
        except VerificationError as err:
            raise VerificationError(f"format {name}: {err}", err.checks) from err
    gc.collect()  # drop the reloaded objects before the directory moves
    seconds = time.perf_counter() - started
    write_json(os.path.join(staging, INFO_FILENAME), dict(
        job.info(), format=name, layout=exporter.layout, quantize=quantize, export_seconds=round(seconds, 1),
        accuracy_cost=cost,
        verification={"batch": f"{len(job.batch)} images ({len(job.batch) - 1} photographs, 1 noise)",
                      "max_abs_diff": record.diffs, "limits": record.limits,
                      "checks": [c.as_json() for c in record.checks], "notes": record.notes}))
    paths = sorted(os.path.join(final, os.path.relpath(os.path.join(root, f), staging))
                   for root, _, files in os.walk(staging) for f in files)
    result = ExportResult(name, final, job.model_name, job.image_size, paths, record.diffs, record.limits,
                          seconds, quantize, list(record.notes), list(record.checks), cost)
    logging.info("Exported and verified %s in %.1fs: %s", final, result.seconds, "; ".join(
        f"{key} max-abs diff {diff:.3g} (limit {limit:.3g})" for key, diff, limit in result.worst.values()))
    return result


def export_formats(model, export_dir: str, formats: Union[str, Sequence[str]] = ALL, *,
                   model_name: Optional[str] = None, image_size: Optional[int] = None, overwrite: bool = False,
                   quantize: Optional[str] = None, class_names: Optional[Sequence[str]] = None,
                   calibration_images: Optional[Sequence] = None, weights: Optional[str] = None,
                   eval_data: Optional[str] = None, max_accuracy_drop: float = DEFAULT_MAX_DROP
                   ) -> List[ExportResult]:
    """Exports ``model`` in several formats at once: ``export_dir/<format>/`` each (the layout
    ``export_model`` gives DIR), from one prepared model and one verification batch.

    ``formats``: names, a comma-separated string, or ``"all"``. ``quantize`` applies to the
    formats that quantize (tflite). All formats are written into one temporary directory that is
    renamed to ``export_dir`` only when every one has been verified: any failure leaves nothing
    at ``export_dir`` (and a previous export there untouched). Arguments and errors as
    :func:`export_model`.
    """

    names = parse_formats(formats)
    check_quantize(quantize, names, eval_data, max_accuracy_drop)
    check_target(export_dir, overwrite)
    job = prepare(model, model_name, image_size, class_names, weights, quantize, calibration_images)
    _attach_eval_data(job, eval_data, max_accuracy_drop)
    for name in names:
        FORMATS[name].check(job)
    export_dir = os.path.abspath(os.fspath(export_dir))
    results = []
    with atomic_export_dir(export_dir, overwrite) as staging:
        for name in names:
            os.mkdir(os.path.join(staging, name))
            results.append(_export_one(job, name, os.path.join(staging, name), os.path.join(export_dir, name)))
        write_json(os.path.join(staging, INFO_FILENAME), dict(job.info(), formats=[
            {"format": r.format, "path": r.format, "layout": FORMATS[r.format].layout, "quantize": r.quantize,
             "accuracy_cost": r.accuracy,
             "checks_passed": sum(c.passed for c in r.checks), "export_seconds": round(r.seconds, 1)}
            for r in results]))
    return results


def export_model(model, export_dir: str, format: str = "hub", *, model_name: Optional[str] = None,
                 image_size: Optional[int] = None, overwrite: bool = False, quantize: Optional[str] = None,
                 class_names: Optional[Sequence[str]] = None, calibration_images: Optional[Sequence] = None,
                 weights: Optional[str] = None, eval_data: Optional[str] = None,
                 max_accuracy_drop: float = DEFAULT_MAX_DROP) -> ExportResult:
    """Exports ``model`` (an efficientnet_tf Keras model, float32) in ``format`` to ``export_dir``.

    model_name: the variant (default: the one the model's spec records); gives the default image size and the
      evaluation preprocessing of the serving signature.
    image_size: the documented input size and the size the export is verified at (default: the
      variant's resolution); TF-Lite models take exactly this size.
    overwrite: replace an existing ``export_dir`` (only once the new export has been verified).
    quantize: ``"int8"`` for full-integer TF-Lite; None otherwise.
    class_names: names of the classes (default: ImageNet labels for 1000 classes).
    calibration_images: int8 representative data (files, encoded bytes or arrays).
    weights: a description of where the weights came from, recorded in ``export_info.json``.
    eval_data: labeled data on which a quantized export's top-1 is compared with the float
      model's (``export.accuracy``: "digits", a folder root/<class>/, a TFDS name).
    max_accuracy_drop: points of top-1 on ``eval_data`` a quantized export may lose (more: a
      VerificationError with both accuracies, nothing written).

    Raises ValueError on bad arguments, FileExistsError when ``export_dir`` exists and not
    ``overwrite``, VerificationError when the reloaded export does not match the model and
    ExportWriteError (an OSError) when writing fails, e.g. on a full disk (nothing is left at
    ``export_dir`` then, and a previous export there is untouched).
    """

    if not isinstance(format, str) or format not in FORMATS:
        raise ValueError(f"Unknown format {format!r}; valid values: {', '.join(FORMATS)} "
                         "(several at once: export_formats)")
    check_quantize(quantize, [format], eval_data, max_accuracy_drop)
    started = time.perf_counter()
    check_target(export_dir, overwrite)
    job = prepare(model, model_name, image_size, class_names, weights, quantize, calibration_images)
    _attach_eval_data(job, eval_data, max_accuracy_drop)
    FORMATS[format].check(job)
    export_dir = os.path.abspath(os.fspath(export_dir))
    with atomic_export_dir(export_dir, overwrite) as staging:
        result = _export_one(job, format, staging, export_dir)
    result.seconds = time.perf_counter() - started
    return result


__all__ = ["ExportJob", "ExportResult", "ExportWriteError", "FORMATS", "QUANTIZE_MODES", "VerificationError",
           "export_formats", "export_model", "parse_formats", "summary_table"]
