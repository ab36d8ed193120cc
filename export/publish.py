"""Packages exported hub modules for Kaggle Models (and, with ``tfhub_docs``, the retired
tfhub.dev documentation repository), and uploads them.

    from export import publish
    published = publish.publish("out/lite0/hub", "out/lite0-publish", owner="acme")

    python -m export.publish upload out/lite0-publish    # the model, its card, every variation

Input: an export directory of format ``hub`` (TF2: ``DIR/classification``, ``DIR/feature_vector``)
or ``hub_tf1`` (``DIR`` is the module) and its ``export_info.json``; how the export was dispatched
does not matter. Output (written to a temporary directory, checked, then renamed into place): a
Kaggle Models upload tree (export/kaggle_models.py)::

    PUBLISH_DIR/model-metadata.json                              the model and its card
    PUBLISH_DIR/tensorFlow2/VARIANT-classification/...           one variation per module:
    PUBLISH_DIR/tensorFlow2/VARIANT-feature-vector/...           model-instance-metadata.json and
    PUBLISH_DIR/tensorFlow1/VARIANT-classification/...           exactly the files Kaggle serves
    PUBLISH_DIR/efficientnet_tf-publish.json                     the variations, files, version notes

and with ``tfhub_docs=True`` (``--tfhub_docs``) also the tfhub.dev package::

    PUBLISH_DIR/docs/PUBLISHER/PUBLISHER.md                 the publisher page
    PUBLISH_DIR/docs/PUBLISHER/models/NAME/VERSION.md       one page per module
    PUBLISH_DIR/archives/PUBLISHER-NAME-VERSION.tar.gz      one archive per module

``docs/`` mirrors the ``assets/docs`` folder of the tensorflow/tfhub.dev repository. Module names:
``MODULE_NAME/classification`` and ``MODULE_NAME/feature_vector`` (TF2), ``MODULE_NAME/tf1/ROLE``
(TF1). Archives are reproducible: members in sorted order, fixed time stamps, owners and modes.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import gzip
import json
import os
import re
import shutil
import sys
import tarfile
import tempfile
from typing import Dict, List, Optional, Sequence, Tuple, Union

from export import kaggle_models, module_docs
from export.exporter import INFO_FILENAME
from export.module_docs import DocumentationError
from tensorflow.core.protobuf import saved_model_pb2
from export.atomic import atomic_export_dir
from export.progress import step

PUBLISHABLE_FORMATS = tuple(module_docs.HUB_FORMAT)  # ("hub_tf1", "hub")
# Kaggle Models also serves the TF-Lite file next to the modules (framework tfLite).
KAGGLE_FORMATS = PUBLISHABLE_FORMATS + ("tflite",)
TF2_MODULES = ("classification", "feature_vector")  # = export.hub_tf2.MODULES (not imported: it loads TF)
# tools/validator.py ALLOWED_SAVED_MODEL_PATHS: the files a hub archive may hold.
ALLOWED_PATHS = ("saved_model.pb", "saved_model.pbtxt", "tfhub_module.pb", "keras_metadata.pb", "fingerprint.pb",
                 "assets/*", "assets.extra/*", "variables/variables.*")
ALLOWED_DIRS = ("assets", "assets.extra", "variables")
# tools/validator.py _FILE_NAME_PATTERN / PATH_PATTERN: no leading dot, a restricted character set.
_FILE_NAME = r"[\w-][-!',_\w.=:% ]*"
PATH_PATTERN = re.compile(f"({_FILE_NAME})+(/{_FILE_NAME})*")
ARCHIVE_MTIME = 0  # fixed: the same module gives the same bytes


@dataclasses.dataclass
class PublishedModule:
    """One packaged module."""

    handle: str  # PUBLISHER/NAME/VERSION
    format: str  # the hub's format value: "hub" (TF1) or "saved_model_2"
    role: str  # "classification" or "feature_vector"
    module_dir: str
    archive: Optional[str]  # tfhub_docs only
    doc: Optional[str]  # tfhub_docs only
    members: List[str]  # archive member names, in order
    left_out: List[str]  # files of the module dir the hub does not accept (not archived)
    archive_bytes: int  # 0 without tfhub_docs
    kaggle_handle: str = ""  # OWNER/MODEL/FRAMEWORK/VARIATION
    variation_dir: str = ""  # its folder in the upload tree


def default_publish_dir(export_dir: str) -> str:
    """``EXPORT_DIR-publish``, next to the export (the export itself stays a clean module)."""
    return os.path.normpath(os.path.abspath(os.fspath(export_dir))) + "-publish"


def check_request(format: str, publisher: Optional[str], module_name: Optional[str], version: int,
                  license: str = "apache-2.0", publish_dir: Optional[str] = None, overwrite: bool = False) -> None:
    """Rejects bad publishing arguments before any export work starts (ValueError naming the value)."""
    if format not in PUBLISHABLE_FORMATS:
        raise ValueError(f"Cannot publish format {format!r}: the hub takes modules of format "
                         f"{' or '.join(sorted(PUBLISHABLE_FORMATS))}")
    if not publisher or not re.fullmatch(module_docs.PUBLISHER_PATTERN, publisher):
        raise ValueError(f"Bad publisher {publisher!r}: give --publisher=ID made of lowercase letters, digits "
                         "and '-' (tfhub.dev's publisher ids)")
    if not module_name or not re.fullmatch(module_docs.NAME_PATTERN, module_name):
        raise ValueError(f"Bad module name {module_name!r}: letters, digits, '_', '.', '-' in '/'-separated parts")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"Bad version {version!r}: a positive integer")
    if license not in module_docs.LICENSES:
        raise ValueError(f"Unknown license {license!r}; valid: {', '.join(module_docs.LICENSES)}")
    if publish_dir is not None and os.path.lexists(publish_dir) and not overwrite:
        raise FileExistsError(f"publish dir {publish_dir!r} already exists; pass --overwrite (overwrite=True)")


def kaggle_slug(module_name: str) -> str:
    """The Kaggle model slug of a module name: efficientnet/lite0 -> efficientnet-lite0."""
    return re.sub(r"[^a-z0-9]+", "-", module_name.lower()).strip("-")


def version_notes(info: Dict) -> str:
    """One line for an uploaded version, from the export's record."""
    checks = info.get("verification", {}).get("max_abs_diff", {})
    verified = f"; verified against the Keras model on {len(checks)} outputs" if checks else ""
    return (f"{info['model_name']} exported with efficientnet_tf {info.get('efficientnet_tf_version', '?')} "
            f"at {info['default_image_size'][0]}px, weights: {info.get('weights', 'unspecified')}{verified}")


