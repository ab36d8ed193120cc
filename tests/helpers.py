"""Test helpers shared by several test files."""

import numpy as np

from efficientnet_tf.testing import randomize_like_trained  # noqa: F401 (re-exported)


def relative_error(reference, other):
    """max |other - reference| / max |reference|."""
    reference = np.asarray(reference, np.float64)
    return float(np.abs(np.asarray(other, np.float64) - reference).max() / np.abs(reference).max())
