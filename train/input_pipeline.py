"""tf.data input pipeline: a TFDS image-classification dataset (by name or builder) or a folder
of images -> batches of (float32 RGB images in [0, 1], labels) for training or evaluation.

Order: read (encoded bytes; TFDS SkipDecoding so crops happen on the JPEG) -> shard by
input_context -> cache? -> shuffle + repeat (train) -> per-example stateless seed -> decode
the crop inside a per-example try -> corrupt check (error naming the example) or skip+count ->
resize, flip, AutoAugment/RandAugment, random erasing, one-hot -> batch -> mixup/cutmix
(train) -> prefetch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os

import tensorflow as tf
import tensorflow_datasets as tfds

from train import augment
from train import digits_dataset  # noqa: F401  (import registers the sklearn_digits builder)
from train import losses
from train import preprocessing

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
DEFAULT_SHUFFLE_BUFFER = 16 * 1024


class ManualDownloadError(FileNotFoundError):
    """A TFDS dataset needs files the user downloads by hand (e.g. imagenet2012)."""


@dataclasses.dataclass(frozen=True)
class DatasetFacts:
    """What the trainer needs to know about a split before reading it.

    multi_label: the label is a sequence of class labels (a TFDS ``Sequence(ClassLabel)``);
      the pipeline then gives multi-hot float labels [num_classes], in training and evaluation.
    """
    num_examples: int
    num_classes: int
    class_names: tuple[str, ...] = dataclasses.field(repr=False)
    multi_label: bool = False


@dataclasses.dataclass(frozen=True)
class HoldoutSplit:
    """One part of a split cut in two for evaluation without a validation split (tensorflow/tpu
    efficientnet ``holdout_shards``, which holds out the first N of ImageNet's 1024 train shards).

    split: the split cut (a TFDS split name, or an image folder's sub-folder; None: the folder).
    fraction: the share held out, in (0, 1): round(n * fraction) examples.
    holdout: this part is the held-out one (evaluation), else the rest (training).

    TFDS: the holdout is the split's first round(n * fraction) examples (``train[:k]``, the rest
    ``train[k:]``). Image folders: per class, the files whose name hashes lowest (SHA-1), so a
    file's side does not depend on other classes, and adding files moves few.
    """
    split: str | None
    fraction: float
    holdout: bool

    def __str__(self) -> str:
        return f"{self.split or '.'}[{'holdout' if self.holdout else 'rest'} {self.fraction:g}]"


def holdout_count(num_examples: int, fraction: float) -> int:
    """round(num_examples * fraction), half up."""
    return int(math.floor(num_examples * fraction + 0.5))


def _check_holdout(split: HoldoutSplit, total: int, held: int):
    if held == 0 or held == total:
        raise ValueError(f"data.holdout_fraction={split.fraction:g} of the {total} examples of "
                         f"split {split.split!r} holds out {held}: nothing would be "
                         f"{'evaluated' if held == 0 else 'trained'}; choose a fraction in "
                         f"(0, 1) that leaves both parts non-empty")


class CorruptCounter:
    """Counts examples skipped as corrupt by a pipeline built with skip_corrupt=True.

    Create it outside any distribution-strategy scope (it is a plain CPU variable).
    """

    def __init__(self):
        with tf.device("/CPU:0"):
            self.variable = tf.Variable(0, dtype=tf.int64, trainable=False, name="corrupt_count")

    @property
    def count(self) -> int:
        return int(self.variable.numpy())


# ------------------------------------------------------------------------------ sources


def is_image_folder(name_or_builder) -> bool:
    return isinstance(name_or_builder, (str, os.PathLike)) and tf.io.gfile.isdir(
        os.fspath(name_or_builder))


def prepared_builder(name_or_builder, data_dir=None, download=True):
    """tfds builder, prepared when `download`; a missing manual download raises
    ManualDownloadError with TFDS's instructions and the folder to put the files in."""
    if isinstance(name_or_builder, tfds.core.DatasetBuilder):
        builder = name_or_builder
    else:
        builder = tfds.builder(name_or_builder, data_dir=data_dir)
    if download:
        try:
            builder.download_and_prepare()
        except AssertionError as e:
            instructions = getattr(builder, "MANUAL_DOWNLOAD_INSTRUCTIONS", None)
            if not instructions:
                raise
            manual_dir = os.path.join(os.fspath(builder.data_dir_root), "downloads", "manual")
            raise ManualDownloadError(
                f"TFDS dataset {builder.name!r} must be downloaded by hand before it can be "
                f"prepared: put the files into {manual_dir}/ (i.e. <data_dir>/downloads/manual/) "
                f"and run again. TFDS instructions:\n{instructions.strip()}\n(TFDS said: {e})"
            ) from e
    return builder


def _supervised_keys(builder):
    keys = builder.info.supervised_keys or ("image", "label")
    image_key, label_key = keys[0], keys[1]
    features = builder.info.features
    if image_key not in features or not isinstance(features[image_key], tfds.features.Image):
        raise ValueError(f"Dataset {builder.name!r} has no encoded image feature {image_key!r}; "
                         f"features: {list(features.keys())}.")
    _label_feature(builder, label_key)
    return image_key, label_key


def _label_feature(builder, label_key):
    """(ClassLabel, multi_label) of a ClassLabel or Sequence(ClassLabel) label feature."""
    feature = builder.info.features[label_key]
    if isinstance(feature, tfds.features.ClassLabel):
        return feature, False
    if (isinstance(feature, tfds.features.Sequence)
            and isinstance(feature.feature, tfds.features.ClassLabel)):
        return feature.feature, True
    raise ValueError(f"Dataset {builder.name!r} label {label_key!r} is not a ClassLabel or a "
                     f"Sequence(ClassLabel) (multi-label); it is {type(feature).__name__}.")


def list_image_folder(root):
    """(paths, labels, class_names) of root/<class>/<image>.{jpg,jpeg,png}; classes sorted."""
    root = os.fspath(root)
    class_names = sorted(name.rstrip("/") for name in tf.io.gfile.listdir(root)
                         if tf.io.gfile.isdir(os.path.join(root, name)))
    if not class_names:
        raise ValueError(f"Image folder {root!r} has no class sub-folders (expected "
                         "root/<class_name>/<image>.jpg).")
    paths, labels = [], []
    for label, name in enumerate(class_names):
        folder = os.path.join(root, name)
        files = sorted(f for f in tf.io.gfile.listdir(folder)
                       if f.lower().endswith(IMAGE_EXTENSIONS))
        paths += [os.path.join(folder, f) for f in files]
        labels += [label] * len(files)
    if not paths:
        raise ValueError(f"Image folder {root!r} has class folders {class_names} but no images "
                         f"with extensions {list(IMAGE_EXTENSIONS)}.")
    return paths, labels, tuple(class_names)


def _folder_root(root, split):
    root = os.fspath(root)
    if not split:
        return root
    path = os.path.join(root, split)
    if not tf.io.gfile.isdir(path):
        raise ValueError(f"Split {split!r} is not a sub-folder of image folder {root!r}; "
                         f"found: {sorted(tf.io.gfile.listdir(root))} (use split=None to read "
                         "the folder itself).")
    return path


def folder_listing(root, split):
    """(paths, labels, class_names) of a split of image folder ``root``: a sub-folder name, None
    (the folder itself), or a HoldoutSplit of either."""
    if not isinstance(split, HoldoutSplit):
        return list_image_folder(_folder_root(root, split))
    paths, labels, class_names = list_image_folder(_folder_root(root, split.split))
    by_class = {}
    for path, label in zip(paths, labels):
        by_class.setdefault(label, []).append(path)
    kept, held = [], []
    for label, files in sorted(by_class.items()):
        files = sorted(files, key=lambda p: hashlib.sha1(
            os.path.basename(p).encode("utf-8")).hexdigest())
        k = holdout_count(len(files), split.fraction)
        held += [(path, label) for path in sorted(files[:k])]
        kept += [(path, label) for path in sorted(files[k:])]
    _check_holdout(split, len(paths), len(held))
    part = held if split.holdout else kept
    return [p for p, _ in part], [label for _, label in part], class_names


def tfds_split(builder, split) -> str:
    """The TFDS split string of ``split`` (a HoldoutSplit becomes ``name[:k]`` / ``name[k:]``)."""
    if not isinstance(split, HoldoutSplit):
        return split
    total = builder.info.splits[split.split].num_examples
    held = holdout_count(total, split.fraction)
    _check_holdout(split, total, held)
    return f"{split.split}[:{held}]" if split.holdout else f"{split.split}[{held}:]"


def dataset_facts(name_or_builder, split, data_dir=None, download=True) -> DatasetFacts:
    """Number of examples and classes of a split (a name, or a HoldoutSplit), from TFDS info or
    the folder listing."""
    if is_image_folder(name_or_builder):
        paths, _, class_names = folder_listing(name_or_builder, split)
        return DatasetFacts(len(paths), len(class_names), class_names)
    builder = prepared_builder(name_or_builder, data_dir, download)
    _, label_key = _supervised_keys(builder)
    label, multi_label = _label_feature(builder, label_key)
    return DatasetFacts(builder.info.splits[tfds_split(builder, split)].num_examples,
                        label.num_classes, tuple(label.names), multi_label)


def steps_per_epoch(num_examples: int, batch_size: int, drop_remainder: bool = True) -> int:
    """Batches in one pass over num_examples (floor when dropping the remainder, else ceil)."""
    if drop_remainder:
        return num_examples // batch_size
    return math.ceil(num_examples / batch_size)


def _tfds_source(builder, split, is_training, seed, input_context, options, num_classes=None):
    image_key, label_key = _supervised_keys(builder)
    label_feature, multi_label = _label_feature(builder, label_key)
    split = tfds_split(builder, split)
    read_config = tfds.ReadConfig(options=options, try_autocache=False, add_tfds_id=True,
                                  shuffle_seed=seed)
    shard_examples = False
    if input_context and input_context.num_input_pipelines > 1:
        # TFDS shards by file; a split with fewer files than pipelines is sharded by example.
        if builder.info.splits[split].num_shards >= input_context.num_input_pipelines:
            read_config.input_context = input_context
        else:
            shard_examples = True
    ds = builder.as_dataset(split=split, shuffle_files=is_training, read_config=read_config,
                            decoders={image_key: tfds.decode.SkipDecoding()})
    if shard_examples:
        ds = ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
    if multi_label:  # a sequence of class ids -> multi-hot float [classes]
        depth = num_classes or label_feature.num_classes
        return ds.map(lambda ex: {"image": ex[image_key], "label": multi_hot(ex[label_key], depth),
                                  "id": ex["tfds_id"]})
    return ds.map(lambda ex: {"image": ex[image_key], "label": tf.cast(ex[label_key], tf.int32),
                              "id": ex["tfds_id"]})


def multi_hot(class_ids, num_classes: int):
    """Float32 [num_classes]: 1 at each of ``class_ids`` (any length, repeats allowed)."""
    hot = tf.one_hot(tf.cast(class_ids, tf.int32), num_classes, dtype=tf.float32)
    return tf.minimum(tf.reduce_sum(hot, axis=0), 1.0)


def _folder_source(root, split, is_training, seed, input_context):
    paths, labels, _ = folder_listing(root, split)
    ds = tf.data.Dataset.from_tensor_slices((paths, tf.constant(labels, tf.int32)))
    if input_context and input_context.num_input_pipelines > 1:
        ds = ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
    if is_training:  # Shuffle the (cheap) file list fully; examples are shuffled again later.
        ds = ds.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    return ds.map(lambda path, label: {"image": tf.io.read_file(path), "label": label,
                                       "id": path},
                  num_parallel_calls=tf.data.AUTOTUNE)


# ----------------------------------------------------------------------------- pipeline


def _seeds(seed):
    """Infinite dataset of stateless seeds [2] (deterministic for a given seed)."""
    return tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)


