"""The measured cost of a quantized export: top-1 agreement with the float model on the real
photographs, and float vs quantized top-1 accuracy on labeled evaluation data.

Evaluation data (``eval_data``): ``"digits"`` (the 360 held-out images of the embedded
scikit-learn digits, ``efficientnet_tf.digits``), a folder ``root/<class>/`` of image files whose
folder names are class names of the model, or a TFDS dataset name (its ``test`` split, else
``validation``; prepared in TFDS' data directory). At most ``MAX_IMAGES`` images are used.

A quantized export that loses more than ``max_accuracy_drop`` points of top-1 on the evaluation
data fails verification with both accuracies; without evaluation data only the agreement on the
photographs is measured and recorded.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from efficientnet_tf.digits import digits_images_and_labels, split_indices
from efficientnet_tf.preprocessing import EvalConfig, eval_config, preprocess_array, preprocess_bytes
from export import photos, progress
from export.verify import Verification

DIGITS = "digits"
MAX_IMAGES = 2000
DEFAULT_MAX_DROP = 1.0  # points of top-1 accuracy
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
BATCH = 32


@dataclasses.dataclass
class EvalSet:
    """Labeled images: ``images`` uint8 arrays or encoded bytes, ``labels`` model class indices."""

    source: str
    images: List[object]
    labels: np.ndarray
    crop: bool = True  # the model's evaluation centre crop (the digits fill their frame: none)

    def batches(self, config: EvalConfig):
        """Float batches [n, S, S, 3] in [0, 1], with the model's evaluation preprocessing."""
        if not self.crop:
            config = dataclasses.replace(config, crop_fraction=1.0)
        for start in range(0, len(self.images), BATCH):
            yield np.stack([(preprocess_bytes(item, config) if isinstance(item, bytes)
                             else preprocess_array(item, config)).numpy()
                            for item in self.images[start:start + BATCH]]).astype(np.float32)


def _digits(num_classes: int) -> EvalSet:
    if num_classes != 10:
        raise ValueError(f"eval_data={DIGITS!r} has 10 classes (digits 0-9); the model has {num_classes}")
    images, labels = digits_images_and_labels()
    test = split_indices(labels)["test"]
    return EvalSet(DIGITS, list(images[test]), labels[test].astype(np.int64), crop=False)


def _folder(root: str, class_names: Sequence[str]) -> EvalSet:
    folders = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    unknown = [d for d in folders if d not in class_names]
    if not folders or unknown:
        shown = ", ".join(list(class_names)[:10]) + (", ..." if len(class_names) > 10 else "")
        raise ValueError(f"eval_data folder {root!r} has " + (f"class folders {unknown[:5]} that are not classes of "
                         f"the model (its classes: {shown})" if unknown else "no class folders root/<class>/"))
    index = {name: i for i, name in enumerate(class_names)}
    images, labels = [], []
    for folder in folders:
        for name in sorted(os.listdir(os.path.join(root, folder))):
            if name.lower().endswith(IMAGE_EXTENSIONS):
                with open(os.path.join(root, folder, name), "rb") as f:
                    images.append(f.read())
                labels.append(index[folder])
    if not images:
        raise ValueError(f"eval_data folder {root!r} holds no image files ({', '.join(IMAGE_EXTENSIONS)})")
    rng = np.random.default_rng(0)  # a fixed sample when there are more than MAX_IMAGES
    keep = np.sort(rng.permutation(len(images))[:MAX_IMAGES])
    return EvalSet(root, [images[i] for i in keep], np.asarray(labels)[keep])


def _tfds(name: str, num_classes: int) -> EvalSet:
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name)
    except Exception as err:  # DatasetNotFoundError and friends: a name that is no dataset
        detail = (str(err).strip().splitlines() or [""])[0][:300]
        raise ValueError(f"eval_data={name!r} is not {DIGITS!r}, an existing folder root/<class>/, or a TFDS dataset "
                         f"name ({type(err).__name__}: {detail})") from None
    if not builder.is_prepared():
        raise ValueError(f"eval_data={name!r}: the TFDS dataset is not prepared in {builder.data_dir!r} "
                         "(tfds build it first)")
    splits = builder.info.splits
    split = "test" if "test" in splits else "validation" if "validation" in splits else None
    label = builder.info.features["label"] if "label" in builder.info.features else None
    if split is None or label is None or label.num_classes != num_classes:
        raise ValueError(f"eval_data={name!r} needs a test or validation split and a label feature with "
                         f"{num_classes} classes (the model's); it has splits {sorted(splits)}, "
                         f"label classes {getattr(label, 'num_classes', None)}")
    images, labels = [], []
    for example in builder.as_dataset(split=split, shuffle_files=False).take(MAX_IMAGES).as_numpy_iterator():
        images.append(example["image"])
        labels.append(int(example["label"]))
    return EvalSet(f"{name}:{split}", images, np.asarray(labels))


