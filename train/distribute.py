"""Choosing the tf.distribute strategy, precision and XLA for the devices at hand.

TPUStrategy when a TPU is named, MultiWorkerMirroredStrategy when TF_CONFIG describes a
cluster, MirroredStrategy over several GPUs (or over N logical CPU devices, for testing
distribution on one machine), the default strategy otherwise. Nothing here is home-made:
gradients are all-reduced by the Keras optimizer through the strategy, batch statistics by
Keras' own synchronized BatchNormalization.
"""

from __future__ import annotations

import json
import os
from typing import Optional

import keras
import tensorflow as tf
from absl import logging

KINDS = ("tpu", "gpu", "cpu")
PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")  # runtime.precision


class ReplicaSplitError(ValueError):
    """A batch the replicas (or the micro-batches of each replica) cannot split evenly: a
    config error found once the strategy says how many replicas there are, before any work."""


def tf_config() -> dict:
    """The parsed TF_CONFIG environment variable ({} when unset)."""
    text = os.environ.get("TF_CONFIG", "")
    if not text.strip():
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"TF_CONFIG is not valid JSON ({err}): {text[:200]!r}") from None
    if not isinstance(value, dict):
        raise ValueError(f"TF_CONFIG must be a JSON object, got {text[:200]!r}")
    return value


def is_multi_worker(config: Optional[dict] = None) -> bool:
    """Whether TF_CONFIG describes a cluster of more than one worker (chief included)."""
    config = tf_config() if config is None else config
    cluster = config.get("cluster", {})
    tasks = sum(len(cluster.get(job, [])) for job in ("chief", "worker"))
    return tasks > 1


def check_request(tpu: Optional[str], num_cpu_devices: int) -> None:
    """Rejects contradictory device requests before anything starts."""
    multi = is_multi_worker()
    if tpu and multi:
        raise ValueError(f"--tpu={tpu!r} and a multi-worker TF_CONFIG were both given; use one "
                         "(TPU pods are addressed through --tpu alone)")
    if num_cpu_devices < 0:
        raise ValueError(f"--num_cpu_devices must be >= 0, got {num_cpu_devices}")
    if num_cpu_devices > 1 and (tpu or multi):
        raise ValueError("--num_cpu_devices (MirroredStrategy over logical CPUs) cannot be combined "
                         "with --tpu or a multi-worker TF_CONFIG")


def get_strategy(tpu: Optional[str] = None, num_cpu_devices: int = 0) -> tf.distribute.Strategy:
    """The strategy for this process (call before any other TensorFlow work)."""
    check_request(tpu, num_cpu_devices)
    if tpu:
        # tensorflow/tpu main.py and the TPUStrategy guide: resolve, connect, initialize.
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        strategy = tf.distribute.TPUStrategy(resolver)
    elif is_multi_worker():
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    elif num_cpu_devices > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(num_cpu_devices)])
        devices = [d.name for d in tf.config.list_logical_devices("CPU")]
        strategy = tf.distribute.MirroredStrategy(devices)
    elif len(tf.config.list_physical_devices("GPU")) > 1:
        strategy = tf.distribute.MirroredStrategy()
    else:
        strategy = tf.distribute.get_strategy()
    logging.info("Strategy %s with %d replica(s) (%s)", strategy_name(strategy),
                 strategy.num_replicas_in_sync, device_kind(strategy))
    return strategy


def strategy_name(strategy: tf.distribute.Strategy) -> str:
    """The public class name (MultiWorkerMirroredStrategy is a CollectiveAllReduceStrategy)."""
    for cls, name in ((tf.distribute.TPUStrategy, "TPUStrategy"),
                      (tf.distribute.MultiWorkerMirroredStrategy, "MultiWorkerMirroredStrategy"),
                      (tf.distribute.MirroredStrategy, "MirroredStrategy")):
        if isinstance(strategy, cls):
            return name
    return type(strategy).__name__


def device_kind(strategy: tf.distribute.Strategy) -> str:
    """'tpu', 'gpu' or 'cpu': what the replicas run on."""
    if isinstance(strategy, tf.distribute.TPUStrategy):
        return "tpu"
    try:
        devices = strategy.extended.worker_devices
    except RuntimeError:  # the default strategy: whatever TensorFlow places ops on
        return "gpu" if tf.config.list_logical_devices("GPU") else "cpu"
    return "gpu" if any("GPU" in d.upper() for d in devices) else "cpu"


def resolve_precision(setting: str, kind: str) -> str:
    """The Keras dtype policy: 'auto' is bfloat16 on TPU, float16 on GPU, float32 on CPU."""
    if setting != "auto":
        return setting
    return {"tpu": "mixed_bfloat16", "gpu": "mixed_float16", "cpu": "float32"}[kind]


def resolve_jit(setting: Optional[bool], kind: str) -> Optional[bool]:
    """XLA for the train and eval steps. TPU always compiles (None: leave it to TPUStrategy);
    GPU on; CPU off unless asked (slower on CPU: docs/training.md)."""
    if kind == "tpu":
        return None
    if setting is None:
        return kind == "gpu"
    return setting


def set_synchronized_bn(model: keras.Model, synchronized: bool = True) -> int:
    """Switches every BatchNormalization layer to cross-replica statistics; returns the count.

    Keras 3 reads ``BatchNormalization.synchronized`` at call time (``_moments`` passes it to
    ``ops.moments(..., synchronized=...)``, an all-reduce over replicas on the TensorFlow
    backend), so setting it on a built model is enough and no builder option is needed. It is
    saved in the layer config as well.
    """
    count = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.synchronized = synchronized
            count += 1
    return count


def task(strategy: tf.distribute.Strategy):
    """(task_type, task_id) of this process; (None, 0) outside multi-worker training."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not is_multi_worker():
        return None, 0
    return resolver.task_type, resolver.task_id


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """The process that owns the model directory (writes checkpoints, summaries, exports).

    The chief is the 'chief' task, or worker 0 in a cluster without one (the TF convention).
    """
    task_type, task_id = task(strategy)
    if task_type is None:
        return True
    if task_type == "chief":
        return True
    has_chief = bool(tf_config().get("cluster", {}).get("chief"))
    return task_type == "worker" and task_id == 0 and not has_chief


def write_dir(model_dir: str, strategy: tf.distribute.Strategy) -> str:
    """Where this process writes checkpoints: model_dir for the chief, a private temporary
    folder for other workers (all must take part in saving under MultiWorkerMirroredStrategy;
    only the chief's copy is kept)."""
    if is_chief(strategy):
        return model_dir
    task_type, task_id = task(strategy)
    return os.path.join(model_dir, "tmp_workers", f"{task_type}_{task_id}")
