"""train/digits_dataset.py and train/input_pipeline.py: the embedded sklearn_digits TFDS builder,
build_dataset over TFDS (digits, mocked imagenet2012) and over a folder of images, sharding,
determinism, corrupt examples and the manual-download error."""

import hashlib
import os

import numpy as np
import pytest
import skimage.data
import tensorflow as tf
import tensorflow_datasets as tfds

from train.augment import Augment
from train import digits_dataset
from train import input_pipeline as ip

# Split sizes of imagenet2012 5.x in the TFDS catalog.
from train_helpers import IMAGENET_TRAIN, IMAGENET_VALIDATION


def _write_image(path, array):
    data = tf.io.encode_png(array) if path.endswith(".png") else tf.io.encode_jpeg(array)
    tf.io.write_file(path, data)


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory):
    """root/train/{cat,dog}/...: 3 JPEG cats, 2 PNG dogs and a text file that is skipped."""
    root = str(tmp_path_factory.mktemp("photos"))
    cat, person = skimage.data.chelsea(), skimage.data.astronaut()
    for i in range(3):
        _write_image(os.path.join(root, "train", "cat", f"c{i}.jpg"), cat[:, 40 * i:300 + 40 * i])
    for i in range(2):
        _write_image(os.path.join(root, "train", "dog", f"d{i}.PNG"), person[::2, ::2])
    tf.io.write_file(os.path.join(root, "train", "dog", "notes.txt"), "not an image")
    return root


def build(*args, corrupt_counter=None, input_context=None, **fields):
    """build_dataset of a PipelineSpec made from ``args`` and ``fields``."""
    return ip.build_dataset(ip.PipelineSpec(*args, **fields), corrupt_counter=corrupt_counter,
                            input_context=input_context)


def _image_hashes(ds):
    return sorted(hashlib.md5(image.tobytes()).hexdigest()
                  for images, _ in ds for image in images.numpy())


# ------------------------------------------------------------------------ sklearn_digits


def test_digits_builder_builds_offline_and_loads(digits_dir):
    builder = tfds.builder("sklearn_digits", data_dir=digits_dir)
    splits = builder.info.splits
    assert splits["train"].num_examples == 1437 and splits["test"].num_examples == 360
    labels = {}
    for split in ("train", "test"):
        ds = tfds.load("sklearn_digits", split=split, data_dir=digits_dir)
        examples = list(ds.as_numpy_iterator())
        labels[split] = np.array([ex["label"] for ex in examples])
        assert examples[0]["image"].shape == (32, 32, 3)
        assert examples[0]["image"].dtype == np.uint8
    assert len(labels["train"]) + len(labels["test"]) == 1797
    for split_labels in labels.values():
        assert split_labels.min() == 0 and split_labels.max() == 9
        assert set(split_labels) == set(range(10))  # stratified: every class in both splits
    assert builder.info.features["label"].num_classes == 10


def test_digits_split_is_deterministic_and_stratified():
    images, labels = digits_dataset.digits_images_and_labels()
    assert images.shape == (1797, 32, 32, 3) and images.dtype == np.uint8
    first, second = digits_dataset.split_indices(labels), digits_dataset.split_indices(labels)
    np.testing.assert_array_equal(first["train"], second["train"])
    assert not set(first["train"]) & set(first["test"])
    assert len(first["train"]) + len(first["test"]) == 1797
    train_share = np.bincount(labels[first["train"]]) / np.bincount(labels)
    assert np.all(np.abs(train_share - 0.8) < 0.02)


# ---------------------------------------------------------------------- build_dataset