@dataclasses.dataclass(frozen=True)
class PipelineSpec:
    """What one input pipeline reads and how it preprocesses it (see :func:`build_dataset`).

    dataset: a TFDS name ('imagenet2012', 'sklearn_digits', ...), a tfds builder, or a folder
      root/<class>/<image> (split: a sub-folder of it, or None for the folder itself).
    split: also a HoldoutSplit (one part of a split; data.holdout_fraction).
    batch_size: global batch; with an input_context each pipeline batches its per-replica share.
    num_classes: labels are one-hot float32 [B, num_classes] when given, else int32 [B];
      mixup/cutmix need it. Multi-label datasets (DatasetFacts.multi_label) always give
      multi-hot float32 [B, num_classes or the dataset's classes] (rows divided by their
      label count with normalize_multi_hot).
    random_erasing: erases a rectangle of train images after the per-image augmentation
      (train.augment.RandomErasing; None: off).
    normalize_multi_hot: divide each multi-hot label by its label count before batching and
      mixup/CutMix (softmax training on multi-label data, ``losses.Loss.normalizes_multi_hot``),
      so a mix is lam y1/|y1| + (1 - lam) y2/|y2|. One-hot labels are unaffected.
    deterministic: fixed element order and seed (seed defaults to 0) for tests/debugging.
    skip_corrupt: drop undecodable examples, counting them in the corrupt_counter (and logging
      each id); otherwise such an example raises InvalidArgumentError naming it.
    check_corrupt: decode inside a per-example try (needed to name or skip corrupt examples).
      False (ignored with skip_corrupt) is cheaper (bench.input), but a corrupt image then
      fails with TF's own decode error, which names no example.
    repeat / drop_remainder: default to is_training.
    area_range / random_flip: the train crop's area fraction range (official: 0.08-1) and the
      horizontal flip (official: on); small datasets of digits or text want neither.
    download: prepare a TFDS dataset that is not prepared yet.
    """
    dataset: object
    split: str | HoldoutSplit | None
    data_dir: str | None = None
    is_training: bool = False
    image_size: int = 224
    batch_size: int = 32
    resize_method: str = "bicubic"
    crop_rule: preprocessing.CropRule | str = "v1"
    augmentation: augment.Augment = augment.Augment()
    num_classes: int | None = None
    cache: bool = False
    deterministic: bool = False
    seed: int | None = None
    skip_corrupt: bool = False
    check_corrupt: bool = True
    shuffle_buffer_size: int = DEFAULT_SHUFFLE_BUFFER
    repeat: bool | None = None
    drop_remainder: bool | None = None
    download: bool = True
    area_range: tuple[float, float] = preprocessing.TRAIN_AREA_RANGE
    random_flip: bool = True
    random_erasing: augment.RandomErasing | None = None
    normalize_multi_hot: bool = False

    def __post_init__(self):
        if not isinstance(self.augmentation, augment.Augment):
            raise TypeError(f"augmentation must be a train.augment.Augment, got "
                            f"{type(self.augmentation).__name__}")
        if self.augmentation.mixes and not self.num_classes:
            raise ValueError("mixup_alpha/cutmix_alpha need num_classes (labels are mixed "
                             "one-hot).")
        preprocessing.get_crop_rule(self.crop_rule)
        preprocessing.check_resize_method(self.resize_method)


