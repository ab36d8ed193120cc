"""Atomic output directories (temp + rename, nothing half-written) and the JSON files in them."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import sys
import tempfile
from typing import Iterator


class ExportWriteError(OSError):
    """Writing an export failed (disk full, file too large, I/O error); nothing was left at DIR."""

    def __str__(self) -> str:
        return self.strerror or super().__str__()


def _is_write_error(err: BaseException) -> bool:
    """OS-level write failures, also when TensorFlow's C++ file system reports them."""
    if isinstance(err, (ExportWriteError, FileExistsError)):
        return False
    if isinstance(err, OSError):
        return True
    tf = sys.modules.get("tensorflow")
    if tf is not None and isinstance(err, tf.errors.OpError):
        # TF maps errno to status codes: ENOSPC -> RESOURCE_EXHAUSTED, EFBIG -> OUT_OF_RANGE / UNKNOWN
        # and EIO -> INTERNAL / UNAVAILABLE (tsl/platform/errors.cc ErrnoToCode).
        text = str(err).lower()
        return any(hint in text for hint in (
            "no space left", "file too large", "input/output error", "disk quota", "could not write",
            "failed to write", "write failed", "could not append", "could not flush", "could not close"))
    return False


def _describe(err: BaseException) -> str:
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
        return os.strerror(err.errno) + (f" ({err.filename})" if err.filename else "")
    return " ".join(str(err).split())[:500]


def check_target(export_dir: str, overwrite: bool = False) -> str:
    """Fails early (before any work) when ``export_dir`` exists and not ``overwrite``, or when it
    cannot be created (a parent is a file). Returns the absolute path."""
    export_dir = os.path.abspath(os.fspath(export_dir))
    if os.path.lexists(export_dir) and not overwrite:
        raise FileExistsError(f"export_dir {export_dir!r} already exists; pass --overwrite (overwrite=True) "
                              "to replace it")
    ancestor = os.path.dirname(export_dir)
    while not os.path.lexists(ancestor):
        ancestor = os.path.dirname(ancestor)
    if not os.path.isdir(ancestor):
        raise ExportWriteError(errno.ENOTDIR, f"Cannot write export_dir {export_dir!r}: {ancestor!r} is not a "
                               "directory")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ExportWriteError(errno.EACCES, f"Cannot write export_dir {export_dir!r}: no write permission in "
                               f"{ancestor!r}")
    return export_dir


@contextlib.contextmanager
def atomic_export_dir(export_dir: str, overwrite: bool = False) -> Iterator[str]:
    """Yields a fresh temporary directory next to ``export_dir``; renames it into place when the
    block succeeds, deletes it when it fails. An existing ``export_dir`` is an error unless
    ``overwrite``, in which case it is swapped out only after the new export is complete.
    A write failure in the block (disk full, ...) becomes an ExportWriteError naming ``export_dir``."""
    export_dir = check_target(export_dir, overwrite)
    parent, base = os.path.split(export_dir)
    if not base:
        raise ValueError(f"Bad export_dir {export_dir!r}")
    try:
        os.makedirs(parent, exist_ok=True)
        staging = tempfile.mkdtemp(prefix=f".{base}.tmp-", dir=parent)
    except OSError as err:
        raise ExportWriteError(err.errno, f"Cannot write export_dir {export_dir!r}: cannot create a directory "
                               f"in {parent!r} ({_describe(err)})") from err
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(staging, 0o777 & ~umask)  # mkdtemp's 0700 would hide the export from a serving user
    try:
        yield staging
        if os.path.lexists(export_dir):
            if not overwrite:
                raise FileExistsError(f"export_dir {export_dir!r} appeared during the export; not replacing it")
            retired = tempfile.mkdtemp(prefix=f".{base}.old-", dir=parent)
            os.rename(export_dir, os.path.join(retired, base))
            try:
                os.rename(staging, export_dir)
            except BaseException:
                os.rename(os.path.join(retired, base), export_dir)  # put the previous export back
                os.rmdir(retired)
                raise
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.rename(staging, export_dir)
    except BaseException as err:
        shutil.rmtree(staging, ignore_errors=True)
        if _is_write_error(err):
            code = err.errno if isinstance(err, OSError) else None
            kept = " (the previous export there is untouched)" if os.path.lexists(export_dir) else ""
            raise ExportWriteError(code, f"Writing the export to {export_dir!r} failed: {_describe(err)}. "
                                   f"Nothing was written to {export_dir!r}{kept}; the partial files in "
                                   f"{staging!r} were deleted.") from err
        raise


def write_json(path: str, data) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.write("\n")
