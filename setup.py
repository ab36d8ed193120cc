"""Packaging for efficientnet_tf (library, trainer and exporters)."""

import ast
import pathlib

from setuptools import find_packages, setup

HERE = pathlib.Path(__file__).parent


def package_data():
    """The package data globs, stated once in package_data.bzl (Bazel loads it too)."""
    text = (HERE / "package_data.bzl").read_text()
    return ast.literal_eval(text.split("PACKAGE_DATA =", 1)[1].strip())


def requirements():
    lines = (HERE / "requirements.txt").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


setup(
    name="efficientnet_tf",
    version="0.1.0",
    description="EfficientNet V1, Lite and V2 for TensorFlow / Keras 3, with TF-Hub exporters and a TPU-ready trainer",
    long_description=(HERE / "README.md").read_text(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["efficientnet_tf", "efficientnet_tf.*", "export", "export.*",
                                    "train", "train.*"]),
    package_data={"efficientnet_tf": package_data()},
    python_requires=">=3.10",
    install_requires=requirements(),
    extras_require={"torch": ["torch>=2.1", "safetensors>=0.4"],
                    "openvino": ["openvino>=2025.0"],  # export format "openvino"
                    "kaggle": ["kagglehub>=1.0", "kaggle==2.2.5"],  # Kaggle Models handles, upload
                    # export format "onnx" (converter + the runtime it is verified in)
                    "onnx": ["tf2onnx>=1.17", "onnx>=1.16", "onnxruntime>=1.18"],
                    # MediaPipe Tasks' ImageClassifier check of the TF-Lite export
                    "mediapipe": ["mediapipe>=1.2"]},
    entry_points={"console_scripts": ["efficientnet-tf=efficientnet_tf.__main__:main"]},
)
