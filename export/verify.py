"""Verification of a reloaded export: tolerances, comparisons, and the record of what was checked.

Every format's ``verify`` returns a :class:`Verification`, a list of :class:`Check` records (check
name, measured value, limit, passed); a failing check raises :class:`VerificationError`, which
carries the record so far.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Optional

import numpy as np
from absl import logging


class VerificationError(RuntimeError):
    """A reloaded export does not reproduce the in-memory Keras model within tolerance."""

    def __init__(self, message: str, checks: Optional[List["Check"]] = None):
        super().__init__(message)
        self.checks = list(checks or [])


@dataclasses.dataclass(frozen=True)
class Tolerance:
    """Pass when max|actual - expected| <= atol + rtol * max|expected|."""

    rtol: float
    atol: float

    def limit(self, expected: np.ndarray) -> float:
        return self.atol + self.rtol * float(np.abs(expected).max(initial=0.0))


# Same TF kernels on both sides: differences are float round-off of a re-traced graph.
TF_TOLERANCE = Tolerance(rtol=1e-4, atol=1e-5)


@dataclasses.dataclass(frozen=True)
class Check:
    """One verified property: ``kind`` "max_abs_diff" or "at_most" (value <= limit), or "equal"
    (value == limit)."""

    name: str
    value: object
    limit: object
    passed: bool
    kind: str = "max_abs_diff"

    def describe(self) -> str:
        if self.kind == "max_abs_diff":
            text = f"{self.name}: max-abs diff {self.value:.3g} (limit {self.limit:.3g})"
        elif self.kind == "at_most":
            text = f"{self.name}: {self.value:.3g} (at most {self.limit:.3g})"
        else:
            text = f"{self.name}: {self.value!r}" + ("" if self.passed else f" (expected {self.limit!r})")
        return text + ("" if self.passed else " FAILED")

    def as_json(self) -> Dict[str, object]:
        return {k: _plain(v) for k, v in dataclasses.asdict(self).items()}


def _plain(value):
    """``value`` with numpy scalars and arrays as Python numbers and lists (for JSON)."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    return value


@dataclasses.dataclass
class Verification:
    """What one format's verification checked (in order) and the notes worth printing."""

    format: str
    checks: List[Check] = dataclasses.field(default_factory=list)
    notes: List[str] = dataclasses.field(default_factory=list)

    def _record(self, check: Check, message: str) -> Check:
        self.checks.append(check)
        logging.debug("verify %s/%s", self.format, check.describe())
        if not check.passed:
            raise VerificationError(message, self.checks)
        return check

    def close(self, name: str, expected, actual, tolerance: Tolerance) -> float:
        """Records max|actual - expected| under ``name``; raises beyond ``tolerance``."""
        expected = np.asarray(expected, np.float64)
        actual = np.asarray(actual, np.float64)
        if expected.shape != actual.shape:
            self.equal(f"{name}/shape", tuple(actual.shape), tuple(expected.shape),
                       f"{name}: reloaded output has shape {actual.shape}, Keras gives {expected.shape}")
        if not np.all(np.isfinite(actual)):
            self.equal(f"{name}/finite", False, True, f"{name}: reloaded output has non-finite values")
        diff = float(np.abs(actual - expected).max(initial=0.0))
        limit = tolerance.limit(expected)
        self._record(Check(name, diff, limit, diff <= limit),
                     f"{name}: reloaded export differs from the Keras model by {diff:.4g} (max-abs), "
                     f"beyond the tolerance {limit:.4g}")
        return diff

    def equal(self, name: str, value, expected, message: Optional[str] = None) -> Check:
        """Records ``value == expected``; raises with ``message`` when not."""
        return self._record(Check(name, value, expected, value == expected, "equal"),
                            message or f"{name} is {value!r}, expected {expected!r}")

    def at_most(self, name: str, value: float, limit: float, message: str) -> Check:
        """Records ``value <= limit`` (e.g. an accuracy drop in points); raises with ``message`` when not."""
        return self._record(Check(name, float(value), float(limit), float(value) <= float(limit), "at_most"), message)

    @property
    def diffs(self) -> Dict[str, float]:
        return {c.name: c.value for c in self.checks if c.kind == "max_abs_diff"}

    @property
    def limits(self) -> Dict[str, float]:
        return {c.name: c.limit for c in self.checks if c.kind == "max_abs_diff"}
