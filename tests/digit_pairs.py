"""A real multi-label TFDS dataset for the tests: two scikit-learn digits side by side (16 px
each, in a 32x32 RGB PNG), labelled with the set of both digits (a ``Sequence(ClassLabel)``,
one or two labels). Once prepared, the trainer reads it by name from its data_dir."""

import numpy as np
import tensorflow_datasets as tfds

from efficientnet_tf.digits import digits_images_and_labels

NUM_EXAMPLES = 600


class DigitPairs(tfds.core.GeneratorBasedBuilder):
    """Pairs of handwritten digits; the label is the set of the two digits."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(32, 32, 3), encoding_format="png"),
                "labels": tfds.features.Sequence(
                    tfds.features.ClassLabel(names=[str(d) for d in range(10)])),
            }),
            supervised_keys=("image", "labels"))

    def _split_generators(self, dl_manager):
        del dl_manager
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        images, labels = digits_images_and_labels(image_size=16)
        rng = np.random.default_rng(0)
        for index in range(NUM_EXAMPLES):
            a, b = rng.integers(len(labels), size=2)
            image = np.zeros((32, 32, 3), np.uint8)
            image[8:24] = np.concatenate([images[a], images[b]], axis=1)
            yield index, {"image": image, "labels": sorted({int(labels[a]), int(labels[b])})}
