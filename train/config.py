"""The trainer's configuration: typed sections, named recipes, strict overrides.

A run's config is resolved in one direction only: the dataclass defaults below, then a named
recipe (``train/recipes.py``), then the command line (absl flags, then ``--config key=value``
overrides). Every key is a dotted path (``train.batch_size``); an unknown key or a value of the
wrong type is an error that names it and lists the valid ones (automl ``hparams.py``
``override(allow_new_keys=False)``). The resolved config is printed and written next to the
checkpoints as ``config.yaml`` and ``config.json``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import typing
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import tensorflow as tf
import yaml

import efficientnet_tf
from efficientnet_tf.preprocessing import RESIZE_METHODS
from train import augment, optimizers
from train.distribute import PRECISIONS
from train.preprocessing import CROP_RULES
from train.schedules import DECAY_TYPES

DIGITS = "sklearn_digits"  # the embedded default dataset (train/digits_dataset.py)
MODES = ("train", "eval", "train_and_eval")
# --init_checkpoint_modules (TF Model Garden official/vision/configs/image_classification.py
# ImageClassificationTask.init_checkpoint_modules: 'all' or 'backbone'), used by train/fine_tune.py.
INIT_MODULES = ("all", "backbone")
# The other choice lists live with the code that implements them (validate imports them).


@dataclasses.dataclass
class ModelConfig:
    name: str = "efficientnet-b0"
    num_classes: Optional[int] = None  # None: the dataset's number of classes
    dropout_rate: Optional[float] = None  # None: the variant's (efficientnet_tf/config.py)
    drop_connect_rate: Optional[float] = None  # None: the variant's (0.2 = survival 0.8)
    bn_momentum: Optional[float] = None  # None: the variant's
    sync_bn: Optional[bool] = None  # cross-replica BN statistics; None: on with > 1 replica
    freeze_bn: bool = False  # BN in inference mode, gamma/beta fixed (fine-tuning on small data)
    fused_bn: bool = True  # train with TF's fused BN kernel (efficientnet_tf.fast): faster steps
    init_weights: Optional[str] = None  # anything efficientnet_tf.load_weights accepts
    init_checkpoint_modules: str = "all"  # #22: 'backbone': the classifier keeps its fresh init
    # Small memory (#22): recompute each block's activations in the backward pass (timm
    # set_grad_checkpointing; efficientnet_tf/recompute.py).
    grad_checkpointing: bool = False


@dataclasses.dataclass
class DataConfig:
    dataset: str = DIGITS  # a TFDS name or a folder root/<class>/<image>
    data_dir: Optional[str] = None
    train_split: Optional[str] = "train"  # None: an image folder itself
    eval_split: Optional[str] = None  # None: 'validation' if the dataset has it, else 'test'
    image_size: Optional[int] = None  # train size; None: the model's resolution
    eval_image_size: Optional[int] = None  # None: the model's resolution
    resize_method: Optional[str] = None  # None: the family's (bicubic V1, bilinear Lite/V2)
    crop_rule: Optional[str] = None  # None: the family's ('v1' or 'v2')
    crop_padding: Optional[int] = None  # eval crop res/(res+padding); None: the family's (32)
    crop_min_area: float = 0.08  # random-area train crop: area in [crop_min_area, 1]
    random_flip: bool = True  # random horizontal flip in training
    augment_name: Optional[str] = None
    randaug_num_layers: int = 2
    randaug_magnitude: float = 10.0
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    cache: bool = False
    skip_corrupt: bool = False
    shuffle_buffer_size: int = 16384
    seed: Optional[int] = None
    deterministic: bool = False
    # ImageNet-21k style training and the holdout split (#22)
    random_erasing_prob: float = 0.0  # timm --reprob: erase one random rectangle per image
    holdout_fraction: Optional[float] = None  # hold out this much of train_split for evaluation


@dataclasses.dataclass
class TrainConfig:
    batch_size: int = 2048  # global
    epochs: Optional[float] = 350.0
    steps: Optional[int] = None  # overrides epochs
    optimizer: str = "rmsprop"
    rmsprop_rho: float = 0.9  # the official "decay"
    momentum: float = 0.9
    epsilon: float = 1e-3
    base_learning_rate: float = 0.016  # per 256 images; scaled by batch_size / 256
    lr_schedule: str = "exponential"
    lr_warmup_epochs: float = 5.0
    lr_decay_epochs: float = 2.4
    lr_decay_factor: float = 0.97
    lr_min: float = 0.0  # per 256 images, like base_learning_rate
    weight_decay: float = 1e-5  # L2 loss coefficient
    weight_decay_exclude: str = r".*/(gamma|beta|bias)$"  # on '<layer>/<variable>' names
    label_smoothing: float = 0.1
    use_binary_cross_entropy: bool = False  # sigmoid BCE (multi-label, #22) instead of softmax CE
    moving_average_decay: float = 0.9999  # 0 disables the EMA
    # Progressive learning (EfficientNetV2): 0 = off; else this many stages, each with a
    # larger image size and stronger regularization (train/recipes.py progressive_stages).
    stages: int = 0
    stage_min_image_size: int = 128
    stage_min_randaug_magnitude: float = 5.0
    stage_min_mixup_alpha: float = 0.0
    stage_min_cutmix_alpha: float = 0.0
    # Large-batch optimizers, clipping, layer-wise decay (#22, train/optimizers.py): None = the
    # optimizer's default from its row in optimizers.OPTIMIZERS (an error for one that has none).
    optimizer_weight_decay: Optional[float] = None  # adamw (decoupled), lamb, lars (trust ratio)
    beta_1: Optional[float] = None  # adamw, lamb
    beta_2: Optional[float] = None  # adamw, lamb
    optimizer_epsilon: Optional[float] = None  # adamw, lamb, lars (rmsprop: train.epsilon)
    trust_coefficient: Optional[float] = None  # lars (eeta)
    grad_clip_norm: Optional[float] = None  # clip by global norm (global batch); None/0: off
    layer_decay: Optional[float] = None  # layer-wise lr decay per group (timm); None: off
    layer_decay_groups: str = "stage"  # stage, or block (timm's param_groups_layer_decay)
    # #22: the backbone (all but the classifier) frozen for the first N steps; 0 off, -1 always
    freeze_backbone_steps: int = 0
    # Small memory (#22): sum the gradients of this many micro-batches of batch_size / k per
    # update (NVIDIA's and timm's --grad_accum_steps); batch_size stays the batch per update.
    grad_accum_steps: int = 1


@dataclasses.dataclass
class EvalConfig:
    batch_size: int = 1024
    every_epochs: Optional[float] = 10.0  # train_and_eval: evaluate this often (None: at the end)


@dataclasses.dataclass
class RuntimeConfig:
    seed: Optional[int] = None  # seeds weight init and dropout (keras.utils.set_random_seed)
    precision: str = "auto"  # auto: bfloat16 on TPU, float16 on GPU, float32 on CPU
    jit_compile: Optional[bool] = None  # None: XLA on TPU/GPU, off on CPU
    steps_per_loop: int = 100  # train steps per tf.function call (official iterations_per_loop)
    checkpoint_every_steps: Optional[int] = None  # None: every eval, or every 1000 steps
    checkpoint_every_secs: Optional[float] = 600.0
    keep_checkpoint_max: int = 5
    checkpoint_input: bool = True  # save the input pipeline's position (single replica only)
    log_every_steps: int = 100
    progress_bar: bool = True
    # #22 divergence checks per loop (train/recovery.py; TF Model Garden TrainerConfig names and
    # meanings; the default -1 is ours, not its 0: existing runs keep today's behaviour):
    loss_upper_bound: float = 1e6  # a larger mean loss is divergence (from recovery_begin_steps)
    recovery_begin_steps: int = 0
    recovery_max_trials: int = -1  # -1: off; 0: stop at the first divergence; N: restore N times


@dataclasses.dataclass
class Config:
    recipe: str = "v1"
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)
    runtime: RuntimeConfig = dataclasses.field(default_factory=RuntimeConfig)


SECTIONS = ("model", "data", "train", "eval", "runtime")


# ------------------------------------------------------------------------------ keys


def _field_types(cls) -> Dict[str, Any]:
    return typing.get_type_hints(cls)


def valid_keys() -> List[str]:
    """Every settable dotted key, e.g. ``train.batch_size``."""
    keys = ["recipe"]
    hints = _field_types(Config)
    for section in SECTIONS:
        keys += [f"{section}.{f}" for f in _field_types(hints[section])]
    return keys


def _locate(config: Config, key: str):
    """(object holding the field, field name, field type) for a dotted key."""
    parts = key.split(".")
    if key == "recipe":
        return config, "recipe", str
    if len(parts) != 2 or parts[0] not in SECTIONS:
        raise ValueError(f"Unknown config key {key!r}. Valid keys: {', '.join(valid_keys())}")
    section = getattr(config, parts[0])
    hints = _field_types(type(section))
    if parts[1] not in hints:
        raise ValueError(f"Unknown config key {key!r}. Valid keys in {parts[0]!r}: "
                         f"{', '.join(f'{parts[0]}.{k}' for k in hints)}")
    return section, parts[1], hints[parts[1]]


def get(config: Config, key: str):
    holder, name, _ = _locate(config, key)
    return getattr(holder, name)


def _coerce(key: str, value, kind):
    """Checks ``value`` against the field type ``kind`` (int, float, bool, str, Optional)."""
    origin = typing.get_origin(kind)
    if origin is Union:
        options = [a for a in typing.get_args(kind) if a is not type(None)]
        if value is None:
            return None
        return _coerce(key, value, options[0])
    if value is None:
        raise ValueError(f"Config key {key!r} may not be None")
    if kind is bool:
        if isinstance(value, bool):
            return value
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif kind is str:
        if isinstance(value, str):
            return value
    else:
        raise TypeError(f"Unsupported config field type {kind} for {key!r}")
    raise ValueError(f"Config key {key!r} expects {getattr(kind, '__name__', kind)}, "
                     f"got {value!r} ({type(value).__name__})")


def set_value(config: Config, key: str, value) -> None:
    holder, name, kind = _locate(config, key)
    setattr(holder, name, _coerce(key, value, kind))


def parse_value(text: str):
    """``'0.1'``/``'1e-3'`` -> float, ``'64'`` -> int, ``'true'`` -> True, ``'none'``/``'null'``
    -> None, anything else stays a string (checked against the field's type later)."""
    text = text.strip()
    lowered = text.lower()
    if lowered in ("none", "null", "~", ""):
        return None
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_overrides(items: Sequence[str]) -> Dict[str, Any]:
    """``['train.batch_size=64', 'data.cache=true']`` -> {key: value}. Keys are checked later."""
    overrides = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"Bad --config entry {item!r}: expected key=value "
                             "(e.g. train.batch_size=64)")
        key, text = item.split("=", 1)
        key = key.strip()
        if key in overrides:
            raise ValueError(f"Config key {key!r} is set twice in --config")
        value = parse_value(text.strip())
        if value is not None and _field_kind_is_str(key):
            value = text.strip()  # keep strings verbatim (e.g. regular expressions)
        overrides[key] = value
    return overrides


