"""MediaPipe Tasks' ``ImageClassifier`` on an exported ``.tflite``: the client phones run.

Optional dependency: ``pip install efficientnet_tf[mediapipe]``. MediaPipe reads the TF-Lite
Metadata (input normalization, label file) that ``export.tflite_metadata`` writes; without it
it refuses a float model ("requires specifying NormalizationOptions metadata").
"""

from __future__ import annotations

from typing import List, Tuple

import numpy as np
from export.tflite_metadata import read_buffer

INSTALL_HINT = "pip install efficientnet_tf[mediapipe]  (or: pip install mediapipe)"


def available() -> bool:
    try:
        import mediapipe  # noqa: F401
    except ImportError:
        return False
    return True


def classify(model_path: str, images: np.ndarray, max_results: int = 5) -> List[List[Tuple[int, str, float]]]:
    """Runs ``ImageClassifier`` on uint8 RGB images [N, H, W, 3]; per image its top
    ``max_results`` as (index, category name, score), best first."""
    try:
        import mediapipe as mp
        from mediapipe.tasks.python import vision
        from mediapipe.tasks.python.core import base_options
    except ImportError as err:
        raise ImportError(f"The MediaPipe check needs mediapipe ({err}). Install it with: {INSTALL_HINT}") from None
    options = vision.ImageClassifierOptions(base_options=base_options.BaseOptions(model_asset_path=model_path),
                                            max_results=max_results)
    results = []
    with vision.ImageClassifier.create_from_options(options) as classifier:
        for image in np.asarray(images, np.uint8):
            found = classifier.classify(mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(image)))
            results.append([(c.index, c.category_name, float(c.score)) for c in found.classifications[0].categories])
    return results


def read_metadata(model_content: bytes):
    """The ``ModelMetadata`` of a ``.tflite`` parsed by MediaPipe's own generated schema code
    (an independent reader of what ``export.tflite_metadata`` writes); None without metadata."""
    from mediapipe.tasks.metadata import metadata_schema_py_generated as schema

    buffer = read_buffer(model_content)
    if buffer is None:
        return None
    if not schema.ModelMetadata.ModelMetadataBufferHasIdentifier(buffer, 0):
        raise ValueError("TFLITE_METADATA buffer has not the metadata file identifier M001")
    return schema.ModelMetadataT.InitFromObj(schema.ModelMetadata.GetRootAs(buffer, 0))
