"""scikit-learn's bundled handwritten digits as image arrays, and their fixed train/test split:
the trainer's embedded dataset (``train/digits_dataset.py`` builds TFDS ``sklearn_digits`` from
them) and the exporter's embedded labeled evaluation data (``export.accuracy``)."""

from __future__ import annotations

import numpy as np

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
