"""train/: strict config, recipes (numbers from the official code), progressive stages and the
learning-rate schedule. No training here: these are fast."""

import math

import numpy as np
import pytest

from train import config as config_lib
from train import main as train_main
from train import recipes
from train import schedules


def resolve(flags=None, items=(), recipe=None):
    return train_main.resolve_config(dict(flags or {}), list(items), recipe)


# ------------------------------------------------------------------------------ config


def test_every_flag_maps_to_a_valid_key():
    keys = set(config_lib.valid_keys())
    assert set(train_main.FLAG_KEYS.values()) <= keys
    assert "train.batch_size" in keys and "runtime.precision" in keys


def test_overrides_are_parsed_by_field_type():
    parsed = config_lib.parse_overrides([
        "train.batch_size=64", "train.base_learning_rate=1e-3", "data.cache=true",
        "data.augment_name=none", "train.weight_decay_exclude=.*(bias|gamma)$", "model.name=efficientnet-b1",
        "data.dataset=123"])
    cfg = config_lib.apply(config_lib.Config(), parsed)
    assert cfg.train.batch_size == 64 and isinstance(cfg.train.batch_size, int)
    assert cfg.train.base_learning_rate == 1e-3
    assert cfg.data.cache is True and cfg.data.augment_name is None
    assert cfg.train.weight_decay_exclude == ".*(bias|gamma)$"  # kept verbatim, '|' and all
    assert cfg.data.dataset == "123"  # a string field keeps a number-like value as text


@pytest.mark.parametrize("item, message", [
    ("train.batchsize=3", "Valid keys in 'train'"),
    ("optimizer.lr=3", "Valid keys"),
    ("batch_size=3", "Valid keys"),
    ("train.batch_size=abc", "expects int"),
    ("train.batch_size=2.5", "expects int"),
    ("data.cache=1", "expects bool"),
    ("train.batch_size", "expected key=value"),
])
def test_bad_overrides_name_the_key(item, message):
    with pytest.raises(ValueError, match=message):
        config_lib.apply(config_lib.Config(), config_lib.parse_overrides([item]))


def test_default_is_the_digits_recipe():
    cfg = resolve()
    assert cfg.recipe == "digits" and cfg.data.dataset == config_lib.DIGITS
    assert cfg.model.name == "efficientnet-b0"
    assert cfg.data.image_size == 48 and cfg.data.crop_padding == 0
    assert (cfg.data.crop_min_area, cfg.data.random_flip) == (0.7, False)


def test_v1_recipe_is_the_official_one():
    cfg = resolve({"model_name": "efficientnet-b3", "dataset": "imagenet2012"})
    t = cfg.train
    assert cfg.recipe == "v1"
    assert (t.optimizer, t.rmsprop_rho, t.momentum, t.epsilon) == ("rmsprop", 0.9, 0.9, 1e-3)
    assert (t.base_learning_rate, t.lr_warmup_epochs, t.lr_decay_epochs, t.lr_decay_factor) == (
        0.016, 5.0, 2.4, 0.97)
    assert (t.weight_decay, t.label_smoothing, t.moving_average_decay, t.epochs) == (
        1e-5, 0.1, 0.9999, 350.0)
    assert t.batch_size == 2048 and t.stages == 0
    assert cfg.model.dropout_rate is None  # the variant's own (0.3 for B3) is used
    assert cfg.data.image_size is None  # trains at the variant's resolution


