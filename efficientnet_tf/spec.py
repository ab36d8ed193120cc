"""What a built model is: the spec the builder records while it builds, attached to the model.

The builder knows every block, stride and endpoint as it creates them (as timm's
``EfficientNetBuilder`` fills ``feature_info``); it records them here instead of leaving loaders,
exporters and predictors to re-parse layer names. ``model_spec(model)`` is the one reader.

The spec survives ``.keras`` save/load through :class:`EfficientNet`'s config. For models that
carry none (a ``keras.Model`` cut out of ours, a file saved before the spec existed) it is
derived from the layers, in exactly one place: :func:`derive_spec`.

Layer names are a stable public surface (converters and users' feature extraction depend on
them); the constants below are the only place our modules spell the fixed ones.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Dict, Mapping, Optional, Sequence, Tuple

import keras

from efficientnet_tf import config as cfg

PREPROCESSING = "preprocessing"
STEM_CONV = "stem_conv"
STEM_BN = "stem_bn"
STEM_ACTIVATION = "stem_activation"
TOP_CONV = "top_conv"
TOP_BN = "top_bn"
TOP_ACTIVATION = "top_activation"
AVG_POOL = "avg_pool"
MAX_POOL = "max_pool"
TOP_DROPOUT = "top_dropout"
CLASSIFIER = "predictions"  # the logits (Dense)
CLASSIFIER_ACTIVATION = "predictions_activation"

ENDPOINT_STEM = "stem"
ENDPOINT_FEATURES = "features"
ENDPOINT_POOLED = "pooled_features"
ENDPOINT_LOGITS = "logits"

_CONFIG_KEY = "efficientnet_spec"
_BLOCK_LAYER = re.compile(r"^(block(\d+)([a-z]+)_)(\w+)$")


@dataclasses.dataclass(frozen=True)
class BlockInfo:
    """One built block: where it sits, what it is, and the layer whose output is its output."""

    prefix: str  # "block2a_"
    stage: int  # 1-based
    position: int  # 0-based position inside its stage
    index: int  # 0-based position in the network (the official global block index)
    kind: str  # cfg.MBCONV | cfg.FUSED
    stride: int
    kernel: int
    expand: int  # expansion ratio (1 = no expand conv)
    in_filters: int
    out_filters: int
    se: bool
    output: str  # layer name

    @property
    def fused(self) -> bool:
        return self.kind == cfg.FUSED

    @property
    def has_expand_conv(self) -> bool:
        return self.expand != 1


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """Everything about a built model that loaders, exporters and predictors need."""

    variant: str
    blocks: Tuple[BlockInfo, ...]
    endpoints: Mapping[str, str]  # endpoint name -> layer name, in network order
    include_top: bool
    include_preprocessing: bool
    pooling: Optional[str]
    classes: Optional[int]
    mean_rgb: Tuple[float, float, float]
    stddev_rgb: Tuple[float, float, float]
    weights: Optional[Mapping[str, object]] = None  # the loaded weight set (tag, url, sha256, ...)

    def info(self):
        """The variant's table facts (:func:`efficientnet_tf.config.variant_info`)."""
        return cfg.variant_info(cfg.get_variant(self.variant))

    def to_dict(self) -> Dict[str, object]:
        out = dataclasses.asdict(self)
        out["endpoints"] = dict(self.endpoints)
        out["weights"] = None if self.weights is None else dict(self.weights)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> "ModelSpec":
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - fields)
        if unknown:
            raise ValueError(f"Unknown model spec keys {unknown}; valid keys: {sorted(fields)}")
        values = dict(data)
        values["blocks"] = tuple(BlockInfo(**b) for b in values["blocks"])
        values["endpoints"] = dict(values["endpoints"])
        values["mean_rgb"] = tuple(values["mean_rgb"])
        values["stddev_rgb"] = tuple(values["stddev_rgb"])
        return cls(**values)


def endpoint_layers(blocks: Sequence[BlockInfo], pooled: Optional[str], logits: Optional[str]) -> Dict[str, str]:
    """``stem``; ``reduction_i`` = the last block output before each stride-2 block and the last
    block (tensorflow/tpu's convention); ``features`` (head, before pooling); then the pooled
    features and logits when the model has them."""
    out = {ENDPOINT_STEM: STEM_ACTIVATION}
    reduction = 0
    for i, block in enumerate(blocks):
        if i == len(blocks) - 1 or blocks[i + 1].stride > 1:
            reduction += 1
            out[f"reduction_{reduction}"] = block.output
    out[ENDPOINT_FEATURES] = TOP_ACTIVATION
    if pooled == AVG_POOL:  # pooled features are the average (TF-Hub's feature vector), never max_pool
        out[ENDPOINT_POOLED] = pooled
    if logits:
        out[ENDPOINT_LOGITS] = logits
    return out


