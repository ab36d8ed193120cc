"""Reference parameter counts, from implementations nobody here wrote.

TRAINABLE: sum of trainable parameters (no batch-norm moving statistics) of timm 1.0.31's
``tf_efficientnet_*`` / ``tf_efficientnetv2_*`` models (ports of the official TF checkpoints),
1000 classes: ``sum(p.numel() for p in timm.create_model(name).parameters())``. Rounded figures
published with the official code agree (B8 87.4M, L2 480.3M, Lite0 4.7M, V2-XL 208.1M).
KERAS_TOTAL: ``keras.applications.<Name>(weights=None).count_params()`` (keras 3.15.1), less the
7 weights of keras' own input Normalization layer (V1) — checked live by test_models too.
"""

TRAINABLE = {
    "efficientnet-b0": 5288548, "efficientnet-b1": 7794184, "efficientnet-b2": 9109994,
    "efficientnet-b3": 12233232, "efficientnet-b4": 19341616, "efficientnet-b5": 30389784,
    "efficientnet-b6": 43040704, "efficientnet-b7": 66347960, "efficientnet-b8": 87413142,
    "efficientnet-l2": 480309308,
    "efficientnet-lite0": 4652008, "efficientnet-lite1": 5416680, "efficientnet-lite2": 6092072,
    "efficientnet-lite3": 8197096, "efficientnet-lite4": 13006568,
    "efficientnetv2-b0": 7139704, "efficientnetv2-b1": 8141052, "efficientnetv2-b2": 10096086,
    "efficientnetv2-b3": 14358406, "efficientnetv2-s": 21458488, "efficientnetv2-m": 54139356,
    "efficientnetv2-l": 118515272, "efficientnetv2-xl": 208119808,
}

KERAS_TOTAL = {
    "efficientnet-b0": 5330564, "efficientnet-b1": 7856232, "efficientnet-b2": 9177562,
    "efficientnet-b3": 12320528, "efficientnet-b4": 19466816, "efficientnet-b5": 30562520,
    "efficientnet-b6": 43265136, "efficientnet-b7": 66658680,
    "efficientnetv2-b0": 7200312, "efficientnetv2-b1": 8212124, "efficientnetv2-b2": 10178374,
    "efficientnetv2-b3": 14467622, "efficientnetv2-s": 21612360, "efficientnetv2-m": 54431388,
    "efficientnetv2-l": 119027848,
}
