"""Format ``hub_tf1``: the TF1 Hub module format of the published ``google/efficientnet/b*/.../1``.

A SavedModel plus ``tfhub_module.pb`` (ModuleDef format 3) with two MetaGraphs over the same
variables (identical names, one checkpoint):

- tag set ``{}``: inference (batch norm with moving statistics, no dropout);
- tag set ``{"train"}``: batch norm on batch statistics whose moving averages are updated
  whenever an output is computed (the update ops are control dependencies of every output
  and are listed in the UPDATE_OPS collection), dropout and drop-connect active.

Signatures (input ``images``: float32 [batch, height, width, 3] in [0, 1]): ``default`` and
``image_classification`` (``default`` = logits) when there is a classifier, and
``image_feature_vector`` (``default`` = pooled features) - all three also return the named
endpoints. The default image size is attached as an ImageModuleInfo message under the key
``image_module_info``, as ``hub.attach_image_module_info`` did.

The Keras 3 model cannot run in a TF1 graph directly; each variant is traced into a FuncGraph
through a tf.function, and that graph is imported into a fresh tf.Graph with the captured
variable handles replaced by graph variables named ``<layer>/<variable>``.
"""

from __future__ import annotations

import os
from typing import Dict, List

import numpy as np
import tensorflow as tf
from absl import logging

from export import common, hub_protos

TAG_SETS = ((), ("train",))
_NOT_UPDATES = ("ReadVariableOp", "NoOp")


def _tensor_info(tensor):
    """TensorInfo of a graph tensor (what the deprecated build_tensor_info returns)."""
    from tensorflow.core.protobuf import meta_graph_pb2

    return meta_graph_pb2.TensorInfo(name=tensor.name, dtype=tensor.dtype.as_datatype_enum,
                                     tensor_shape=tensor.shape.as_proto())


def _signature(images, outputs: Dict[str, tf.Tensor], default: str):
    info = _tensor_info
    return tf.compat.v1.saved_model.signature_def_utils.build_signature_def(
        inputs={"images": info(images)},
        outputs={"default": info(outputs[default]), **{k: info(v) for k, v in outputs.items()}},
        method_name=tf.saved_model.PREDICT_METHOD_NAME)


def _build_graph(prepared: common.PreparedModel, training: bool, names: Dict[int, str]):
    """(graph, variables by id, signature map) of one MetaGraph."""
    endpoints = prepared.endpoints
    spec = prepared.input_spec()
    with common.step(f"hub_tf1: tracing the {'train' if training else 'inference'} graph"):
        with common.plain_swish():
            def run(images):
                return endpoints(images, training=training)
            traced = tf.function(run, autograph=False).get_concrete_function(spec)
    func_graph = traced.graph
    graph_def = func_graph.as_graph_def()
    by_handle = {id(v.value.handle): v for v in endpoints.variables}

    graph = tf.Graph()
    with graph.as_default():
        images = tf.compat.v1.placeholder(tf.float32, [None, *prepared.input_hw, 3], name="images")
        variables = {}
        for var in endpoints.variables:
            variables[id(var)] = tf.compat.v1.get_variable(
                names[id(var)], shape=var.shape, dtype=var.dtype, trainable=var.trainable,
                initializer=tf.compat.v1.zeros_initializer(), use_resource=True)
        input_map = {func_graph.inputs[0].name: common.checked_images(images, prepared.input_hw)}
        for external, internal in func_graph.captures:
            var = by_handle.get(id(external))
            if var is not None:
                input_map[internal.name] = variables[id(var)].handle
            elif external.dtype != tf.resource:
                input_map[internal.name] = tf.constant(external.numpy())
            else:
                raise ValueError(f"The traced model captures a resource that is not one of its variables: {external}")
        keys = list(traced.structured_outputs)
        update_names = [op.name for op in func_graph.control_outputs if op.type not in _NOT_UPDATES]
        imported = tf.graph_util.import_graph_def(
            graph_def, input_map=input_map, name="efficientnet",
            return_elements=[traced.structured_outputs[k].name for k in keys] + update_names)
        updates = imported[len(keys):]
        for op in updates:
            tf.compat.v1.add_to_collection(tf.compat.v1.GraphKeys.UPDATE_OPS, op)
        with tf.control_dependencies(updates):
            outputs = {k: tf.identity(t, name=k) for k, t in zip(keys, imported[:len(keys)])}
        tf.compat.v1.add_to_collection(hub_protos.ATTACHMENT_COLLECTION, hub_protos.image_module_info_attachment(
            prepared.image_size, prepared.image_size))
        signatures = {"image_feature_vector": _signature(images, outputs, "pooled_features")}
        if "logits" in outputs:
            signatures["image_classification"] = _signature(images, outputs, "logits")
        signatures["default"] = signatures["image_classification" if "logits" in outputs else "image_feature_vector"]
    if training and not updates:
        raise ValueError("The training graph has no batch-norm update ops")
    return graph, variables, signatures


