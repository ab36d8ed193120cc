"""Shared test setup: quiet TensorFlow, make the repository importable (markers: pytest.ini), and
fixtures used by several files."""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import logging as std_logging  # noqa: E402
import warnings  # noqa: E402

import pytest  # noqa: E402

# Files whose every test starts processes, servers or trainers, or exports whole models: the
# `integration` tier (pytest.ini). Single integration tests elsewhere carry the mark themselves.
INTEGRATION_FILES = frozenset({
    "test_export_cli.py", "test_export_faults.py", "test_export_hub.py", "test_export_hub_tf1.py",
    "test_export_openvino.py", "test_export_serving.py", "test_export_tflite.py",
    "test_export_publish.py", "test_packaging.py", "test_train_distribute.py",
    "test_train_faults.py", "test_train_main.py", "test_weights_download.py",
    "test_weights_timm.py",
})


def pytest_collection_modifyitems(config, items):
    del config
    for item in items:
        if item.path.name in INTEGRATION_FILES:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(autouse=True)
def _restored_console_and_logging():
    """console.setup() (the CLIs' main(), called in-process by some tests) changes process-wide
    state: the console verbosity, absl's and TensorFlow's log levels and the log format. Each
    test gets it back as it found it, so no test sees what an earlier one in its process set."""
    from absl import logging

    from efficientnet_tf import console

    verbosity, tf_level = logging.get_verbosity(), std_logging.getLogger("tensorflow").level
    handler = logging.get_absl_handler()
    formatter = handler.python_handler.formatter
    state = dict(console._state)
    with warnings.catch_warnings():
        yield
    logging.set_verbosity(verbosity)
    std_logging.getLogger("tensorflow").setLevel(tf_level)
    handler.setFormatter(formatter)
    console._state.clear()
    console._state.update(state)


@pytest.fixture(scope="session")
def photo_tiles(tmp_path_factory):
    """root/{train,validation}/{china,flower}/*.png: 96 px tiles of scikit-learn's two bundled
    photographs (textured images keep every BN channel well conditioned)."""
    from PIL import Image
    from sklearn.datasets import load_sample_image

    root = tmp_path_factory.mktemp("photos")
    for split, offset in (("train", 0), ("validation", 32)):
        for name in ("china", "flower"):
            image = load_sample_image(f"{name}.jpg")
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(8):
                y, x = 40 * (i // 4) + offset, 90 * (i % 4) + offset
                Image.fromarray(image[y:y + 96, x:x + 96]).save(folder / f"{i}.png")
    return str(root)


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory):
    """A TFDS data_dir with the embedded sklearn_digits dataset prepared (offline)."""
    from train import digits_dataset

    data_dir = str(tmp_path_factory.mktemp("tfds"))
    digits_dataset.SklearnDigits(data_dir=data_dir).download_and_prepare()
    return data_dir


@pytest.fixture(scope="session")
def imagenet_metadata(tmp_path_factory):
    """imagenet2012 metadata (dataset_info.json) with the real split sizes, as
    tfds.testing.mock_data(policy=USE_FILES) expects; no image data."""
    import tensorflow_datasets as tfds

    from train_helpers import IMAGENET_TRAIN, IMAGENET_VALIDATION

    root = str(tmp_path_factory.mktemp("imagenet_meta"))
    builder = tfds.builder("imagenet2012", data_dir=root)
    builder.info.set_splits(tfds.core.SplitDict([
        tfds.core.SplitInfo(name="train", shard_lengths=[IMAGENET_TRAIN], num_bytes=0),
        tfds.core.SplitInfo(name="validation", shard_lengths=[IMAGENET_VALIDATION], num_bytes=0),
    ]))
    os.makedirs(builder.data_dir, exist_ok=True)
    builder.info.write_to_directory(builder.data_dir)
    return root
