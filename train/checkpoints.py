"""The model directory of a run and what is written into it, in one place.

Layout (``model_dir``)::

  config.yaml, config.json   the resolved config          run_info.json   facts of the run
  checkpoint, ckpt-N.*       the last keep_checkpoint_max  eval_results.json  the last eval
  best/ckpt-N.*, best/eval_results.json                    input/ckpt-N.*  input positions
  train/, eval/              TensorBoard summaries         tmp_workers/    non-chief saves
  lock.json                  the live training run (train/lock.py)

Writes are atomic or detectable: JSON files go through a temporary file and a rename, a
checkpoint becomes the latest only once TensorFlow has written all of it, and a save that
fails (disk full, I/O error) removes what it left and raises :class:`CheckpointWriteError`
naming the path, with the previous checkpoint intact. A checkpoint that cannot be read
(truncated data, missing index) is skipped with a warning for the newest readable one.
"""

from __future__ import annotations

import json
import os
import re
from typing import List, Optional

import tensorflow as tf
from absl import logging

PREFIX = "ckpt"
CONFIG_JSON = "config.json"
RUN_INFO = "run_info.json"
EVAL_RESULTS = "eval_results.json"
BEST = "best"
INPUT = "input"
WORKERS = "tmp_workers"

# What a failed read of a damaged checkpoint raises: TensorFlow's errors (missing index or
# data: NotFound; garbage: DataLoss), and the Python ones its checkpoint reader turns some
# into (truncated data: IndexError "Read less bytes than requested").
READ_ERRORS = (tf.errors.OpError, IndexError, ValueError, RuntimeError)


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (disk full, I/O error); the previous one is intact."""


class NoReadableCheckpointError(RuntimeError):
    """Every checkpoint in a model directory is damaged."""


def checkpoint_step(path: str) -> int:
    """The N of '.../ckpt-N'."""
    return int(path.rsplit("-", 1)[1])


class CheckpointStore:
    """Reads and writes one model directory (see the module docstring for its layout).

    ``write_dir`` is where this process saves: the model_dir on the chief, a private folder on
    the other workers of a multi-worker run (all must save; only the chief's copy is kept).
    """

    def __init__(self, model_dir: str, *, chief: bool = True, write_dir: Optional[str] = None):
        self.model_dir = model_dir
        self.chief = chief
        self.write_dir = write_dir or model_dir
        self._manager = self._best = self._checkpoint = None

    # -------------------------------------------------------------------------- paths
    def path(self, *parts: str) -> str:
        return os.path.join(self.model_dir, *parts)

    def input_path(self, step: int) -> str:
        return self.path(INPUT, f"{PREFIX}-{step}")

    # ------------------------------------------------------------------------ reading
    def checkpoints(self) -> List[str]:
        """Checkpoint prefixes, newest first: the ones TensorFlow's state file lists, and any
        other ckpt-N found on disk (a damaged state file must not hide them)."""
        found = set()
        state = tf.train.get_checkpoint_state(self.model_dir)
        if state is not None:
            found.update(os.path.join(self.model_dir, os.path.basename(p))
                         for p in state.all_model_checkpoint_paths)
        pattern = re.compile(re.escape(PREFIX) + r"-(\d+)(\.index|\.data-\d+-of-\d+)$")
        for name in tf.io.gfile.listdir(self.model_dir) if tf.io.gfile.isdir(self.model_dir) else []:
            match = pattern.match(name)
            if match:
                found.add(self.path(f"{PREFIX}-{match.group(1)}"))
        return sorted(found, key=checkpoint_step, reverse=True)

    def latest(self) -> Optional[str]:
        """The newest checkpoint prefix on disk (readable or not), or None."""
        candidates = self.checkpoints()
        return candidates[0] if candidates else None

    def latest_readable(self) -> Optional[str]:
        """The newest checkpoint whose every tensor can be read, warning about newer ones."""
        damaged = []
        for path in self.checkpoints():
            try:
                reader = tf.train.load_checkpoint(path)
                for name in reader.get_variable_to_shape_map():
                    reader.get_tensor(name)
            except READ_ERRORS as err:
                _warn_damaged(path, err)
                damaged.append(path)
                continue
            return path
        if damaged:
            raise NoReadableCheckpointError(
                f"No checkpoint in {self.model_dir} can be read (damaged: {', '.join(damaged)}); "
                "move them away to start again, or restore the directory from a backup")
        return None

    def restore(self, *, partial: bool = False) -> Optional[str]:
        """Restores the newest readable checkpoint into the attached one; returns its path (None
        when there is none). ``partial``: objects of the checkpoint may be left unused (eval)."""
        path = self.latest_readable()
        if path is None:
            return None
        status = self._checkpoint.restore(path)
        if partial:
            status.expect_partial()
        else:
            status.assert_existing_objects_matched()
        return path

    def read_json(self, *parts: str):
        with tf.io.gfile.GFile(self.path(*parts)) as f:
            return json.load(f)

    def has_checkpoint(self) -> bool:
        return tf.io.gfile.isdir(self.model_dir) and self.latest() is not None

    def is_run(self) -> bool:
        """Whether this is the model directory of a train.main run (checkpoint + run_info)."""
        return self.has_checkpoint() and tf.io.gfile.exists(self.path(RUN_INFO))

    # ------------------------------------------------------------------------ writing
    def write_json(self, value, *parts: str) -> None:
        """Writes JSON atomically (temporary file + rename); chief only."""
        if not self.chief:
            return
        path = self.path(*parts)
        tf.io.gfile.makedirs(os.path.dirname(path))
        temporary = f"{path}.tmp{os.getpid()}"
        with tf.io.gfile.GFile(temporary, "w") as f:
            json.dump(value, f, indent=2, default=float)
        tf.io.gfile.rename(temporary, path, overwrite=True)

    def attach(self, checkpoint: tf.train.Checkpoint, keep: int) -> None:
        """The checkpoint that :meth:`save` writes, keeping the newest ``keep``."""
        self._checkpoint = checkpoint
        self._manager = tf.train.CheckpointManager(checkpoint, self.write_dir, keep,
                                                   checkpoint_name=PREFIX)
        self._best = tf.train.CheckpointManager(checkpoint, os.path.join(self.write_dir, BEST),
                                                1, checkpoint_name=PREFIX)

    def save(self, step: int, iterator=None) -> str:
        """Writes ckpt-<step> (and, on the chief, the input position of ``iterator`` first, so
        that every listed checkpoint has its input state); returns the model_dir path."""
        input_path = self.input_path(step)
        if iterator is not None and self.chief:
            self._guarded(lambda: tf.train.Checkpoint(iterator=iterator).write(input_path),
                          input_path)
        try:
            self._guarded(lambda: self._manager.save(checkpoint_number=step),
                          os.path.join(self.write_dir, f"{PREFIX}-{step}"))
        except CheckpointWriteError:
            if iterator is not None and self.chief:
                _remove_prefix(input_path)
            raise
        self._drop_worker_copy()
        if iterator is not None and self.chief:
            self._prune_inputs()
        return self.path(f"{PREFIX}-{step}")

    def save_best(self, step: int, results) -> None:
        """The best checkpoint so far (by top-1) and its eval results under best/."""
        self._guarded(lambda: self._best.save(checkpoint_number=step),
                      os.path.join(self.write_dir, BEST, f"{PREFIX}-{step}"))
        if self.chief:
            self.write_json(results, BEST, EVAL_RESULTS)
        elif tf.io.gfile.exists(os.path.join(self.write_dir, BEST)):
            tf.io.gfile.rmtree(os.path.join(self.write_dir, BEST))

    def _guarded(self, write, prefix: str) -> None:
        """Runs ``write``; on an I/O failure removes the partial ``prefix`` files and raises
        CheckpointWriteError naming it and the checkpoint a rerun will use."""
        try:
            write()
        except (tf.errors.OpError, OSError) as err:
            _remove_prefix(prefix)
            previous = self.latest()
            raise CheckpointWriteError(
                f"Could not write checkpoint {prefix} ({type(err).__name__}: "
                f"{getattr(err, 'message', err)}). Nothing of it is kept; the previous checkpoint "
                f"{previous or '(none)'} is intact and a rerun resumes from it once the disk "
                "has room.") from err

    def _drop_worker_copy(self) -> None:
        if not self.chief and tf.io.gfile.exists(self.write_dir):
            tf.io.gfile.rmtree(self.write_dir)

    def _prune_inputs(self) -> None:
        """Keeps the input states of the kept checkpoints only."""
        kept = {checkpoint_step(p) for p in self._manager.checkpoints}
        for index in tf.io.gfile.glob(self.path(INPUT, f"{PREFIX}-*.index")):
            prefix = index[:-len(".index")]
            if checkpoint_step(prefix) not in kept:
                _remove_prefix(prefix)


def _remove_prefix(prefix: str) -> None:
    """Removes prefix.index, prefix.data-*, and TensorFlow's prefix_temp* leftovers."""
    for path in tf.io.gfile.glob(prefix + ".*") + tf.io.gfile.glob(prefix + "_temp*"):
        try:
            if tf.io.gfile.isdir(path):
                tf.io.gfile.rmtree(path)
            else:
                tf.io.gfile.remove(path)
        except (tf.errors.OpError, OSError) as err:  # best effort: report, keep the first error
            logging.warning("Could not remove %s: %s", path, err)


def _warn_damaged(path: str, err: Exception) -> None:
    message = getattr(err, "message", str(err)).splitlines()[0][:300]
    logging.warning("Checkpoint %s cannot be read (%s: %s); trying an older one.", path,
                    type(err).__name__, message)
    print(f"Warning: checkpoint {path} cannot be read ({type(err).__name__}); using the newest "
          "readable one.", flush=True)