def write_variation(variation: module_docs.Variation, module_dir: str, tree: str, license_name: str) -> List[str]:
    """Copies the served files of a module into TREE/FRAMEWORK/VARIATION with its metadata;
    returns the files."""
    if variation.format == "tflite":  # DIR/model.tflite (+ labels.txt): export.tflite's layout
        members = sorted(n for n in os.listdir(module_dir) if n.endswith(".tflite") or n == "labels.txt")
    else:
        members, _ = archive_members(module_dir)
    directory = os.path.join(tree, variation.framework, variation.slug)
    files = []
    for member in members:
        source, target = os.path.join(module_dir, member), os.path.join(directory, member)
        if os.path.isdir(source):
            continue
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copyfile(source, target)
        files.append(member)
    metadata = {"ownerSlug": variation.owner, "modelSlug": variation.model_slug, "instanceSlug": variation.slug,
                "framework": variation.framework, "overview": module_docs.instance_overview(variation),
                "usage": module_docs.instance_usage(variation), "licenseName": license_name,
                "fineTunable": variation.format == "hub" or variation.format == "hub_tf1",
                "trainingData": module_docs.dataset_tags(variation.info.get("weights", ""),
                                                         variation.info.get("num_classes")),
                "modelInstanceType": "Unspecified"}
    with open(os.path.join(directory, kaggle_models.INSTANCE_METADATA), "w", encoding="utf-8") as f:
        json.dump(metadata, f, indent=2)
    return sorted(files)


