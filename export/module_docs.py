"""Documentation pages for published hub modules, and a checker that applies tfhub.dev's rules.

A page is the markdown file tfhub.dev (now Kaggle Models) shows for a module: first line
``# Module PUBLISHER/NAME/VERSION``, a one-line description, ``<!-- key: value -->`` metadata,
then free markdown (Overview, Usage, Fine-tuning, ...). :func:`render` writes one from the facts
an export recorded; :func:`check` applies the rules of the hub's validator.

Rule sources (github.com/tensorflow/tfhub.dev, tools/validator.py at commit 81fdea8f, its tag
lists tags/*.yaml and tools/yaml_parser.py); each rule below names the validator code it follows.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Dict, List, Optional, Sequence, Set, Tuple

from export.exporter import main_signature

# ----------------------------------------------------------------------------- the hub's rules
# validator.py: _PUBLISHER_ID_PATTERN, _MODEL_NAME_PATTERN, _MODEL_VERSION_PATTERN, MODEL_HANDLE_PATTERN.
PUBLISHER_PATTERN = r"[a-z\d-]+"
NAME_PATTERN = r"[\w.-]+(/[\w.-]+)*"
VERSION_PATTERN = r"\d+"
HANDLE_LINE = re.compile(rf"# Module (?P<publisher>{PUBLISHER_PATTERN})/(?P<name>{NAME_PATTERN})/"
                         rf"(?P<version>{VERSION_PATTERN})")
PUBLISHER_LINE = re.compile(rf"# Publisher (?P<publisher>{PUBLISHER_PATTERN})")
# validator.py METADATA_LINE_PATTERN: key and value may carry spaces, stripped afterwards.
METADATA_LINE = re.compile(r"^<!--(?P<key>[\w\s-]+):(?P<value>.+)-->$")

# validator.py SavedModelParsingPolicy: required and optional metadata of a "# Module" page.
REQUIRED_METADATA = ("asset-path", "fine-tunable", "format", "task")
OPTIONAL_METADATA = ("network-architecture", "colab", "dataset", "language", "license", "interactive-visualizer")
REPEATED_METADATA = ("dataset", "language", "task", "network-architecture")  # REPEATED_TAG_KEYS
SAVED_MODEL_FORMATS = ("hub", "saved_model", "saved_model_2")  # SAVED_MODEL_FORMATS
TASK_PREFIXES = ("image-", "text-", "audio-", "video-")  # _assert_correct_module_types
ASSET_SUFFIX = ".tar.gz"  # TARFILE_SUFFIX
# colab.yaml / demo.yaml: format url (https), colab with required_domain colab.research.google.com.
URL_TAGS = {"colab": "colab.research.google.com", "demo": None}

# Enumerable tags (tags/*.yaml `id` values). Only the values image models use are listed, so this
# check is stricter than the hub's, never looser: a value missing here is reported as unsupported.
TAG_VALUES: Dict[str, Tuple[str, ...]] = {
    "task": ("image-aesthetic-quality", "image-augmentation", "image-classification", "image-classification-logits",
             "image-classifier", "image-depth-estimation", "image-extrapolation", "image-feature-vector",
             "image-frame-interpolation", "image-generator", "image-object-detection", "image-others",
             "image-pose-detection", "image-rnn-agent", "image-segmentation", "image-style-transfer",
             "image-super-resolution", "image-text-detection", "image-text-recognition", "image-denoising",
             "image-dehazing", "image-deraining", "image-deblurring", "image-enhancement"),
    "network-architecture": ("efficientnet", "efficientnet-b0", "efficientnet-b1", "efficientnet-b2",
                             "efficientnet-b3", "efficientnet-b4", "efficientnet-b5", "efficientnet-b6",
                             "efficientnet-b7", "efficientnet-v2", "efficientdet", "mobilenet-v2", "resnet-v2-50",
                             "other"),
    "dataset": ("imagenet", "imagenet-ilsvrc-2012-cls", "imagenet-21k", "cifar-10", "cifar-100", "other"),
    "license": ("apache-2.0", "bsd-2-clause", "bsd-3-clause", "gpl-2.0", "gpl-3.0", "lgpl-2.0", "lgpl-2.1",
                "lgpl-3.0", "mit", "mpl-2.0", "cddl-1.0", "epl-2.0", "cc-by-nc-4.0", "cc-by-sa-4.0", "custom"),
    "language": ("en", "multilingual"),
    "interactive-visualizer": (),
}
LICENSES = TAG_VALUES["license"]
# Our export formats -> the hub's `format` values (a TF1 Hub module is "hub", a TF2 SavedModel
# "saved_model_2"; validator.py "Specifies whether a SavedModel is a Hub Module or a TF1/TF2 SavedModel").
HUB_FORMAT = {"hub_tf1": "hub", "hub": "saved_model_2"}

# The role of a module -> its `task`.
TASKS = {"classification": "image-classification", "feature_vector": "image-feature-vector"}


class DocumentationError(ValueError):
    """A documentation page breaks a rule of the hub's validator; ``rule`` names it."""

    def __init__(self, rule: str, message: str):
        super().__init__(f"[{rule}] {message}")
        self.rule = rule