def _field_kind_is_str(key: str) -> bool:
    try:
        _, _, kind = _locate(Config(), key)
    except ValueError:
        return False
    args = typing.get_args(kind) or (kind,)
    return str in args


def apply(config: Config, overrides: Mapping[str, Any]) -> Config:
    """Returns a copy of ``config`` with ``overrides`` ({dotted key: value}) applied strictly."""
    config = copy(config)
    for key, value in overrides.items():
        set_value(config, key, value)
    return config


def copy(config: Config) -> Config:
    return from_dict(to_dict(config))


def to_dict(config: Config) -> Dict[str, Any]:
    return dataclasses.asdict(config)


def from_dict(values: Mapping[str, Any]) -> Config:
    """Strict inverse of :func:`to_dict` (unknown keys are errors)."""
    config = Config()
    for key, value in values.items():
        if key in SECTIONS:
            if not isinstance(value, Mapping):
                raise ValueError(f"Config section {key!r} must be a mapping, got {value!r}")
            for name, item in value.items():
                set_value(config, f"{key}.{name}", item)
        else:
            set_value(config, key, value)
    return config


def flatten(config: Config) -> Dict[str, Any]:
    """{dotted key: value} for every key."""
    return {key: get(config, key) for key in valid_keys()}


def to_yaml(config: Config) -> str:
    return yaml.safe_dump(to_dict(config), sort_keys=False, default_flow_style=False)


