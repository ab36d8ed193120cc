"""Fine-tuning controls. --init_weights: where fine-tuning starts. Anything
efficientnet_tf.load_weights accepts, or the model directory of an earlier run of this trainer
(its EMA weights when it kept them); the classifier may be left behind when the number of
classes differs, nothing else may; with ``--init_checkpoint_modules=backbone`` it is always
left behind. ``--freeze_backbone_steps``: the backbone (every layer but the classifier) is
frozen for the first N steps (:class:`BackboneFreeze`)."""

from __future__ import annotations

import contextlib
import os
from typing import Optional

import keras
import tensorflow as tf

import efficientnet_tf
from efficientnet_tf import spec
from efficientnet_tf.weights import pretrained
from train import checkpoints
from train import config as config_lib

# Layers whose weights may be left out when the class count differs; every other layer is
# the backbone (--init_checkpoint_modules=backbone, --freeze_backbone_steps).
HEAD_LAYERS = (spec.CLASSIFIER,)


def ema_variables(model: keras.Model):
    """What the trainer averages (tensorflow/tpu utils.get_ema_vars): the trainable weights and
    the BN moving statistics, as tf.Variables, in model order."""
    return [v.value for v in model.weights
            if v.trainable or v.name in ("moving_mean", "moving_variance")]


def is_model_dir(source) -> bool:
    """Whether ``source`` is a folder with a checkpoint and run_info.json of train.main."""
    return isinstance(source, str) and checkpoints.CheckpointStore(source).is_run()


def resolve_source(source, model_name: str):
    """A run's model directory, or a weights tag / URL ('imagenet', 'advprop', ...: the variant's
    pretrained model with its own classifier), becomes a Keras model; anything else is left for
    load_weights."""
    if is_model_dir(source):
        return model_from_model_dir(source)
    if pretrained.is_named_source(source):  # a weights tag or URL: its own classifier
        with float32_policy():
            model = efficientnet_tf.build_model(model_name, weights=source,
                                                classifier_activation=None)
        model.name = os.path.basename(source.lower())  # named in "Initialized from imagenet"
        return model
    return source


@contextlib.contextmanager
def float32_policy():
    """Builds models in float32 whatever the run's dtype policy (init sources, exports)."""
    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")
    try:
        yield
    finally:
        keras.config.set_dtype_policy(policy)


def load_init_weights(model: keras.Model, source, modules: str = "all"):
    """Copies ``source`` into ``model``; only the classifier may be missing or mis-shaped.
    ``modules='backbone'`` copies every layer but the classifier, which keeps the values it
    has (its fresh initialisation); ``modules`` is one of config.INIT_MODULES. Raises
    ValueError when anything else does not fit, or for another ``modules``."""
    config_lib.check_init_modules(modules)
    head = [v for layer in head_layers(model) for v in layer.weights]
    fresh = [v.numpy() for v in head] if modules == "backbone" else None
    report = efficientnet_tf.load_weights(model, source, strict=False)
    prefixes = tuple(f"{layer}/" for layer in HEAD_LAYERS)
    other = ([k for k in report.missing + report.unexpected if not k.startswith(prefixes)]
             + [m for m in report.mismatched if not m[0].startswith(prefixes)])
    if other:
        raise ValueError("--init_weights does not fit beyond the classifier: " + report.describe())
    name = getattr(source, "name", source)
    if fresh is not None:
        for var, value in zip(head, fresh):
            var.assign(value)
        print(f"Initialized the backbone from {name}; the classifier keeps its fresh "
              "initialisation (--init_checkpoint_modules=backbone)", flush=True)
    elif report.ok:
        print(f"Initialized all weights from {name}", flush=True)
    else:
        print(f"Initialized from {name}; the classifier is new ({report.describe()})", flush=True)
    return report


def head_layers(model: keras.Model):
    """The classifier layers of ``model`` (HEAD_LAYERS that it has)."""
    return [layer for layer in model.layers if layer.name in HEAD_LAYERS]


def backbone_layers(model: keras.Model):
    """Every layer of ``model`` but the classifier."""
    return [layer for layer in model.layers if layer.name not in HEAD_LAYERS]


class BackboneFreeze:
    """--freeze_backbone_steps: the backbone is frozen before step ``steps`` (-1: the whole run,
    0: never). Frozen = Keras' ``trainable=False`` on every backbone layer: its weights leave
    ``model.trainable_variables`` (the optimizer updates the classifier only) and batch norm runs
    in inference mode (moving statistics unchanged). Unfreezing restores each layer's own
    ``trainable`` (so model.freeze_bn stays in force). The compiled train step captures the
    trainable variables when traced: rebuild it whenever :meth:`apply` returns True."""

    def __init__(self, model: keras.Model, steps: int):
        self.steps = steps
        self.layers = backbone_layers(model)
        self.trainable = [layer.trainable for layer in self.layers]
        self.frozen = False

    def frozen_at(self, step: int) -> bool:
        return self.steps < 0 or step < self.steps

    def boundary(self, step: int) -> Optional[int]:
        """The step where the backbone unfreezes, when it is still ahead of ``step``."""
        return self.steps if 0 < self.steps and step < self.steps else None

    def apply(self, step: int) -> bool:
        """Freezes or unfreezes for ``step``; returns whether that changed anything."""
        frozen = self.frozen_at(step)
        if frozen == self.frozen:
            return False
        for layer, trainable in zip(self.layers, self.trainable):
            layer.trainable = trainable and not frozen
        self.frozen = frozen
        return True


def model_from_model_dir(model_dir: str) -> keras.Model:
    """The latest checkpoint of a train.main run as a float32 Keras model, with the EMA
    averages in place of the raw weights when the run kept them."""
    store = checkpoints.CheckpointStore(model_dir)
    num_classes = store.read_json(checkpoints.RUN_INFO)["num_classes"]
    saved = config_lib.load(store.path(checkpoints.CONFIG_JSON))
    with float32_policy():
        model = efficientnet_tf.build_model(saved.model.name, classes=num_classes,
                                            classifier_activation=None)
    averaged = ema_variables(model)
    path = store.latest_readable()
    names = tf.train.load_checkpoint(path).get_variable_to_shape_map()
    has_ema = any(name.startswith("ema/") for name in names)
    tracked = {"model": model}
    if has_ema:
        tracked["ema"] = [tf.Variable(tf.zeros_like(v)) for v in averaged]
    tf.train.Checkpoint(**tracked).read(path).expect_partial()
    if has_ema:
        for var, shadow in zip(averaged, tracked["ema"]):
            var.assign(shadow)
    return model
