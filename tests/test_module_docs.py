"""The Kaggle model card and a variation's overview record what quantizing cost (issue 21: the
published card states the measured accuracy, not only the verification tolerance)."""

from export import module_docs

INFO = {"model_name": "efficientnet-b0", "format": "tflite", "quantize": "int8", "num_classes": 10,
        "default_image_size": [48, 48], "weights": "trained on the digits",
        "accuracy_cost": {"max_accuracy_drop": 1.0,
                          "photos": {"images": 5, "top1_agreement": 0.8},
                          "eval": {"source": "digits", "images": 360, "float_top1": 83.89,
                                   "quantized_top1": 83.61, "drop_points": 0.28}}}


def test_quantized_variation_states_its_accuracy_cost():
    variation = module_docs.Variation("acme", "b0-digits", "tflite", "classification", INFO, {})
    overview = module_docs.instance_overview(variation)
    assert "top-1 83.89% (float model) -> 83.61% (int8) on 360 labelled evaluation images" in overview
    assert "80% of the verification photographs" in overview
    card = module_docs.model_card([variation])
    assert f"`{variation.slug}` (tfLite): Quantization (int8) measured: top-1 83.89%" in card


def test_float_variation_has_no_accuracy_cost():
    info = dict(INFO, quantize=None, accuracy_cost=None)
    variation = module_docs.Variation("acme", "b0-digits", "tflite", "classification", info, {})
    assert module_docs.accuracy_cost(info) == ""
    assert "Quantization" not in module_docs.instance_overview(variation)