def test_train_pipeline_on_digits(digits_dir):
    kwargs = dict(is_training=True, image_size=48, batch_size=16,
                  augmentation=Augment("randaugment", randaug_num_layers=1, randaug_magnitude=9,
                                       mixup_alpha=0.2, cutmix_alpha=1.0),
                  num_classes=10, deterministic=True, seed=3, shuffle_buffer_size=256)
    first = list(build("sklearn_digits", "train", digits_dir, **kwargs).take(2))
    second = list(build("sklearn_digits", "train", digits_dir, **kwargs).take(2))
    for (images, labels), (images2, labels2) in zip(first, second):
        assert images.shape == (16, 48, 48, 3) and images.dtype == tf.float32
        assert labels.shape == (16, 10) and labels.dtype == tf.float32
        assert 0.0 <= float(tf.reduce_min(images)) and float(tf.reduce_max(images)) <= 1.0
        np.testing.assert_allclose(tf.reduce_sum(labels, axis=1), 1.0, rtol=1e-5)
        np.testing.assert_array_equal(images, images2)
        np.testing.assert_array_equal(labels, labels2)
    other = next(iter(build("sklearn_digits", "train", digits_dir,
                                       **dict(kwargs, seed=4))))
    assert not np.array_equal(other[0], first[0][0])


def test_eval_pipeline_covers_the_split_in_order(digits_dir):
    facts = ip.dataset_facts("sklearn_digits", "test", digits_dir)
    assert (facts.num_examples, facts.num_classes) == (360, 10)
    assert ip.steps_per_epoch(facts.num_examples, 64, drop_remainder=False) == 6
    ds = build("sklearn_digits", "test", digits_dir, is_training=False,
                          image_size=32, batch_size=64, deterministic=True)
    batches = list(ds)
    assert len(batches) == 6 and batches[-1][0].shape[0] == 360 - 5 * 64
    labels = np.concatenate([b[1].numpy() for b in batches])
    assert labels.dtype == np.int32
    reference = tfds.load("sklearn_digits", split="test", data_dir=digits_dir)
    np.testing.assert_array_equal(labels, [int(ex["label"]) for ex in reference])
    # 32x32 PNGs at image_size 32: the eval crop is 16/17 of the side, resized back to 32.
    assert batches[0][0].shape == (64, 32, 32, 3)


def test_input_context_shards_are_disjoint_and_complete(digits_dir):
    def shard(pipeline_id):
        context = tf.distribute.InputContext(num_input_pipelines=2,
                                             input_pipeline_id=pipeline_id,
                                             num_replicas_in_sync=2)
        return build("sklearn_digits", "test", digits_dir, is_training=False,
                                image_size=16, batch_size=64, input_context=context,
                                deterministic=True)

    shards = [shard(0), shard(1)]
    assert next(iter(shards[0]))[0].shape[0] == 32  # per-replica share of the global batch
    hashes = [_image_hashes(s) for s in shards]
    assert len(hashes[0]) == len(hashes[1]) == 180
    everything = build("sklearn_digits", "test", digits_dir, is_training=False,
                                  image_size=16, batch_size=64, deterministic=True)
    assert sorted(hashes[0] + hashes[1]) == _image_hashes(everything)


def test_mocked_imagenet2012(imagenet_metadata):
    with tfds.testing.mock_data(num_examples=10, data_dir=imagenet_metadata,
                                policy=tfds.testing.MockPolicy.USE_FILES):
        train = ip.dataset_facts("imagenet2012", "train")
        validation = ip.dataset_facts("imagenet2012", "validation")
        assert (train.num_examples, validation.num_examples) == (IMAGENET_TRAIN,
                                                                 IMAGENET_VALIDATION)
        assert train.num_classes == 1000 and train.class_names[0] == "n01440764"
        assert ip.steps_per_epoch(train.num_examples, 4096) == 312
        assert ip.steps_per_epoch(validation.num_examples, 4096, drop_remainder=False) == 13
        assert ip.steps_per_epoch(validation.num_examples, 1000) == 50

        ds = build("imagenet2012", "validation", is_training=False, image_size=40,
                              batch_size=5, deterministic=True)
        batches = list(ds)
        assert [b[0].shape for b in batches] == [(5, 40, 40, 3)] * 2
        labels = np.concatenate([b[1].numpy() for b in batches])
        assert ((labels >= 0) & (labels <= 999)).all()

        ds = build("imagenet2012", "train", is_training=True, image_size=40,
                              batch_size=4, num_classes=1000, deterministic=True,
                              shuffle_buffer_size=16)
        images, labels = next(iter(ds))
        assert images.shape == (4, 40, 40, 3) and labels.shape == (4, 1000)
        assert set(tf.reduce_sum(labels, 1).numpy()) == {1.0}