def network_architecture(variant: str) -> str:
    """The hub's ``network-architecture`` value of a variant: efficientnet-b0..b7 have their own,
    EfficientNetV2 shares efficientnet-v2, the rest (B8, L2, Lite) are 'efficientnet'."""
    if re.fullmatch(r"efficientnet-b[0-7]", variant):
        return variant
    if variant.startswith("efficientnetv2-"):
        return "efficientnet-v2"
    return "efficientnet"


def dataset_tags(weights: str, num_classes: Optional[int]) -> List[str]:
    """The ``dataset`` values the weight description supports (none when it does not say)."""
    text = (weights or "").lower()
    if "imagenet" not in text:
        return []
    if num_classes == 1000:
        return ["imagenet-ilsvrc-2012-cls"]
    if num_classes in (21841, 21843) or "21k" in text:
        return ["imagenet-21k"]
    return []


# ----------------------------------------------------------------------------- the page
@dataclasses.dataclass(frozen=True)
class ModulePage:
    """Everything a page says, gathered by export/publish.py from export_info.json and the module."""

    publisher: str
    name: str
    version: int
    format: str  # ours: "hub" (TF2) or "hub_tf1"
    role: str  # "classification" or "feature_vector"
    asset_path: str
    license: str
    info: Dict  # export_info.json
    signatures: Dict[str, Dict[str, List[str]]]  # tag set ("" or "train") -> signature -> output keys

    @property
    def handle(self) -> str:
        return f"{self.publisher}/{self.name}/{self.version}"

    @property
    def url(self) -> str:
        return f"https://tfhub.dev/{self.handle}"

    @property
    def hub_format(self) -> str:
        return HUB_FORMAT[self.format]

    @property
    def size(self) -> int:
        return int(self.info["default_image_size"][0])


def _description(page: ModulePage, datasets: Sequence[str]) -> str:
    variant, classes = page.info["model_name"], page.info["num_classes"]
    trained = {"imagenet-ilsvrc-2012-cls": " trained on ImageNet (ILSVRC-2012-CLS)",
               "imagenet-21k": " trained on ImageNet-21k"}.get(datasets[0] if datasets else "", "")
    fmt = "TF1 Hub format" if page.format == "hub_tf1" else "TF2 SavedModel"
    if page.role == "classification":
        return f"Image classification ({classes} classes) with {variant}{trained}; {fmt}."
    return f"Feature vectors ({page.info['num_features']} values) of images with {variant}{trained}; {fmt}."


def _metadata(page: ModulePage, datasets: Sequence[str]) -> List[str]:
    lines = [("asset-path", page.asset_path), ("format", page.hub_format), ("task", TASKS[page.role]),
             ("fine-tunable", "true"), ("network-architecture", network_architecture(page.info["model_name"]))]
    lines += [("dataset", d) for d in datasets]
    lines.append(("license", page.license))
    return [f"<!-- {key}: {value} -->" for key, value in lines]


