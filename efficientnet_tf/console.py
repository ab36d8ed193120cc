"""A quiet, readable console for the command-line jobs, and progress bars for their long steps.

By default a job prints only its own lines: TensorFlow's C++ start-up banner is held back, absl
INFO lines (which repeat what the job prints) are off, library deprecation warnings are hidden
and the job's own warnings read ``warning: ...``. ``-v 0`` / ``--verbosity=0`` (absl's flag; the
predict CLI has the same option) brings all of it back, ``-v 1`` adds debug lines.

Why the banner needs more than ``TF_CPP_MIN_LOG_LEVEL``: TF 2.21 logs through absl's C++
library, and the lines written before ``absl::InitializeLog()`` ("Could not find cuda drivers on
your machine", measured on this project's machines) go to stderr whatever that variable says.
So the first ``import tensorflow`` runs with file descriptor 2 redirected into a temporary
file; the text is shown again when the import fails or details are asked for.

This module imports only the standard library at import time: ``efficientnet_tf/__init__``
calls :func:`hold_import_banner` before anything imports TensorFlow.
"""

from __future__ import annotations

import contextlib
import logging as std_logging
import os
import sys
import tempfile
import time
import warnings
from typing import Iterator, List, Optional, Sequence

# `python -m <module>` entry points that get the quiet console (the predict CLI is the package).
ENTRY_MODULES = ("efficientnet_tf", "efficientnet_tf.convert", "export.main", "export.demo", "train.main")
CONSOLE_SCRIPTS = ("efficientnet-tf",)
# Packages whose own warnings stay visible in the quiet mode.
OWN_PACKAGES = r"(efficientnet_tf|export|train|bench)(\.|$)"
QUIET = -1  # absl's verbosity for "warnings only"; 0 = INFO, 1 = DEBUG

_held_banner: List[str] = []  # what TensorFlow's import wrote to fd 2 while it was held back
_state = {"verbosity": None}


def verbosity_from_argv(argv: Sequence[str]) -> Optional[int]:
    """The value of ``-v``/``--verbosity`` in a command line (absl's spelling), or None."""
    argv = list(argv)
    for i, arg in enumerate(argv):
        for name in ("--verbosity", "-v", "--v"):
            value = None
            if arg == name and i + 1 < len(argv):
                value = argv[i + 1]
            elif arg.startswith(name + "="):
                value = arg[len(name) + 1:]
            if value is not None:
                try:
                    return int(value)
                except ValueError:
                    return None  # the flag parser reports it later
    return None


def _started_as_entry_point(orig_argv: Sequence[str]) -> bool:
    """True when the interpreter was started as one of this project's command-line jobs."""
    argv = list(orig_argv)
    if "-m" in argv[:-1]:
        return argv[argv.index("-m") + 1] in ENTRY_MODULES
    return bool(argv) and any(os.path.basename(a) in CONSOLE_SCRIPTS for a in argv[:2])


