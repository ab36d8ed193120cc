"""Test helpers shared by several test files."""

import os
import re
import sys

import numpy as np
import pytest

from export import export_model

from efficientnet_tf.testing import randomize_like_trained  # noqa: F401 (re-exported)


def relative_error(reference, other):
    """max |other - reference| / max |reference|."""
    reference = np.asarray(reference, np.float64)
    return float(np.abs(np.asarray(other, np.float64) - reference).max() / np.abs(reference).max())


def assert_missing_dependency_is_clear(monkeypatch, tmp_path, model, *, module, format, extra):
    """Exporting ``model`` as ``format`` with ``module`` not importable raises an ImportError
    naming the pip extra to install, and leaves nothing in ``tmp_path``."""
    monkeypatch.setitem(sys.modules, module, None)  # what `import module` sees when absent
    out = tmp_path / "never"
    with pytest.raises(ImportError, match=re.escape(f"pip install efficientnet_tf[{extra}]")):
        export_model(model, str(out), format=format)
    assert not out.exists() and os.listdir(tmp_path) == []