def write_kaggle_tree(jobs, tree: str, owner: str, model_slug: str, license: str, private: bool) -> List[Dict]:
    """The upload tree of ``jobs`` ((info, role, module dir, name) per module) in ``tree``;
    checked with kaggle_models.check_tree. Returns the manifest's variations."""
    license_name = kaggle_models.LICENSE_NAMES[license]
    variations, listed = [], []
    for info, role, module_dir, _ in jobs:
        signatures = {} if info["format"] == "tflite" else signatures_of(module_dir)
        variation = module_docs.Variation(owner, model_slug, info["format"], role, info, signatures)
        files = write_variation(variation, module_dir, tree, license_name)
        variations.append(variation)
        listed.append({"framework": variation.framework, "slug": variation.slug, "handle": variation.handle,
                       "files": files, "version_notes": version_notes(info)})
    title = f"EfficientNet {variations[0].info['model_name']}" if model_slug == variations[0].info["model_name"] \
        else model_slug
    model = {"ownerSlug": owner, "title": title, "slug": model_slug, "licenseName": license_name,
             "subtitle": f"{variations[0].info['model_name']} image classification and feature vectors (TF-Hub modules)",
             "isPrivate": private, "description": module_docs.model_card(variations),
             "provenanceSources": variations[0].info.get("weights", "")}
    with open(os.path.join(tree, kaggle_models.MODEL_METADATA), "w", encoding="utf-8") as f:
        json.dump(model, f, indent=2)
    with open(os.path.join(tree, kaggle_models.MANIFEST), "w", encoding="utf-8") as f:
        json.dump({"model": f"{owner}/{model_slug}", "variations": listed}, f, indent=2)
    kaggle_models.check_tree(tree)
    return listed


def check_kaggle_request(owner: Optional[str], license: str) -> None:
    """Rejects a bad Kaggle owner or a license Kaggle Models lacks (ValueError naming the value)."""
    if not owner or not kaggle_models.SLUG.fullmatch(owner):
        raise ValueError(f"Bad Kaggle owner {owner!r}: give --owner=NAME, a Kaggle user or organization slug "
                         "(lowercase letters, digits, '-')")
    if license not in kaggle_models.LICENSE_NAMES:
        raise ValueError(f"License {license!r} has no Kaggle Models name; valid: {sorted(kaggle_models.LICENSE_NAMES)}")


def read_info(export_dir: str) -> Dict:
    path = os.path.join(export_dir, INFO_FILENAME)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path!r} does not exist: publish takes a directory written by export/")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def modules_of(export_dir: str, info: Dict, module_name: str) -> List[Tuple[str, str, str]]:
    """(role, module dir, hub name) of each module in an export."""
    fmt = info.get("format")
    if fmt not in KAGGLE_FORMATS:
        raise ValueError(f"{export_dir!r} holds format {fmt!r}; publishable: {', '.join(sorted(KAGGLE_FORMATS))}")
    if fmt in ("hub_tf1", "tflite"):
        role = "classification" if info.get("num_classes") else "feature_vector"
        return [(role, export_dir, f"{module_name}/{'tf1' if fmt == 'hub_tf1' else fmt}/{role}")]
    found = [(role, os.path.join(export_dir, role), f"{module_name}/{role}") for role in TF2_MODULES
             if os.path.isdir(os.path.join(export_dir, role))]
    if not found:
        raise ValueError(f"{export_dir!r} has none of the module folders {list(TF2_MODULES)}")
    return found


def _allowed(path: str) -> bool:
    return any(fnmatch.fnmatchcase(path, pattern) for pattern in ALLOWED_PATHS)


def archive_members(module_dir: str) -> Tuple[List[str], List[str]]:
    """(members, left out): the files and folders of ``module_dir`` the hub accepts, sorted."""
    members, left_out = [], []
    for root, dirs, files in os.walk(module_dir):
        dirs.sort()
        rel_root = os.path.relpath(root, module_dir).replace(os.sep, "/")
        for name in sorted(dirs):
            rel = name if rel_root == "." else f"{rel_root}/{name}"
            if rel in ALLOWED_DIRS:
                members.append(rel)
        for name in sorted(files):
            rel = name if rel_root == "." else f"{rel_root}/{name}"
            if _allowed(rel) and PATH_PATTERN.fullmatch(rel):
                members.append(rel)
            else:
                left_out.append(rel)
    if "saved_model.pb" not in members:
        raise ValueError(f"{module_dir!r} has no saved_model.pb: not a SavedModel")
    return sorted(members), sorted(left_out)