def test_missing_imagenet_manual_files_error(tmp_path):
    with pytest.raises(ip.ManualDownloadError) as error:
        build("imagenet2012", "train", str(tmp_path), is_training=True,
                         image_size=224, batch_size=8)
    message = str(error.value)
    assert os.path.join(str(tmp_path), "downloads", "manual") in message
    assert "ILSVRC2012_img_train.tar" in message and "ILSVRC2012_img_val.tar" in message


# ------------------------------------------------------------------------ image folders


def test_image_folder_listing_and_pipeline(photo_folder):
    paths, labels, class_names = ip.list_image_folder(os.path.join(photo_folder, "train"))
    assert class_names == ("cat", "dog") and labels == [0, 0, 0, 1, 1]
    assert [os.path.basename(p) for p in paths] == ["c0.jpg", "c1.jpg", "c2.jpg",
                                                     "d0.PNG", "d1.PNG"]
    facts = ip.dataset_facts(photo_folder, "train")
    assert (facts.num_examples, facts.num_classes) == (5, 2)

    ds = build(photo_folder, "train", is_training=False, image_size=24,
                          batch_size=5, num_classes=2, deterministic=True)
    images, one_hot = next(iter(ds))
    assert images.shape == (5, 24, 24, 3)
    np.testing.assert_array_equal(one_hot.numpy().argmax(1), [0, 0, 0, 1, 1])
    unchecked = build(photo_folder, "train", is_training=False, image_size=24,
                                 batch_size=5, num_classes=2, deterministic=True,
                                 check_corrupt=False)
    np.testing.assert_array_equal(next(iter(unchecked))[0], images)

    train = build(photo_folder, "train", is_training=True, image_size=24,
                             batch_size=4, augmentation=Augment("autoaugment"), seed=1,
                             shuffle_buffer_size=8)
    images, labels = next(iter(train))
    assert images.shape == (4, 24, 24, 3) and set(labels.numpy()) <= {0, 1}


def test_image_folder_errors(photo_folder, tmp_path):
    with pytest.raises(ValueError, match="'valid' is not a sub-folder.*'train'"):
        ip.dataset_facts(photo_folder, "valid")
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(ValueError, match="no images"):
        ip.list_image_folder(str(tmp_path))


def test_corrupt_examples_raise_or_are_skipped_and_counted(tmp_path):
    good = tf.io.encode_jpeg(skimage.data.chelsea()).numpy()
    root = tmp_path / "corrupt"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    (root / "a" / "good.jpg").write_bytes(good)
    (root / "a" / "truncated.jpg").write_bytes(good[:3000])
    (root / "b" / "text.png").write_bytes(b"this is not a png")
    (root / "b" / "good.png").write_bytes(tf.io.encode_png(skimage.data.astronaut()).numpy())

    kwargs = dict(is_training=True, image_size=32, batch_size=1, repeat=False,
                  deterministic=True, shuffle_buffer_size=4)
    with pytest.raises(tf.errors.InvalidArgumentError, match="truncated.jpg|text.png"):
        list(build(str(root), None, **kwargs))

    counter = ip.CorruptCounter()
    kept = list(build(str(root), None, skip_corrupt=True, corrupt_counter=counter,
                                 **kwargs))
    assert len(kept) == 2 and counter.count == 2
    assert sorted(int(labels[0]) for _, labels in kept) == [0, 1]


def test_build_dataset_argument_errors(digits_dir):
    common = dict(is_training=True, image_size=32, batch_size=4)
    with pytest.raises(ValueError, match="'augmix'.*'autoaugment', 'randaugment'"):
        build("sklearn_digits", "train", digits_dir, augmentation=Augment("augmix"), **common)
    with pytest.raises(ValueError, match="need num_classes"):
        build("sklearn_digits", "train", digits_dir, augmentation=Augment(mixup_alpha=0.2), **common)
    with pytest.raises(ValueError, match="'cubic'.*'bicubic'"):
        build("sklearn_digits", "train", digits_dir, resize_method="cubic", **common)
