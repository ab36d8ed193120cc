"""The official training recipes (V1, V2) and the embedded 'digits' recipe, as config overrides.

A recipe is a function of the model name returning ``{dotted config key: value}``; it is
applied on top of the defaults in ``train/config.py`` and under the command line. Training
facts (train size, augmentation strength, epochs) live here, not in ``efficientnet_tf/config.py``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, List, Optional

import numpy as np

import efficientnet_tf
from train import config as config_lib

# ---------------------------------------------------------------------------------- V1
# tensorflow/tpu models/official/efficientnet/main.py flag defaults: batch 2048, 218949 steps
# (= 350 epochs), base lr 0.016 per 256 images, RMSProp(decay 0.9, momentum 0.9, eps 1e-3),
# 5 warm-up epochs, x0.97 every 2.4 epochs, weight decay 1e-5, label smoothing 0.1, EMA
# 0.9999, eval every 6255 steps (~10 epochs). The released B0-B7 checkpoints were trained with
# AutoAugment (tensorflow/tpu efficientnet README). Dropout comes from the variant table;
# drop-connect 0.2 (survival_prob 0.8) likewise. Train and eval at the variant's resolution.
# Weight decay skips BN parameters and biases (automl's weight_decay_exclude; tensorflow/tpu
# skipped only BN variables, so its SE and classifier biases were decayed too).
#
# What the V1 and V2 recipes share (both official trainers' defaults agree on these).
OFFICIAL_COMMON = {
    "train.epochs": 350.0,
    "train.optimizer": "rmsprop",
    "train.rmsprop_rho": 0.9,
    "train.momentum": 0.9,
    "train.epsilon": 1e-3,
    "train.base_learning_rate": 0.016,
    "train.lr_schedule": "exponential",
    "train.lr_warmup_epochs": 5.0,
    "train.lr_decay_epochs": 2.4,
    "train.lr_decay_factor": 0.97,
    "train.weight_decay": 1e-5,
    "train.label_smoothing": 0.1,
    "train.moving_average_decay": 0.9999,
    "eval.batch_size": 1024,
    "eval.every_epochs": 10.0,
    # A 16k-example shuffle buffer of JPEGs would add ~2 GB to every checkpoint.
    "runtime.checkpoint_input": False,
}

V1 = {
    **OFFICIAL_COMMON,
    "train.batch_size": 2048,
    "data.augment_name": "autoaugment",
}


# ---------------------------------------------------------------------------------- V2
@dataclasses.dataclass(frozen=True)
class V2Params:
    """The training columns of automl ``effnetv2_configs.py`` ``efficientnetv2_params``."""

    train_size: int
    eval_size: int
    randaug_magnitude: float
    mixup_alpha: float  # automl sets cutmix_alpha to the same value
    augment_name: str


# (train_size, eval_size, randaug, mixup, aug) from google/automl efficientnetv2/
# effnetv2_configs.py efficientnetv2_params. 'effnetv1_autoaug' (B0-B3) = AutoAugment with
# V1 preprocessing.
V2_PARAMS = {
    "efficientnetv2-s": V2Params(300, 384, 10, 0.0, "randaugment"),
    "efficientnetv2-m": V2Params(384, 480, 15, 0.2, "randaugment"),
    "efficientnetv2-l": V2Params(384, 480, 20, 0.5, "randaugment"),
    "efficientnetv2-xl": V2Params(384, 512, 20, 0.5, "randaugment"),
    "efficientnetv2-b0": V2Params(192, 224, 0, 0.0, "autoaugment"),
    "efficientnetv2-b1": V2Params(192, 240, 0, 0.0, "autoaugment"),
    "efficientnetv2-b2": V2Params(208, 260, 0, 0.0, "autoaugment"),
    "efficientnetv2-b3": V2Params(240, 300, 0, 0.0, "autoaugment"),
}

# google/automl efficientnetv2/hparams.py base_config (train: epochs 350, rmsprop, lr_base
# 0.016, exponential 0.97 / 2.4 epochs, warm-up 5, ema 0.9999, weight_decay 1e-5 excluding
# bias|gamma|beta, label smoothing 0.1, batch 4096; data: ra_num_layers 2, ibase 128) and
# effnetv2_configs.py efficientnetv2_config (train.stages 4, sched True).
V2_BASE = {
    **OFFICIAL_COMMON,
    "train.batch_size": 4096,
    "train.stages": 4,
    "train.stage_min_image_size": 128,  # automl data.ibase
    "train.stage_min_randaug_magnitude": 5.0,  # automl main.py: np.linspace(5, ram, stages)
    "train.stage_min_mixup_alpha": 0.0,
    "train.stage_min_cutmix_alpha": 0.0,
    "data.randaug_num_layers": 2,
}


def _v2(model_name: str) -> Dict[str, Any]:
    if model_name not in V2_PARAMS:
        raise ValueError(f"Recipe 'v2' is for EfficientNetV2 models; {model_name!r} is not one of "
                         f"{', '.join(V2_PARAMS)}. Use --recipe=v1 for V1/Lite models.")
    params = V2_PARAMS[model_name]
    recipe = dict(V2_BASE)
    recipe.update({
        "data.image_size": params.train_size,
        "data.eval_image_size": params.eval_size,
        "data.augment_name": params.augment_name,
        "data.randaug_magnitude": float(params.randaug_magnitude),
        "data.mixup_alpha": params.mixup_alpha,
        "data.cutmix_alpha": params.mixup_alpha,
    })
    return recipe


def _v1(model_name: str) -> Dict[str, Any]:
    family = efficientnet_tf.model_info(model_name)["family"]
    if family == "v2":
        raise ValueError(f"Recipe 'v1' is for EfficientNet V1/Lite models; {model_name!r} is a V2 "
                         "model (use --recipe=v2).")
    return dict(V1)


# ------------------------------------------------------------------------------ digits
# The embedded default: scikit-learn's 8x8 digits upscaled to 32x32 (train/digits_dataset.py),
# 1437 train / 360 test images, EfficientNet-B0 from scratch at 48 px. Chosen by a small sweep
# on two CPU cores (docs/changelog.md, the digits sweep): the official random-area crop (8-100% of the area) and the
# horizontal flip destroy or mirror digits (70% after 40 epochs), so the crop keeps >= 70% of the
# area and there is no flip; no eval centre crop (the digits fill the frame); Adam with a
# cosine schedule; BN momentum 0.9 and EMA 0.999 because the run is only ~670 steps.
DIGITS = {
    "model.bn_momentum": 0.9,
    "data.image_size": 48,  # 32 px needs ~40 epochs for the same accuracy (docs/changelog.md)
    "data.eval_image_size": 48,
    "data.crop_padding": 0,
    "data.crop_min_area": 0.7,
    "data.random_flip": False,
    "data.augment_name": None,
    "data.shuffle_buffer_size": 2048,
    "train.batch_size": 64,
    "train.epochs": 30.0,
    "train.optimizer": "adam",
    "train.base_learning_rate": 0.02,  # per 256 images: a peak of 0.005 at batch 64
    "train.lr_schedule": "cosine",
    "train.lr_warmup_epochs": 2.0,
    "train.weight_decay": 1e-5,
    "train.label_smoothing": 0.1,
    "train.moving_average_decay": 0.999,
    "eval.batch_size": 360,
    "eval.every_epochs": 5.0,
    "runtime.steps_per_loop": 22,
    "runtime.checkpoint_every_secs": 60.0,
    "runtime.log_every_steps": 22,
}


def _digits(model_name: str) -> Dict[str, Any]:
    del model_name
    return dict(DIGITS)


RECIPES: Dict[str, Callable[[str], Dict[str, Any]]] = {"v1": _v1, "v2": _v2, "digits": _digits}


def default_recipe(model_name: str, dataset: str) -> str:
    """'digits' on the embedded dataset, else 'v2' for EfficientNetV2 and 'v1' for V1/Lite."""
    if dataset == config_lib.DIGITS:
        return "digits"
    return "v2" if efficientnet_tf.model_info(model_name)["family"] == "v2" else "v1"


def recipe_overrides(recipe: str, model_name: str) -> Dict[str, Any]:
    if recipe not in RECIPES:
        raise ValueError(f"Unknown recipe {recipe!r}; valid recipes: {', '.join(RECIPES)}")
    overrides = RECIPES[recipe](model_name)
    overrides["recipe"] = recipe
    return overrides


# ----------------------------------------------------------------- progressive learning
@dataclasses.dataclass(frozen=True)
class Stage:
    """One stage of progressive learning: steps [start_step, end_step) at one image size and
    one regularization strength."""

    index: int
    start_step: int
    end_step: int
    image_size: int
    randaug_magnitude: float
    mixup_alpha: float
    cutmix_alpha: float


def stages(cfg: config_lib.Config, total_steps: int, train_size: int) -> List[Stage]:
    """The training stages. Without progressive learning, one stage at the configured values.

    EfficientNetV2 (Tan & Le 2021, Algorithm 1): stage i of M trains at size
    S0 + (Se - S0) * i / (M - 1) with regularization likewise interpolated; the stage ends at
    step int((i + 1) / M * total). automl's main.py interpolates RandAugment magnitude, mixup
    and cutmix with np.linspace exactly so; its image size is ibase + (Se - ibase) * (i + 1) / M
    (first stage above 128) while its commented-out line and the paper use the linspace kept
    here, so the first stage trains at 128 px.
    """
    data, train = cfg.data, cfg.train
    num = train.stages
    if not num:
        return [Stage(0, 0, total_steps, train_size, data.randaug_magnitude, data.mixup_alpha,
                      data.cutmix_alpha)]
    sizes = np.linspace(train.stage_min_image_size, train_size, num)
    ram = np.linspace(train.stage_min_randaug_magnitude, data.randaug_magnitude, num)
    mixup = np.linspace(train.stage_min_mixup_alpha, data.mixup_alpha, num)
    cutmix = np.linspace(train.stage_min_cutmix_alpha, data.cutmix_alpha, num)
    result = []
    for i in range(num):
        start = int(i / num * total_steps)
        end = int((i + 1) / num * total_steps)
        result.append(Stage(i, start, end, int(sizes[i]), float(ram[i]), float(mixup[i]),
                            float(cutmix[i])))
    return [s for s in result if s.end_step > s.start_step]


def stage_at(all_stages: List[Stage], step: int) -> Optional[Stage]:
    """The stage that trains step ``step`` (None when training is finished)."""
    for stage in all_stages:
        if stage.start_step <= step < stage.end_step:
            return stage
    return None