@keras.saving.register_keras_serializable(package="efficientnet_tf")
class EfficientNet(keras.Model):
    """A functional Keras model that carries its :class:`ModelSpec` (also through save/load)."""

    def __init__(self, *args, spec: Optional[ModelSpec] = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._efficientnet_spec = spec

    def get_config(self):
        config = super().get_config()
        spec = getattr(self, "_efficientnet_spec", None)
        if spec is not None:
            config[_CONFIG_KEY] = spec.to_dict()
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        data = config.pop(_CONFIG_KEY, None)
        model = super().from_config(config, custom_objects=custom_objects)
        if data is not None:
            model._efficientnet_spec = ModelSpec.from_dict(data)
        return model


def model_spec(model) -> ModelSpec:
    """The spec of an efficientnet_tf model: the one the builder attached, else derived once from
    its layers (and then kept on the model)."""
    spec = getattr(model, "_efficientnet_spec", None)
    if spec is None:
        spec = derive_spec(model)
        model._efficientnet_spec = spec
    return spec


def set_weights_record(model, record: Optional[Mapping[str, object]]) -> None:
    """Records which weight set the model holds (loaders call this after a successful load)."""
    spec = model_spec(model)
    model._efficientnet_spec = dataclasses.replace(spec, weights=None if record is None else dict(record))


def set_normalization(model, mean_rgb: Sequence[float], stddev_rgb: Sequence[float]) -> None:
    """Records the normalization the model's preprocessing layer applies (a weight set decides it:
    AdvProp's [-1, 1]); the caller changes the layer itself."""
    spec = model_spec(model)
    model._efficientnet_spec = dataclasses.replace(spec, mean_rgb=tuple(float(m) for m in mean_rgb),
                                                   stddev_rgb=tuple(float(s) for s in stddev_rgb))


def _kernel_shape(model, name: str):
    return tuple(model.get_layer(name).kernel.shape)


def _derived_blocks(model) -> Tuple[BlockInfo, ...]:
    grouped: Dict[str, list] = {}
    for layer in model.layers:
        match = _BLOCK_LAYER.match(layer.name)
        if match:
            grouped.setdefault(match.group(1), [int(match.group(2)), cfg.block_letters_index(match.group(3)), []])[2].append(layer)
    blocks = []
    for index, (prefix, (stage, position, members)) in enumerate(grouped.items()):
        parts = {layer.name[len(prefix):]: layer for layer in members}
        fused = "dwconv" not in parts
        stride = max(getattr(layer, "strides", (1, 1))[0] for layer in members)
        project = _kernel_shape(model, prefix + "project_conv")
        if "expand_conv" in parts:
            expand_kernel = _kernel_shape(model, prefix + "expand_conv")
            in_filters, expanded = expand_kernel[2], expand_kernel[3]
        else:
            in_filters = expanded = project[2] if fused else parts["dwconv"].kernel.shape[2]
        if fused:
            kernel = (_kernel_shape(model, prefix + "expand_conv") if "expand_conv" in parts else project)[0]
        else:
            kernel = parts["dwconv"].kernel_size[0]
        blocks.append(BlockInfo(
            prefix=prefix, stage=stage, position=position, index=index,
            kind=cfg.FUSED if fused else cfg.MBCONV, stride=int(stride), kernel=int(kernel),
            expand=int(expanded // in_filters), in_filters=int(in_filters), out_filters=int(project[3]),
            se="se_reduce" in parts, output=members[-1].name))
    return tuple(blocks)


def _identify_variant(model, blocks: Sequence[BlockInfo]) -> str:
    """The variant whose stage depths, stem/head widths, last width and SE use match the layers."""
    if model.name in cfg.list_models():
        return model.name
    stages = [sum(1 for b in blocks if b.stage == s) for s in range(1, max((b.stage for b in blocks), default=0) + 1)]
    stem = _kernel_shape(model, STEM_CONV)[-1]
    head = _kernel_shape(model, TOP_CONV)[-1]
    se = any(b.se for b in blocks)
    for name in cfg.list_models():
        v = cfg.get_variant(name)
        if (v.stage_repeats() == stages and v.stem_filters == stem and v.num_features == head
                and cfg.round_filters(v.blocks[-1].out_filters, v) == blocks[-1].out_filters
                and any(b.se_ratio for b in v.blocks) == se):
            return name
    raise ValueError(f"Cannot tell which variant {model.name!r} is; build it with efficientnet_tf.build_model")


def derive_spec(model) -> ModelSpec:
    """The spec of a model that carries none, read from its layers (names and shapes)."""
    names = {layer.name for layer in model.layers}
    missing = sorted({STEM_CONV, STEM_ACTIVATION, TOP_CONV, TOP_ACTIVATION} - names)
    blocks = _derived_blocks(model)
    if not blocks:
        raise ValueError(f"{model.name!r} is not an efficientnet_tf model: it has no EfficientNet blocks "
                         "(layers named block<N><letter>_...)")
    if missing:
        raise ValueError(f"{model.name!r} is not an efficientnet_tf model: it lacks the layers {missing}")
    variant = _identify_variant(model, blocks)
    pooled = next((n for n in (AVG_POOL, MAX_POOL) if n in names), None)
    include_top = CLASSIFIER in names
    if PREPROCESSING in names:
        layer = model.get_layer(PREPROCESSING)
        mean, std = tuple(layer.mean), tuple(layer.std)
    else:
        v = cfg.get_variant(variant)
        mean, std = v.mean_rgb, v.stddev_rgb
    return ModelSpec(
        variant=variant, blocks=blocks,
        endpoints=endpoint_layers(blocks, pooled, CLASSIFIER if include_top else None),
        include_top=include_top, include_preprocessing=PREPROCESSING in names,
        pooling=None if include_top else {AVG_POOL: "avg", MAX_POOL: "max"}.get(pooled),
        classes=model.get_layer(CLASSIFIER).units if include_top else None,
        mean_rgb=tuple(float(m) for m in mean), stddev_rgb=tuple(float(s) for s in std))
