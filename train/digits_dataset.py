"""TFDS builder `sklearn_digits`: scikit-learn's bundled handwritten digits as an image dataset.

The trainer's embedded default dataset: it ships inside scikit-learn (1797 8x8 images,
10 classes), so it builds offline. Images are upscaled to 32x32 RGB and stored as PNG, so the
usual encoded-image pipeline (crop on bytes, resize, augment) runs on it unchanged.
Importing this module registers the builder:

  builder = SklearnDigits(data_dir=...); builder.download_and_prepare()
  ds = tfds.load('sklearn_digits', split='train', data_dir=...)
"""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

IMAGE_SIZE = 32
TEST_FRACTION = 0.2
SPLIT_SEED = 0


def digits_images_and_labels(image_size: int = IMAGE_SIZE):
    """All 1797 digits as uint8 [N, image_size, image_size, 3] and int64 labels [N]."""
    from PIL import Image  # pylint: disable=g-import-not-at-top
    from sklearn import datasets  # pylint: disable=g-import-not-at-top
    digits = datasets.load_digits()
    # Pixel values are ink counts 0..16 (sklearn's DESCR); scale to 0..255.
    gray = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    images = np.stack([
        np.asarray(Image.fromarray(g).resize((image_size, image_size), Image.BILINEAR))
        for g in gray])
    images = np.repeat(images[..., None], 3, axis=-1)
    return images, digits.target.astype(np.int64)


def split_indices(labels, test_fraction: float = TEST_FRACTION, seed: int = SPLIT_SEED):
    """Deterministic stratified split: {'train': indices, 'test': indices} (sorted)."""
    from sklearn import model_selection  # pylint: disable=g-import-not-at-top
    train, test = model_selection.train_test_split(
        np.arange(len(labels)), test_size=test_fraction, stratify=labels, random_state=seed)
    return {"train": np.sort(train), "test": np.sort(test)}


class SklearnDigits(tfds.core.GeneratorBasedBuilder):
    """scikit-learn handwritten digits (UCI optdigits test set), 32x32 RGB PNG, 10 classes."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release: 80/20 stratified split, seed 0."}

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=("Handwritten digits bundled with scikit-learn "
                         "(sklearn.datasets.load_digits), bilinearly upscaled from 8x8 to "
                         f"{IMAGE_SIZE}x{IMAGE_SIZE} RGB."),
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(IMAGE_SIZE, IMAGE_SIZE, 3),
                                             encoding_format="png"),
                "label": tfds.features.ClassLabel(names=[str(d) for d in range(10)]),
            }),
            supervised_keys=("image", "label"),
            homepage="https://scikit-learn.org/stable/datasets/toy_dataset.html",
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # Nothing to download: the data ships with scikit-learn.
        images, labels = digits_images_and_labels()
        return {name: self._generate_examples(images, labels, indices)
                for name, indices in split_indices(labels).items()}

    def _generate_examples(self, images, labels, indices):
        for index in indices:
            yield int(index), {"image": images[index], "label": int(labels[index])}