def export(prepared: common.PreparedModel, staging_dir: str) -> List[str]:
    """Writes the module into ``staging_dir`` (which must be empty)."""
    names = common.variable_names(prepared.endpoints)
    values = {id(v): np.asarray(v.numpy()) for v in prepared.endpoints.variables}
    builder = tf.compat.v1.saved_model.Builder(staging_dir)
    for tags in TAG_SETS:
        graph, variables, signatures = _build_graph(prepared, bool(tags), names)
        with common.step(f"hub_tf1: writing the MetaGraph for tags {set(tags) or '{}'}"):
            with graph.as_default(), tf.compat.v1.Session(graph=graph) as session:
                # One run sets every variable by feeding its initial value.
                session.run([v.initializer for v in variables.values()],
                            {variables[k].initializer.inputs[1]: values[k] for k in variables})
                if not tags:
                    builder.add_meta_graph_and_variables(session, list(tags), signature_def_map=signatures,
                                                         strip_default_attrs=True)
                else:
                    builder.add_meta_graph(list(tags), signature_def_map=signatures, strip_default_attrs=True)
    builder.save()
    with open(os.path.join(staging_dir, hub_protos.MODULE_DEF_FILENAME), "wb") as f:
        f.write(hub_protos.module_def_bytes())
    return [staging_dir]


def read_meta_graphs(path: str):
    """{frozenset(tags): MetaGraphDef} of a SavedModel directory."""
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        proto.ParseFromString(f.read())
    return {frozenset(mg.meta_info_def.tags): mg for mg in proto.meta_graphs}


def graph_variable_names(meta_graph) -> List[str]:
    from tensorflow.core.framework import variable_pb2

    names = []
    for data in meta_graph.collection_def[tf.compat.v1.GraphKeys.GLOBAL_VARIABLES].bytes_list.value:
        var = variable_pb2.VariableDef()
        var.ParseFromString(data)
        names.append(var.variable_name.split(":")[0])
    return sorted(names)


def verify(prepared: common.PreparedModel, staging_dir: str, batch: np.ndarray,
           reference: Dict[str, np.ndarray], results: Dict[str, float], limits: Dict[str, float]) -> None:
    """Checks the file layout, then reloads both MetaGraphs as hub.load does."""
    with open(os.path.join(staging_dir, hub_protos.MODULE_DEF_FILENAME), "rb") as f:
        if hub_protos.parse_module_def(f.read()).format != hub_protos.FORMAT_V3:
            raise common.VerificationError("tfhub_module.pb is not ModuleDef FORMAT_V3")
    graphs = read_meta_graphs(staging_dir)
    if set(graphs) != {frozenset(t) for t in TAG_SETS}:
        raise common.VerificationError(f"Expected tag sets {TAG_SETS}, found {[sorted(t) for t in graphs]}")
    expected_names = sorted(common.variable_names(prepared.endpoints).values())
    for tags, meta_graph in graphs.items():
        if graph_variable_names(meta_graph) != expected_names:
            raise common.VerificationError(f"Variables of the MetaGraph {sorted(tags)} differ from the model's")
        info = hub_protos.read_attachments(meta_graph).get(hub_protos.IMAGE_MODULE_INFO_KEY)
        size = hub_protos.parse_image_module_info(info).default_image_size if info else None
        if size is None or (size.height, size.width) != (prepared.image_size, prepared.image_size):
            raise common.VerificationError(f"MetaGraph {sorted(tags)}: image_module_info is {size}")

    images = tf.constant(batch)
    defaults = {"default": "logits", "image_classification": "logits", "image_feature_vector": "pooled_features"}
    if not prepared.num_classes:
        defaults["default"] = "pooled_features"
    for tags in TAG_SETS:
        label = "train" if tags else "inference"
        with common.step(f"hub_tf1: reloading the {label} MetaGraph and running it"):
            loaded = tf.compat.v1.saved_model.load_v2(staging_dir, tags=list(tags))
            stats = [v for v in loaded.variables if "moving_mean" in v.name]
            before = [v.numpy() for v in stats]
            for name, signature in loaded.signatures.items():
                outputs = signature(images=images)
                if tags:
                    continue  # batch statistics and dropout: no reference; checked below
                for key, value in outputs.items():
                    expected = reference[defaults[name] if key == "default" else key]
                    common.check_close(results, limits, f"tf1/{name}/{key}", expected, value, common.TF_TOLERANCE)
            changed = sum(not np.array_equal(b, v.numpy()) for b, v in zip(before, stats))
            if tags and changed != len(stats):
                raise common.VerificationError(f"The train graph updated {changed} of {len(stats)} moving means")
            if not tags and changed:
                raise common.VerificationError(f"The inference graph changed {changed} moving means")
            logging.info("hub_tf1: %s graph: %d of %d moving means changed by running it", label, changed, len(stats))
            del loaded
