"""Format ``hub_tf1``: TF1 Hub module with an inference and a {"train"} MetaGraph."""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import efficientnet_tf
from efficientnet_tf.testing import seeded_model
from export import export_model, hub_protos, hub_tf1
from export.job import prepare, reference_batch
from helpers import relative_error

SIZE = 64
FEATURE_KEYS = {"default", "stem", "reduction_1", "reduction_2", "reduction_3", "reduction_4", "reduction_5",
                "features", "pooled_features", "logits"}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    # No dropout or drop-connect, so that the train graph is deterministic and comparable.
    model = seeded_model("efficientnet-b0", lambda m: reference_batch(prepare(m, image_size=SIZE)),
                         classifier_activation=None, dropout_rate=0.0, drop_connect_rate=0.0)
    path = str(tmp_path_factory.mktemp("tf1") / "module")
    result = export_model(model, path, format="hub_tf1", image_size=SIZE)
    x = np.random.default_rng(5).uniform(0, 1, (4, SIZE, SIZE, 3)).astype(np.float32)
    endpoints = efficientnet_tf.endpoints_model(model)
    inference = {k: v.numpy() for k, v in endpoints(x, training=False).items()}
    training = {k: v.numpy() for k, v in endpoints(x, training=True).items()}  # batch statistics
    return model, result, path, x, inference, training


def _moving_means(variables):
    return {v.name: v.numpy().copy() for v in variables if "moving_mean" in v.name}


def test_file_layout(exported):
    model, result, path, *_ = exported
    assert all(result.max_abs_diff[k] <= result.limits[k] for k in result.max_abs_diff)
    # The export's own train-graph check (it calibrated on the verification batch, where the old
    # "every moving mean changes" check could round to no change): update ops and the momentum rule.
    checks = {c.name: c for c in result.checks}
    assert all(c.passed for c in result.checks)
    assert checks["tf1/train/moving statistics in UPDATE_OPS"].value == 2 * 49
    assert checks["tf1/inference/moving statistics in UPDATE_OPS"].value == 0
    for stat in ("moving_mean", "moving_variance"):
        step = checks[f"tf1/train/stem_bn/{stat} after one step"]
        assert step.kind == "max_abs_diff" and step.value <= step.limit
    with open(os.path.join(path, "tfhub_module.pb"), "rb") as f:
        assert f.read() == b"\x08\x03"  # ModuleDef{format: FORMAT_V3}
    graphs = hub_tf1.read_meta_graphs(path)
    assert set(graphs) == {frozenset(), frozenset({"train"})}
    names = [hub_tf1.graph_variable_names(g) for g in graphs.values()]
    assert names[0] == names[1] and len(names[0]) == len(model.variables)
    assert "block2a_bn/moving_mean" in names[0] and "predictions/kernel" in names[0]
    for tags, graph in graphs.items():
        assert set(graph.signature_def) == {"default", "image_classification", "image_feature_vector"}
        assert set(graph.signature_def["image_feature_vector"].outputs) == FEATURE_KEYS
        info = hub_protos.parse_image_module_info(hub_protos.read_attachments(graph)["image_module_info"])
        assert (info.default_image_size.height, info.default_image_size.width) == (SIZE, SIZE)
        updates = graph.collection_def[tf.compat.v1.GraphKeys.UPDATE_OPS].node_list.value \
            if tf.compat.v1.GraphKeys.UPDATE_OPS in graph.collection_def else []
        assert len(updates) == (2 * 49 if tags else 0)  # moving mean and variance of each BN


def test_saved_model_cli_lists_both_tag_sets(exported):
    path = exported[2]
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    shown = subprocess.run([cli, "show", "--dir", path, "--all"], capture_output=True, text=True, timeout=120,
                           env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert "MetaGraphDef with tag-set: '' contains the following SignatureDefs" in shown.stdout
    assert "MetaGraphDef with tag-set: 'train' contains the following SignatureDefs" in shown.stdout
    assert shown.stdout.count("signature_def['image_feature_vector']") == 2


def test_hub_load_train_graph_updates_statistics_default_graph_does_not(exported):
    import tensorflow_hub as hub

    _, _, path, x, inference, training = exported
    for tags, reference in ((None, inference), ({"train"}, training)):
        module = hub.load(path, tags=tags)
        before = _moving_means(module.variables)
        assert len(before) == 49
        outputs = module.signatures["image_feature_vector"](images=tf.constant(x))
        assert set(outputs) == FEATURE_KEYS
        for key in ("pooled_features", "reduction_3", "logits"):
            assert relative_error(reference[key], outputs[key]) < 1e-4, (tags, key)
        logits = module.signatures["image_classification"](images=tf.constant(x))["default"]
        assert relative_error(reference["logits"], logits) < 1e-4
        after = _moving_means(module.variables)
        changed = [k for k in before if not np.array_equal(before[k], after[k])]
        assert len(changed) == (49 if tags else 0), tags


def test_keras_layer_with_both_tag_sets(exported):
    import tensorflow_hub as hub
    import tf_keras

    _, _, path, x, inference, training = exported
    for tags, reference in ((set(), inference), ({"train"}, training)):
        layer = hub.KerasLayer(path, signature="image_feature_vector", signature_outputs_as_dict=True, tags=tags)
        inputs = tf_keras.Input((SIZE, SIZE, 3))
        outputs = layer(inputs)
        net = tf_keras.Model(inputs, outputs["default"])
        assert set(outputs) == FEATURE_KEYS
        before = _moving_means(layer.weights)
        pooled = net.predict(x, verbose=0)
        assert relative_error(reference["pooled_features"], pooled) < 1e-4, tags
        changed = [k for k, v in _moving_means(layer.weights).items() if not np.array_equal(before[k], v)]
        assert len(changed) == (49 if tags else 0), tags
