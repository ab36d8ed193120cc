"""The one builder: a :class:`~efficientnet_tf.config.Variant` in, a functional Keras model out."""

from __future__ import annotations

import sys
from typing import Dict, Optional

import keras
from keras import layers

from efficientnet_tf import config as cfg
from efficientnet_tf import spec as spec_lib
from efficientnet_tf.layers import Preprocessing
from efficientnet_tf.weights import load_weights
from efficientnet_tf.weights.pretrained import build_facts

# Official initializers (tensorflow/tpu efficientnet_model.py): conv kernels N(0, sqrt(2/fan_out))
# (not truncated), dense U(-1/sqrt(fan_out), 1/sqrt(fan_out)).
CONV_INIT = {"class_name": "VarianceScaling",
             "config": {"scale": 2.0, "mode": "fan_out", "distribution": "untruncated_normal"}}
DENSE_INIT = {"class_name": "VarianceScaling",
              "config": {"scale": 1.0 / 3.0, "mode": "fan_out", "distribution": "uniform"}}

# Keras walks functional graphs recursively; V2-XL and L2 are ~1,300 layers deep, past Python's
# default limit of 1,000 (RecursionError in keras.src.ops.function.map_graph).
_RECURSION_LIMIT = 20000

_OVERRIDES = ("dropout_rate", "drop_connect_rate", "bn_momentum", "bn_epsilon")
_POOLING = (None, "avg", "max")


def _check_overrides(overrides: Dict[str, object]) -> Dict[str, float]:
    unknown = sorted(set(overrides) - set(_OVERRIDES))
    if unknown:
        raise ValueError(f"Unknown argument(s) {unknown}. Valid overrides: {list(_OVERRIDES)}")
    checked = {}
    for key, value in overrides.items():
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{key} must be a number, got {value!r}")
        if key == "bn_epsilon":
            if not value > 0:
                raise ValueError(f"bn_epsilon must be > 0, got {value}")
        elif key == "bn_momentum":
            if not 0 < value < 1:
                raise ValueError(f"bn_momentum must be in (0, 1), got {value}")
        elif not 0 <= value < 1:
            raise ValueError(f"{key} must be in [0, 1), got {value}")
        checked[key] = float(value)
    return checked


def _input(input_tensor, input_shape):
    if input_shape is None:
        input_shape = (None, None, 3)
    input_shape = tuple(input_shape)
    if len(input_shape) != 3 or input_shape[-1] != 3:
        raise ValueError(
            f"input_shape must be (height, width, 3) for RGB images (channels last), got {input_shape}")
    for dim in input_shape[:2]:
        if dim is not None and dim < 8:
            raise ValueError(f"input_shape spatial dims must be >= 8 (or None), got {input_shape}")
    if input_tensor is None:
        return layers.Input(shape=input_shape, name="images"), None
    if not keras.backend.is_keras_tensor(input_tensor):
        return layers.Input(tensor=input_tensor, shape=input_shape, name="images"), None
    if len(input_tensor.shape) != 4:
        raise ValueError(f"input_tensor must have rank 4 (batch, height, width, 3), got {input_tensor.shape}")
    if input_tensor.shape[-1] != 3:
        raise ValueError(f"input_tensor must have 3 channels, got shape {input_tensor.shape}")
    return input_tensor, keras.utils.get_source_inputs(input_tensor)


def _conv(x, filters, kernel, stride, name, activation=None, use_bias=False):
    return layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=use_bias,
                         activation=activation, kernel_initializer=CONV_INIT, name=name)(x)


def _bn_act(x, prefix, bn, activation, bn_name=None, act_name=None):
    x = layers.BatchNormalization(name=bn_name or f"{prefix}bn", **bn)(x)
    if activation is not None:
        x = layers.Activation(activation, name=act_name or f"{prefix}activation")(x)
    return x


def _squeeze_excite(x, in_filters, ratio, activation, prefix):
    filters = x.shape[-1]
    reduced = max(1, int(in_filters * ratio))  # official: from the block's input filters
    se = layers.GlobalAveragePooling2D(name=f"{prefix}se_squeeze")(x)
    se = layers.Reshape((1, 1, filters), name=f"{prefix}se_reshape")(se)
    se = _conv(se, reduced, 1, 1, f"{prefix}se_reduce", activation=activation, use_bias=True)
    se = _conv(se, filters, 1, 1, f"{prefix}se_expand", activation="sigmoid", use_bias=True)
    return layers.Multiply(name=f"{prefix}se_excite")([x, se])