def _verification(page: ModulePage) -> List[str]:
    checked = page.info.get("verification", {})
    diffs, limits = checked.get("max_abs_diff", {}), checked.get("limits", {})
    if page.format == "hub":  # one export, two modules: this module's figures ("classification/...")
        diffs = {k: v for k, v in diffs.items() if k.startswith(f"{page.role}/")}
    if not diffs:
        return ["The export recorded no verification figures."]
    worst = max(diffs, key=lambda k: diffs[k] / max(limits.get(k, 0.0), 1e-30))
    return [f"Before packaging, the module was reloaded and run on a fixed batch ({checked.get('batch', '?')}); "
            f"all {len(diffs)} outputs matched the Keras model, the largest difference relative to its limit "
            f"being `{worst}`: max-abs {diffs[worst]:.3g} (limit {limits.get(worst, float('nan')):.3g}; "
            "limit = 1e-5 + 1e-4 x max|expected|). Every figure is in the export's `export_info.json`."]


def _signature_table(page: ModulePage) -> List[str]:
    rows = ["| tag set | signature | input | output keys |", "|---|---|---|---|"]
    for tags, signatures in sorted(page.signatures.items()):
        shown = "{}" if not tags else "{" + ", ".join(f'"{t}"' for t in tags.split(",")) + "}"
        for name, outputs in sorted(signatures.items()):
            rows.append(f"| `{shown}` | `{name}` | `images` | {', '.join(f'`{o}`' for o in outputs)} |")
    return rows


def _head(page: ModulePage) -> Tuple[str, str]:
    """(what __call__/default returns, its printed shape for a batch of 2)."""
    if page.role == "classification":
        return "logits", f"(2, {page.info['num_classes']})"
    return "feature vectors", f"(2, {page.info['num_features']})"


def _snippet_setup(page: ModulePage) -> List[str]:
    """The imports, handle and input batch every usage snippet starts with."""
    size = page.size
    return [
        "import numpy as np",
        "import tensorflow as tf",
        "import tensorflow_hub as hub",
        "import tf_keras",
        "",
        f'HANDLE = "{page.url}"',
        f"images = np.random.default_rng(0).uniform(0, 1, (2, {size}, {size}, 3)).astype(np.float32)  # RGB in [0, 1]",
        "",
    ]


def _main_signature(page: ModulePage) -> str:
    return main_signature(page.role == "classification")


def _usage_tf2(page: ModulePage) -> List[str]:
    size, (what, shape), main = page.size, _head(page), _main_signature(page)
    return [
        "### tf_keras: `hub.KerasLayer`", "",
        "```python",
        *_snippet_setup(page),
        f"model = tf_keras.Sequential([tf_keras.Input(({size}, {size}, 3)), hub.KerasLayer(HANDLE)])",
        f"print(model(images).shape)  # {shape}",
        "```", "",
        "### `hub.load`", "",
        "```python",
        "module = hub.load(HANDLE)",
        f"print(module.default_image_size().numpy().tolist())  # [{size}, {size}]",
        f"print(module(images, training=False).shape)  # {shape}",
        f'outputs = module.signatures["{main}"](images=tf.constant(images))',
        f'print(outputs["default"].shape)  # {shape}',
        "```", "",
        "### Keras 3: `keras.layers.TFSMLayer`", "",
        "```python",
        "import keras",
        "",
        'layer = keras.layers.TFSMLayer(hub.resolve(HANDLE), call_endpoint="serving_default")',
        f'print(layer(images)["default"].shape)  # {shape}',
        "```", "",
        f"`__call__` returns the {what}; the signatures return a dict: `default` (the same {what}) and the "
        "named endpoints listed above.",
    ]


def _usage_tf1(page: ModulePage) -> List[str]:
    size, (what, shape), main = page.size, _head(page), _main_signature(page)
    return [
        "### `hub.load` (TF2 eager, tag set `{}`)", "",
        "```python",
        *_snippet_setup(page),
        "module = hub.load(HANDLE)",
        'outputs = module.signatures["default"](images=tf.constant(images))',
        f'print(outputs["default"].shape)  # {shape}',
        "```", "",
        "### tf_keras: `hub.KerasLayer`", "",
        "```python",
        f'layer = hub.KerasLayer(HANDLE, signature="{main}", signature_outputs_as_dict=True)',
        f"inputs = tf_keras.Input(({size}, {size}, 3))",
        "model = tf_keras.Model(inputs, layer(inputs))",
        f'print(model(images)["default"].shape)  # {shape}',
        "```", "",
        f"The `default` output is the {what}. Keras 3's `keras.layers.TFSMLayer` does not read the TF1 Hub "
        "format (two MetaGraphs); use the TF2 SavedModel version of this module with Keras 3.",
    ]


