"""Kaggle Models upload trees: the metadata schema and a checker that names the rule a tree breaks.

A tree (written by export/publish.py, uploaded by ``python -m export.publish upload``)::

    DIR/model-metadata.json                          the model (Kaggle's schema, a model card)
    DIR/FRAMEWORK/VARIATION/model-instance-metadata.json   one variation (Kaggle's schema)
    DIR/FRAMEWORK/VARIATION/...                      exactly the files Kaggle serves for it
    DIR/efficientnet_tf-publish.json                 ours: the variations, their files, version notes

Sources: Kaggle/kaggle-api ``documentation/models_metadata.md`` (fields, frameworks, licenses,
usage placeholders) and ``kaggle_api_extended.py`` ``model_create_new`` / ``model_instance_create``
(required fields, template values rejected, isPrivate / fineTunable booleans, trainingData a
list); kagglehub ``models.py`` ``model_upload`` (a variation is one local directory, uploaded
with its sub-directories; handles ``OWNER/MODEL/FRAMEWORK/VARIATION``).
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
from typing import Dict, List

MODEL_METADATA = "model-metadata.json"
INSTANCE_METADATA = "model-instance-metadata.json"
MANIFEST = "efficientnet_tf-publish.json"

# models_metadata.md "Contents" of a model and of a model instance.
MODEL_FIELDS = ("ownerSlug", "title", "slug", "licenseName", "subtitle", "isPrivate", "description", "publishTime",
                "provenanceSources")
INSTANCE_FIELDS = ("ownerSlug", "modelSlug", "instanceSlug", "framework", "overview", "usage", "licenseName",
                   "fineTunable", "trainingData", "modelInstanceType", "baseModelInstance", "externalBaseModelUrl")
# kaggle_api_extended.py: get_or_fail(...) fields.
MODEL_REQUIRED = ("ownerSlug", "title", "slug", "isPrivate", "description")
INSTANCE_REQUIRED = ("ownerSlug", "modelSlug", "instanceSlug", "framework", "licenseName")
# kaggle_api_extended.py rejects the values `kaggle models [instances] init` writes.
TEMPLATE_VALUES = ("INSERT_OWNER_SLUG_HERE", "INSERT_TITLE_HERE", "INSERT_SLUG_HERE",
                   "INSERT_EXISTING_MODEL_SLUG_HERE", "INSERT_INSTANCE_SLUG_HERE", "INSERT_FRAMEWORK_HERE")
# models_metadata.md `framework` options (the ones a TF-Hub module can be).
FRAMEWORKS = ("tensorFlow1", "tensorFlow2", "tfLite", "tfJs", "pyTorch", "jax", "coral")
# kagglesdk models/types/model_enums.py ModelInstanceType (UNSPECIFIED, BASE_MODEL, KAGGLE_VARIANT,
# EXTERNAL_VARIANT), spelled as the metadata file's "Unspecified" default.
MODEL_INSTANCE_TYPES = ("Unspecified", "BaseModel", "KaggleVariant", "ExternalVariant")
# models_metadata.md "Licenses".
LICENSES = ("Apache 2.0", "Attribution 3.0 IGO (CC BY 3.0 IGO)", "Attribution 3.0 Unported (CC BY 3.0)",
            "Attribution 4.0 International (CC BY 4.0)", "Attribution-NoDerivatives 4.0 International (CC BY-ND 4.0)",
            "Attribution-NonCommercial 4.0 International (CC BY-NC 4.0)",
            "Attribution-NonCommercial-NoDerivatives 4.0 International (CC BY-NC-ND 4.0)",
            "Attribution-NonCommercial-ShareAlike 3.0 IGO (CC BY-NC-SA 3.0 IGO)", "BSD-3-Clause", "CC BY-NC-SA 4.0",
            "CC BY-SA 3.0", "CC BY-SA 4.0", "CC0: Public Domain",
            "Community Data License Agreement - Permissive - Version 1.0",
            "Community Data License Agreement - Sharing - Version 1.0", "GNU Affero General Public License 3.0",
            "GNU Free Documentation License 1.3", "GNU Lesser General Public License 3.0", "GPL 2", "MIT",
            "ODC Attribution License (ODC-By)", "ODC Public Domain Dedication and Licence (PDDL)", "GPL 3")
# Our --license values (tfhub.dev ids) -> Kaggle's names, where Kaggle has one.
LICENSE_NAMES = {"apache-2.0": "Apache 2.0", "bsd-3-clause": "BSD-3-Clause", "mit": "MIT", "gpl-2.0": "GPL 2",
                 "gpl-3.0": "GPL 3", "lgpl-3.0": "GNU Lesser General Public License 3.0",
                 "cc-by-sa-4.0": "CC BY-SA 4.0", "cc-by-nc-4.0": "Attribution-NonCommercial 4.0 International (CC BY-NC 4.0)"}
# models_metadata.md "Usage": the template variables Kaggle replaces when it renders usage.
USAGE_PLACEHOLDERS = ("VERSION_NUMBER", "VARIATION_SLUG", "FRAMEWORK", "PATH", "FILEPATH", "URL")
# Kaggle slugs: lowercase letters, digits and '-' (the form kaggle.com URLs and kagglehub handles use).
SLUG = re.compile(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?")
# What a TF SavedModel variation serves: tfhub.dev's tools/validator.py ALLOWED_SAVED_MODEL_PATHS
# (the paths hub.load reads; Kaggle took over the tfhub.dev modules with these files).
SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt", "tfhub_module.pb", "keras_metadata.pb", "fingerprint.pb",
                     "assets/*", "assets.extra/*", "variables/variables.*")
TFLITE_FILES = ("*.tflite", "labels.txt")
SERVED_FILES = {"tensorFlow1": SAVED_MODEL_FILES, "tensorFlow2": SAVED_MODEL_FILES, "tfLite": TFLITE_FILES}
# kagglehub models.py DEFAULT_IGNORE_PATTERNS are never uploaded; ours adds the metadata file.
UPLOAD_IGNORE = (INSTANCE_METADATA,)


class TreeError(ValueError):
    """An upload tree breaks a rule; ``rule`` names it, the message says where and what is valid."""

    def __init__(self, rule: str, message: str):
        super().__init__(f"[{rule}] {message}")
        self.rule = rule


def served_files(variation_dir: str) -> List[str]:
    """The files of a variation directory an upload sends: all but the instance metadata, sorted."""
    found = []
    for root, dirs, files in os.walk(variation_dir):
        dirs.sort()
        for name in files:
            rel = os.path.relpath(os.path.join(root, name), variation_dir).replace(os.sep, "/")
            if rel not in UPLOAD_IGNORE:
                found.append(rel)
    return sorted(found)


def _read(path: str, rule: str) -> Dict:
    if not os.path.isfile(path):
        raise TreeError(rule, f"{path} is missing")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as err:
        raise TreeError(rule, f"{path} is not JSON: {err}") from err
    if not isinstance(data, dict):
        raise TreeError(rule, f"{path} holds {type(data).__name__}, not an object")
    return data


def _check_fields(data: Dict, where: str, allowed, required) -> None:
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise TreeError("unknown-field", f"{where}: fields {unknown} are not in Kaggle's schema; valid: {list(allowed)}")
    missing = [k for k in required if k not in data or data[k] in ("", None)]
    if missing:
        raise TreeError("required-field", f"{where}: missing {missing}; required: {list(required)}")
    for key, value in data.items():
        if value in TEMPLATE_VALUES:
            raise TreeError("template-value", f"{where}: {key} is still the template value {value!r}")


def check_model(data: Dict, where: str = MODEL_METADATA) -> None:
    """model-metadata.json rules; raises TreeError."""
    _check_fields(data, where, MODEL_FIELDS, MODEL_REQUIRED)
    if not isinstance(data["isPrivate"], bool):
        raise TreeError("boolean", f"{where}: isPrivate must be true or false, got {data['isPrivate']!r}")
    for key in ("ownerSlug", "slug"):
        if not SLUG.fullmatch(str(data[key])):
            raise TreeError("slug", f"{where}: {key} {data[key]!r} must be lowercase letters, digits and '-'")
    if "licenseName" in data and data["licenseName"] not in LICENSES:
        raise TreeError("license", f"{where}: licenseName {data['licenseName']!r}; valid: {list(LICENSES)}")


def check_instance(data: Dict, model: Dict, framework: str, slug: str, where: str) -> None:
    """model-instance-metadata.json rules, against its model and its place in the tree."""
    _check_fields(data, where, INSTANCE_FIELDS, INSTANCE_REQUIRED)
    if data["framework"] not in FRAMEWORKS:
        raise TreeError("framework", f"{where}: framework {data['framework']!r}; valid: {list(FRAMEWORKS)}")
    if (data["framework"], data["instanceSlug"]) != (framework, slug):
        raise TreeError("place", f"{where}: framework/instanceSlug {data['framework']}/{data['instanceSlug']} "
                        f"do not match the folder {framework}/{slug}")
    for key, model_key in (("ownerSlug", "ownerSlug"), ("modelSlug", "slug")):
        if data[key] != model[model_key]:
            raise TreeError("parent", f"{where}: {key} {data[key]!r} is not the model's {model_key} {model[model_key]!r}")
    if not SLUG.fullmatch(data["instanceSlug"]):
        raise TreeError("slug", f"{where}: instanceSlug {data['instanceSlug']!r} must be lowercase letters, digits, '-'")
    if data["licenseName"] not in LICENSES:
        raise TreeError("license", f"{where}: licenseName {data['licenseName']!r}; valid: {list(LICENSES)}")
    if not isinstance(data.get("fineTunable", False), bool):
        raise TreeError("boolean", f"{where}: fineTunable must be true or false, got {data['fineTunable']!r}")
    if not isinstance(data.get("trainingData", []), list):
        raise TreeError("training-data", f"{where}: trainingData must be a list, got {data['trainingData']!r}")
    if data.get("modelInstanceType", "Unspecified") not in MODEL_INSTANCE_TYPES:
        raise TreeError("instance-type", f"{where}: modelInstanceType {data['modelInstanceType']!r}; valid: "
                        f"{list(MODEL_INSTANCE_TYPES)}")
    unknown = sorted(set(re.findall(r"\$\{(\w+)\}", data.get("usage", ""))) - set(USAGE_PLACEHOLDERS))
    if unknown:
        raise TreeError("usage-placeholder", f"{where}: usage uses {unknown}; Kaggle replaces only "
                        f"{['${' + p + '}' for p in USAGE_PLACEHOLDERS]}")


def check_files(variation_dir: str, framework: str, expected: List[str]) -> None:
    """The served files are exactly ``expected``, each one Kaggle should serve for ``framework``."""
    found = served_files(variation_dir)
    patterns = SERVED_FILES.get(framework, ("*",))
    for rel in found:
        if any(part.startswith(".") for part in rel.split("/")) or \
                not any(fnmatch.fnmatchcase(rel, p) for p in patterns):
            raise TreeError("served-file", f"{variation_dir}: {rel!r} is not a file Kaggle should serve for "
                            f"{framework}; allowed: {list(patterns)}")
    if found != sorted(expected):
        raise TreeError("files", f"{variation_dir}: serves {found}, the manifest lists {sorted(expected)}")
    if framework in ("tensorFlow1", "tensorFlow2") and "saved_model.pb" not in found:
        raise TreeError("served-file", f"{variation_dir}: a {framework} variation needs saved_model.pb")
    if framework == "tensorFlow1" and "tfhub_module.pb" not in found:
        raise TreeError("served-file", f"{variation_dir}: a tensorFlow1 (TF1 Hub format) variation needs "
                        "tfhub_module.pb")
    if framework == "tfLite" and len([f for f in found if f.endswith(".tflite")]) != 1:
        raise TreeError("served-file", f"{variation_dir}: a tfLite variation serves one .tflite file")


def check_tree(tree: str) -> Dict:
    """Applies every rule to an upload tree; returns our manifest. Raises TreeError naming the rule."""
    model = _read(os.path.join(tree, MODEL_METADATA), "model-metadata")
    check_model(model)
    manifest = _read(os.path.join(tree, MANIFEST), "manifest")
    listed = {(v["framework"], v["slug"]) for v in manifest.get("variations", [])}
    on_disk = {(framework, slug) for framework in FRAMEWORKS if os.path.isdir(os.path.join(tree, framework))
               for slug in sorted(os.listdir(os.path.join(tree, framework)))}
    if not listed or listed != on_disk:
        raise TreeError("manifest", f"{tree}: variation folders {sorted(on_disk)} != manifest {sorted(listed)}")
    for variation in manifest["variations"]:
        framework, slug = variation["framework"], variation["slug"]
        directory = os.path.join(tree, framework, slug)
        where = f"{framework}/{slug}/{INSTANCE_METADATA}"
        check_instance(_read(os.path.join(directory, INSTANCE_METADATA), "instance-metadata"), model, framework,
                       slug, where)
        check_files(directory, framework, variation["files"])
    return manifest
