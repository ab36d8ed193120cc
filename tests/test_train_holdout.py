"""data.holdout_fraction (tensorflow/tpu holdout_shards): a held-out part of the train split
for evaluation, on the embedded digits (TFDS slicing) and on an image folder (per class, by
file-name hash); its checks, the plan that reports it, and one real trainer process that
trains on the rest and evaluates on the holdout of a multi-label TFDS dataset with binary
cross-entropy and random erasing (the #22 features together)."""

import dataclasses
import os
import re

import digit_pairs
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from train import config as config_lib
from train import input_pipeline as ip
from train import main as train_main
from train import plan as plan_lib
from train_helpers import SMALL, check_ok, read_json, run_main


def tfds_ids(data_dir, split):
    builder = tfds.builder("sklearn_digits", data_dir=data_dir)
    ds = builder.as_dataset(split=ip.tfds_split(builder, split),
                            read_config=tfds.ReadConfig(add_tfds_id=True),
                            decoders={"image": tfds.decode.SkipDecoding()})
    return [example["tfds_id"].numpy().decode() for example in ds]


def test_digits_holdout_and_rest_are_disjoint_and_cover_the_split(digits_dir):
    held = ip.HoldoutSplit("train", 0.1, True)
    rest = ip.HoldoutSplit("train", 0.1, False)
    assert ip.dataset_facts("sklearn_digits", held, digits_dir).num_examples == 144  # round(143.7)
    assert ip.dataset_facts("sklearn_digits", rest, digits_dir).num_examples == 1437 - 144
    held_ids, rest_ids = tfds_ids(digits_dir, held), tfds_ids(digits_dir, rest)
    assert len(set(held_ids)) == 144 and not set(held_ids) & set(rest_ids)
    assert sorted(held_ids + rest_ids) == sorted(tfds_ids(digits_dir, "train"))
    # The pipeline reads the part it is given.
    spec = ip.PipelineSpec("sklearn_digits", held, digits_dir, image_size=16, batch_size=50,
                           deterministic=True, download=False)
    assert sum(len(labels) for _, labels in ip.build_dataset(spec)) == 144


def test_holdout_that_leaves_a_part_empty_names_the_key(digits_dir):
    with pytest.raises(ValueError, match="data.holdout_fraction=0.0001 .* holds out 0"):
        ip.dataset_facts("sklearn_digits", ip.HoldoutSplit("train", 1e-4, True), digits_dir)


@pytest.fixture()
def folder(tmp_path):
    """root/{a,b,c}/*.png with 10, 7 and 4 small images."""
    rng = np.random.default_rng(0)
    for name, count in (("a", 10), ("b", 7), ("c", 4)):
        os.makedirs(tmp_path / name)
        for i in range(count):
            image = rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)
            tf.io.write_file(str(tmp_path / name / f"{name}{i}.png"), tf.io.encode_png(image))
    return str(tmp_path)


def folder_part(root, holdout, fraction=0.25):
    return ip.folder_listing(root, ip.HoldoutSplit(None, fraction, holdout))


def test_folder_holdout_is_per_class_disjoint_and_stable(folder):
    held, rest = folder_part(folder, True), folder_part(folder, False)
    assert held[2] == rest[2] == ("a", "b", "c")
    # 10 x 0.25 = 2.5 rounds half up to 3, 7 x 0.25 = 1.75 to 2, 4 x 0.25 = 1
    assert [held[1].count(c) for c in range(3)] == [3, 2, 1]
    assert not set(held[0]) & set(rest[0])
    assert sorted(held[0] + rest[0]) == sorted(ip.list_image_folder(folder)[0])
    assert folder_part(folder, True) == held  # deterministic
    # A new file in class b does not move any file of class a.
    tf.io.write_file(os.path.join(folder, "b", "b_new.png"),
                     tf.io.encode_png(np.zeros((12, 12, 3), np.uint8)))
    again = folder_part(folder, True)
    assert [p for p in again[0] if "/a/" in p] == [p for p in held[0] if "/a/" in p]
    assert ip.dataset_facts(folder, ip.HoldoutSplit(None, 0.25, True)).num_examples == len(again[0])
    # A folder without split sub-folders: the plan holds out from the folder itself.
    cfg = config_lib.apply(config_lib.Config(), {
        "data.dataset": folder, "data.train_split": None, "data.holdout_fraction": 0.25,
        "train.batch_size": 4, "train.steps": 1})
    config_lib.validate(cfg)
    info = plan_lib.make_plan(cfg, "train").info()
    assert (info["eval_split"], info["eval_examples"], info["train_examples"]) == (
        ".[holdout 0.25]", len(again[0]), 22 - len(again[0]))


