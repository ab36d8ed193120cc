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

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from efficientnet_tf.spec import STEM_BN
from export import hub_protos, progress, trace
from export.exporter import Exporter, main_signature
from export.job import ExportJob
from export.verify import TF_TOLERANCE, Tolerance, Verification

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


def _build_graph(job: ExportJob, training: bool, names: Dict[int, str]):
    """(graph, variables by id, signature map) of one MetaGraph."""
    endpoints = job.endpoints
    spec = job.input_spec()
    with progress.step(f"hub_tf1: tracing the {'train' if training else 'inference'} graph"):
        with trace.plain_swish():
            def run(images):
                return endpoints(images, training=training)
            traced = tf.function(run, autograph=False).get_concrete_function(spec)
    func_graph = traced.graph
    graph_def = func_graph.as_graph_def()
    by_handle = {id(v.value.handle): v for v in endpoints.variables}

    graph = tf.Graph()
    with graph.as_default():
        images = tf.compat.v1.placeholder(tf.float32, [None, *job.input_hw, 3], name="images")
        variables = {}
        for var in endpoints.variables:
            variables[id(var)] = tf.compat.v1.get_variable(
                names[id(var)], shape=var.shape, dtype=var.dtype, trainable=var.trainable,
                initializer=tf.compat.v1.zeros_initializer(), use_resource=True)
        input_map = {func_graph.inputs[0].name: trace.checked_images(images, job.input_hw)}
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
            job.image_size, job.image_size))
        signatures = {"image_feature_vector": _signature(images, outputs, "pooled_features")}
        if "logits" in outputs:
            signatures["image_classification"] = _signature(images, outputs, "logits")
        signatures["default"] = signatures[main_signature("logits" in outputs)]
    if training and not updates:
        raise ValueError("The training graph has no batch-norm update ops")
    return graph, variables, signatures


def export(job: ExportJob, staging_dir: str) -> List[str]:
    """Writes the module into ``staging_dir`` (which must be empty)."""
    names = trace.variable_names(job.endpoints)
    values = {id(v): np.asarray(v.numpy()) for v in job.endpoints.variables}
    builder = tf.compat.v1.saved_model.Builder(staging_dir)
    for tags in TAG_SETS:
        graph, variables, signatures = _build_graph(job, bool(tags), names)
        with progress.step(f"hub_tf1: writing the MetaGraph for tags {set(tags) or '{}'}"):
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


def update_targets(meta_graph) -> List[str]:
    """Names of the variables the UPDATE_OPS of ``meta_graph`` assign, one entry per op."""
    nodes = {node.name: node for node in meta_graph.graph_def.node}
    collection = meta_graph.collection_def.get(tf.compat.v1.GraphKeys.UPDATE_OPS)
    targets = []
    for name in (collection.node_list.value if collection else []):
        node = nodes[name.split(":")[0]]
        while node.op != "VarHandleOp" and node.input:  # follow Identity/ReadVariable chains
            node = nodes[node.input[0].lstrip("^").split(":")[0]]
        targets.append(node.name)
    return targets


def _check_files(job: ExportJob, staging_dir: str, record: Verification):
    """Module format, tag sets, variable names, image size and update ops; returns the MetaGraphs."""
    with open(os.path.join(staging_dir, hub_protos.MODULE_DEF_FILENAME), "rb") as f:
        record.equal("tf1/tfhub_module.pb format", hub_protos.parse_module_def(f.read()).format,
                     hub_protos.FORMAT_V3, "tfhub_module.pb is not ModuleDef FORMAT_V3")
    graphs = read_meta_graphs(staging_dir)
    record.equal("tf1/tag sets", sorted(sorted(t) for t in graphs), sorted(sorted(t) for t in TAG_SETS),
                 f"Expected tag sets {TAG_SETS}, found {[sorted(t) for t in graphs]}")
    names = trace.variable_names(job.endpoints)
    for tags, meta_graph in graphs.items():
        label = "train" if tags else "inference"
        record.equal(f"tf1/{label}/variables", graph_variable_names(meta_graph), sorted(names.values()),
                     f"Variables of the MetaGraph {sorted(tags)} differ from the model's")
        info = hub_protos.read_attachments(meta_graph).get(hub_protos.IMAGE_MODULE_INFO_KEY)
        size = hub_protos.parse_image_module_info(info).default_image_size if info else None
        record.equal(f"tf1/{label}/image_module_info", (size.height, size.width) if size else None,
                     (job.image_size, job.image_size), f"MetaGraph {sorted(tags)}: image_module_info is {size}")
    # Every moving statistic is assigned by exactly one update op of the train graph, and none
    # in the inference graph (other updates, e.g. dropout seed states, are allowed).
    statistics = sorted(names[id(v)] for layer in job.endpoints.layers
                        if isinstance(layer, keras.layers.BatchNormalization)
                        for v in (layer.moving_mean, layer.moving_variance))
    for tags, meta_graph in graphs.items():
        targets = update_targets(meta_graph)
        assigned = sorted(t for t in targets if t in set(statistics))
        expected = statistics if tags else []
        record.equal(f"tf1/{'train' if tags else 'inference'}/moving statistics in UPDATE_OPS", len(assigned),
                     len(expected), f"MetaGraph {sorted(tags)}: the UPDATE_OPS assign {len(assigned)} moving "
                     f"statistics, expected each of the {len(expected)} once "
                     f"(missing: {sorted(set(expected) - set(assigned))[:5]})")
        if assigned != expected:
            record.equal(f"tf1/{'train' if tags else 'inference'}/UPDATE_OPS targets", assigned, expected)
    return graphs