def save(config: Config, directory: str) -> Tuple[str, str]:
    """Writes ``config.yaml`` and ``config.json`` into ``directory``; returns their paths."""

    tf.io.gfile.makedirs(directory)
    paths = (os.path.join(directory, "config.yaml"), os.path.join(directory, "config.json"))
    with tf.io.gfile.GFile(paths[0], "w") as f:
        f.write(to_yaml(config))
    with tf.io.gfile.GFile(paths[1], "w") as f:
        json.dump(to_dict(config), f, indent=2)
    return paths


def load(path: str) -> Config:
    with tf.io.gfile.GFile(path) as f:
        text = f.read()
    return from_dict(json.loads(text) if path.endswith(".json") else yaml.safe_load(text))


# ------------------------------------------------------------------------------ checks


def check_init_modules(modules: str) -> None:
    """Raises ValueError naming the flag and the valid values unless ``modules`` is one of
    INIT_MODULES (config validation and train/fine_tune.py share this message)."""
    if modules not in INIT_MODULES:
        raise ValueError(f"--init_checkpoint_modules (model.init_checkpoint_modules)={modules!r} "
                         f"is not valid; valid values: {', '.join(INIT_MODULES)}")


def _check_choice(key, value, choices, allow_none=False):
    if value is None and allow_none:
        return
    if value not in choices:
        raise ValueError(f"{key}={value!r} is not valid; valid values: "
                         f"{(['None'] if allow_none else []) + list(choices)}")


