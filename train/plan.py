"""What a run will do, worked out from the config and the data before any model exists: split
sizes, classes, image sizes, crop rule, step counts, stages, and the input pipelines' specs."""

from __future__ import annotations

import dataclasses
import os
from typing import Dict, List, Optional

import tensorflow as tf

import efficientnet_tf
from train import augment
from train import config as config_lib
from train import input_pipeline
from train import losses
from train import preprocessing
from train import recipes


@dataclasses.dataclass(frozen=True)
class RunPlan:
    """The facts of one run (written to run_info.json with the strategy's).

    eval_split / train_split: split names, or input_pipeline.HoldoutSplit parts of the train
    split (data.holdout_fraction).
    """
    eval_split: object
    eval_facts: input_pipeline.DatasetFacts
    train_facts: Optional[input_pipeline.DatasetFacts]
    num_classes: int
    train_size: int
    eval_size: int
    resize_method: str
    crop_rule: preprocessing.CropRule
    total_steps: int = 0
    steps_per_epoch: int = 0
    epoch_steps: float = 1.0  # float examples / batch, as the official schedule uses
    eval_every: int = 0
    stages: List[recipes.Stage] = dataclasses.field(default_factory=list)
    train_split: object = None  # what training reads: data.train_split or a holdout's rest

    def info(self) -> Dict[str, object]:
        return {
            "num_classes": self.num_classes, "class_names": list(self.eval_facts.class_names),
            "train_image_size": self.train_size, "eval_image_size": self.eval_size,
            "eval_split": _split_name(self.eval_split), "resize_method": self.resize_method,
            "crop_rule": dataclasses.asdict(self.crop_rule), "total_steps": self.total_steps,
            "steps_per_epoch": self.steps_per_epoch,
            "train_examples": self.train_facts.num_examples if self.train_facts else None,
            "eval_examples": self.eval_facts.num_examples,
            "stages": [dataclasses.asdict(s) for s in self.stages],
            # #22: the split trained on (a holdout's rest), multi-hot labels
            "train_split": _split_name(self.train_split) if self.train_facts else None,
            "multi_label": self.eval_facts.multi_label,
        }


def _split_name(split) -> Optional[str]:
    return None if split is None else str(split)


def make_plan(cfg: config_lib.Config, mode: str) -> RunPlan:
    """The RunPlan of ``cfg`` in ``mode`` (reads split sizes; the datasets must be prepared)."""
    data, train_cfg = cfg.data, cfg.train
    info = efficientnet_tf.model_info(cfg.model.name)
    train_split, eval_split = data.train_split, data.eval_split
    if data.holdout_fraction is not None:  # evaluate on a part of the train split (#22)
        train_split = input_pipeline.HoldoutSplit(data.train_split, data.holdout_fraction, False)
        eval_split = input_pipeline.HoldoutSplit(data.train_split, data.holdout_fraction, True)
    eval_split = eval_split or default_eval_split(data)
    eval_facts = input_pipeline.dataset_facts(data.dataset, eval_split, data.data_dir)
    train_facts = (input_pipeline.dataset_facts(data.dataset, train_split, data.data_dir)
                   if mode != "eval" else None)
    data_classes = (train_facts or eval_facts).num_classes
    num_classes = cfg.model.num_classes or data_classes
    if num_classes < data_classes:
        raise ValueError(f"model.num_classes={num_classes} is smaller than the {data_classes} "
                         f"classes of {data.dataset!r}")
    plan = RunPlan(eval_split, eval_facts, train_facts, num_classes,
                   train_size=data.image_size or info["resolution"],
                   eval_size=data.eval_image_size or info["resolution"],
                   resize_method=data.resize_method or info["resize_method"],
                   crop_rule=crop_rule(cfg), train_split=train_split)
    if train_facts is None:
        return plan
    batch = train_cfg.batch_size
    if train_facts.num_examples < batch:
        raise ValueError(f"train.batch_size={batch} exceeds the {train_facts.num_examples} "
                         f"examples of split {_split_name(train_split)!r}")
    epoch_steps = train_facts.num_examples / batch  # float, like the official schedule
    total_steps = train_cfg.steps or max(1, int(train_cfg.epochs * epoch_steps))
    return dataclasses.replace(
        plan, total_steps=total_steps, epoch_steps=epoch_steps,
        steps_per_epoch=input_pipeline.steps_per_epoch(train_facts.num_examples, batch),
        stages=recipes.stages(cfg, total_steps, plan.train_size),
        eval_every=(max(1, int(round(cfg.eval.every_epochs * epoch_steps)))
                    if cfg.eval.every_epochs else total_steps))


