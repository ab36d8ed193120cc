"""The one builder: a :class:`~efficientnet_tf.config.Variant` in, a functional Keras model out."""

from __future__ import annotations

import re
import sys
from typing import Dict, Optional

import keras
from keras import layers

from efficientnet_tf import config as cfg
from efficientnet_tf.layers import FusedBatchNormalization, Preprocessing

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
    x = FusedBatchNormalization(name=bn_name or f"{prefix}bn", **bn)(x)  # Keras BN, fused kernel
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
    """One MBConv or Fused-MBConv block (official semantics; keras.applications layer names)."""
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
    if stride == 1 and in_filters == spec.out_filters:
        if drop_rate > 0:
            # Drop-connect: one Bernoulli draw per example, active only in training.
            x = layers.Dropout(drop_rate, noise_shape=(None, 1, 1, 1), name=f"{prefix}drop")(x)
        x = layers.Add(name=f"{prefix}add")([x, inputs])
    return x


def build_model(name: str, include_top: bool = True, weights=None, input_tensor=None,
                input_shape=None, pooling: Optional[str] = None, classes: int = 1000,
                classifier_activation="softmax", include_preprocessing: bool = True,
                model_name: Optional[str] = None, **overrides) -> keras.Model:
    """Builds an EfficientNet variant by its official name (see :func:`list_models`).

    Arguments follow keras.applications. Inputs are RGB floats in [0, 1] of any size unless
    ``input_shape`` fixes one. ``overrides`` may set dropout_rate, drop_connect_rate,
    bn_momentum and bn_epsilon. ``weights`` is anything :func:`efficientnet_tf.load_weights`
    accepts (loaded strictly), or None for fresh official initialization.
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

    images, source_inputs = _input(input_tensor, input_shape)
    x = images
    if include_preprocessing:
        x = Preprocessing(variant.mean_rgb, variant.stddev_rgb, name="preprocessing")(x)
    x = _conv(x, variant.stem_filters, 3, 2, "stem_conv")
    x = _bn_act(x, "stem_", bn, act)

    repeats = variant.stage_repeats()
    rates = cfg.drop_connect_rates(sum(repeats), drop_connect_rate)
    index = 0
    for stage, (spec, count) in enumerate(zip(variant.blocks, repeats), start=1):
        in_filters = cfg.round_filters(spec.in_filters, variant)
        out_filters = cfg.round_filters(spec.out_filters, variant)
        spec = cfg.BlockSpec(spec.kind, count, spec.kernel, spec.stride, spec.expand,
                             in_filters, out_filters, spec.se_ratio)
        for j in range(count):
            prefix = f"block{stage}{cfg.block_letters(j)}_"
            x = _block(x, spec, in_filters if j == 0 else out_filters, spec.stride if j == 0 else 1,
                       rates[index], act, bn, prefix)
            index += 1

    x = _conv(x, variant.num_features, 1, 1, "top_conv")
    x = _bn_act(x, "top_", bn, act)
    # Logits and probabilities stay float32 under mixed precision.
    head_dtype = "float32" if keras.config.dtype_policy().name.startswith("mixed") else None
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        if dropout_rate > 0:
            x = layers.Dropout(dropout_rate, name="top_dropout")(x)
        x = layers.Dense(classes, kernel_initializer=DENSE_INIT, name="predictions", dtype=head_dtype)(x)
        if classifier_activation is not None:
            x = layers.Activation(classifier_activation, name="predictions_activation", dtype=head_dtype)(x)
    elif pooling == "avg":
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    elif pooling == "max":
        x = layers.GlobalMaxPooling2D(name="max_pool")(x)

    if source_inputs is not None and len(source_inputs) == 1:
        source_inputs = source_inputs[0]
    model = keras.Model(images if source_inputs is None else source_inputs, x, name=model_name or variant.name)
    if weights is not None:
        from efficientnet_tf.weights import load_weights
        load_weights(model, weights)
    return model


_BLOCK_LAYER = re.compile(r"^block(\d+)([a-z]+)_(\w+)$")


def endpoints_model(model: keras.Model) -> keras.Model:
    """A model with the same inputs returning the named endpoints as a dict, in one pass.

    Endpoints are found from the layers themselves, so this works on reloaded models too:
    ``stem``; ``reduction_i``, the last block output before each stride-2 block and the last
    block (tensorflow/tpu's convention); ``features`` (head, before pooling);
    ``pooled_features``; ``logits`` when the model has a classifier.
    """
    blocks = []  # (prefix, stride, output layer) in network order
    for layer in model.layers:
        match = _BLOCK_LAYER.match(layer.name)
        if not match:
            continue
        prefix = f"block{match.group(1)}{match.group(2)}_"
        if not blocks or blocks[-1][0] != prefix:
            blocks.append([prefix, 1, layer])
        blocks[-1][2] = layer  # the block's last layer is its output
        strides = getattr(layer, "strides", (1, 1))
        blocks[-1][1] = max(blocks[-1][1], strides[0])
    if not blocks:
        raise ValueError(f"{model.name!r} has no EfficientNet blocks (layers named block<N><letter>_...)")
    outputs = {"stem": model.get_layer("stem_activation").output}
    reduction = 0
    for i, (_, _, layer) in enumerate(blocks):
        if i == len(blocks) - 1 or blocks[i + 1][1] > 1:
            reduction += 1
            outputs[f"reduction_{reduction}"] = layer.output
    features = model.get_layer("top_activation").output
    outputs["features"] = features
    names = {layer.name for layer in model.layers}
    if "avg_pool" in names:
        outputs["pooled_features"] = model.get_layer("avg_pool").output
    else:
        outputs["pooled_features"] = layers.GlobalAveragePooling2D(name="pooled_features")(features)
    if "predictions" in names:
        outputs["logits"] = model.get_layer("predictions").output
    return keras.Model(model.input, outputs, name=f"{model.name}_endpoints")
