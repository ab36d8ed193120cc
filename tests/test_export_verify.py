"""The verification record every format returns: checks, limits, failures carrying the record."""

import json

import numpy as np
import pytest

from export.verify import TF_TOLERANCE, Tolerance, Verification, VerificationError


def test_close_records_diff_and_limit():
    record = Verification("fmt")
    expected = np.array([[1.0, -4.0], [2.0, 0.5]], np.float32)
    diff = record.close("module/out", expected, expected + np.float32(1e-5), TF_TOLERANCE)
    assert diff == pytest.approx(1e-5, rel=1e-2)
    (check,) = record.checks
    assert (check.name, check.kind, check.passed) == ("module/out", "max_abs_diff", True)
    assert check.limit == pytest.approx(1e-5 + 1e-4 * 4.0)  # atol + rtol * max|expected|
    assert record.diffs == {"module/out": check.value} and record.limits == {"module/out": check.limit}
    assert json.loads(json.dumps([c.as_json() for c in record.checks]))[0]["passed"] is True


@pytest.mark.parametrize("actual, message", [
    (np.full((2, 2), 1.5), "differs from the Keras model by 0.5 .max-abs., beyond the tolerance 0.1"),
    (np.ones((2, 3)), r"has shape \(2, 3\), Keras gives \(2, 2\)"),
    (np.array([[1.0, np.nan], [1.0, 1.0]]), "non-finite values"),
])
def test_failures_raise_with_the_record_so_far(actual, message):
    record = Verification("fmt")
    record.equal("fmt/size", [64, 64], [64, 64])
    with pytest.raises(VerificationError, match=message) as err:
        record.close("fmt/out", np.ones((2, 2)), actual, Tolerance(rtol=0.0, atol=0.1))
    assert [c.name for c in err.value.checks][0] == "fmt/size" and not err.value.checks[-1].passed


def test_equal_names_the_value():
    record = Verification("fmt")
    with pytest.raises(VerificationError, match=r"fmt/size is \[1, 2\], expected \[64, 64\]"):
        record.equal("fmt/size", [1, 2], [64, 64])
    assert "FAILED" in record.checks[-1].describe()


def test_failed_verification_of_ill_conditioned_weights_says_so():
    """Logits far beyond a trained net's (random, uncalibrated weights) amplify rounding past any
    tolerance: the error says so and names the size; ordinary logits add nothing."""
    import types

    import export

    def job(largest):
        return types.SimpleNamespace(reference={"logits": np.array([[0.5, -largest]], np.float32)})

    hint = export._conditioning_hint(job(2182.7))
    assert "logits reach 2183" in hint and "--weights" in hint
    assert export._conditioning_hint(job(12.0)) == ""
    assert export._conditioning_hint(types.SimpleNamespace(reference={"pooled_features": 0})) == ""
