"""Console progress of the long export steps."""

from __future__ import annotations

import contextlib
from typing import Iterator

from absl import logging

from efficientnet_tf import console


@contextlib.contextmanager
def step(message: str) -> Iterator[None]:
    """Logs the start and the duration of a long step; on a job's quiet console, a progress line
    (efficientnet_tf.console)."""

    with console.step(message):
        yield


@contextlib.contextmanager
def quiet_absl() -> Iterator[None]:
    """Hides TF's INFO chatter (one line per renamed capture) while a SavedModel is written."""
    level = logging.get_verbosity()
    logging.set_verbosity(min(level, logging.WARNING))  # absl: larger is more verbose
    try:
        yield
    finally:
        logging.set_verbosity(level)
