"""Every published EfficientNet weight set, as data: variant, tag, URL, archive format, published
hash, classes, evaluation resolution, input normalization and label set.

Sources (checked against the official code; see the comment on each block of rows):
- tensorflow/tpu ``models/official/efficientnet/README.md`` (the checkpoint table: baseline
  ``ckpts/``, AutoAugment ``ckptsaug/``, RandAugment ``randaug/``, AdvProp ``advprop/``,
  NoisyStudent ``noisystudent/``) and ``lite/README.md`` (``lite/efficientnet-liteN.tar.gz``).
- google/automl ``efficientnetv2/README.md`` (``v2/efficientnetv2-*.tgz``, ``-21k``, ``-21k-ft1k``).
- keras ``keras/src/applications/efficientnet.py`` and ``efficientnet_v2.py``
  (``BASE_WEIGHTS_PATH``, ``WEIGHTS_HASHES``: md5 of the top / notop ``.h5`` files; Keras'
  ``get_file`` treats a 32-hex-digit hash as md5).
No sizes and no hashes are published for the tensorflow/tpu and automl archives: for those the
archive must unpack completely and hold every tensor with the right shape, and the sha256
measured at the first download is what later reads are checked against.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Optional, Tuple

from efficientnet_tf import config as cfg
from efficientnet_tf.labels import IMAGENET21K_NUM_CLASSES, IMAGENET_NUM_CLASSES

GCS = "https://storage.googleapis.com"
TPU_BASE = GCS + "/cloud-tpu-checkpoints/efficientnet"
V2_BASE = TPU_BASE + "/v2"
KERAS_V1_BASE = GCS + "/keras-applications"  # keras efficientnet.py BASE_WEIGHTS_PATH
KERAS_V2_BASE = GCS + "/tensorflow/keras-applications/efficientnet_v2"  # efficientnet_v2.py

# automl datasets.py ImageNet21kInput num_classes=21843 (= the shipped 21k label list).
IMAGENET21K_CLASSES = IMAGENET21K_NUM_CLASSES
IMAGENET_CLASSES = IMAGENET_NUM_CLASSES
LABEL_SETS = ("imagenet", "imagenet21k")

# Input normalizations on the 0-255 scale, (mean, std) per channel; "model" = the variant's own
# (config.py: V1/V2-B ImageNet mean/std, Lite 127/128, V2-S/M/L/XL 128/128).
NORMALIZATIONS: Dict[str, Optional[Tuple[Tuple[float, ...], Tuple[float, ...]]]] = {
    "model": None,
    # tensorflow/tpu eval_ckpt_main.py, --advprop_preprocessing: "AdvProp uses Inception
    # preprocessing", features * 2.0 / 255 - 1.0; automl preprocessing.py preprocess_for_finetune
    # (the 21k -> 1k fine-tuning, augname 'ft'): (x / 255 - 0.5) / 0.5. Both are [-1, 1].
    "inception": ((127.5, 127.5, 127.5), (127.5, 127.5, 127.5)),
    # automl preprocessing.py preprocess_image: (image - 128.0) / 128.0, used by the ImageNet21k
    # dataset config (augname=None) for every V2 variant, B0-B3 included.
    "v2": ((128.0, 128.0, 128.0), (128.0, 128.0, 128.0)),
}

# Evaluation preprocessing per weight set (centre crop S / (S + crop_padding) of the shorter side
# below crop_below px, 0 = no crop; resize method; legacy = tf.compat.v1 resizing and offsets
# rounded up). "model" = the variant's own (config.py: tensorflow/tpu for V1, Lite and V2-B0..B3,
# automl's preprocess_for_eval for V2-S/M/L/XL).
EVAL_RULES: Dict[str, Optional[Dict[str, object]]] = {
    "model": None,
    # automl efficientnetv2/preprocessing.py preprocess_for_eval: crop image_size / (image_size + 32)
    # when image_size < 320, offsets (h - crop) // 2, tf.image.resize (bilinear, half-pixel). The
    # ImageNet21k dataset config (datasets.py) sets augname=None, so every variant's 21k set, V2-B0..B3
    # included, is evaluated this way at eval isize=224 (not the effnetv1 recipe of their 1k sets).
    "automl": {"crop_padding": 32, "crop_below": 320, "resize_method": "bilinear", "legacy": False},
    # automl preprocessing.py preprocess_for_finetune (augname 'ft' of datasets.py ImagenetFt, which
    # overrides the model config's augname, so V2-B0..B3 too): the whole image resized to the
    # variant's eval size with tf.image.resize (bilinear), no crop.
    "automl-ft": {"crop_padding": 0, "crop_below": None, "resize_method": "bilinear", "legacy": False},
}

# How a set's logits become scores: softmax (one class per image), or sigmoid for heads trained
# multi-label. automl README "Jul19/2021: Updated ImageNet21k sigmoid-loss checkpoints, for
# multi-class pseudo labeling"; datasets.py ImageNet21kInput multiclass=True and main.py's
# loss_type 'sigmoid' / metric_fn tf.nn.sigmoid(logits). Top-k is the same either way.
SCORES = ("softmax", "sigmoid")

TAGS = ("baseline", "autoaugment", "randaugment", "advprop", "noisy-student", "noisy-student-475",
        "imagenet21k", "imagenet21k-ft1k", "keras", "imagenet")
DEFAULT_TAG = "imagenet"


@dataclasses.dataclass(frozen=True)
class WeightSet:
    """One published set of weights for one variant."""

    variant: str
    tag: str
    url: str  # canonical URL (under https://storage.googleapis.com)
    archive: str  # "tar.gz" (tensorflow/tpu), "tgz" (automl), "h5" (keras)
    source: str  # who publishes it: "tensorflow/tpu", "google/automl", "keras"
    hash: Optional[str] = None  # "md5:<hex>" where published
    notop_url: Optional[str] = None  # keras: the file without classifier
    notop_hash: Optional[str] = None
    classes: int = IMAGENET_CLASSES
    resolution: Optional[int] = None  # None: the variant's evaluation resolution
    normalization: str = "model"
    labels: str = "imagenet"
    eval_rule: str = "model"  # a key of EVAL_RULES
    scores: str = "softmax"  # a key of SCORES: how logits become the scores predictions report

    def __post_init__(self):
        for field, value, valid in (("normalization", self.normalization, NORMALIZATIONS),
                                    ("eval_rule", self.eval_rule, EVAL_RULES), ("scores", self.scores, SCORES)):
            if value not in valid:
                raise ValueError(f"{self.variant} {self.tag!r}: unknown {field} {value!r}; valid: {', '.join(valid)}")

    def image_size(self) -> int:
        return self.resolution or cfg.get_variant(self.variant).resolution

    def mean_std(self) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
        """(mean_rgb, stddev_rgb) on the 0-255 scale the weights expect."""
        fixed = NORMALIZATIONS[self.normalization]
        if fixed is None:
            v = cfg.get_variant(self.variant)
            return tuple(v.mean_rgb), tuple(v.stddev_rgb)
        return fixed

    def eval_preprocessing(self) -> Dict[str, object]:
        """How evaluation images are made for this set: crop_padding, crop_below, resize_method,
        legacy, and the resulting crop_fraction at :meth:`image_size`."""
        rule = EVAL_RULES[self.eval_rule]
        if rule is None:
            v = cfg.get_variant(self.variant)
            rule = {"crop_padding": v.crop_padding, "crop_below": v.crop_below,
                    "resize_method": v.resize_method, "legacy": v.crop_below is None}
        fraction = cfg.eval_crop_fraction(self.image_size(), rule["crop_padding"], rule["crop_below"])
        return dict(rule, crop_fraction=fraction)

    def file(self, include_top: bool = True) -> Tuple[str, Optional[str]]:
        """(URL, published hash) of the file for a model with or without its classifier."""
        if not include_top and self.notop_url:
            return self.notop_url, self.notop_hash
        return self.url, self.hash

    def record(self, include_top: bool = True) -> Dict[str, object]:
        """What a model, model_info and export_info.json record about the set."""
        mean, std = self.mean_std()
        url, digest = self.file(include_top)
        return {"tag": self.tag, "variant": self.variant, "url": url, "source": self.source,
                "published_hash": digest, "classes": self.classes, "resolution": self.image_size(),
                "normalization": self.normalization, "mean_rgb": list(mean), "stddev_rgb": list(std),
                "labels": self.labels, "eval_preprocessing": self.eval_preprocessing(), "scores": self.scores}


_TABLE: List[WeightSet] = []


def _add(variant, tag, url, archive, source, **kw):
    _TABLE.append(WeightSet(variant, tag, url, archive, source, **kw))


# ---------------------------------------------------------------- tensorflow/tpu V1
# README table "Using Pretrained EfficientNet Checkpoints": baseline B0-B5, AutoAugment B0-B7,
# RandAugment B5/B7, AdvProp + AA B0-B8, NoisyStudent + RA B0-B7, L2-475 and L2. The archives
# unpack to one folder holding the checkpoint (README: `tar xf ${MODEL}.tar.gz`, --ckpt_dir=$MODEL),
# but the folder is not always the file's name: NoisyStudent B0 gives noisy_student_efficientnet-b0/,
# B1/B2/B4 give noisy-student-efficientnet-bN/ (tensorflow/tpu#922), so the loader searches the
# whole archive (tf_checkpoint.find_checkpoint) instead of expecting NAME/.
# Not in the table: randaug/efficientnet-b8-randaug.tar.gz (85.4%). The README listed it from
# commit fd9509d (2020-01-28, "Add randaug B8 checkpoint") until 9e9110f (2020-09-03, "Update
# README for RandAug."), which re-measured the RandAugment rows (B5 83.9 -> 83.7%, B7 85.0 ->
# 84.7%) and dropped B8; no official README or code lists it since.
_B = [f"efficientnet-b{i}" for i in range(9)]
for _v in _B[:6]:
    _add(_v, "baseline", f"{TPU_BASE}/ckpts/{_v}.tar.gz", "tar.gz", "tensorflow/tpu")
for _v in _B[:8]:
    _add(_v, "autoaugment", f"{TPU_BASE}/ckptsaug/{_v}.tar.gz", "tar.gz", "tensorflow/tpu")
for _v in (_B[5], _B[7]):
    _add(_v, "randaugment", f"{TPU_BASE}/randaug/{_v}-randaug.tar.gz", "tar.gz", "tensorflow/tpu")
for _v in _B:
    _add(_v, "advprop", f"{TPU_BASE}/advprop/{_v}.tar.gz", "tar.gz", "tensorflow/tpu",
         normalization="inception")  # README: "set --advprop_preprocessing=True"
for _v in _B[:8] + ["efficientnet-l2"]:
    _add(_v, "noisy-student", f"{TPU_BASE}/noisystudent/noisy_student_{_v}.tar.gz", "tar.gz", "tensorflow/tpu")
# README: "L2-475 means the same L2 architecture with input image size 475".
_add("efficientnet-l2", "noisy-student-475", f"{TPU_BASE}/noisystudent/noisy_student_efficientnet-l2_475.tar.gz",
     "tar.gz", "tensorflow/tpu", resolution=475)

# ---------------------------------------------------------------- tensorflow/tpu Lite
# lite/README.md table: efficientnet-lite0..4 [ckpt] links.
for _i in range(5):
    _v = f"efficientnet-lite{_i}"
    _add(_v, "imagenet", f"{TPU_BASE}/lite/{_v}.tar.gz", "tar.gz", "tensorflow/tpu")

# ---------------------------------------------------------------- google/automl V2
# README: ImageNet1K B0-B3, S, M, L; ImageNet21K pretrained + finetuned for B0-B3, S, M, L, XL
# (XL has no ImageNet-1k-only checkpoint). The 21k configs evaluate at 224 (datasets.py
# ImageNet21k eval isize=224) and normalize to [-1, 1] for every variant (augname=None).
_V2 = ["efficientnetv2-b0", "efficientnetv2-b1", "efficientnetv2-b2", "efficientnetv2-b3",
       "efficientnetv2-s", "efficientnetv2-m", "efficientnetv2-l"]
for _v in _V2:
    _add(_v, "imagenet", f"{V2_BASE}/{_v}.tgz", "tgz", "google/automl")
for _v in _V2 + ["efficientnetv2-xl"]:
    _add(_v, "imagenet21k", f"{V2_BASE}/{_v}-21k.tgz", "tgz", "google/automl",
         classes=IMAGENET21K_CLASSES, resolution=224, normalization="v2", labels="imagenet21k",
         eval_rule="automl", scores="sigmoid")
    _add(_v, "imagenet21k-ft1k", f"{V2_BASE}/{_v}-21k-ft1k.tgz", "tgz", "google/automl",
         normalization="inception", eval_rule="automl-ft")  # ImagenetFt: augname 'ft' -> (x/255 - 0.5)/0.5

# ---------------------------------------------------------------- keras.applications
# efficientnet.py: file_name = name + (".h5" | "_notop.h5"), name="efficientnetb0" ...;
# WEIGHTS_HASHES[weights_name] = (top md5, notop md5).
_KERAS_V1_MD5 = {
    "b0": ("902e53a9f72be733fc0bcb005b3ebbac", "50bc09e76180e00e4465e1a485ddc09d"),
    "b1": ("1d254153d4ab51201f1646940f018540", "74c4e6b3e1f6a1eea24c589628592432"),
    "b2": ("b15cce36ff4dcbd00b6dd88e7857a6ad", "111f8e2ac8aa800a7a99e3239f7bfb39"),
    "b3": ("ffd1fdc53d0ce67064dc6a9c7960ede0", "af6d107764bb5b1abb91932881670226"),
    "b4": ("18c95ad55216b8f92d7e70b3a046e2fc", "ebc24e6d6c33eaebbd558eafbeedf1ba"),
    "b5": ("ace28f2a6363774853a83a0b21b9421a", "38879255a25d3c92d5e44e04ae6cec6f"),
    "b6": ("165f6e37dce68623721b423839de8be5", "9ecce42647a20130c1f39a5d4cb75743"),
    "b7": ("8c03f828fec3ef71311cd463b6759d99", "cbcfe4450ddf6f3ad90b1b398090fe4a"),
}
for _k, (_top, _notop) in _KERAS_V1_MD5.items():
    _add(f"efficientnet-{_k}", "keras", f"{KERAS_V1_BASE}/efficientnet{_k}.h5", "h5", "keras",
         hash="md5:" + _top, notop_url=f"{KERAS_V1_BASE}/efficientnet{_k}_notop.h5", notop_hash="md5:" + _notop)
# efficientnet_v2.py: name="efficientnetv2-b0" ..., WEIGHTS_HASHES keys "b0".."b3", "-s", "-m", "-l".
_KERAS_V2_MD5 = {
    "b0": ("21ecbf6da12460d5c40bb2f29ceb2188", "893217f2bb855e2983157299931e43ff"),
    "b1": ("069f0534ff22adf035c89e2d9547a9dc", "0e80663031ca32d657f9caa404b6ec37"),
    "b2": ("424e49f28180edbde1e94797771950a7", "1dfe2e7a5d45b6632553a8961ea609eb"),
    "b3": ("1f1fc43bd98a6e4fd8fdfd551e02c7a0", "f6abf7b5849ac99a89b50dd3fd532856"),
    "s": ("e1d88a8495beba45748fedd0cecbe016", "af0682fb74e8c54910f2d4393339c070"),
    "m": ("a3bf6aa3276309f4fc6a34aa114c95cd", "1b8dc055df72dde80d614482840fe342"),
    "l": ("27e6d408b53c7ebc868fefa357689935", "b0b66b5c863aef5b46e8608fe1711615"),
}
for _k, (_top, _notop) in _KERAS_V2_MD5.items():
    _v = f"efficientnetv2-{_k}"
    _add(_v, "keras", f"{KERAS_V2_BASE}/{_v}.h5", "h5", "keras",
         hash="md5:" + _top, notop_url=f"{KERAS_V2_BASE}/{_v}_notop.h5", notop_hash="md5:" + _notop)

# ---------------------------------------------------------------- "imagenet" per variant
# V1 B0-B7: AutoAugment (what tfhub.dev's google/efficientnet/bN modules were trained with);
# B8 has AdvProp only; L2 NoisyStudent; Lite and V2 B0-B3/S/M/L their own "imagenet" row;
# V2-XL the 21k -> 1k fine-tuned set.
DEFAULTS: Dict[str, str] = {v: "autoaugment" for v in _B[:8]}
DEFAULTS.update({"efficientnet-b8": "advprop", "efficientnet-l2": "noisy-student",
                 "efficientnetv2-xl": "imagenet21k-ft1k"})

WEIGHT_SETS: Dict[Tuple[str, str], WeightSet] = {(w.variant, w.tag): w for w in _TABLE}
_BY_URL: Dict[str, Tuple[WeightSet, bool]] = {}
for _w in _TABLE:
    _BY_URL[_w.url] = (_w, True)
    if _w.notop_url:
        _BY_URL[_w.notop_url] = (_w, False)


def tags_of(variant: str) -> List[str]:
    """The tags ``variant`` has, in TAGS order ("imagenet" included where it resolves)."""
    cfg.get_variant(variant)  # unknown names list the valid ones
    have = {t for (v, t) in WEIGHT_SETS if v == variant}
    if variant in DEFAULTS:
        have.add(DEFAULT_TAG)
    return [t for t in TAGS if t in have]


def weight_set(variant: str, tag: str) -> WeightSet:
    """The set ``tag`` of ``variant`` (``imagenet`` = the variant's documented default)."""
    cfg.get_variant(variant)
    key = str(tag).lower()
    if key == DEFAULT_TAG and variant in DEFAULTS:
        key = DEFAULTS[variant]
    found = WEIGHT_SETS.get((variant, key))
    if found is None:
        if key not in TAGS:
            raise ValueError(f"Unknown weights tag {tag!r}. Valid tags: {', '.join(TAGS)} "
                             "(or a URL / file; see efficientnet_tf.load_weights)")
        raise ValueError(f"No {tag!r} weights are published for {variant!r}; its tags: {', '.join(tags_of(variant))}")
    return found


def by_url(url: str) -> Optional[Tuple[WeightSet, bool]]:
    """(set, is the file with classifier) for a canonical table URL, else None."""
    return _BY_URL.get(url)


def all_sets() -> List[WeightSet]:
    return list(_TABLE)


__all__ = ["DEFAULTS", "DEFAULT_TAG", "EVAL_RULES", "IMAGENET21K_CLASSES", "NORMALIZATIONS", "SCORES", "TAGS", "WEIGHT_SETS",
           "WeightSet", "all_sets", "by_url", "tags_of", "weight_set"]