def write_archive(module_dir: str, members: List[str], path: str) -> None:
    """A reproducible ``.tar.gz`` of ``members``, written to a temporary name and renamed."""
    partial = f"{path}.partial"
    try:
        with open(partial, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=6,
                                                        mtime=ARCHIVE_MTIME) as zipped, \
                tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for name in members:
                source = os.path.join(module_dir, name)
                entry = tarfile.TarInfo(name)
                entry.mtime, entry.uid, entry.gid, entry.uname, entry.gname = ARCHIVE_MTIME, 0, 0, "", ""
                if os.path.isdir(source):
                    entry.type, entry.mode = tarfile.DIRTYPE, 0o755
                    tar.addfile(entry)
                else:
                    entry.size, entry.mode = os.path.getsize(source), 0o644
                    with open(source, "rb") as f:
                        tar.addfile(entry, f)
        os.replace(partial, path)
    except BaseException:
        if os.path.exists(partial):
            os.remove(partial)
        raise


def check_archive(path: str) -> List[str]:
    """The hub validator's smoke test of an asset (SavedModelParsingPolicy._check_valid_remote_asset):
    a readable tar.gz, every file at an allowed path with a valid name, a saved_model.pb that parses.
    Returns the member names; raises DocumentationError naming the rule."""

    names, parsed = [], False
    try:
        with tarfile.open(path, mode="r|gz") as tar:
            for member in tar:
                names.append(member.name)
                if not member.isfile():
                    continue
                rel = os.path.normpath(member.name).replace(os.sep, "/")
                if not PATH_PATTERN.fullmatch(rel):  # validator _validate_file_name
                    raise DocumentationError("archive-file-name", f"invalid file path in {path}: {member.name!r}")
                if not _allowed(rel):
                    raise DocumentationError("archive-file-name", f"{member.name!r} in {path} cannot be used by a "
                                             f"SavedModel; allowed: {list(ALLOWED_PATHS)}")
                if os.path.basename(rel) == "saved_model.pb":
                    try:
                        saved_model_pb2.SavedModel.FromString(tar.extractfile(member).read())
                    except Exception as err:  # google.protobuf DecodeError
                        raise DocumentationError("archive-saved-model", f"saved_model.pb in {path} does not "
                                                 f"parse: {err}") from err
                    parsed = True
    except tarfile.TarError as err:
        raise DocumentationError("archive-read", f"{path} is not a readable tar.gz: {err}") from err
    if not parsed:
        raise DocumentationError("archive-saved-model", f"{path} holds no saved_model.pb")
    return names


def signatures_of(module_dir: str) -> Dict[str, Dict[str, List[str]]]:
    """Tag set (comma-joined, '' for {}) -> signature -> output keys ('default' first), read from
    the module's saved_model.pb."""

    with open(os.path.join(module_dir, "saved_model.pb"), "rb") as f:
        proto = saved_model_pb2.SavedModel.FromString(f.read())
    result = {}
    for meta_graph in proto.meta_graphs:
        tags = ",".join(sorted(meta_graph.meta_info_def.tags))
        result[tags] = {name: sorted(sig.outputs, key=lambda k: (k != "default", k))
                        for name, sig in meta_graph.signature_def.items() if not name.startswith("__")}
    return result