def _fine_tuning(page: ModulePage) -> List[str]:
    size = page.size
    if page.format == "hub_tf1":
        return [
            "Import the graph version with tag set `{\"train\"}`: batch normalization then uses batch "
            "statistics and updates its moving averages every time an output is computed, and "
            "dropout is active. In TF2 it trains with a `GradientTape`:", "",
            "```python",
            'train_module = hub.load(HANDLE, tags={"train"})',
            'features = train_module.signatures["image_feature_vector"]',
            f"head = tf.Variable(tf.zeros([{page.info['num_features']}, 5]))  # 5 new classes",
            "weights = [v for v in train_module.variables if v.trainable] + [head]",
            "with tf.GradientTape() as tape:",
            '    logits = features(images=tf.constant(images))["default"] @ head',
            "    loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits([0, 1], logits))",
            "for weight, gradient in zip(weights, tape.gradient(loss, weights)):",
            "    weight.assign_sub(0.005 * gradient)  # one SGD step",
            "print(logits.shape)  # (2, 5)",
            "```", "",
            "Variables are shared between the two tag sets; export the inference graph (`{}`) for serving.",
        ]
    if page.role == "classification":
        labels, head, note = "np.array([1, 2])", [], "continues training all weights and the 1000-class classifier"
    else:
        labels, head, note = "np.array([0, 1])", ["    tf_keras.layers.Dense(5),  # 5 new classes"], \
            "trains the network under a new classifier"
    return [
        f"`hub.KerasLayer(HANDLE, trainable=True)` {note}: batch normalization runs on batch statistics "
        "and updates its moving averages in training, dropout and drop-connect are active. Keep the "
        "learning rate low; with small datasets batch statistics of few images move the features.", "",
        "```python",
        "tuned = tf_keras.Sequential([",
        f"    tf_keras.Input(({size}, {size}, 3)),",
        "    hub.KerasLayer(HANDLE, trainable=True),",
        *head,
        "])",
        "tuned.compile(optimizer=tf_keras.optimizers.SGD(0.005),",
        "              loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))",
        f'history = tuned.fit(images, {labels}, epochs=1, verbose=0)',
        'print(len(history.history["loss"]))  # 1',
        "```",
    ]


def render(page: ModulePage) -> str:
    """The markdown page of one module."""
    info = page.info
    datasets = dataset_tags(info.get("weights", ""), info.get("num_classes"))
    norm = info.get("normalization_inside_model", {})
    pre = info.get("eval_preprocessing", {})
    size = page.size
    fmt = ("TF1 Hub format (`tfhub_module.pb`, MetaGraphs for tag sets `{}` and `{\"train\"}`)"
           if page.format == "hub_tf1" else
           "TF2 SavedModel with the reusable SavedModel API (`__call__(images, training)`, `variables`, "
           "`trainable_variables`, `regularization_losses`)")
    out = "logits (no softmax)" if page.role == "classification" else "pooled feature vectors"
    lines = [f"# Module {page.handle}", "", _description(page, datasets), "", *_metadata(page, datasets), "",
             "## Overview", "",
             f"{info['model_name']} (EfficientNet family: Tan & Le, https://arxiv.org/abs/1905.11946 and "
             "https://arxiv.org/abs/2104.00298), exported with efficientnet_tf "
             f"{info.get('efficientnet_tf_version', '')} as a {fmt}.", "",
             f"- **Expected image size**: {size} x {size} pixels (the size it was verified at; any height and "
             "width work).",
             f"- **Input**: `images`, {info.get('input', 'float32 RGB images in [0, 1]')}, following the common "
             "image input convention; the module normalizes internally (mean "
             f"{norm.get('mean_rgb')}, stddev {norm.get('stddev_rgb')} on the 0-255 scale).",
             f"- **Output**: {out}, {_head(page)[1].replace('2, ', 'batch, ')}."
             + (" Class index 0 is 'tench' (ImageNet order, no background class)."
                if page.role == "classification" and "imagenet-ilsvrc-2012-cls" in datasets else ""),
             f"- **Evaluation preprocessing** of the weights: centre crop {pre.get('center_crop_fraction')}, "
             f"{pre.get('resize_method')} resize (`{pre.get('function')}`).",
             f"- **Weights**: {info.get('weights', 'unspecified')}.", "",
             "## Signatures", "", *_signature_table(page), "",
             "## Usage", "",
             "Replace `HANDLE` with the location of this module (a URL or a local directory holding the "
             "extracted archive).", "",
             *(_usage_tf1(page) if page.format == "hub_tf1" else _usage_tf2(page)), "",
             "## Fine-tuning", "", *_fine_tuning(page), "",
             "## Verification", "", *_verification(page), ""]
    return "\n".join(lines)