def verify(job: ExportJob, staging_dir: str) -> Verification:
    """Checks the file layout and update ops, then reloads both MetaGraphs as hub.load does: the
    inference graph reproduces the Keras model and changes no statistic; one run of the train
    graph moves the stem's batch-norm statistics exactly as the momentum rule says.

    The train-graph check holds for every correct module: a statistic that the batch cannot move
    (a channel whose batch mean equals its moving mean, e.g. a dead ReLU6 channel at 0) is
    expected not to move."""
    record = Verification(HubTF1Exporter.name)
    _check_files(job, staging_dir, record)
    names = trace.variable_names(job.endpoints)
    images = tf.constant(job.batch)
    defaults = {"default": "logits", "image_classification": "logits", "image_feature_vector": "pooled_features"}
    if not job.num_classes:
        defaults["default"] = "pooled_features"
    with progress.step("hub_tf1: reloading the inference MetaGraph and running it"):
        loaded = tf.compat.v1.saved_model.load_v2(staging_dir, tags=[])
        before = [v.numpy() for v in loaded.variables]
        for name, signature in loaded.signatures.items():
            for key, value in signature(images=images).items():
                expected = job.reference[defaults[name] if key == "default" else key]
                record.close(f"tf1/{name}/{key}", expected, value, TF_TOLERANCE)
        changed = sum(not np.array_equal(b, v.numpy()) for b, v in zip(before, loaded.variables))
        record.equal("tf1/inference/variables changed by running it", changed, 0,
                     f"The inference graph changed {changed} variables")
        del loaded

    bn = job.endpoints.get_layer(STEM_BN)  # its input does not depend on the training mode
    stem = {"moving_mean": names[id(bn.moving_mean)], "moving_variance": names[id(bn.moving_variance)]}
    # A batch unlike the verification one (mirrored), so that it differs from any calibration
    # batch the statistics may come from; the expected update is exact either way.
    train_batch = np.ascontiguousarray(job.batch[:, :, ::-1])
    bn_input = np.asarray(keras.Model(job.endpoints.input, bn.input)(train_batch, training=False), np.float64)
    batch_stats = {"moving_mean": bn_input.mean(axis=(0, 1, 2)), "moving_variance": bn_input.var(axis=(0, 1, 2))}
    with progress.step("hub_tf1: reloading the train MetaGraph and running it"):
        loaded = tf.compat.v1.saved_model.load_v2(staging_dir, tags=["train"])
        variables = {v.name.split(":")[0]: v for v in loaded.variables}
        old = {k: variables[n].numpy().astype(np.float64) for k, n in stem.items()}
        statistics = [v for v in loaded.variables if "moving_" in v.name]
        before = [v.numpy() for v in statistics]
        outputs = loaded.signatures["image_feature_vector"](images=tf.constant(train_batch))
        del outputs
        for key, name in stem.items():
            expected = bn.momentum * old[key] + (1.0 - bn.momentum) * batch_stats[key]
            # Limit relative to the size of the statistic (the update moves it by 1 - momentum).
            record.close(f"tf1/train/{name} after one step", expected, variables[name].numpy(),
                         Tolerance(rtol=1e-4, atol=1e-6))
        changed = sum(not np.array_equal(b, v.numpy()) for b, v in zip(before, statistics))
        record.notes.append(f"hub_tf1: one run of the train graph moved {changed} of {len(statistics)} "
                            "moving statistics (those the batch moves)")
        for name, signature in loaded.signatures.items():
            finite = all(bool(np.all(np.isfinite(v))) for v in signature(images=images).values())
            record.equal(f"tf1/train/{name} outputs finite", finite, True)
        logging.info("%s", record.notes[-1])
        del loaded
    return record


class HubTF1Exporter(Exporter):
    name = "hub_tf1"
    layout = "DIR: TF1 Hub module (tfhub_module.pb; tag sets {} and {'train'})"

    def export(self, job: ExportJob, out_dir: str) -> None:
        export(job, out_dir)

    def verify(self, job: ExportJob, out_dir: str) -> Verification:
        return verify(job, out_dir)


EXPORTER = HubTF1Exporter()