def publish(export_dir: Union[str, Sequence[str]], publish_dir: Optional[str] = None, *,
            owner: Optional[str] = None, publisher: Optional[str] = None, module_name: Optional[str] = None,
            version: int = 1, license: str = "apache-2.0", private: bool = True, tfhub_docs: bool = False,
            overwrite: bool = False) -> List[PublishedModule]:
    """Writes the Kaggle Models upload tree of every hub module of ``export_dir`` (see the module
    docstring); a list of export directories (e.g. the hub and hub_tf1 exports of one model) goes
    into one ``publish_dir``.

    owner: the Kaggle owner slug (default ``publisher``); module_name: default the variant
    (``export_info.json`` model_name), the Kaggle model slug is made from it. With ``tfhub_docs``
    also the tfhub.dev archives and pages (``publisher``, ``version``), each page checked with
    module_docs.check and each archive with check_archive. The tree passes
    kaggle_models.check_tree before ``publish_dir`` is renamed into place; nothing is left on failure.
    """

    owner = owner or publisher
    check_kaggle_request(owner, license)
    export_dirs = [export_dir] if isinstance(export_dir, (str, os.PathLike)) else list(export_dir)
    export_dirs = [os.path.abspath(os.fspath(d)) for d in export_dirs]
    if not export_dirs or (publish_dir is None and len(export_dirs) > 1):
        raise ValueError(f"Give one export dir, or several and a publish_dir; got {export_dir!r}, {publish_dir!r}")
    publish_dir = publish_dir or default_publish_dir(export_dirs[0])
    jobs = []
    for directory in export_dirs:
        info = read_info(directory)
        name = module_name or info["model_name"]
        check_request(info.get("format") if info.get("format") != "tflite" else "hub",  # tflite: Kaggle only
                      publisher if tfhub_docs else owner, name, version, license, publish_dir, overwrite)
        jobs += [(info, *module) for module in modules_of(directory, info, name)]
    handles = [name for _, _, _, name in jobs]
    if len(set(handles)) != len(handles):
        raise ValueError(f"Two exports give the same module names {sorted(handles)}")
    model_slug = kaggle_slug(module_name or jobs[0][0]["model_name"])
    published = []
    with atomic_export_dir(publish_dir, overwrite) as staging:
        with step(f"publish: writing the Kaggle Models tree of {owner}/{model_slug}"):
            variations = write_kaggle_tree(jobs, staging, owner, model_slug, license, private)
        if tfhub_docs:
            docs_root = os.path.join(staging, "docs")
            os.makedirs(os.path.join(docs_root, publisher))
            os.makedirs(os.path.join(staging, "archives"))
            with open(os.path.join(docs_root, publisher, f"{publisher}.md"), "w", encoding="utf-8") as f:
                f.write(module_docs.publisher_page(publisher))
        for (info, role, module_dir, name), variation in zip(jobs, variations):
            item = PublishedModule(f"{publisher}/{name}/{version}", module_docs.HUB_FORMAT.get(info["format"], "tflite"), role,
                                   module_dir, None, None, [], [], 0, variation["handle"],
                                   os.path.join(publish_dir, variation["framework"], variation["slug"]))
            if tfhub_docs and info["format"] in PUBLISHABLE_FORMATS:
                with step(f"publish: packaging {publisher}/{name}/{version}"):
                    item.members, item.left_out = archive_members(module_dir)
                    archive_name = f"{publisher}-{name.replace('/', '-')}-{version}.tar.gz"
                    archive = os.path.join(staging, "archives", archive_name)
                    write_archive(module_dir, item.members, archive)
                    check_archive(archive)
                    page = module_docs.ModulePage(publisher, name, version, info["format"], role, archive_name,
                                                  license, info, signatures_of(module_dir))
                    doc = os.path.join(docs_root, publisher, "models", *name.split("/"), f"{version}.md")
                    os.makedirs(os.path.dirname(doc), exist_ok=True)
                    text = module_docs.render(page)
                    module_docs.check(text, doc, docs_root)
                    with open(doc, "w", encoding="utf-8") as f:
                        f.write(text)
                item.archive_bytes = os.path.getsize(archive)
                item.archive = os.path.join(publish_dir, os.path.relpath(archive, staging))  # after the rename
                item.doc = os.path.join(publish_dir, os.path.relpath(doc, staging))
            published.append(item)
    return published


def summary(published: List[PublishedModule]) -> str:
    """What ``publish`` wrote, for the console."""
    lines = [f"Published {len(published)} module(s) as Kaggle Models variations (the tree passes "
             "export.kaggle_models.check_tree; upload: python -m export.publish upload DIR):"]
    for item in published:
        lines.append(f"  {item.kaggle_handle}: {item.variation_dir}")
    for item in published:
        if item.archive:
            lines.append(f"  tfhub.dev {item.handle} ({item.format}): {item.archive} ({item.archive_bytes / 2**20:.1f} "
                         f"MiB, {len(item.members)} members), page {item.doc}")
    return "\n".join(lines)



# ----------------------------------------------------------------------------- upload
# How long the reachability probe waits: kagglesdk's HTTP client sets no timeout, so without the
# probe a network that drops packets (rather than failing DNS) would hang the first request.
PROBE_TIMEOUT = 10.0
# The sources both clients read (kagglehub config.get_kaggle_credentials, kaggle KaggleApi.authenticate);
# `kaggle auth login` (OAuth) is not one: kagglehub, which uploads the files, does not read it.
CREDENTIALS_HELP = ("set KAGGLE_USERNAME and KAGGLE_KEY (or KAGGLE_API_TOKEN), or put kaggle.json (from "
                    "kaggle.com/settings, 'Create New Token') in ~/.kaggle or $KAGGLE_CONFIG_DIR")