def _block(x, spec: cfg.BlockSpec, in_filters, stride, drop_rate, activation, bn, prefix):
    """One MBConv or Fused-MBConv block (official semantics; keras.applications layer names).
    Returns the block's output and the name of the layer that produces it."""
    inputs = x
    expanded = in_filters * spec.expand
    if spec.kind == cfg.MBCONV:
        if spec.expand != 1:
            x = _conv(x, expanded, 1, 1, f"{prefix}expand_conv")
            x = _bn_act(x, prefix, bn, activation, f"{prefix}expand_bn", f"{prefix}expand_activation")
        x = layers.DepthwiseConv2D(spec.kernel, strides=stride, padding="same", use_bias=False,
                                   depthwise_initializer=CONV_INIT, name=f"{prefix}dwconv")(x)
        x = _bn_act(x, prefix, bn, activation)
        if spec.se_ratio:
            x = _squeeze_excite(x, in_filters, spec.se_ratio, activation, prefix)
        x = _conv(x, spec.out_filters, 1, 1, f"{prefix}project_conv")
        x = _bn_act(x, prefix, bn, None, f"{prefix}project_bn")
    elif spec.expand != 1:  # fused, expanding: kxk conv does expansion and stride
        x = _conv(x, expanded, spec.kernel, stride, f"{prefix}expand_conv")
        x = _bn_act(x, prefix, bn, activation, f"{prefix}expand_bn", f"{prefix}expand_activation")
        if spec.se_ratio:
            x = _squeeze_excite(x, in_filters, spec.se_ratio, activation, prefix)
        x = _conv(x, spec.out_filters, 1, 1, f"{prefix}project_conv")
        x = _bn_act(x, prefix, bn, None, f"{prefix}project_bn")
    else:  # fused without expansion: a single kxk conv, activated
        if spec.se_ratio:
            x = _squeeze_excite(x, in_filters, spec.se_ratio, activation, prefix)
        x = _conv(x, spec.out_filters, spec.kernel, stride, f"{prefix}project_conv")
        x = _bn_act(x, prefix, bn, activation, f"{prefix}project_bn", f"{prefix}project_activation")
        output = f"{prefix}project_activation"
    if spec.kind == cfg.MBCONV or spec.expand != 1:
        output = f"{prefix}project_bn"
    if stride == 1 and in_filters == spec.out_filters:
        if drop_rate > 0:
            # Drop-connect: one Bernoulli draw per example, active only in training.
            x = layers.Dropout(drop_rate, noise_shape=(None, 1, 1, 1), name=f"{prefix}drop")(x)
        x = layers.Add(name=f"{prefix}add")([x, inputs])
        output = f"{prefix}add"
    return x, output


