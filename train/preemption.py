"""SIGTERM and SIGINT as a request to stop: finish the current step, checkpoint, exit 0.

TPU and spot VMs announce preemption with SIGTERM and a grace period (30 s on GCE spot VMs).
The signal sets a boolean variable that the train loop reads between two steps, so a loop of
``runtime.steps_per_loop`` steps ends after the step that is running. Python runs signal
handlers only between bytecodes of the main thread, which sits inside TensorFlow during a
loop; so the handler also wakes a thread (``signal.set_wakeup_fd``) that sets the variable at
once. With several workers the loop does not stop on its own (the workers' collectives would
no longer match); instead every worker all-reduces its flag after each loop and all stop at the
same step. A second signal while stopping gets the default behaviour (ends the process).
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Optional

import tensorflow as tf

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopRequest:
    """``with StopRequest(strategy, multi_worker) as stop:`` catches SIGTERM/SIGINT in the block."""

    def __init__(self, strategy: tf.distribute.Strategy, multi_worker: bool):
        self.strategy = strategy
        self.multi_worker = multi_worker
        with tf.device("/CPU:0"):
            self.variable = tf.Variable(False, trainable=False, name="stop_requested")
        self.signal_name: Optional[str] = None
        self._previous = {}
        self._pipe = None
        self._old_fd = None
        self._thread = None

    @property
    def in_loop(self) -> Optional[tf.Variable]:
        """The variable the train loop checks between steps (None with several workers)."""
        return None if self.multi_worker else self.variable

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is not threading.main_thread():
            return self  # signal handlers can only be installed from the main thread
        read, write = os.pipe()
        os.set_blocking(write, False)
        self._pipe = (read, write)
        self._old_fd = signal.set_wakeup_fd(write, warn_on_full_buffer=False)
        for signum in SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)
        self._thread = threading.Thread(target=self._watch, name="stop-request", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._pipe is None:
            return
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        signal.set_wakeup_fd(self._old_fd)
        os.close(self._pipe[1])  # ends the watcher thread
        self._thread.join(timeout=5)
        os.close(self._pipe[0])
        self._pipe = None

    def _handle(self, signum, frame) -> None:  # pylint: disable=unused-argument
        if self.signal_name is None:
            self.signal_name = signal.Signals(signum).name
            self.variable.assign(True)
        # A second signal ends the process as it would have without us.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)

    def _watch(self) -> None:
        """Sets the variable as soon as a signal arrives (the main thread may be busy in TF)."""
        while True:
            try:
                data = os.read(self._pipe[0], 16)
            except OSError:
                return
            if not data:
                return
            if any(byte in (int(s) for s in SIGNALS) for byte in data):
                self.variable.assign(True)
                if self.signal_name is None:
                    self.signal_name = signal.Signals(
                        next(b for b in data if b in (int(s) for s in SIGNALS))).name

    def requested(self) -> bool:
        """Whether to stop now. With several workers an all-reduce (call it on every worker at
        the same point): true when any worker was signalled."""
        local = bool(self.variable.numpy())
        if not self.multi_worker:
            return local
        flag = tf.constant(1.0 if local else 0.0)
        total = self.strategy.reduce("SUM", self.strategy.run(lambda: flag), axis=None)
        if float(total) > 0 and self.signal_name is None:
            self.signal_name = "a signal to another worker"
        return float(total) > 0