def publisher_page(publisher: str) -> str:
    """``PUBLISHER/PUBLISHER.md``: the validator requires one for every publisher."""
    return f"# Publisher {publisher}\n{publisher}\n\n## Details\n\nModules exported with efficientnet_tf.\n"


def code_blocks(text: str, language: str = "python") -> List[str]:
    """The fenced code blocks of a page, in order."""
    return [m.group(1) for m in re.finditer(rf"^```{language}\n(.*?)^```$", text, re.M | re.S)]


# ----------------------------------------------------------------------------- the checker
def _parse(lines: List[str]) -> Tuple[re.Match, str, Dict[str, Set[str]]]:
    """(handle match, description, metadata) following validator.py's DocumentationParser."""
    first = lines[0].replace("&zwnj;", "")
    handle = HANDLE_LINE.fullmatch(first)
    if not handle:  # ParsingPolicy.from_string
        raise DocumentationError("first-line", f"the first line must match '# Module PUBLISHER/NAME/VERSION' "
                                 f"(e.g. '# Module google/efficientnet/b0/classification/1'), got {first!r}")
    index = 2 if len(lines) > 1 and not lines[1] else 1  # _consume_description: one blank line allowed
    description = []
    while index < len(lines) and lines[index] and not lines[index].startswith("<!--"):
        description.append(lines[index])
        index += 1
    if not description:
        raise DocumentationError("description", "the second line must hold a short description of the module")
    metadata: Dict[str, Set[str]] = {}
    while index < len(lines) and not lines[index].startswith("#"):  # _consume_metadata
        line = lines[index]
        index += 1
        if not line:
            continue
        match = METADATA_LINE.match(line)
        if not match:
            raise DocumentationError("metadata-line", f"unexpected line {line!r} among the metadata: only "
                                     "'<!-- key: value -->' lines and blank lines may follow the description")
        metadata.setdefault(match["key"].strip(), set()).add(match["value"].strip())
    return handle, " ".join(description), metadata