@pytest.mark.parametrize("name, train_size, eval_size, ram, mixup, aug", [
    ("efficientnetv2-s", 300, 384, 10, 0.0, "randaugment"),
    ("efficientnetv2-m", 384, 480, 15, 0.2, "randaugment"),
    ("efficientnetv2-l", 384, 480, 20, 0.5, "randaugment"),
    ("efficientnetv2-xl", 384, 512, 20, 0.5, "randaugment"),
    ("efficientnetv2-b0", 192, 224, 0, 0.0, "autoaugment"),
    ("efficientnetv2-b1", 192, 240, 0, 0.0, "autoaugment"),
    ("efficientnetv2-b2", 208, 260, 0, 0.0, "autoaugment"),
    ("efficientnetv2-b3", 240, 300, 0, 0.0, "autoaugment"),
])
def test_v2_recipe_follows_automl_table(name, train_size, eval_size, ram, mixup, aug):
    cfg = resolve({"model_name": name, "dataset": "imagenet2012"})
    assert cfg.recipe == "v2"
    assert (cfg.data.image_size, cfg.data.eval_image_size) == (train_size, eval_size)
    assert (cfg.data.randaug_magnitude, cfg.data.mixup_alpha, cfg.data.cutmix_alpha) == (
        ram, mixup, mixup)
    assert cfg.data.augment_name == aug
    assert (cfg.train.stages, cfg.train.stage_min_image_size, cfg.train.batch_size) == (4, 128, 4096)


def test_layering_recipe_flags_config():
    cfg = resolve({"model_name": "efficientnet-b0", "dataset": "imagenet2012",
                   "train_batch_size": 512, "use_bfloat16": True, "augment_name": "none"},
                  ["train.lr_schedule=cosine", "eval.every_epochs=null"])
    assert cfg.train.batch_size == 512 and cfg.runtime.precision == "mixed_bfloat16"
    assert cfg.data.augment_name is None and cfg.train.lr_schedule == "cosine"
    assert cfg.eval.every_epochs is None
    assert cfg.train.optimizer == "rmsprop"  # untouched recipe values stay


def test_steps_replace_epochs():
    cfg = resolve({"train_steps": 10})
    assert (cfg.train.steps, cfg.train.epochs) == (10, None)
    cfg = resolve({}, ["train.epochs=3"])
    assert (cfg.train.steps, cfg.train.epochs) == (None, 3.0)


@pytest.mark.parametrize("flags, items, recipe, message", [
    ({"train_steps": 5, "train_epochs": 2.0}, [], None, "not both"),
    ({"train_batch_size": 8}, ["train.batch_size=16"], None, "both by a flag and by --config"),
    ({"model_name": "efficientnet-b0", "dataset": "imagenet2012"}, [], "v2", "Recipe 'v2'"),
    ({"model_name": "efficientnetv2-s", "dataset": "imagenet2012"}, [], "v1", "Recipe 'v1'"),
    ({}, [], "v3", "Unknown recipe"),
    ({"model_name": "efficientnet-b9"}, [], None, "Valid names"),
    ({"augment_name": "cutout"}, [], None, "data.augment_name='cutout'"),
    ({"label_smoothing": 1.5}, [], None, "train.label_smoothing=1.5"),
    ({"image_size": 100}, ["train.stages=4", "train.stage_min_image_size=128"], None, "larger"),
    ({}, ["train.weight_decay_exclude=(oops"], None, "not a regular expression"),
    ({}, ["train.optimizer=lion"], None, "valid values"),
])
def test_invalid_combinations_fail_early(flags, items, recipe, message):
    with pytest.raises(ValueError, match=message):
        resolve(flags, items, recipe)


def test_yaml_and_json_round_trip(tmp_path):
    cfg = resolve({"model_name": "efficientnetv2-m", "dataset": "imagenet2012"},
                  ["train.weight_decay_exclude=.*/(gamma|beta)$"])
    yaml_path, json_path = config_lib.save(cfg, str(tmp_path))
    assert config_lib.load(yaml_path) == cfg
    assert config_lib.load(json_path) == cfg
    with pytest.raises(ValueError, match="Unknown config key"):
        config_lib.from_dict({"train": {"bogus": 1}})


# ---------------------------------------------------------------- progressive learning


