"""TFDS builder `sklearn_digits`: scikit-learn's bundled handwritten digits as an image dataset.

The trainer's embedded default dataset: it ships inside scikit-learn (1797 8x8 images,
10 classes), so it builds offline. Images are upscaled to 32x32 RGB and stored as PNG, so the
usual encoded-image pipeline (crop on bytes, resize, augment) runs on it unchanged.
Importing this module registers the builder:

  builder = SklearnDigits(data_dir=...); builder.download_and_prepare()
  ds = tfds.load('sklearn_digits', split='train', data_dir=...)
"""

from __future__ import annotations

import tensorflow_datasets as tfds

# The arrays and the split live in efficientnet_tf.digits (the exporter's accuracy check reads
# the same 360 held-out digits); this module makes them a TFDS dataset.
from efficientnet_tf.digits import IMAGE_SIZE, SPLIT_SEED, TEST_FRACTION, digits_images_and_labels, split_indices  # noqa: F401,E402


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