def build_dataset(spec: PipelineSpec, *, corrupt_counter: CorruptCounter | None = None,
                  input_context: tf.distribute.InputContext | None = None) -> tf.data.Dataset:
    """Batches of (images [B, S, S, 3] float32 in [0, 1], labels) as ``spec`` describes.

    corrupt_counter: counts the examples skipped with spec.skip_corrupt.
    input_context: the tf.distribute pipeline this one is (sharding, per-replica batch).
    """
    seed = spec.seed
    if spec.deterministic and seed is None:
        seed = 0
    options = tf.data.Options()
    options.deterministic = spec.deterministic
    batch_size = spec.batch_size
    if input_context is not None:
        batch_size = input_context.get_per_replica_batch_size(batch_size)
        if seed is not None:  # Different augmentations on each pipeline.
            seed = seed * 1000003 + input_context.input_pipeline_id

    # Source of {'image': encoded bytes, 'label': int32, 'id': string}.
    if is_image_folder(spec.dataset):
        ds = _folder_source(spec.dataset, spec.split, spec.is_training, seed, input_context)
    else:
        builder = prepared_builder(spec.dataset, spec.data_dir, spec.download)
        ds = _tfds_source(builder, spec.split, spec.is_training, seed, input_context, options,
                          spec.num_classes)
    if spec.cache:
        ds = ds.cache()
    if spec.is_training:
        ds = ds.shuffle(spec.shuffle_buffer_size, seed=seed, reshuffle_each_iteration=True)
    if spec.is_training if spec.repeat is None else spec.repeat:
        ds = ds.repeat()
    ds = _decoded(tf.data.Dataset.zip((ds, _seeds(seed))), spec, corrupt_counter)
    ds = ds.map(lambda example: _finish(example, spec), num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=spec.deterministic)
    drop_remainder = spec.is_training if spec.drop_remainder is None else spec.drop_remainder
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    if spec.is_training and spec.augmentation.mixes:
        ds = tf.data.Dataset.zip((ds, _seeds(None if seed is None else seed + 1))).map(
            lambda batch, batch_seed: spec.augmentation.mix(batch[0], batch[1], batch_seed),
            num_parallel_calls=tf.data.AUTOTUNE, deterministic=spec.deterministic)
    ds = ds.prefetch(tf.data.AUTOTUNE)
    return ds.with_options(options)


