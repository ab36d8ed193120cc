"""The protocol every export format implements, and the result of one export.

A format is one object with

- ``name``: the ``--format`` value; ``layout``: one line saying what is written under DIR;
- ``quantize_modes``: the ``job.quantize`` values it implements (empty: it never reads it);
- ``check(job)``: raises ValueError before any work when the job cannot be exported in this
  format (e.g. serving needs a classifier);
- ``export(job, out_dir)``: writes the format into ``out_dir`` (an empty temporary directory;
  the caller renames it into place only after verification);
- ``verify(job, out_dir) -> Verification``: reloads what was written the way users load it and
  compares it with the Keras model on ``job.batch`` / ``job.reference``; returns the record of
  every check and raises VerificationError at the first failing one;
- ``predict(job, out_dir, images) -> scores`` (formats with ``quantize_modes`` only): the written
  export's class scores on float images, from which ``export.accuracy`` measures what a
  quantization costs.

Register it with one row in ``export.formats.FORMATS``.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Optional, Tuple

from export.verify import Check, Verification

INFO_FILENAME = "export_info.json"


def main_signature(classifier: bool) -> str:
    """The signature a hub module's default call maps to (TF1 ``default``, TF2
    ``serving_default``, and so ``hub.KerasLayer`` without ``signature=``): the classifier's
    where the module has one, else the feature vector."""
    return "image_classification" if classifier else "image_feature_vector"


class Exporter:
    """Base class of the formats (see the module docstring); subclasses set the attributes and
    implement export and verify."""

    name: str = ""
    layout: str = ""
    quantize_modes: Tuple[str, ...] = ()

    def check(self, job) -> None:
        """Raises ValueError when ``job`` cannot be exported in this format (default: any can)."""

    def export(self, job, out_dir: str) -> None:
        raise NotImplementedError

    def verify(self, job, out_dir: str) -> Verification:
        raise NotImplementedError

    def predict(self, job, out_dir: str, images):
        """Class scores [N, classes] of the export in ``out_dir`` on float images [N, S, S, 3] in
        [0, 1] (implemented by the formats that quantize)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<export format {self.name!r}: {self.layout}>"


@dataclasses.dataclass
class ExportResult:
    """What an export wrote and how closely its reloaded form matched the Keras model."""

    format: str
    export_dir: str
    model_name: str
    image_size: int
    paths: List[str]
    max_abs_diff: Dict[str, float]  # per checked output, e.g. "classification/__call__"
    limits: Dict[str, float]  # the tolerance each diff was held to
    seconds: float
    quantize: Optional[str] = None
    notes: List[str] = dataclasses.field(default_factory=list)
    checks: List[Check] = dataclasses.field(default_factory=list)  # every check, in order
    accuracy: Optional[Dict[str, object]] = None  # quantized exports: export.accuracy.measure's numbers

    def accuracy_text(self) -> str:
        """The accuracy cost in a few words ("-" for exports that do not quantize)."""
        if not self.accuracy:
            return "-"
        parts = []
        if "eval" in self.accuracy:
            e = self.accuracy["eval"]
            parts.append(f"top-1 {e['float_top1']:.1f}% -> {e['quantized_top1']:.1f}% ({e['images']} images)")
        if "photos" in self.accuracy:
            parts.append(f"agrees on {self.accuracy['photos']['top1_agreement']:.0%} of photos")
        return "; ".join(parts) or "-"

    @property
    def worst(self) -> Dict[str, Tuple[str, float, float]]:
        """Per group (the first part of the keys, e.g. a module): the output closest to its limit,
        as (key, max-abs diff, limit)."""
        groups: Dict[str, Tuple[str, float, float]] = {}
        for key, diff in self.max_abs_diff.items():
            group, limit = key.split("/")[0], self.limits[key]
            old = groups.get(group)
            if old is None or diff / max(limit, 1e-30) > old[1] / max(old[2], 1e-30):
                groups[group] = (key, diff, limit)
        return groups

    def summary(self) -> str:
        lines = [f"Exported {self.model_name} ({self.format}{', ' + self.quantize if self.quantize else ''}, "
                 f"{self.image_size}x{self.image_size}) to {self.export_dir} in {self.seconds:.1f}s; "
                 f"{len(self.max_abs_diff)} reloaded outputs match the Keras model "
                 f"(all diffs: {INFO_FILENAME}). Closest to its limit:"]
        for key, diff, limit in self.worst.values():
            lines.append(f"  {key}: max-abs diff {diff:.3g} (limit {limit:.3g})")
        others = [c for c in self.checks if c.kind != "max_abs_diff"]
        if others:
            lines.append(f"  and {len(others)} other checks passed (layout, signatures, sizes, statistics)")
        lines.extend(f"  {n}" for n in self.notes)
        if self.accuracy:
            lines.append(f"  accuracy cost: {self.accuracy_text()}")
        return "\n".join(lines)

    def closest(self) -> str:
        """The one check closest to its limit, as text (for the summary table)."""
        if not self.max_abs_diff:
            return "-"
        key = max(self.max_abs_diff, key=lambda k: self.max_abs_diff[k] / max(self.limits[k], 1e-30))
        return f"{key} {self.max_abs_diff[key]:.2g} / {self.limits[key]:.2g}"


def summary_table(results: List[ExportResult]) -> str:
    """One line per format: where, how many checks passed, the closest diff, the time."""
    rows = [("format", "written to", "checks", "closest to its limit (diff / limit)", "accuracy cost", "seconds")]
    for r in results:
        rows.append((r.format + (f" ({r.quantize})" if r.quantize else ""), r.export_dir,
                     f"{sum(c.passed for c in r.checks)}/{len(r.checks)} passed", r.closest(), r.accuracy_text(),
                     f"{r.seconds:.1f}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