def load(source: str, num_classes: Optional[int], class_names: Optional[Sequence[str]]) -> EvalSet:
    """The evaluation set ``source`` names, checked against the model's classes (ValueError for
    a source that does not exist or has other classes)."""
    if not num_classes:
        raise ValueError("eval_data needs a model with a classifier (include_top=True)")
    if source == DIGITS:
        return _digits(num_classes)
    if os.path.isdir(source):
        return _folder(source, class_names)
    if os.path.sep in source or os.path.exists(source):
        raise ValueError(f"eval_data={source!r} is not a folder root/<class>/ (valid: {DIGITS!r}, a folder, "
                         "or a TFDS dataset name)")
    return _tfds(source, num_classes)


def photo_images(job) -> np.ndarray:
    """The real photographs as uint8 [N, S, S, 3] after the evaluation crop and resize: what a
    phone app hands the model (MediaPipe's resize of an S x S image is then the identity)."""
    config = eval_config(job.model_name, job.image_size)
    found = photos.load()
    if not found:
        return np.zeros((0, job.image_size, job.image_size, 3), np.uint8)
    return np.stack([np.round(preprocess_bytes(data, config).numpy() * 255.0).astype(np.uint8)
                     for _, data in found])


def _keras_scores(job, images: np.ndarray) -> np.ndarray:
    return np.asarray(job.endpoints(images, training=False)["logits"])


def measure(job, predict: Callable[[np.ndarray], np.ndarray], record: Verification, what: str) -> Dict[str, object]:
    """The accuracy cost of the export ``predict`` runs (float images -> class scores), recorded
    in ``record``; raises VerificationError when it loses more than ``job.max_accuracy_drop``
    points on ``job.eval_set``. Returns the numbers for export_info.json."""
    cost: Dict[str, object] = {"max_accuracy_drop": job.max_accuracy_drop}
    with progress.step(f"{what}: top-1 agreement with the float model on the photographs"):
        images = photo_images(job).astype(np.float32) / 255.0
        if len(images):
            agree = int((_keras_scores(job, images).argmax(-1) == predict(images).argmax(-1)).sum())
            cost["photos"] = {"images": len(images), "top1_agreement": agree / len(images)}
            record.notes.append(f"{what} top-1 agrees with the float model on {agree} of {len(images)} photographs")
    if job.eval_set is None:
        record.notes.append(f"{what}: no eval_data, so the accuracy cost was not measured on labeled data")
        return cost
    data = job.eval_set
    config = eval_config(job.model_name, job.image_size)
    correct_float = correct_quantized = 0
    with progress.step(f"{what}: float vs quantized top-1 on {len(data.labels)} images of {data.source}"):
        start = 0
        for batch in data.batches(config):
            labels = data.labels[start:start + len(batch)]
            start += len(batch)
            correct_float += int((_keras_scores(job, batch).argmax(-1) == labels).sum())
            correct_quantized += int((predict(batch).argmax(-1) == labels).sum())
    n = len(data.labels)
    float_top1, quantized_top1 = 100.0 * correct_float / n, 100.0 * correct_quantized / n
    drop = float_top1 - quantized_top1
    cost["eval"] = {"source": data.source, "images": n, "float_top1": round(float_top1, 2),
                    "quantized_top1": round(quantized_top1, 2), "drop_points": round(drop, 2)}
    record.notes.append(f"{what} top-1 on {data.source} ({n} images): float {float_top1:.2f}%, "
                        f"quantized {quantized_top1:.2f}% (drop {drop:.2f} points, limit {job.max_accuracy_drop:g})")
    record.at_most(f"{what}/top1_drop_points", drop, job.max_accuracy_drop,
                   f"{what} loses {drop:.2f} points of top-1 on {data.source} ({n} images): float model "
                   f"{float_top1:.2f}%, quantized {quantized_top1:.2f}%; more than max_accuracy_drop="
                   f"{job.max_accuracy_drop:g}")
    return cost
