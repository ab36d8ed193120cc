"""TF-Lite Metadata for the ``tflite`` export, written by the exporter itself.

MediaPipe Tasks (ImageClassifier, ImageEmbedder) and Android Studio's model binding read a
``ModelMetadata`` flatbuffer (schema ``metadata_schema.fbs``, file identifier ``M001``) stored as
a model buffer named ``TFLITE_METADATA``, and associated files (``labels.txt``) from a zip
archive appended to the ``.tflite``. The writers that used to do this (tflite-support) are
unmaintained, and the one inside the ``mediapipe`` wheel fails to import without a native
module the wheel does not ship; the few tables an image classifier needs are written here with
the ``flatbuffers`` runtime TensorFlow already depends on. Field slots follow
``mediapipe/tasks/metadata/metadata_schema.fbs`` (schema 1.5.0), cited at each table.
"""

from __future__ import annotations

import dataclasses
import io
import zipfile
from typing import Optional, Sequence

import flatbuffers
import numpy as np

METADATA_NAME = "TFLITE_METADATA"  # the model buffer's name every metadata reader looks up
FILE_IDENTIFIER = b"M001"
# Every field used here exists since schema 1.0.0 (the schema's history lists later additions:
# VOCABULARY 1.0.1, tokenizers 1.1.0, tensor groups 1.2.0, audio 1.3.0, file versions 1.4.1).
MIN_PARSER_VERSION = "1.0.0"
LABELS_FILENAME = "labels.txt"

# Enum values and union tags from metadata_schema.fbs.
_COLOR_SPACE_RGB = 1
_CONTENT_FEATURE, _CONTENT_IMAGE = 1, 2  # union ContentProperties
_PROCESS_NORMALIZATION = 1  # union ProcessUnitOptions
_FILE_TENSOR_AXIS_LABELS = 2  # enum AssociatedFileType


@dataclasses.dataclass(frozen=True)
class ImageClassifierMetadata:
    """What the exporter states about one ``.tflite``."""

    name: str
    description: str
    version: str
    author: str
    license: str
    image_size: int
    input_description: str
    input_range: tuple  # the input tensor's values after normalization (stats min, max)
    mean: Sequence[float]  # pixel (0-255) normalization: (pixel - mean) / std
    std: Sequence[float]
    output_name: str
    output_description: str
    class_names: Optional[Sequence[str]]  # None: a feature vector, no label file


def _strings(builder, *texts):
    return [builder.CreateString(t) for t in texts]


def _table(builder, fields):
    """One table; ``fields`` = [(slot, kind, value)], kind "offset", "int8" or "uint32"."""
    builder.StartObject(max(slot for slot, _, _ in fields) + 1)
    for slot, kind, value in fields:
        if kind == "offset":
            builder.PrependUOffsetTRelativeSlot(slot, value, 0)
        elif kind == "int8":
            builder.PrependInt8Slot(slot, value, 0)
        else:
            builder.PrependUint32Slot(slot, value, 0)
    return builder.EndObject()


def _vector(builder, offsets):
    builder.StartVector(4, len(offsets), 4)
    for offset in reversed(offsets):
        builder.PrependUOffsetTRelative(offset)
    return builder.EndVector()


def _floats(builder, values):
    return builder.CreateNumpyVector(np.asarray(values, np.float32))


def _stats(builder, low, high):
    # table Stats { max:[float]; min:[float]; }
    return _table(builder, [(0, "offset", _floats(builder, [high])), (1, "offset", _floats(builder, [low]))])