def _check_metadata(metadata: Dict[str, Set[str]]) -> None:
    """ParsingPolicy.assert_correct_metadata + SavedModelParsingPolicy's format rule."""
    missing = sorted(set(REQUIRED_METADATA) - set(metadata))
    if missing:
        raise DocumentationError("required-metadata", f"missing metadata {missing}; required: {list(REQUIRED_METADATA)}")
    unsupported = sorted(set(metadata) - set(REQUIRED_METADATA) - set(OPTIONAL_METADATA))
    if unsupported:
        raise DocumentationError("supported-metadata", f"unsupported metadata {unsupported}; supported: "
                                 f"{sorted(REQUIRED_METADATA + OPTIONAL_METADATA)}")
    duplicated = sorted(k for k, v in metadata.items() if k not in REPEATED_METADATA and len(v) > 1)
    if duplicated:
        raise DocumentationError("duplicate-metadata", f"metadata {duplicated} set more than once; only "
                                 f"{list(REPEATED_METADATA)} may repeat")
    for value in sorted(metadata["task"]):
        if not value.startswith(TASK_PREFIXES):
            raise DocumentationError("task-prefix", f"task {value!r} must start with one of {list(TASK_PREFIXES)}")
    for key in sorted(metadata):
        if key in TAG_VALUES:
            bad = sorted(metadata[key] - set(TAG_VALUES[key]))
            if bad:
                raise DocumentationError("tag-values", f"unsupported values {bad} for {key}; valid: "
                                         f"{list(TAG_VALUES[key])}")
        elif key in URL_TAGS:
            for value in sorted(metadata[key]):
                match = re.fullmatch(r"https://([^/]+)(/.*)?", value)
                if not match or (URL_TAGS[key] and match.group(1) != URL_TAGS[key]):
                    raise DocumentationError("tag-values", f"{key} must be an https URL"
                                             + (f" on {URL_TAGS[key]}" if URL_TAGS[key] else "") + f", got {value!r}")
    fmt = next(iter(metadata["format"]))
    if fmt not in SAVED_MODEL_FORMATS:
        raise DocumentationError("format", f"format {fmt!r} must be one of {list(SAVED_MODEL_FORMATS)}")
    asset = next(iter(metadata["asset-path"]))  # ModelParsingPolicy.validate_asset_path
    if not asset.endswith(ASSET_SUFFIX):
        raise DocumentationError("asset-path", f"asset-path {asset!r} must end with {ASSET_SUFFIX}")
    if asset.startswith(("https://github.com/", "http://github.com/")):
        raise DocumentationError("asset-path", f"asset-path {asset!r} is on github.com, whose robots.txt "
                                 "forbids fetching it")


def check(text: str, path: Optional[str] = None, docs_root: Optional[str] = None) -> Dict[str, Set[str]]:
    """Applies the hub validator's rules to a ``# Module`` page; returns its metadata.

    With ``path`` and ``docs_root`` (the folder that plays the hub repository's ``assets/docs``)
    also the file location (PUBLISHER/[models/]NAME/VERSION.md) and the publisher page
    (PUBLISHER/PUBLISHER.md). Raises DocumentationError naming the broken rule.
    """
    lines = text.split("\n")
    handle, _, metadata = _parse(lines)
    _check_metadata(metadata)
    if path is not None and docs_root is not None:
        publisher, name, version = handle["publisher"], handle["name"], handle["version"]
        relative = os.path.relpath(os.path.abspath(path), os.path.abspath(docs_root)).replace(os.sep, "/")
        allowed = [f"{publisher}/{name}/{version}.md", f"{publisher}/models/{name}/{version}.md"]
        if relative not in allowed:  # ParsingPolicy.assert_correct_file_path
            raise DocumentationError("file-path", f"{handle.group(0)[9:]} must be documented in one of {allowed}, "
                                     f"not {relative}")
        publisher_md = os.path.join(docs_root, publisher, f"{publisher}.md")
        if not os.path.isfile(publisher_md):  # DocumentationParser._assert_publisher_page_exists
            raise DocumentationError("publisher-page", f"publisher page {publisher}/{publisher}.md is missing")
        with open(publisher_md, encoding="utf-8") as f:
            if not PUBLISHER_LINE.fullmatch(f.readline().rstrip("\n")):
                raise DocumentationError("publisher-page", f"{publisher}/{publisher}.md must start with "
                                         f"'# Publisher {publisher}'")
    return metadata


# ----------------------------------------------------------------------------- Kaggle Models
# The card and usage texts of a Kaggle Models upload tree (export/publish.py writes it,
# export/kaggle_models.py checks it). Kaggle renders markdown; in a variation's usage it replaces
# ${VERSION_NUMBER} and ${VARIATION_SLUG} (Kaggle/kaggle-api documentation/models_metadata.md).
KAGGLE_FRAMEWORK = {"hub": "tensorFlow2", "hub_tf1": "tensorFlow1", "tflite": "tfLite"}
PAPERS = ("EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks (Tan & Le, 2019), "
          "https://arxiv.org/abs/1905.11946", "EfficientNetV2: Smaller Models and Faster Training (Tan & Le, 2021), "
          "https://arxiv.org/abs/2104.00298")


