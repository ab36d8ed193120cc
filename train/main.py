r"""Train and evaluate EfficientNets on TFDS datasets: ``python -m train.main``.

With no flags it trains EfficientNet-B0 on the embedded scikit-learn digits dataset (recipe
'digits'). On ImageNet, with the official recipes::

  python -m train.main --tpu=NAME --model_name=efficientnet-b0 --dataset=imagenet2012 \
      --data_dir=gs://BUCKET/tfds --model_dir=gs://BUCKET/b0 --mode=train_and_eval

Flags use the official trainers' names (tensorflow/tpu efficientnet/main.py, automl
efficientnetv2/main.py) where they exist. The config is: recipe (``--recipe``, by default
chosen from the model and dataset) < flags given on the command line < ``--config key=value``
overrides (a key set both by a flag and by --config is an error). Unknown keys are errors.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Any, Dict, List, Optional

from absl import app, flags

import efficientnet_tf  # noqa: F401  first: it holds back TensorFlow's start-up banner
import tensorflow as tf  # noqa: E402

import export  # noqa: E402
from efficientnet_tf import console  # noqa: E402
from train import augment, checkpoints, distribute, input_pipeline, lock, loop  # noqa: E402
from train import optimizers, recipes, recovery, steps  # noqa: E402
from train import config as config_lib  # noqa: E402

FLAGS = flags.FLAGS

# Run-level flags: where and how to run, not what to train.
flags.DEFINE_string("tpu", None, "Cloud TPU name or grpc:// address ('local' on a TPU VM).")
flags.DEFINE_string("model_dir", None, "Checkpoints, summaries and the resolved config "
                    "(default: <tmp>/efficientnet_tf/<model_name>-<dataset>; a rerun resumes).")
flags.DEFINE_enum("mode", "train_and_eval", list(config_lib.MODES), "What to run.")
flags.DEFINE_string("export_dir", None, "Export the trained (EMA) model here at the end (export/).")
flags.DEFINE_string("export_format", "saved_model", "Format for --export_dir: "
                    + ", ".join(export.FORMATS) + ".")
flags.DEFINE_string("recipe", None, "Named recipe: " + ", ".join(recipes.RECIPES) +
                    " (default: digits on the embedded dataset, v2 for EfficientNetV2, else v1).")
flags.DEFINE_multi_string("config", [], "Config override key=value (repeatable), e.g. "
                          "--config=train.lr_schedule=cosine. Keys: " +
                          ", ".join(config_lib.valid_keys()))
flags.DEFINE_integer("num_cpu_devices", 0, "Split the CPU into this many logical devices and "
                     "train with MirroredStrategy over them (testing distribution on one host).")

# Experiment flags, each mapped to one config key (official names where they exist).
flags.DEFINE_string("model_name", None, "Model, e.g. efficientnet-b0 (default efficientnet-b0).")
flags.DEFINE_string("dataset", None, f"TFDS name or image folder (default {config_lib.DIGITS}).")
flags.DEFINE_string("data_dir", None, "TFDS data_dir.")
flags.DEFINE_integer("train_batch_size", None, "Global train batch size.")
flags.DEFINE_integer("eval_batch_size", None, "Global eval batch size.")
flags.DEFINE_integer("train_steps", None, "Train steps (instead of --train_epochs).")
flags.DEFINE_float("train_epochs", None, "Train epochs (instead of --train_steps).")
flags.DEFINE_boolean("use_bfloat16", None, "bfloat16 activations (default: on TPU only).")
flags.DEFINE_float("base_learning_rate", None, "Learning rate per 256 images.")
flags.DEFINE_float("moving_average_decay", None, "EMA decay of the weights (0: off).")
flags.DEFINE_float("label_smoothing", None, "Label smoothing.")
flags.DEFINE_string("augment_name", None, ", ".join(augment.AUGMENTATIONS) + " or none.")
flags.DEFINE_integer("randaug_num_layers", None, "RandAugment N.")
flags.DEFINE_float("randaug_magnitude", None, "RandAugment M.")
flags.DEFINE_float("mixup_alpha", None, "Mixup alpha (0: off).")
flags.DEFINE_float("cutmix_alpha", None, "CutMix alpha (0: off).")
flags.DEFINE_float("weight_decay", None, "L2 weight decay (not on BN parameters or biases).")
flags.DEFINE_float("dropout_rate", None, "Dropout before the classifier.")
flags.DEFINE_float("drop_connect_rate", None, "Drop-connect (stochastic depth) rate.")
flags.DEFINE_integer("image_size", None, "Train image size (default: the recipe's).")
flags.DEFINE_integer("num_classes", None, "Number of classes (default: the dataset's).")
flags.DEFINE_string("init_weights", None, "Initial weights: a weights tag (imagenet, advprop, ...), a URL, "
                    "anything efficientnet_tf.load_weights accepts, or a model_dir of this trainer; the "
                    "classifier is dropped when the number of classes differs.")
flags.DEFINE_boolean("skip_corrupt", None, "Skip (and count) undecodable images instead of failing.")
# Large-batch optimizers, clipping, layer-wise decay (#22); defaults: train/optimizers.py.
flags.DEFINE_string("optimizer", None, ", ".join(optimizers.OPTIMIZERS) + " (default: the "
                    "recipe's). Defaults: " + optimizers.describe() + ".")
flags.DEFINE_float("optimizer_weight_decay", None, "Weight decay inside adamw (decoupled), "
                   "lamb and lars (trust ratio); default: the optimizer's.")
flags.DEFINE_float("grad_clip_norm", None, "Clip the gradients of the global batch to this "
                   "global norm (0: off).")
flags.DEFINE_float("layer_decay", None, "Layer-wise learning-rate decay: the classifier x1, "
                   "each group toward the stem x this once more (timm --layer-decay; off by default).")
# ImageNet-21k style training and the holdout split (#22)
flags.DEFINE_boolean("use_binary_cross_entropy", None, "Sigmoid binary cross-entropy instead of "
                     "softmax cross-entropy (multi-label data; Model Garden's name).")
flags.DEFINE_float("reprob", None, "Random erasing probability per train image (timm's name; 0: off).")
flags.DEFINE_float("holdout_fraction", None, "Hold out this fraction of the train split and "
                   "evaluate on it (for datasets without a validation split).")
# --- #22: fine-tuning controls and recovery (TF Model Garden's names)
flags.DEFINE_string("init_checkpoint_modules", None, "What --init_weights initialises: "
                    + " or ".join(config_lib.INIT_MODULES) + " (every layer but the classifier, "
                    "which keeps its fresh initialisation). Default all.")
flags.DEFINE_integer("freeze_backbone_steps", None, "Freeze the backbone (every layer but the "
                     "classifier, batch norm in inference mode) for the first N steps; -1: the "
                     "whole run; 0: off (default).")
flags.DEFINE_float("loss_upper_bound", None, "A mean train loss above this is divergence "
                   "(default 1e6).")
flags.DEFINE_integer("recovery_begin_steps", None, "Apply --loss_upper_bound from this step on "
                     "(default 0; a non-finite loss always counts).")
flags.DEFINE_integer("recovery_max_trials", None, "On divergence restore the last good checkpoint "
                     "up to N times, then stop with an error; 0: stop at once; -1 (default): no "
                     "checks.")
# Small memory (#22): NVIDIA's and timm's name; timm's set_grad_checkpointing.
flags.DEFINE_integer("grad_accum_steps", None, "Micro-batches per update: the gradients of "
                     "train_batch_size / k images at a time, summed, one update (default 1).")
flags.DEFINE_boolean("grad_checkpointing", None, "Recompute each block's activations in the "
                     "backward pass instead of storing them (less memory, slower steps).")

# flag name -> config key
FLAG_KEYS = {
    "model_name": "model.name",
    "dataset": "data.dataset",
    "data_dir": "data.data_dir",
    "train_batch_size": "train.batch_size",
    "eval_batch_size": "eval.batch_size",
    "train_steps": "train.steps",
    "train_epochs": "train.epochs",
    "use_bfloat16": "runtime.precision",
    "base_learning_rate": "train.base_learning_rate",
    "moving_average_decay": "train.moving_average_decay",
    "label_smoothing": "train.label_smoothing",
    "augment_name": "data.augment_name",
    "randaug_num_layers": "data.randaug_num_layers",
    "randaug_magnitude": "data.randaug_magnitude",
    "mixup_alpha": "data.mixup_alpha",
    "cutmix_alpha": "data.cutmix_alpha",
    "weight_decay": "train.weight_decay",
    "dropout_rate": "model.dropout_rate",
    "drop_connect_rate": "model.drop_connect_rate",
    "image_size": "data.image_size",
    "num_classes": "model.num_classes",
    "init_weights": "model.init_weights",
    "skip_corrupt": "data.skip_corrupt",
    "optimizer": "train.optimizer",  # (#22)
    "optimizer_weight_decay": "train.optimizer_weight_decay",
    "grad_clip_norm": "train.grad_clip_norm",
    "layer_decay": "train.layer_decay",
    # #22
    "use_binary_cross_entropy": "train.use_binary_cross_entropy",
    "reprob": "data.random_erasing_prob",
    "holdout_fraction": "data.holdout_fraction",
    # #22
    "init_checkpoint_modules": "model.init_checkpoint_modules",
    "freeze_backbone_steps": "train.freeze_backbone_steps",
    "loss_upper_bound": "runtime.loss_upper_bound",
    "recovery_begin_steps": "runtime.recovery_begin_steps",
    "recovery_max_trials": "runtime.recovery_max_trials",
    "grad_accum_steps": "train.grad_accum_steps",  # small memory (#22)
    "grad_checkpointing": "model.grad_checkpointing",
}


def flag_overrides(values: Dict[str, Any]) -> Dict[str, Any]:
    """{flag name: value given} -> {config key: value}."""
    overrides = {}
    for name, value in values.items():
        key = FLAG_KEYS[name]
        if name == "use_bfloat16":
            value = "mixed_bfloat16" if value else "float32"
        elif name == "augment_name" and isinstance(value, str) and value.lower() in ("none", ""):
            value = None
        overrides[key] = value
    return overrides


def name_flags(message: str) -> str:
    """``message`` with the flag of each config key it names added at the end, e.g.
    ``... (--reprob sets data.random_erasing_prob)``: errors come from the config, users type
    flags."""
    named = [f"--{flag} sets {key}" for flag, key in FLAG_KEYS.items()
             if re.search(re.escape(key) + r"(?![\w.])", message) and f"--{flag}" not in message]
    return f"{message} ({'; '.join(named)})" if named else message


def resolve_config(flag_values: Dict[str, Any], config_items: List[str],
                   recipe: Optional[str] = None) -> config_lib.Config:
    """Defaults < recipe < flags < --config. ``flag_values`` holds only flags that were given."""
    from_flags = flag_overrides(flag_values)
    from_config = config_lib.parse_overrides(config_items)
    both = sorted(set(from_flags) & set(from_config))
    if both:
        names = {v: k for k, v in FLAG_KEYS.items()}
        raise ValueError("Set both by a flag and by --config: " + ", ".join(
            f"{key} (--{names[key]})" for key in both))
    if "recipe" in from_config:
        if recipe is not None and recipe != from_config["recipe"]:
            raise ValueError(f"--recipe={recipe} and --config recipe={from_config['recipe']} differ")
        recipe = from_config.pop("recipe")
    user = {**from_flags, **from_config}
    for key in user:  # unknown keys fail here, before the recipe is looked up
        config_lib.get(config_lib.Config(), key)
    if user.get("train.steps") is not None and user.get("train.epochs") is not None:
        raise ValueError("Give --train_steps or --train_epochs, not both "
                         f"(got steps={user['train.steps']}, epochs={user['train.epochs']})")
    model_name = user.get("model.name") or config_lib.ModelConfig.name
    dataset = user.get("data.dataset") or config_lib.DataConfig.dataset
    recipe = recipe or recipes.default_recipe(model_name, dataset)
    cfg = config_lib.apply(config_lib.Config(), recipes.recipe_overrides(recipe, model_name))
    cfg = config_lib.apply(cfg, user)
    if user.get("train.steps") is not None:
        cfg.train.epochs = None  # steps given: the recipe's epochs no longer apply
    elif user.get("train.epochs") is not None:
        cfg.train.steps = None
    config_lib.validate(cfg)
    return cfg


def check_run(cfg: config_lib.Config, mode: str, model_dir: Optional[str],
              export_dir: Optional[str], tpu: Optional[str], num_cpu_devices: int,
              export_format: str = "saved_model") -> None:
    """Invalid combinations of run flags and config, found before any work starts."""

    distribute.check_request(tpu, num_cpu_devices)
    # Small memory (#22): the per-replica batch, where the flags say how many replicas there are.
    k, batch = cfg.train.grad_accum_steps, cfg.train.batch_size
    if num_cpu_devices > 1 and k > 1 and batch % num_cpu_devices == 0:
        steps.check_accumulation(batch, num_cpu_devices, k)
    if mode == "eval" and cfg.model.init_weights is None and not _has_checkpoint(model_dir):
        raise ValueError(f"--mode=eval needs a checkpoint in --model_dir={model_dir} or "
                         "--init_weights to evaluate")
    if tpu and cfg.runtime.precision == "mixed_float16":
        raise ValueError("float16 is not supported on TPU; use --use_bfloat16 (the default there)")
    if tpu and cfg.runtime.jit_compile is False:
        raise ValueError("TPU programs are always compiled; runtime.jit_compile=false is invalid with --tpu")
    source = cfg.model.init_weights
    if (source and ("/" in source or os.sep in source) and not source.startswith(("http://", "https://", "file://"))
            and not _exists(source)):  # URLs are downloaded by load_weights
        raise ValueError(f"--init_weights={source!r} does not exist")
    if export_dir and os.path.abspath(export_dir) == os.path.abspath(model_dir):
        raise ValueError("--export_dir must differ from --model_dir")
    if export_dir:

        if export_format not in export.FORMATS:
            raise ValueError(f"--export_format={export_format!r}; valid: {', '.join(export.FORMATS)}")


def default_model_dir(cfg: config_lib.Config) -> str:
    """<tmp>/efficientnet_tf/<model_name>-<dataset name>: where a run without --model_dir goes."""
    import tempfile  # pylint: disable=g-import-not-at-top

    dataset = os.path.basename(os.path.normpath(cfg.data.dataset)) or "dataset"
    return os.path.join(tempfile.gettempdir(), "efficientnet_tf", f"{cfg.model.name}-{dataset}")


def _exists(path: str) -> bool:
    return tf.io.gfile.exists(path)


def _has_checkpoint(model_dir: str) -> bool:
    return checkpoints.CheckpointStore(model_dir).has_checkpoint()


def given_flags() -> Dict[str, Any]:
    """The experiment flags present on the command line, with their values."""
    return {name: FLAGS[name].value for name in FLAG_KEYS if FLAGS[name].present}


def main(argv):
    console.setup_from_flags()
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    try:
        cfg = resolve_config(given_flags(), FLAGS.config, FLAGS.recipe)
        model_dir = FLAGS.model_dir or default_model_dir(cfg)
        check_run(cfg, FLAGS.mode, model_dir, FLAGS.export_dir, FLAGS.tpu,
                  FLAGS.num_cpu_devices, FLAGS.export_format)
    except ValueError as err:  # a bad flag or config: say so before any work starts
        print(f"error: {name_flags(str(err))}", file=sys.stderr)
        return 2

    if not FLAGS.model_dir:
        print(f"--model_dir not given: using {model_dir}", flush=True)
    try:
        loop.run(cfg, mode=FLAGS.mode, model_dir=model_dir, tpu=FLAGS.tpu,
                 export_dir=FLAGS.export_dir, export_format=FLAGS.export_format,
                 num_cpu_devices=FLAGS.num_cpu_devices)
    except distribute.ReplicaSplitError as err:  # batch vs the replicas the strategy found
        print(f"error: {name_flags(str(err))}", file=sys.stderr)
        return 2
    except (input_pipeline.ManualDownloadError,  # e.g. imagenet2012: TFDS's instructions
            lock.ModelDirInUseError) as err:  # another run trains in --model_dir
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (checkpoints.CheckpointWriteError, checkpoints.NoReadableCheckpointError) as err:
        print(f"error: {err}", file=sys.stderr)  # disk full, I/O error, every checkpoint damaged
        return 1
    except recovery.TrainingDivergedError as err:  # #22: no recovery trial left
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    app.run(main)