def metadata_buffer(meta: ImageClassifierMetadata) -> bytes:
    """The ``ModelMetadata`` flatbuffer for ``meta``."""
    b = flatbuffers.Builder(1024)
    # Input: table ImageSize { width; height; }, ImageProperties { color_space; default_size; },
    # Content { content_properties_type; content_properties; range; }.
    size = _table(b, [(0, "uint32", meta.image_size), (1, "uint32", meta.image_size)])
    image = _table(b, [(0, "int8", _COLOR_SPACE_RGB), (1, "offset", size)])
    content = _table(b, [(0, "int8", _CONTENT_IMAGE), (1, "offset", image)])
    # NormalizationOptions { mean; std; } inside ProcessUnit { options_type; options; }.
    norm = _table(b, [(0, "offset", _floats(b, meta.mean)), (1, "offset", _floats(b, meta.std))])
    unit = _table(b, [(0, "int8", _PROCESS_NORMALIZATION), (1, "offset", norm)])
    # TensorMetadata { name 0; description 1; dimension_names 2; content 3; process_units 4;
    # stats 5; associated_files 6; }
    name, description = _strings(b, "image", meta.input_description)
    input_tensor = _table(b, [(0, "offset", name), (1, "offset", description), (3, "offset", content),
                              (4, "offset", _vector(b, [unit])), (5, "offset", _stats(b, *meta.input_range))])

    out_content = _table(b, [(0, "int8", _CONTENT_FEATURE), (1, "offset", _empty_table(b))])
    out_fields = []
    if meta.class_names is not None:
        # AssociatedFile { name 0; description 1; type 2; locale 3; version 4; }
        file_name, file_description = _strings(b, LABELS_FILENAME, "Class names, one per line, in output order.")
        labels = _table(b, [(0, "offset", file_name), (1, "offset", file_description),
                            (2, "int8", _FILE_TENSOR_AXIS_LABELS)])
        out_fields.append((6, "offset", _vector(b, [labels])))
        out_fields.append((5, "offset", _stats(b, 0.0, 1.0)))
    name, description = _strings(b, meta.output_name, meta.output_description)
    output_tensor = _table(b, [(0, "offset", name), (1, "offset", description), (3, "offset", out_content)]
                           + out_fields)
    # SubGraphMetadata { name 0; description 1; input_tensor_metadata 2; output_tensor_metadata 3; ... }
    subgraph = _table(b, [(2, "offset", _vector(b, [input_tensor])), (3, "offset", _vector(b, [output_tensor]))])
    # ModelMetadata { name 0; description 1; version 2; subgraph_metadata 3; author 4; license 5;
    # associated_files 6; min_parser_version 7; }
    name, description, version, author, license_, parser = _strings(
        b, meta.name, meta.description, meta.version, meta.author, meta.license, MIN_PARSER_VERSION)
    root = _table(b, [(0, "offset", name), (1, "offset", description), (2, "offset", version),
                      (3, "offset", _vector(b, [subgraph])), (4, "offset", author), (5, "offset", license_),
                      (7, "offset", parser)])
    b.Finish(root, file_identifier=FILE_IDENTIFIER)
    return bytes(b.Output())


def _empty_table(builder):
    builder.StartObject(0)  # table FeatureProperties {}
    return builder.EndObject()


def populate(model_content: bytes, meta: ImageClassifierMetadata) -> bytes:
    """``model_content`` with the metadata buffer (replacing any earlier one) and, for a
    classifier, ``labels.txt`` in a zip archive appended to it."""
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(model_content), 0)
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(metadata_buffer(meta), np.uint8)
    model.buffers.append(buffer)
    entries = [m for m in (model.metadata or []) if (m.name or b"").decode() != METADATA_NAME]
    entry = schema.MetadataT()
    entry.name = METADATA_NAME
    entry.buffer = len(model.buffers) - 1
    model.metadata = entries + [entry]
    builder = flatbuffers.Builder(len(model_content) + 4096)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    content = bytes(builder.Output())
    if meta.class_names is None:
        return content
    archive = io.BytesIO(content)
    with zipfile.ZipFile(archive, "a", compression=zipfile.ZIP_STORED) as zf:  # stored: readers map it
        zf.writestr(LABELS_FILENAME, "\n".join(meta.class_names) + "\n")
    return archive.getvalue()


def read_buffer(model_content: bytes) -> Optional[bytes]:
    """The ``TFLITE_METADATA`` flatbuffer of a ``.tflite`` (None when it has none)."""
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.Model.GetRootAs(model_content, 0)
    for i in range(model.MetadataLength()):
        if model.Metadata(i).Name().decode() == METADATA_NAME:
            return model.Buffers(model.Metadata(i).Buffer()).DataAsNumpy().tobytes()
    return None


def associated_files(model_content: bytes) -> dict:
    """The files in the zip archive appended to a ``.tflite``, by name."""
    archive = io.BytesIO(model_content)
    if not zipfile.is_zipfile(archive):
        return {}
    with zipfile.ZipFile(archive) as zf:
        return {name: zf.read(name) for name in zf.namelist()}