@dataclasses.dataclass(frozen=True)
class Variation:
    """One variation of a Kaggle model: a module (or TF-Lite file) and what its export recorded."""

    owner: str
    model_slug: str
    format: str  # ours: "hub", "hub_tf1" or "tflite"
    role: str  # "classification" or "feature_vector"
    info: Dict  # export_info.json
    signatures: Dict[str, Dict[str, List[str]]]  # as ModulePage.signatures ({} for TF-Lite)

    @property
    def framework(self) -> str:
        return KAGGLE_FRAMEWORK[self.format]

    @property
    def slug(self) -> str:
        quantized = f"-{self.info['quantize']}" if self.format == "tflite" and self.info.get("quantize") else ""
        return f"{self.info['model_name']}-{self.role.replace('_', '-')}{quantized}"

    @property
    def handle(self) -> str:
        """kagglehub's handle of the variation, its version left to Kaggle's placeholder."""
        return f"{self.owner}/{self.model_slug}/{self.framework}/{self.slug}"

    def page(self) -> ModulePage:
        """The facts as a ModulePage, for the helpers the tfhub.dev pages use."""
        # "hub_tf1" for TF-Lite too: its verification figures are not split by module
        return ModulePage(self.owner, f"{self.model_slug}/{self.slug}", 1, "hub" if self.format == "hub" else "hub_tf1",
                          self.role, "", "apache-2.0", self.info, self.signatures)


def _what(variation: Variation) -> str:
    info = variation.info
    if variation.role == "classification" and variation.format == "tflite":  # export.tflite: softmax inside
        return f"probabilities over {info['num_classes']} classes"
    if variation.role == "classification":
        return f"logits over {info['num_classes']} classes"
    return f"feature vectors of {info['num_features']} values"


def accuracy_cost(info: Dict) -> str:
    """What quantizing cost, from export.accuracy's record in export_info.json ("" when the
    export did not quantize)."""
    cost = info.get("accuracy_cost")
    if not cost:
        return ""
    parts = []
    if "eval" in cost:
        e = cost["eval"]
        parts.append(f"top-1 {e['float_top1']:.2f}% (float model) -> {e['quantized_top1']:.2f}% "
                     f"({info.get('quantize')}) on {e['images']} labelled evaluation images")
    if "photos" in cost:
        parts.append(f"the same top-1 as the float model on {cost['photos']['top1_agreement']:.0%} of "
                     "the verification photographs")
    return f"Quantization ({info.get('quantize')}) measured: " + "; ".join(parts) + "."


def instance_overview(variation: Variation) -> str:
    """A variation's one-paragraph overview."""
    kind = {"hub": "TF2 SavedModel with TF-Hub's reusable SavedModel API",
            "hub_tf1": "TF1 Hub module (MetaGraphs for tag sets {} and {\"train\"})",
            "tflite": f"TF-Lite flatbuffer ({variation.info.get('quantize') or 'float32'})"}[variation.format]
    size = variation.info["default_image_size"][0]
    text = (f"{variation.info['model_name']} as a {kind}: images (float32 RGB in [0, 1], expected "
            f"{size} x {size}) to {_what(variation)}.")
    cost = accuracy_cost(variation.info)
    return f"{text} {cost}" if cost else text