def test_plan_reports_the_holdout(digits_dir):
    cfg = config_lib.apply(config_lib.Config(), {
        "data.data_dir": digits_dir, "data.holdout_fraction": 0.1, "train.batch_size": 64,
        "train.steps": 3})
    config_lib.validate(cfg)
    plan = plan_lib.make_plan(cfg, "train_and_eval")
    info = plan.info()
    assert (info["eval_split"], info["train_split"]) == ("train[holdout 0.1]", "train[rest 0.1]")
    assert (info["eval_examples"], info["train_examples"]) == (144, 1293)
    assert info["steps_per_epoch"] == 1293 // 64 and info["multi_label"] is False
    assert plan_lib.eval_spec(cfg, plan).split == ip.HoldoutSplit("train", 0.1, True)
    stage = plan.stages[0]
    assert plan_lib.train_spec(cfg, plan, stage, 0).split == ip.HoldoutSplit("train", 0.1, False)
    # Without the key, nothing changes.
    plain = plan_lib.make_plan(config_lib.apply(cfg, {"data.holdout_fraction": None}), "train")
    assert (plain.info()["eval_split"], plain.info()["train_split"]) == ("test", "train")


@pytest.mark.parametrize("flags, items, message", [
    ({"holdout_fraction": 0.1}, ["data.eval_split=test"],
     "data.holdout_fraction=0.1 and data.eval_split='test' exclude each other"),
    ({"holdout_fraction": 1.0}, [], "data.holdout_fraction=1.0 must be < 1"),
    ({"holdout_fraction": 0.0}, [], "data.holdout_fraction=0.0 must be > 0"),
    ({"reprob": 1.5}, [], "data.random_erasing_prob=1.5 must be a number in [0, 1]"),
    ({}, ["train.use_binary_cross_entropy=2"], "expects bool"),
])
def test_bad_values_name_the_key(flags, items, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        train_main.resolve_config(flags, items)


@pytest.mark.parametrize("split", ["train[:90%]", "train+validation"])
def test_holdout_of_a_sliced_or_summed_split_names_both_keys(split):
    """TFDS cannot slice ``train[:90%]`` again (``train[:90%][:k]``), so validate rejects it."""
    with pytest.raises(ValueError, match=re.escape(
            f"data.holdout_fraction=0.1 needs data.train_split to be one whole split, not "
            f"{split!r}")):
        train_main.resolve_config({"holdout_fraction": 0.1}, [f"data.train_split={split}"])


def test_flags_set_the_keys():
    cfg = train_main.resolve_config(
        {"use_binary_cross_entropy": True, "reprob": 0.25, "holdout_fraction": 0.02}, [])
    assert (cfg.train.use_binary_cross_entropy, cfg.data.random_erasing_prob,
            cfg.data.holdout_fraction) == (True, 0.25, 0.02)
    defaults = train_main.resolve_config({}, [])
    assert (defaults.train.use_binary_cross_entropy, defaults.data.random_erasing_prob,
            defaults.data.holdout_fraction) == (False, 0.0, None)


@pytest.fixture(scope="module")
def pairs_dir(tmp_path_factory):
    """A TFDS data_dir with the multi-label digit_pairs dataset (tests/digit_pairs.py)."""
    data_dir = str(tmp_path_factory.mktemp("pairs"))
    digit_pairs.DigitPairs(data_dir=data_dir).download_and_prepare()
    return data_dir


def test_multi_label_pipeline_gives_multi_hot_labels(pairs_dir):
    facts = ip.dataset_facts("digit_pairs", "train", pairs_dir)
    assert (facts.num_examples, facts.num_classes, facts.multi_label) == (
        digit_pairs.NUM_EXAMPLES, 10, True)
    spec = ip.PipelineSpec("digit_pairs", "train", pairs_dir, image_size=16, batch_size=32,
                           deterministic=True, download=False)
    _, labels = next(iter(ip.build_dataset(spec)))
    assert labels.shape == (32, 10) and labels.dtype == tf.float32
    assert set(labels.numpy().sum(1)) <= {1.0, 2.0} and labels.numpy().sum() > 40


@pytest.mark.parametrize("binary", [False, True], ids=["softmax", "bce"])
def test_mixup_of_multi_hot_labels(pairs_dir, binary):
    """Softmax: mixup mixes each example's label spread over its labels, lam y1/|y1| + (1 - lam)
    y2/|y2| (y1 = {a, b}, y2 = {c}, lam = 1/2: a, b 1/4 each and c 1/2), and the loss uses that
    target; BCE mixes the multi-hot labels as they are. lam comes from the mixed images."""
    cfg = config_lib.apply(config_lib.Config(), {
        "data.dataset": "digit_pairs", "data.data_dir": pairs_dir, "data.eval_split": "train",
        "data.image_size": 16, "data.mixup_alpha": 1.0, "data.deterministic": True,
        "data.seed": 0, "train.batch_size": 32, "train.steps": 1, "train.label_smoothing": 0.0,
        "train.use_binary_cross_entropy": binary})
    config_lib.validate(cfg)
    plan = plan_lib.make_plan(cfg, "train")
    spec = plan_lib.train_spec(cfg, plan, plan.stages[0], seed=0)
    unmixed = dataclasses.replace(
        spec, augmentation=dataclasses.replace(spec.augmentation, mixup_alpha=0.0))
    images, labels = (t.numpy() for t in next(iter(ip.build_dataset(unmixed))))
    mixed_images, mixed = (t.numpy() for t in next(iter(ip.build_dataset(spec))))
    hot = (labels > 0).astype(np.float64)  # the multi-hot labels
    assert (hot.sum(1) != hot[::-1].sum(1)).any()  # some pairs mix 1 label with 2
    # mixup: x lam + x[::-1] (1 - lam) per example; lam by least squares
    a, b = images.reshape(32, -1), images[::-1].reshape(32, -1)
    lam = ((mixed_images.reshape(32, -1) - b) * (a - b)).sum(1) / ((a - b) ** 2).sum(1)
    assert (lam >= 0.5 - 1e-4).all() and (lam < 0.999).any()
    target = hot if binary else hot / hot.sum(1, keepdims=True)
    expected = lam[:, None] * target + (1 - lam[:, None]) * target[::-1]
    np.testing.assert_allclose(mixed, expected, atol=1e-4)
    logits = np.random.default_rng(0).normal(0, 2, (32, 10)).astype(np.float32)
    loss = plan_lib.loss(cfg, plan).train(tf.constant(mixed), tf.constant(logits)).numpy()
    if not binary:
        np.testing.assert_allclose(loss, tf.nn.softmax_cross_entropy_with_logits(
            expected.astype(np.float32), logits).numpy(), rtol=1e-4)


@pytest.mark.integration
def test_trainer_trains_on_the_rest_and_evaluates_on_the_holdout(pairs_dir, tmp_path):
    """A real trainer process: multi-label pairs, binary cross-entropy, random erasing, 10% held
    out (the dataset has no other split)."""
    model_dir = str(tmp_path / "run")
    check_ok(run_main(
        f"--model_dir={model_dir}", "--dataset=digit_pairs", f"--data_dir={pairs_dir}",
        f"--model_name={SMALL}", "--image_size=16", "--train_batch_size=8", "--eval_batch_size=8",
        "--train_steps=4", "--use_binary_cross_entropy", "--reprob=0.5", "--holdout_fraction=0.1",
        "--label_smoothing=0", "--config=data.eval_image_size=16", "--config=data.crop_padding=0",
        "--config=runtime.steps_per_loop=2", "--config=runtime.seed=0"))
    info = read_json(model_dir, "run_info.json")
    assert (info["eval_split"], info["train_split"]) == ("train[holdout 0.1]", "train[rest 0.1]")
    assert (info["eval_examples"], info["train_examples"], info["multi_label"]) == (60, 540, True)
    results = read_json(model_dir, "eval_results.json")
    assert results["num_examples"] == 60 and results["step"] == 4
    assert 0.4 < results["loss"] < 1.2  # mean BCE of 10 sigmoids near 1/2 after 4 steps: ~ln 2
    written = config_lib.load(os.path.join(model_dir, "config.yaml"))
    assert (written.train.use_binary_cross_entropy, written.data.random_erasing_prob,
            written.data.holdout_fraction) == (True, 0.5, 0.1)