class UploadError(RuntimeError):
    """An upload did not happen, or not all of it; the message names the variation and the step
    that failed, ``uploaded`` holds what was uploaded before (the message lists it too)."""

    def __init__(self, message: str, uploaded: Sequence["Uploaded"] = ()):
        done = (f"uploaded before: {', '.join(u.handle for u in uploaded)}" if uploaded
                else "no variation was uploaded")
        super().__init__(f"{message}; {done}.")
        self.uploaded = list(uploaded)


@dataclasses.dataclass
class Uploaded:
    """One variation uploaded (files and metadata)."""

    handle: str  # OWNER/MODEL/FRAMEWORK/VARIATION
    action: str  # "created" (its first version) or "new version"
    version: int  # Kaggle's current version number after the upload (0: Kaggle did not say)
    files: List[str]
    size: int  # bytes
    version_notes: str  # sent with a new version (Kaggle takes none for the first one)


@dataclasses.dataclass
class UploadReport:
    """What ``upload`` did: the model (card) and each variation."""

    model: str  # OWNER/MODEL
    model_action: str  # "created" or "updated"
    variations: List[Uploaded]


def credentials_source() -> Optional[str]:
    """Where the Kaggle clients will find credentials (an environment variable or a file), or None;
    reads no network. Raises UploadError for a kaggle.json that does not parse."""
    from kagglehub.config import get_kaggle_credentials
    from kagglesdk.kaggle_env import get_access_token_from_env

    try:
        found = get_kaggle_credentials()  # KAGGLE_API_TOKEN, ~/.kaggle/access_token, KAGGLE_USERNAME/KEY, kaggle.json
    except ValueError as err:  # a kaggle.json without username/key, or not JSON
        raise UploadError(f"Bad Kaggle credentials: {err}") from err
    if found is None:
        return None
    token, where = get_access_token_from_env()
    if token:
        return "KAGGLE_API_TOKEN" if where == "KAGGLE_API_TOKEN" else "~/.kaggle/access_token"
    if os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY"):
        return "KAGGLE_USERNAME/KAGGLE_KEY"
    return "kaggle.json"


def kaggle_endpoint() -> str:
    """The URL of the Kaggle API the clients talk to (kagglesdk's endpoint for KAGGLE_API_ENVIRONMENT)."""
    from kagglesdk.kaggle_env import get_endpoint, get_env

    return get_endpoint(get_env())


def check_reachable(timeout: float = PROBE_TIMEOUT) -> None:
    """One HTTP request to the Kaggle API host, through the proxies the clients would use; any
    answer will do. UploadError naming the host when none comes within ``timeout`` seconds."""
    import urllib.parse

    import requests

    url = kaggle_endpoint()
    proxy = requests.utils.get_environ_proxies(url).get(urllib.parse.urlsplit(url).scheme)
    host = urllib.parse.urlsplit(url).netloc + (f" (through the proxy {proxy})" if proxy else "")
    try:
        requests.head(url, timeout=timeout, allow_redirects=False).close()
    except requests.exceptions.Timeout as err:
        raise UploadError(f"Cannot reach {host}: no answer within {timeout:g} s (no network?)") from err
    except requests.exceptions.RequestException as err:  # no DNS, refused, a proxy that fails
        raise UploadError(f"Cannot reach {host} (no network?): {err}") from err


def _host_of(error: BaseException) -> str:
    match = re.search(r"host='([^']+)'", str(error))
    return match.group(1) if match else "the Kaggle API"


def _describe(error: BaseException) -> str:
    """A failed call in a few words: the host for connection errors, Kaggle's answer otherwise."""
    import requests

    if isinstance(error, requests.exceptions.ConnectionError):
        return f"cannot reach {_host_of(error)} (no network?)"
    response = getattr(error, "response", None)
    status = f"HTTP {response.status_code}: " if response is not None else ""
    return f"{status}{error}"


def _status(error: BaseException) -> Optional[int]:
    response = getattr(error, "response", None)
    return getattr(response, "status_code", None)