def build_model(name: str, include_top: bool = True, weights=None, input_tensor=None,
                input_shape=None, pooling: Optional[str] = None, classes: int = 1000,
                classifier_activation="softmax", include_preprocessing: bool = True,
                model_name: Optional[str] = None, **overrides) -> keras.Model:
    """Builds an EfficientNet variant by its official name (see :func:`list_models`).

    Arguments follow keras.applications. Inputs are RGB floats in [0, 1] of any size unless
    ``input_shape`` fixes one. ``overrides`` may set dropout_rate, drop_connect_rate,
    bn_momentum and bn_epsilon. ``weights`` is anything :func:`efficientnet_tf.load_weights`
    accepts (loaded strictly), or None for fresh official initialization; a published tag
    (``"imagenet"``, ``"advprop"``, ``"imagenet21k"``, ...) also sets the normalization the
    set was trained with and, with the default ``classes``, its number of classes.
    """
    variant = cfg.get_variant(name)
    if sys.getrecursionlimit() < _RECURSION_LIMIT:
        sys.setrecursionlimit(_RECURSION_LIMIT)
    settings = _check_overrides(overrides)
    if pooling not in _POOLING:
        raise ValueError(f"pooling={pooling!r}; valid values: {_POOLING}")
    if include_top and (isinstance(classes, bool) or not isinstance(classes, int) or classes < 1):
        raise ValueError(f"classes must be a positive integer, got {classes!r}")
    if keras.config.image_data_format() != "channels_last":
        raise ValueError("efficientnet_tf models are channels_last; keras image_data_format is "
                         f"{keras.config.image_data_format()!r}")
    dropout_rate = settings.get("dropout_rate", variant.dropout_rate)
    drop_connect_rate = settings.get("drop_connect_rate", variant.drop_connect_rate)
    bn = {"momentum": settings.get("bn_momentum", variant.bn_momentum),
          "epsilon": settings.get("bn_epsilon", variant.bn_epsilon)}
    act = variant.activation
    # A published weight set (a tag such as "advprop", or its URL) decides the input
    # normalization and, for the default classes, the classifier width (21k: 21,843).
    weight_set = build_facts(variant.name, weights)
    mean_rgb, stddev_rgb = weight_set.mean_std() if weight_set else (variant.mean_rgb, variant.stddev_rgb)
    if weight_set is not None and include_top and classes == 1000:
        classes = weight_set.classes
    if weight_set is not None and include_top and classes != weight_set.classes:  # before building
        raise ValueError(f"weights={weights!r} of {name} has a {weight_set.classes}-class classifier; the model "
                         f"has {classes} (classes={classes}). Use include_top=False (and add your own head) or "
                         f"classes={weight_set.classes}.")

    images, source_inputs = _input(input_tensor, input_shape)
    x = images
    if include_preprocessing:
        x = Preprocessing(mean_rgb, stddev_rgb, name="preprocessing")(x)
    x = _conv(x, variant.stem_filters, 3, 2, spec_lib.STEM_CONV)
    x = _bn_act(x, "stem_", bn, act)

    repeats = variant.stage_repeats()
    rates = cfg.drop_connect_rates(sum(repeats), drop_connect_rate)
    blocks = []  # what was built, recorded for the model's spec
    for stage, (spec, count) in enumerate(zip(variant.blocks, repeats), start=1):
        in_filters = cfg.round_filters(spec.in_filters, variant)
        out_filters = cfg.round_filters(spec.out_filters, variant)
        spec = cfg.BlockSpec(spec.kind, count, spec.kernel, spec.stride, spec.expand,
                             in_filters, out_filters, spec.se_ratio)
        for j in range(count):
            prefix = f"block{stage}{cfg.block_letters(j)}_"
            block_in, stride = (in_filters, spec.stride) if j == 0 else (out_filters, 1)
            x, output = _block(x, spec, block_in, stride, rates[len(blocks)], act, bn, prefix)
            blocks.append(spec_lib.BlockInfo(
                prefix=prefix, stage=stage, position=j, index=len(blocks), kind=spec.kind, stride=stride,
                kernel=spec.kernel, expand=spec.expand, in_filters=block_in, out_filters=out_filters,
                se=bool(spec.se_ratio), output=output))

    x = _conv(x, variant.num_features, 1, 1, spec_lib.TOP_CONV)
    x = _bn_act(x, "top_", bn, act)
    # Logits and probabilities stay float32 under mixed precision.
    head_dtype = "float32" if keras.config.dtype_policy().name.startswith("mixed") else None
    pooled = None
    if include_top or pooling == "avg":
        pooled = spec_lib.AVG_POOL
        x = layers.GlobalAveragePooling2D(name=pooled)(x)
    elif pooling == "max":
        pooled = spec_lib.MAX_POOL
        x = layers.GlobalMaxPooling2D(name=pooled)(x)
    if include_top:
        if dropout_rate > 0:
            x = layers.Dropout(dropout_rate, name=spec_lib.TOP_DROPOUT)(x)
        x = layers.Dense(classes, kernel_initializer=DENSE_INIT, name=spec_lib.CLASSIFIER, dtype=head_dtype)(x)
        if classifier_activation is not None:
            x = layers.Activation(classifier_activation, name=spec_lib.CLASSIFIER_ACTIVATION, dtype=head_dtype)(x)

    if source_inputs is not None and len(source_inputs) == 1:
        source_inputs = source_inputs[0]
    mean, std = (mean_rgb, stddev_rgb)
    spec = spec_lib.ModelSpec(
        variant=variant.name, blocks=tuple(blocks),
        endpoints=spec_lib.endpoint_layers(blocks, pooled, spec_lib.CLASSIFIER if include_top else None),
        include_top=include_top, include_preprocessing=include_preprocessing,
        pooling=None if include_top else pooling, classes=classes if include_top else None,
        mean_rgb=tuple(float(m) for m in mean), stddev_rgb=tuple(float(s) for s in std))
    model = spec_lib.EfficientNet(images if source_inputs is None else source_inputs, x,
                                  name=model_name or variant.name, spec=spec)
    if weights is not None:
        load_weights(model, weights)
    return model


def endpoints_model(model: keras.Model) -> keras.Model:
    """A model with the same inputs returning the named endpoints as a dict, in one pass.

    The endpoints are the model's spec's (:func:`efficientnet_tf.spec.endpoint_layers`): ``stem``;
    ``reduction_i``, the last block output before each stride-2 block and the last block
    (tensorflow/tpu's convention); ``features`` (head, before pooling); ``pooled_features``;
    ``logits`` when the model has a classifier.
    """
    spec = spec_lib.model_spec(model)
    outputs = {name: model.get_layer(layer).output for name, layer in spec.endpoints.items()}
    if spec_lib.ENDPOINT_POOLED not in outputs:
        outputs[spec_lib.ENDPOINT_POOLED] = layers.GlobalAveragePooling2D(name=spec_lib.ENDPOINT_POOLED)(
            outputs[spec_lib.ENDPOINT_FEATURES])
    ordered = {k: outputs[k] for k in spec.endpoints if k != spec_lib.ENDPOINT_LOGITS}
    ordered[spec_lib.ENDPOINT_POOLED] = outputs[spec_lib.ENDPOINT_POOLED]
    if spec_lib.ENDPOINT_LOGITS in outputs:
        ordered[spec_lib.ENDPOINT_LOGITS] = outputs[spec_lib.ENDPOINT_LOGITS]
    return keras.Model(model.input, ordered, name=f"{model.name}_endpoints")
