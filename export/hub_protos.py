"""The three TF1 Hub-format protocol messages, built at run time.

tensorflow_hub 0.16.1 no longer ships its generated ``*_pb2`` modules, so the messages are
declared here from the field numbers of tensorflow/hub ``tensorflow_hub/module_def.proto``,
``module_attachment.proto`` and ``image_module_info.proto`` (package ``tensorflow_hub``), in a
private descriptor pool so they never clash with a real registration.
"""

from __future__ import annotations

import functools

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

MODULE_DEF_FILENAME = "tfhub_module.pb"
FORMAT_V3 = 3
# Key of the CollectionDef (bytes_list of ModuleAttachment) in each MetaGraphDef: tensorflow/hub
# saved_model_lib.py ATTACHMENT_COLLECTION_SAVED.
ATTACHMENT_COLLECTION = "hub_module_attachments"
IMAGE_MODULE_INFO_KEY = "image_module_info"

_F = descriptor_pb2.FieldDescriptorProto


def _field(message, name, number, kind, label=_F.LABEL_OPTIONAL, type_name=None):
    field = message.field.add(name=name, number=number, type=kind, label=label)
    if type_name:
        field.type_name = type_name


@functools.lru_cache(maxsize=None)
def _classes():
    file = descriptor_pb2.FileDescriptorProto(name="efficientnet_tf/export/tensorflow_hub.proto",
                                              package="tensorflow_hub", syntax="proto3")
    module_def = file.message_type.add(name="ModuleDef")
    fmt = module_def.enum_type.add(name="Format")
    fmt.value.add(name="FORMAT_UNSPECIFIED", number=0)
    fmt.value.add(name="FORMAT_V3", number=FORMAT_V3)
    _field(module_def, "format", 1, _F.TYPE_ENUM, type_name=".tensorflow_hub.ModuleDef.Format")
    _field(module_def, "required_features", 2, _F.TYPE_STRING, label=_F.LABEL_REPEATED)

    attachment = file.message_type.add(name="ModuleAttachment")
    _field(attachment, "key", 1, _F.TYPE_STRING)
    _field(attachment, "value", 2, _F.TYPE_BYTES)

    image_info = file.message_type.add(name="ImageModuleInfo")
    size = image_info.nested_type.add(name="InputSize")
    _field(size, "height", 1, _F.TYPE_INT32)
    _field(size, "width", 2, _F.TYPE_INT32)
    size.reserved_range.add(start=3, end=4)
    _field(image_info, "default_image_size", 1, _F.TYPE_MESSAGE,
           type_name=".tensorflow_hub.ImageModuleInfo.InputSize")

    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"tensorflow_hub.{name}"))
            for name in ("ModuleDef", "ModuleAttachment", "ImageModuleInfo")}


def module_def_bytes() -> bytes:
    """The content of ``tfhub_module.pb``: ModuleDef{format: FORMAT_V3} (the two bytes 08 03)."""
    return _classes()["ModuleDef"](format=FORMAT_V3).SerializeToString()


def parse_module_def(data: bytes):
    message = _classes()["ModuleDef"]()
    message.ParseFromString(data)
    return message


def image_module_info_attachment(height: int, width: int) -> bytes:
    """A serialized ModuleAttachment{key: 'image_module_info', value: ImageModuleInfo{...}}."""
    classes = _classes()
    info = classes["ImageModuleInfo"]()
    info.default_image_size.height = height
    info.default_image_size.width = width
    return classes["ModuleAttachment"](key=IMAGE_MODULE_INFO_KEY, value=info.SerializeToString()).SerializeToString()


def read_attachments(meta_graph) -> dict:
    """{key: serialized message} of a MetaGraphDef's hub attachments."""
    if ATTACHMENT_COLLECTION not in meta_graph.collection_def:
        return {}
    attachment = _classes()["ModuleAttachment"]()
    found = {}
    for value in meta_graph.collection_def[ATTACHMENT_COLLECTION].bytes_list.value:
        attachment.ParseFromString(value)
        found[attachment.key] = attachment.value
    return found


def parse_image_module_info(data: bytes):
    message = _classes()["ImageModuleInfo"]()
    message.ParseFromString(data)
    return message