def _decode(spec: PipelineSpec, image_bytes, example_seed):
    """The crop of one example, decoded (uint8): the only step that can fail on bad bytes."""
    crop_seed, _ = tf.unstack(tf.random.experimental.stateless_split(example_seed, 2))
    if spec.is_training:
        return preprocessing.decode_for_train(image_bytes, spec.image_size, crop_seed,
                                              spec.crop_rule, area_range=spec.area_range)
    return preprocessing.decode_for_eval(image_bytes, spec.image_size, spec.crop_rule)


def _decoded(ds, spec: PipelineSpec, corrupt_counter):
    """(example, seed) pairs -> examples with a decoded 'image'; corrupt examples raise an
    error naming them, or are skipped and counted (spec.skip_corrupt)."""
    deterministic = spec.deterministic
    if not (spec.check_corrupt or spec.skip_corrupt):
        return ds.map(lambda example, example_seed: dict(
            example, image=_decode(spec, example["image"], example_seed), seed=example_seed),
            num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    # Decode each example inside a per-example try (preprocessing.try_or_flag), so that a
    # corrupt image can be named or skipped; the rest of preprocessing runs in a plain map.
    guarded = preprocessing.try_or_flag(lambda b, seed: _decode(spec, b, seed),
                                        tf.zeros([0, 0, 3], tf.uint8))

    def decode_example(example, example_seed):
        return guarded(example["image"], example_seed).map(
            lambda image, ok: dict(example, image=image, ok=ok, bytes=example["image"],
                                   seed=example_seed))

    ds = ds.interleave(decode_example, cycle_length=tf.data.AUTOTUNE, block_length=1,
                       num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    if spec.skip_corrupt:
        counter = corrupt_counter or CorruptCounter()

        def count(example):
            def report():
                tf.print("Skipping corrupt example", example["id"],
                         output_stream=tf.compat.v1.logging.warning)
                return counter.variable.assign_add(1)
            update = tf.cond(example["ok"], counter.variable.read_value, report)
            with tf.control_dependencies([update]):
                return dict(example, ok=tf.identity(example["ok"]))

        return ds.map(count).filter(lambda example: example["ok"])

    def check(example):
        with tf.control_dependencies([preprocessing.assert_decoded(
                example["ok"], example["id"], example["bytes"])]):
            return dict(example, image=tf.identity(example["image"]))
    return ds.map(check)


def _finish(example, spec: PipelineSpec):
    """Resize, flip and augment a decoded example; the label one-hot when num_classes."""
    # Same seed split as preprocessing.preprocess_for_train.
    _, finish_seed = tf.unstack(tf.random.experimental.stateless_split(example["seed"], 2))
    if spec.is_training:
        image = preprocessing.finish_for_train(
            example["image"], spec.image_size, finish_seed, spec.resize_method, spec.crop_rule,
            spec.augmentation, spec.random_flip, spec.random_erasing)
    else:
        image = preprocessing.finish_for_eval(example["image"], spec.image_size,
                                              spec.resize_method, spec.crop_rule)
    label = example["label"]
    if spec.num_classes and label.shape.rank == 0:  # multi-label data is multi-hot already
        label = tf.one_hot(label, spec.num_classes, dtype=tf.float32)
    elif spec.normalize_multi_hot and label.shape.rank == 1:  # before any batch mix (#22)
        label = losses.normalized(label)
    return image, label