@contextlib.contextmanager
def _hold_fd2() -> Iterator[List[str]]:
    """Redirects file descriptor 2 (C and C++ code write there directly) into a temporary file;
    yields a list that receives the captured text."""
    captured: List[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield captured
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            captured.append(sink.read().decode("utf-8", "replace"))


def quiet_import_tensorflow() -> None:
    """Imports TensorFlow (and initializes its devices, which logs the CUDA probe) with its C++
    banner held back. No-op when TensorFlow is already imported."""
    if "tensorflow" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # C++ INFO and WARNING off after start-up
    captured: List[str] = []
    try:
        with _hold_fd2() as captured:
            import tensorflow as tf

            tf.config.list_physical_devices()
    finally:
        _held_banner.extend(t for t in captured if t)


def _show_held_banner() -> None:
    text = "".join(_held_banner)
    _held_banner.clear()
    if text:
        sys.stderr.write(text)
        sys.stderr.flush()


def hold_import_banner() -> None:
    """Called first by ``efficientnet_tf/__init__``: when the process is one of the project's
    command-line jobs without ``-v``, TensorFlow is imported with its banner held back. Library
    users (any other process) see TensorFlow exactly as it is."""
    if "tensorflow" in sys.modules or not _started_as_entry_point(getattr(sys, "orig_argv", [])):
        return
    verbosity = verbosity_from_argv(sys.argv[1:])
    if verbosity is not None and verbosity >= 0:
        return
    try:
        quiet_import_tensorflow()
    except BaseException:
        _show_held_banner()  # the reason the import failed is in there
        raise


class _PlainFormatter(std_logging.Formatter):
    """``warning: message`` instead of absl's ``W1201 19:44:37.689256 1396 file.py:69] message``."""

    def format(self, record: std_logging.LogRecord) -> str:
        return f"{record.levelname.lower()}: {record.getMessage()}"


def setup(verbosity: Optional[int] = None) -> int:
    """Configures the console of a command-line job; call it first in ``main``.

    verbosity: absl's scale (None or < 0: the quiet console; 0: INFO details; 1: DEBUG). Returns
    the verbosity in effect.
    """
    from absl import logging

    verbosity = QUIET if verbosity is None else int(verbosity)
    _state["verbosity"] = verbosity
    if verbosity >= 0:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0")
        _show_held_banner()
        logging.set_verbosity(logging.DEBUG if verbosity >= 1 else logging.INFO)
        std_logging.getLogger("tensorflow").setLevel(std_logging.DEBUG if verbosity >= 1 else std_logging.INFO)
        warnings.resetwarnings()
        return verbosity
    # Library warnings hidden; ours keep Python's default treatment.
    warnings.filterwarnings("ignore", module=rf"(?!{OWN_PACKAGES})")
    try:
        quiet_import_tensorflow()
    except BaseException:
        _show_held_banner()
        raise
    logging.set_verbosity(logging.WARNING)
    logging.get_absl_handler().setFormatter(_PlainFormatter())
    # TF's Python logger: deprecation notices and INFO about SavedModel internals.
    std_logging.getLogger("tensorflow").setLevel(std_logging.ERROR)
    return verbosity


def verbose() -> bool:
    """True when the job asked for details (``-v 0`` or more)."""
    return _state["verbosity"] is not None and _state["verbosity"] >= 0


def shows_progress() -> bool:
    """Progress is drawn for a job that set up the quiet console; library calls (no
    :func:`setup`) and ``-v`` runs get absl's INFO lines as before."""
    return _state["verbosity"] is not None and _state["verbosity"] < 0


# ----------------------------------------------------------------------------- progress
def _is_tty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class Progress:
    """A progress display for a long job: on a terminal one line redrawn in place on stderr (a
    bar when the total is known), otherwise plain lines, one per finished step or unit.

    ``total``: the number of units counted with :meth:`advance`, or None. ``plain_every``: in
    plain mode report every n-th unit only (calibration over hundreds of images), the last always.
    """

    WIDTH = 24

    def __init__(self, label: str, total: Optional[int] = None, *, stream=None, tty: Optional[bool] = None,
                 plain_every: int = 1, indent: str = "  ", count_lines: bool = True):
        self.label, self.total, self.done = label, total, 0
        self.stream = stream if stream is not None else sys.stderr
        self.tty = _is_tty(self.stream) if tty is None else tty
        self.silent = False
        self.plain_every = max(1, int(plain_every))
        self.count_lines = count_lines  # plain mode: a line per counted unit (else only per step)
        self.indent = indent
        self.started = self._last = time.perf_counter()
        self.detail = ""
        self._drawn = False

    def _write(self, text: str) -> None:
        if self.silent:
            return
        if self.stream is sys.stderr:
            sys.stdout.flush()  # keep the job's own lines and ours in order
        self.stream.write(text)
        self.stream.flush()

    def _draw(self) -> None:
        if not self.tty:
            return
        if self.total:
            filled = int(self.WIDTH * min(self.done, self.total) / self.total)
            state = f"[{'#' * filled}{'.' * (self.WIDTH - filled)}] {self.done}/{self.total}"
        else:
            state = "..."
        line = f"{self.indent}{self.label} {state} {self.detail}".rstrip()
        self._write("\r\x1b[2K" + line[:max(20, _columns() - 1)])
        self._drawn = True

    def note(self, detail: str) -> None:
        """Shows what is running now (a terminal only)."""
        self.detail = detail
        self._draw()

    def step_done(self, detail: str, seconds: float) -> None:
        """A named step finished: one plain line off a terminal."""
        if not self.tty:
            self._write(f"{self.indent}{detail} ({seconds:.1f}s)\n")

    def advance(self, n: int = 1) -> None:
        """Counts ``n`` more units done."""
        self.done += n
        if self.tty:
            self._draw()
        elif self.count_lines and (self.done % self.plain_every == 0 or (self.total and self.done >= self.total)):
            now = time.perf_counter()
            count = f" {self.done}/{self.total}" if self.total else f" {self.done}"
            self._write(f"{self.indent}{self.label}{count} ({now - self._last:.1f}s)\n")
            self._last = now

    def print(self, text: str) -> None:
        """Prints a line of the job's own output (stdout) without tearing the bar."""
        if self.tty and self._drawn and not self.silent:
            self._write("\r\x1b[2K")
        print(text, flush=True)
        if self.tty and not self.silent:
            self._draw()

    def close(self) -> None:
        """Clears the terminal line (the job prints its own summary next)."""
        if self.tty and self._drawn:
            self._write("\r\x1b[2K")
        self._drawn = False


def _columns() -> int:
    try:
        return os.get_terminal_size(sys.stderr.fileno()).columns
    except (OSError, ValueError, AttributeError):
        return 100


_active: List[Progress] = []


@contextlib.contextmanager
def progress(label: str, total: Optional[int] = None, **kwargs) -> Iterator[Progress]:
    """``with progress("int8 calibration", total=len(images)) as bar: ... bar.advance()``.

    Steps (:func:`step`) run inside show on the innermost active progress. Drawn only when
    :func:`shows_progress`: otherwise the absl INFO lines report the same.
    """
    bar = Progress(label, total, **kwargs)
    bar.silent = not shows_progress()
    _active.append(bar)
    try:
        yield bar
    finally:
        _active.remove(bar)
        bar.close()


@contextlib.contextmanager
def step(message: str) -> Iterator[None]:
    """One long step: logged (start and duration, absl INFO) and shown on the active progress,
    or on a progress line of its own."""
    from absl import logging

    logging.info("%s ...", message)
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        bar = _active[-1] if _active else stack.enter_context(progress(message))
        previous = bar.detail
        bar.note(message if bar.label != message else "")
        yield
        seconds = time.perf_counter() - started
        bar.step_done(message, seconds)
        bar.note(previous)
    logging.info("%s: done in %.1fs", message, seconds)


def setup_from_flags() -> int:
    """:func:`setup` for an absl job: details only when ``-v``/``--verbosity`` was given (absl
    itself turns an absent flag into INFO once the flags are parsed)."""
    from absl import flags

    verbosity = flags.FLAGS["verbosity"]
    return setup(verbosity.value if verbosity.present else None)