def _check_range(key, value, low=None, high=None, low_open=False, high_open=False):
    if value is None:
        return
    if low is not None and (value < low or (low_open and value == low)):
        raise ValueError(f"{key}={value} must be {'>' if low_open else '>='} {low}")
    if high is not None and (value > high or (high_open and value == high)):
        raise ValueError(f"{key}={value} must be {'<' if high_open else '<='} {high}")


def validate(config: Config) -> None:
    """Checks values and combinations that can be checked without touching data or devices."""
    # pylint: disable=g-import-not-at-top  (TensorFlow; the owners of the choice lists)

    efficientnet_tf.get_variant(config.model.name)  # names the valid models when unknown
    m, d, t, e, r = config.model, config.data, config.train, config.eval, config.runtime
    _check_range("model.num_classes", m.num_classes, 1)
    _check_range("model.dropout_rate", m.dropout_rate, 0, 1, high_open=True)
    _check_range("model.drop_connect_rate", m.drop_connect_rate, 0, 1, high_open=True)
    _check_range("model.bn_momentum", m.bn_momentum, 0, 1, True, True)
    _check_range("data.image_size", d.image_size, 8)
    _check_range("data.eval_image_size", d.eval_image_size, 8)
    _check_choice("data.resize_method", d.resize_method, RESIZE_METHODS, allow_none=True)
    _check_choice("data.crop_rule", d.crop_rule, CROP_RULES, allow_none=True)
    _check_range("data.crop_padding", d.crop_padding, 0)
    _check_range("data.crop_min_area", d.crop_min_area, 0, 1, low_open=True)
    augment.Augment(d.augment_name, d.randaug_num_layers, d.randaug_magnitude, d.mixup_alpha,
                    d.cutmix_alpha, key_prefix="data.")
    _check_range("data.shuffle_buffer_size", d.shuffle_buffer_size, 1)
    # Random erasing and the holdout split (#22)
    augment.RandomErasing(d.random_erasing_prob)  # owns the range and its message
    _check_range("data.holdout_fraction", d.holdout_fraction, 0, 1, True, True)
    if d.holdout_fraction is not None and d.eval_split is not None:
        raise ValueError(f"data.holdout_fraction={d.holdout_fraction} and data.eval_split="
                         f"{d.eval_split!r} exclude each other: the holdout is the eval split "
                         "(set one of them)")
    if d.holdout_fraction is not None and d.train_split and any(
            c in d.train_split for c in "[+"):  # TFDS cannot slice a slice or a sum of splits
        raise ValueError(f"data.holdout_fraction={d.holdout_fraction} needs data.train_split to "
                         f"be one whole split, not {d.train_split!r}: the holdout is sliced from "
                         "it; hold out from the whole split, or set data.train_split and "
                         "data.eval_split to two slices instead (e.g. train[:90%] and "
                         "train[90%:])")
    _check_range("train.batch_size", t.batch_size, 1)
    _check_range("train.epochs", t.epochs, 0, low_open=True)
    _check_range("train.steps", t.steps, 1)
    if t.epochs is None and t.steps is None:
        raise ValueError("Set one of train.epochs (--train_epochs) or train.steps (--train_steps)")
    optimizers.check(t)  # optimizer, its settings, grad_clip_norm, layer_decay (#22)
    _check_choice("train.lr_schedule", t.lr_schedule, DECAY_TYPES)
    _check_range("train.base_learning_rate", t.base_learning_rate, 0, low_open=True)
    _check_range("train.lr_min", t.lr_min, 0)
    _check_range("train.lr_warmup_epochs", t.lr_warmup_epochs, 0)
    _check_range("train.lr_decay_epochs", t.lr_decay_epochs, 0, low_open=True)
    _check_range("train.lr_decay_factor", t.lr_decay_factor, 0, 1, low_open=True)
    _check_range("train.rmsprop_rho", t.rmsprop_rho, 0, 1, high_open=True)
    _check_range("train.momentum", t.momentum, 0, 1, high_open=True)
    _check_range("train.epsilon", t.epsilon, 0, low_open=True)
    _check_range("train.weight_decay", t.weight_decay, 0)
    _check_range("train.label_smoothing", t.label_smoothing, 0, 1, high_open=True)
    _check_range("train.moving_average_decay", t.moving_average_decay, 0, 1, high_open=True)
    _check_range("train.stages", t.stages, 0)
    if t.stages:
        train_size = d.image_size or efficientnet_tf.model_info(m.name)["resolution"]
        if t.stage_min_image_size > train_size:
            raise ValueError(f"train.stage_min_image_size={t.stage_min_image_size} is larger "
                             f"than the train image size {train_size}")
        _check_range("train.stage_min_image_size", t.stage_min_image_size, 8)
    try:
        re.compile(t.weight_decay_exclude)
    except re.error as err:
        raise ValueError(f"train.weight_decay_exclude={t.weight_decay_exclude!r} is not a "
                         f"regular expression: {err}") from None
    # Small memory (#22); the per-replica batch is checked when the replicas are known
    # (train/steps.py check_accumulation).
    _check_range("train.grad_accum_steps (--grad_accum_steps)", t.grad_accum_steps, 1)
    if t.batch_size % t.grad_accum_steps:
        raise ValueError(f"train.grad_accum_steps (--grad_accum_steps)={t.grad_accum_steps} does "
                         f"not divide train.batch_size (--train_batch_size)={t.batch_size}")
    _check_range("eval.batch_size", e.batch_size, 1)
    _check_range("eval.every_epochs", e.every_epochs, 0, low_open=True)
    _check_choice("runtime.precision", r.precision, PRECISIONS)
    _check_range("runtime.steps_per_loop", r.steps_per_loop, 1)
    _check_range("runtime.checkpoint_every_steps", r.checkpoint_every_steps, 1)
    _check_range("runtime.checkpoint_every_secs", r.checkpoint_every_secs, 0, low_open=True)
    _check_range("runtime.keep_checkpoint_max", r.keep_checkpoint_max, 1)
    _check_range("runtime.log_every_steps", r.log_every_steps, 1)
    # --- #22: fine-tuning controls and recovery (errors name the flag and the key)
    check_init_modules(m.init_checkpoint_modules)
    if m.init_checkpoint_modules != "all" and not m.init_weights:
        raise ValueError(f"--init_checkpoint_modules={m.init_checkpoint_modules} needs "
                         "--init_weights (model.init_weights): there is nothing to initialise from")
    if t.freeze_backbone_steps < -1:
        raise ValueError(f"--freeze_backbone_steps (train.freeze_backbone_steps)="
                         f"{t.freeze_backbone_steps} is not valid; valid values: 0 (off), N > 0 "
                         "(the first N steps), -1 (the whole run)")
    if not r.loss_upper_bound > 0:  # also NaN
        raise ValueError(f"--loss_upper_bound (runtime.loss_upper_bound)={r.loss_upper_bound} "
                         "must be > 0")
    if r.recovery_begin_steps < 0:
        raise ValueError(f"--recovery_begin_steps (runtime.recovery_begin_steps)="
                         f"{r.recovery_begin_steps} must be >= 0")
    if r.recovery_max_trials < -1:
        raise ValueError(f"--recovery_max_trials (runtime.recovery_max_trials)="
                         f"{r.recovery_max_trials} is not valid; valid values: -1 (off, the "
                         "default), 0 (stop at the first divergence), N > 0 (restore up to N times)")
