"""A real multi-label TFDS dataset for the tests: two scikit-learn digits side by side (16 px
each, in a 32x32 RGB PNG), labelled with the set of both digits (a ``Sequence(ClassLabel)``,
one or two labels). Once prepared, the trainer reads it by name from its data_dir.
:func:`pair_up` is the construction, also used on arrays directly (tests/test_train_losses.py)."""

import numpy as np
import tensorflow_datasets as tfds

from efficientnet_tf.digits import digits_images_and_labels

NUM_EXAMPLES = 600
NUM_CLASSES = 10


def pair_up(images, labels, count: int, seed: int):
    """``count`` random pairs of ``images`` [N, H, W, ...] side by side -> [count, H, 2W, ...],
    and their multi-hot float32 labels [count, 10] (one or two digits)."""
    pairs = np.random.default_rng(seed).integers(len(labels), size=(count, 2))
    x = np.concatenate([images[pairs[:, 0]], images[pairs[:, 1]]], axis=2)
    y = np.zeros((count, NUM_CLASSES), np.float32)
    for side in (0, 1):
        y[np.arange(count), labels[pairs[:, side]]] = 1
    return x, y


class DigitPairs(tfds.core.GeneratorBasedBuilder):
    """Pairs of handwritten digits; the label is the set of the two digits."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(32, 32, 3), encoding_format="png"),
                "labels": tfds.features.Sequence(
                    tfds.features.ClassLabel(names=[str(d) for d in range(NUM_CLASSES)])),
            }),
            supervised_keys=("image", "labels"))

    def _split_generators(self, dl_manager):
        del dl_manager
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        images, labels = digits_images_and_labels(image_size=16)
        pairs, multi_hot = pair_up(images, labels, NUM_EXAMPLES, seed=0)
        for index, (pair, hot) in enumerate(zip(pairs, multi_hot)):
            image = np.zeros((32, 32, 3), np.uint8)
            image[8:24] = pair
            yield index, {"image": image, "labels": np.flatnonzero(hot).tolist()}