def _metadata_dir(parent: str, name: str, data: Dict) -> str:
    """A folder holding only ``name`` with ``data``: what the kaggle client reads metadata from."""
    directory = tempfile.mkdtemp(dir=parent)
    with open(os.path.join(directory, name), "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
    return directory


def _kaggle_api(source: str):
    """An authenticated ``kaggle.KaggleApi``; UploadError when it takes none of the credentials
    (``source``: where ours were found)."""
    import contextlib
    import io

    # `import kaggle` authenticates a module-level client and prints a help text when it finds no
    # credentials (kaggle/__init__.py); ours are checked before, the text is not for our users.
    with contextlib.redirect_stdout(io.StringIO()):
        from kaggle.api.kaggle_api_extended import KaggleApi

        api = KaggleApi()
        try:
            api.authenticate()
        except SystemExit as err:  # authenticate() exits when no method works
            raise UploadError(f"The kaggle client did not accept the credentials from {source} (an expired "
                              f"KAGGLE_API_TOKEN?): {CREDENTIALS_HELP}") from err
    return api


def _check_response(result, what: str) -> None:
    error = getattr(result, "error", "")
    if error:
        raise RuntimeError(f"Kaggle answered to {what}: {error}")


def _exists(get, name: str) -> bool:
    """Whether ``get(name)`` (KaggleApi.model_get / model_instance_get) finds it; 404 and 403 say
    no (kagglehub's create_model_if_missing treats 403 as missing too)."""
    import requests

    try:
        get(name)
        return True
    except requests.exceptions.HTTPError as err:
        if _status(err) in (403, 404):
            return False
        raise


def _upload_card(api, model: Dict, scratch: str, log) -> str:
    """Creates the model with its card, or updates the card; returns "created" or "updated"."""
    handle, stage, action = f"{model['ownerSlug']}/{model['slug']}", "checking whether it exists", "created"
    try:
        if _exists(api.model_get, handle):
            action, stage = "updated", "updating its card"
            log(f"upload: model {handle} exists: updating its card")
            card = {k: v for k, v in model.items() if k != "isPrivate"}  # keep the visibility chosen on Kaggle
            _check_response(api.model_update(_metadata_dir(scratch, kaggle_models.MODEL_METADATA, card)), stage)
        else:
            stage = "creating it"
            log(f"upload: creating model {handle} ({'private' if model['isPrivate'] else 'public'}) with its card")
            _check_response(api.model_create_new(_metadata_dir(scratch, kaggle_models.MODEL_METADATA, model)), stage)
    except Exception as err:  # requests' errors, kaggle's ValueError, _check_response's RuntimeError
        raise UploadError(f"model {handle}: {stage} failed: {_describe(err)}") from err
    return action


def _upload_variation(api, handle: str, directory: str, variation: Dict, instance: Dict, scratch: str,
                      log, done: List[Uploaded], position: str = "") -> Uploaded:
    """Uploads one variation's files (first or new version) and applies its metadata."""
    import kagglehub

    files = variation["files"]
    size = sum(os.path.getsize(os.path.join(directory, name)) for name in files)
    stage = "checking whether it exists"
    try:
        action = "new version" if _exists(api.model_instance_get, handle) else "created"
        log(f"upload: {position}{handle}: uploading {len(files)} files ({size / 2**20:.1f} MiB) as "
            f"{'its first version' if action == 'created' else 'a new version'}")
        stage = "uploading its files"
        # kagglehub keeps sub-folders (the request's `directories`); kaggle_api_extended.py
        # upload_files skips them or sends each as one archive (dir_mode), not hub.load's layout.
        kagglehub.model_upload(handle, directory, license_name=instance["licenseName"],
                               version_notes=variation["version_notes"],
                               ignore_patterns=list(kaggle_models.UPLOAD_IGNORE))
        stage = "applying model-instance-metadata.json (its files were uploaded)"
        _check_response(api.model_instance_update(_metadata_dir(scratch, kaggle_models.INSTANCE_METADATA, instance)),
                        "the metadata update")
    except Exception as err:  # requests' errors, kagglehub's BackendError / KaggleApiHTTPError, kaggle's
        raise UploadError(f"variation {handle}: {stage} failed: {_describe(err)}", done) from err
    try:
        version = int(api.model_instance_get(handle).version_number or 0)
    except Exception:  # everything is uploaded; only the number is unknown
        version = 0
    log(f"upload: {position}{handle}: {action}, version {version or '?'}")
    return Uploaded(handle, action, version, files, size, variation["version_notes"] if action == "new version" else "")


def upload(tree: str, owner: Optional[str] = None, model_slug: Optional[str] = None,
           log=None) -> UploadReport:
    """Uploads a tree written by ``publish``: creates the model with its card from
    model-metadata.json (or updates the card, keeping the model's visibility, when it exists), then
    per variation uploads its files as the first version or a new version (with the manifest's
    version notes; kagglehub, which keeps sub-folders such as ``variables/``) and applies its
    model-instance-metadata.json (overview, usage, license, fineTunable, trainingData; the kaggle
    client). ``owner``/``model_slug`` default to the tree's. ``log`` gets one progress line per
    step (default: stderr).

    Raises:
      ImportError: kaggle or kagglehub is not installed.
      TreeError: the tree breaks a rule (nothing is uploaded).
      ValueError: a bad owner or model slug.
      UploadError: no credentials, no network, or Kaggle refused: names the variation and the step
        that failed and lists the variations uploaded before it.
    """
    import importlib.util
    import logging

    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    missing = [name for name in ("kaggle", "kagglehub") if importlib.util.find_spec(name) is None]
    if missing:
        raise ImportError(f"Uploading needs {' and '.join(missing)}: pip install efficientnet_tf[kaggle]")
    manifest = kaggle_models.check_tree(tree)
    with open(os.path.join(tree, kaggle_models.MODEL_METADATA), encoding="utf-8") as f:
        model = json.load(f)
    model.update(ownerSlug=owner or model["ownerSlug"], slug=model_slug or model["slug"])
    check_kaggle_request(model["ownerSlug"], "apache-2.0")
    if not kaggle_models.SLUG.fullmatch(model["slug"]):
        raise ValueError(f"Bad model slug {model['slug']!r}: lowercase letters, digits and '-'")
    source = credentials_source()
    if source is None:
        raise UploadError(f"No Kaggle credentials: {CREDENTIALS_HELP}")
    check_reachable()
    api = _kaggle_api(source)
    logging.getLogger("kagglehub").setLevel(logging.WARNING)  # its per-file lines; ours are per variation

    done: List[Uploaded] = []
    with tempfile.TemporaryDirectory(prefix="efficientnet_tf-upload-") as scratch:
        model_action = _upload_card(api, model, scratch, log)
        for number, variation in enumerate(manifest["variations"], 1):
            framework, slug = variation["framework"], variation["slug"]
            directory = os.path.join(tree, framework, slug)
            with open(os.path.join(directory, kaggle_models.INSTANCE_METADATA), encoding="utf-8") as f:
                instance = {**json.load(f), "ownerSlug": model["ownerSlug"], "modelSlug": model["slug"]}
            handle = f"{model['ownerSlug']}/{model['slug']}/{framework}/{slug}"
            done.append(_upload_variation(api, handle, directory, variation, instance, scratch, log, done,
                                          f"[{number}/{len(manifest['variations'])}] "))
    return UploadReport(f"{model['ownerSlug']}/{model['slug']}", model_action, done)


def upload_summary(report: UploadReport) -> str:
    """What ``upload`` did, for the console."""
    lines = [f"Uploaded to Kaggle Models: model {report.model} ({report.model_action}, card from "
             f"{kaggle_models.MODEL_METADATA}), {len(report.variations)} variation(s):"]
    for item in report.variations:
        notes = f"; notes: {item.version_notes}" if item.version_notes else ""
        lines.append(f"  {item.handle}: {item.action}, version {item.version or '?'}, {len(item.files)} files "
                     f"({item.size / 2**20:.1f} MiB), overview/usage/license/fineTunable/trainingData set{notes}")
    lines.append(f"  https://www.kaggle.com/models/{report.model}")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m export.publish upload DIR [--owner=NAME] [--model_slug=SLUG]``."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m export.publish", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    command = commands.add_parser("upload", help="upload a Kaggle Models tree written by --publish")
    command.add_argument("dir", help="the publish directory (EXPORT_DIR-publish)")
    command.add_argument("--owner", default=None, help="Kaggle user or organization slug; default: the tree's ownerSlug")
    command.add_argument("--model_slug", default=None, help="default: the tree's model-metadata.json slug")
    args = parser.parse_args(argv)
    try:
        report = upload(args.dir, args.owner, args.model_slug)
    except (UploadError, ImportError, ValueError) as err:
        print(f"upload failed: {err}", file=sys.stderr)
        return 1
    print(upload_summary(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
