"""keras.applications-style constructors (``EfficientNetB0`` ... ``EfficientNetV2XL``),
generated from the variant table rather than written out one by one."""

from __future__ import annotations

from efficientnet_tf import config as cfg
from efficientnet_tf.builder import build_model


def constructor_name(variant_name: str) -> str:
    """``efficientnet-b0`` -> ``EfficientNetB0``, ``efficientnet-lite0`` -> ``EfficientNetLite0``,
    ``efficientnetv2-xl`` -> ``EfficientNetV2XL``."""
    family, _, size = variant_name.partition("-")
    prefix = "EfficientNetV2" if family == "efficientnetv2" else "EfficientNet"
    return prefix + (size.upper() if size.isalpha() else size.capitalize())


def _make(variant_name: str):
    def constructor(include_top=True, weights=None, input_tensor=None, input_shape=None, pooling=None,
                    classes=1000, classifier_activation="softmax", include_preprocessing=True,
                    name=None, **overrides):
        return build_model(variant_name, include_top=include_top, weights=weights,
                           input_tensor=input_tensor, input_shape=input_shape, pooling=pooling,
                           classes=classes, classifier_activation=classifier_activation,
                           include_preprocessing=include_preprocessing, model_name=name, **overrides)

    info = cfg.variant_info(cfg.get_variant(variant_name))
    constructor.__name__ = constructor.__qualname__ = constructor_name(variant_name)
    constructor.__doc__ = (
        f"Builds {variant_name} ({info['resolution']}x{info['resolution']} default resolution, "
        f"{info['num_features']} features). Same arguments as keras.applications; inputs are RGB in "
        "[0, 1]. See efficientnet_tf.build_model.")
    return constructor


CONSTRUCTORS = {constructor_name(n): _make(n) for n in cfg.list_models()}
globals().update(CONSTRUCTORS)
__all__ = sorted(CONSTRUCTORS)