def test_progressive_stages_v2_s():
    cfg = resolve({"model_name": "efficientnetv2-s", "dataset": "imagenet2012"})
    stages = recipes.stages(cfg, total_steps=1000, train_size=300)
    assert [s.image_size for s in stages] == [128, 185, 242, 300]
    np.testing.assert_allclose([s.randaug_magnitude for s in stages], [5, 20 / 3, 25 / 3, 10])
    assert [s.mixup_alpha for s in stages] == [0, 0, 0, 0]
    assert [(s.start_step, s.end_step) for s in stages] == [(0, 250), (250, 500), (500, 750),
                                                            (750, 1000)]
    assert recipes.stage_at(stages, 0).index == 0 and recipes.stage_at(stages, 749).index == 2
    assert recipes.stage_at(stages, 1000) is None


def test_progressive_stages_v2_l_mixup():
    cfg = resolve({"model_name": "efficientnetv2-l", "dataset": "imagenet2012"})
    stages = recipes.stages(cfg, total_steps=7, train_size=384)
    assert [s.image_size for s in stages] == [128, 213, 298, 384]
    np.testing.assert_allclose([s.mixup_alpha for s in stages], [0, 1 / 6, 1 / 3, 0.5])
    np.testing.assert_allclose([s.cutmix_alpha for s in stages], [0, 1 / 6, 1 / 3, 0.5])
    assert stages[0].start_step == 0 and stages[-1].end_step == 7  # every step in one stage
    assert all(a.end_step == b.start_step for a, b in zip(stages, stages[1:]))


def test_single_stage_without_progressive_learning():
    cfg = resolve({"model_name": "efficientnet-b0", "dataset": "imagenet2012"})
    (stage,) = recipes.stages(cfg, total_steps=50, train_size=224)
    assert (stage.start_step, stage.end_step, stage.image_size) == (0, 50, 224)


# ---------------------------------------------------------------------- LR schedule


def official_lr(step, peak, steps_per_epoch, warmup_epochs=5, decay_epochs=2.4, factor=0.97):
    """tensorflow/tpu utils.build_learning_rate, written out in plain Python."""
    lr = peak * factor ** math.floor(step / (steps_per_epoch * decay_epochs))
    warmup_steps = int(warmup_epochs * steps_per_epoch)
    return peak * step / warmup_steps if step < warmup_steps else lr


def test_exponential_schedule_matches_official_formula():
    peak = schedules.scaled_learning_rate(0.016, 4096)
    assert peak == pytest.approx(0.256)
    spe = 1281167 / 4096  # float, as the official code
    schedule = schedules.WarmupDecaySchedule(peak, spe)
    warmup_steps = int(5 * spe)
    for step in [0, 1, 100, warmup_steps - 1, warmup_steps, warmup_steps + 1, int(2.4 * spe),
                 int(2.4 * spe) + 1, 10_000, 109_000]:
        assert float(schedule(step)) == pytest.approx(official_lr(step, peak, spe), rel=1e-5)
    # The official quirk: the decay counts from step 0, so warm-up ends at peak * 0.97**2.
    assert float(schedule(warmup_steps)) == pytest.approx(peak * 0.97 ** 2, rel=1e-5)


def test_cosine_linear_constant_and_min():
    cosine = schedules.WarmupDecaySchedule(1.0, 10, "cosine", warmup_epochs=1, total_steps=100)
    assert float(cosine(5)) == pytest.approx(0.5)  # warm-up
    assert float(cosine(50)) == pytest.approx(0.5, abs=1e-6)
    assert float(cosine(100)) == pytest.approx(0.0, abs=1e-6)
    linear = schedules.WarmupDecaySchedule(1.0, 10, "linear", warmup_epochs=0, total_steps=100)
    assert float(linear(25)) == pytest.approx(0.75)
    constant = schedules.WarmupDecaySchedule(2.0, 10, "constant", warmup_epochs=0)
    assert float(constant(1000)) == pytest.approx(2.0)
    floor = schedules.WarmupDecaySchedule(1.0, 10, "cosine", warmup_epochs=0, total_steps=100,
                                          min_learning_rate=0.1)
    assert float(floor(100)) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="total_steps"):
        schedules.WarmupDecaySchedule(1.0, 10, "cosine")
    restored = schedules.WarmupDecaySchedule.from_config(cosine.get_config())
    assert float(restored(37)) == float(cosine(37))
