"""One training run per model directory: ``model_dir/lock.json`` names the host and process.

A second run on the same directory while the first is alive is refused (two writers would
interleave checkpoints). A lock left by a process that is gone (kill -9, a crash, a
preempted VM on the same host) is taken over with a warning. Evaluation-only runs do not lock.
The lock is created atomically (a complete temporary file hard-linked into place), so it is
never seen half-written. Local file systems only: on remote ones (gs://...) nothing is locked.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from typing import Optional

from absl import logging

LOCK_FILE = "lock.json"


class ModelDirInUseError(RuntimeError):
    """Another live run holds the model directory."""


def _start_time(pid: int) -> Optional[str]:
    """The kernel's start time of process ``pid`` (/proc/PID/stat field 22), None if unknown:
    tells a live owner from a new process that reuses its pid."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(pid: int, start_time: Optional[str]) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    current = _start_time(pid)
    return start_time is None or current is None or current == start_time


class ModelDirLock:
    """``with ModelDirLock(model_dir):`` holds the directory for this process."""

    def __init__(self, model_dir: str):
        self.model_dir = model_dir
        self.path = os.path.join(model_dir, LOCK_FILE)
        self.held = False

    def __enter__(self) -> "ModelDirLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        if "://" in self.model_dir:
            logging.info("%s is not on a local file system: not locked", self.model_dir)
            return
        os.makedirs(self.model_dir, exist_ok=True)
        record = {"host": socket.gethostname(), "pid": os.getpid(),
                  "start_time": _start_time(os.getpid()),
                  "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                  "command": " ".join(sys.argv)}
        temporary = f"{self.path}.{record['host']}.{record['pid']}"
        with open(temporary, "w") as f:
            json.dump(record, f)
        try:
            for _ in range(2):
                try:
                    os.link(temporary, self.path)  # atomic: fails if the lock exists
                except FileExistsError:
                    self._take_over_if_stale()
                    continue
                self.held = True
                return
            raise ModelDirInUseError(f"Could not lock {self.path}: it keeps reappearing")
        finally:
            os.remove(temporary)

    def _take_over_if_stale(self) -> None:
        """Removes the lock of a dead process (with a warning); raises if its owner lives."""
        try:
            with open(self.path) as f:
                owner = json.load(f)
        except FileNotFoundError:
            return  # released meanwhile
        except (OSError, ValueError) as err:
            raise ModelDirInUseError(
                f"{self.model_dir} is locked by {self.path}, which cannot be read ({err}); "
                "delete it if no run uses this directory") from None
        host, pid = owner.get("host"), owner.get("pid")
        if host == socket.gethostname() and isinstance(pid, int) and not _alive(
                pid, owner.get("start_time")):
            message = (f"Taking over the stale lock {self.path} of process {pid} on {host} "
                       f"(since {owner.get('since')}), which is no longer running")
            logging.warning(message)
            print(f"Warning: {message}", file=sys.stderr, flush=True)
            os.remove(self.path)
            return
        where = "this host" if host == socket.gethostname() else f"host {host}"
        raise ModelDirInUseError(
            f"--model_dir={self.model_dir} is in use by process {pid} on {where} (since "
            f"{owner.get('since')}: {owner.get('command')}); lock file {self.path}. Wait for it "
            "to finish, stop it, or use another --model_dir (evaluation with --mode=eval may "
            "share the directory). If that run is gone, delete the lock file.")

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        try:
            with open(self.path) as f:
                mine = json.load(f).get("pid") == os.getpid()
            if mine:
                os.remove(self.path)
        except (OSError, ValueError) as err:
            logging.warning("Could not release %s: %s", self.path, err)