def instance_usage(variation: Variation) -> str:
    """A variation's usage markdown, with Kaggle's ${VERSION_NUMBER} for the version."""
    size = variation.info["default_image_size"][0]
    handle = f"{variation.handle}/${{VERSION_NUMBER}}"
    lines = ["```python", "import kagglehub", "", f'path = kagglehub.model_download("{handle}")']
    if variation.format == "tflite":
        tflite = "model.tflite"
        lines += ["import numpy as np", "from ai_edge_litert.interpreter import Interpreter", "",
                  f'interpreter = Interpreter(model_path=path + "/{tflite}")',
                  "interpreter.allocate_tensors()",
                  "detail = interpreter.get_input_details()[0]",
                  f"interpreter.set_tensor(detail['index'], np.zeros((1, {size}, {size}, 3), detail['dtype']))",
                  "interpreter.invoke()",
                  "outputs = interpreter.get_tensor(interpreter.get_output_details()[0]['index'])", "```"]
        return "\n".join(lines)
    main = main_signature(variation.role == "classification")
    if variation.format == "hub_tf1":
        lines += ["", "# tf_keras (TF 2.x with tensorflow_hub): the TF1 module through its signature",
                  "import tensorflow_hub as hub", "import tf_keras",
                  f'layer = hub.KerasLayer(path, signature="{main}", output_key="default")',
                  "", "# Keras 3 (efficientnet_tf), by handle",
                  "from efficientnet_tf.hub import KerasLayer",
                  f'layer = KerasLayer("{handle}", signature="{main}")',
                  "", '# fine-tuning: the {"train"} graph (batch statistics, dropout) under a GradientTape',
                  'train_module = hub.load(path, tags={"train"})', "```"]
    else:
        lines += ["", "# tf_keras (TF 2.x with tensorflow_hub)", "import tensorflow_hub as hub", "import tf_keras",
                  f"model = tf_keras.Sequential([tf_keras.Input(({size}, {size}, 3)), hub.KerasLayer(path)])",
                  "", "# Keras 3 (efficientnet_tf), by handle; trainable=True fine-tunes",
                  "import keras", "from efficientnet_tf.hub import KerasLayer",
                  f"model = keras.Sequential([keras.Input(({size}, {size}, 3)), "
                  f'KerasLayer("{handle}", trainable=True)])', "```"]
    return "\n".join(lines)


def model_card(variations: Sequence[Variation]) -> str:
    """The model's description (its card, markdown) from what the exports recorded."""
    first = variations[0]
    info, size = first.info, first.info["default_image_size"][0]
    norm = info.get("normalization_inside_model", {})
    pre = info.get("eval_preprocessing", {})
    variant = info["model_name"]
    paper = PAPERS[1] if variant.startswith("efficientnetv2") else PAPERS[0]
    rows = ["| framework | variation | output | signatures (tag sets) | output keys |", "|---|---|---|---|---|"]
    for v in variations:
        names = sorted({name for sigs in v.signatures.values() for name in sigs})
        keys = sorted({key for sigs in v.signatures.values() for outputs in sigs.values() for key in outputs},
                      key=lambda k: (k != "default", k))
        tags = ", ".join("{" + t + "}" for t in sorted(v.signatures))
        rows.append(f"| {v.framework} | `{v.slug}` | {_what(v)} | {', '.join(f'`{n}`' for n in names) or 'none'} "
                    f"({tags or 'TF-Lite'}) | {', '.join(f'`{k}`' for k in keys) or '-'} |")
    lines = [
        "# Model summary", "",
        f"{variant}, an EfficientNet image model ({paper}), exported with efficientnet_tf "
        f"{info.get('efficientnet_tf_version', '')} as TF-Hub modules.", "",
        f"- **Weights**: {info.get('weights', 'unspecified')}.",
        f"- **Input**: {info.get('input', 'float32 RGB images in [0, 1]')}; expected size {size} x {size} "
        "(the size the export was verified at; any height and width work). The modules normalize "
        f"internally (mean {norm.get('mean_rgb')}, stddev {norm.get('stddev_rgb')} on the 0-255 scale).",
        f"- **Evaluation preprocessing** of the weights: centre crop {pre.get('center_crop_fraction')}, "
        f"{pre.get('resize_method')} resize.", "",
        "# Variations", "", *rows, "",
        "# Usage", "",
        "Each variation's page has code. In short: `kagglehub.model_download(HANDLE)` gives a local "
        "folder; tf_keras users pass it to `tensorflow_hub.KerasLayer`, Keras 3 users pass the handle to "
        "`efficientnet_tf.hub.KerasLayer`; `tensorflow_hub.load` gives the module itself.", "",
        "# Fine-tuning", "",
        "TF2 variations: `KerasLayer(handle, trainable=True)` (either Keras) trains all weights; batch "
        "normalization uses batch statistics and updates its moving averages in training. TF1 variations: "
        'load the tag set `{"train"}` (`hub.load(path, tags={"train"})`) and train its signatures under a '
        "`GradientTape`; variables are shared with the inference graph.", "",
        "# Evaluation", "",
    ]
    for v in variations:
        figures = accuracy_cost(v.info) or " ".join(_verification(v.page()))
        lines += [f"`{v.slug}` ({v.framework}): {figures}", ""]
    return "\n".join(lines)