def eval_spec(cfg: config_lib.Config, plan: RunPlan) -> input_pipeline.PipelineSpec:
    data = cfg.data
    return input_pipeline.PipelineSpec(
        data.dataset, plan.eval_split, data.data_dir, is_training=False,
        image_size=plan.eval_size, batch_size=cfg.eval.batch_size,
        resize_method=plan.resize_method, crop_rule=plan.crop_rule, cache=data.cache,
        deterministic=data.deterministic, skip_corrupt=data.skip_corrupt, download=False,
        # multi-hot labels as wide as the model's output (single-label: int ids)
        num_classes=plan.num_classes if plan.eval_facts.multi_label else None)


def train_spec(cfg: config_lib.Config, plan: RunPlan, stage: recipes.Stage,
               seed: Optional[int]) -> input_pipeline.PipelineSpec:
    data = cfg.data
    info = efficientnet_tf.model_info(cfg.model.name)
    return input_pipeline.PipelineSpec(
        data.dataset, plan.train_split, data.data_dir, is_training=True,
        image_size=stage.image_size, batch_size=cfg.train.batch_size,
        resize_method=plan.resize_method, crop_rule=plan.crop_rule,
        augmentation=augment.Augment(data.augment_name, data.randaug_num_layers,
                                     stage.randaug_magnitude, stage.mixup_alpha,
                                     stage.cutmix_alpha, key_prefix="data."),
        num_classes=plan.num_classes, cache=data.cache,
        deterministic=data.deterministic, seed=seed, skip_corrupt=data.skip_corrupt,
        shuffle_buffer_size=data.shuffle_buffer_size, download=False,
        area_range=(data.crop_min_area, preprocessing.TRAIN_AREA_RANGE[1]),
        random_flip=data.random_flip,
        # Noise that is N(0, 1) after the model's own normalization (timm's 'pixel' fill).
        random_erasing=augment.RandomErasing.for_normalization(
            data.random_erasing_prob, info["mean_rgb"], info["stddev_rgb"]),
        normalize_multi_hot=loss(cfg, plan).normalizes_multi_hot)


def loss(cfg: config_lib.Config, plan: RunPlan) -> losses.Loss:
    """The run's loss: softmax or binary cross-entropy, multi-label when the data is."""
    return losses.Loss(binary=cfg.train.use_binary_cross_entropy,
                       label_smoothing=cfg.train.label_smoothing,
                       multi_label=plan.eval_facts.multi_label)


def default_eval_split(data: config_lib.DataConfig) -> str:
    """'validation' when the dataset (or image folder) has it, else 'val' (folders) or 'test'."""
    if input_pipeline.is_image_folder(data.dataset):
        for name in ("validation", "val", "test"):
            if tf.io.gfile.isdir(os.path.join(data.dataset, name)):
                return name
        raise ValueError(f"Image folder {data.dataset!r} has no validation/, val/ or test/ "
                         "sub-folder; set data.eval_split")
    builder = input_pipeline.prepared_builder(data.dataset, data.data_dir, download=False)
    splits = list(builder.info.splits)
    for name in ("validation", "test"):
        if name in splits:
            return name
    raise ValueError(f"Dataset {data.dataset!r} has no 'validation' or 'test' split (splits: "
                     f"{splits}); set data.eval_split")


def prepare(data: config_lib.DataConfig) -> None:
    """Prepares a TFDS dataset (e.g. the embedded digits) once, before any worker reads it."""
    if not input_pipeline.is_image_folder(data.dataset):
        input_pipeline.prepared_builder(data.dataset, data.data_dir, download=True)


def crop_rule(cfg: config_lib.Config) -> preprocessing.CropRule:
    """The family's crop rule (model_info), with the config's overrides."""
    if cfg.data.crop_rule:
        rule = preprocessing.get_crop_rule(cfg.data.crop_rule)
    else:
        rule = preprocessing.crop_rule_for_model(cfg.model.name)
    if cfg.data.crop_padding is not None:
        rule = dataclasses.replace(rule, crop_padding=cfg.data.crop_padding)
    return rule
