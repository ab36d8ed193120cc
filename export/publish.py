"""Packages exported hub modules for tfhub.dev / Kaggle Models: one ``.tar.gz`` per module, holding
only the files the hub accepts, and its documentation page (export/module_docs.py).

    from export import publish
    published = publish.publish("out/lite0_hub", "out/lite0_hub-publish", publisher="acme")

Input: an export directory of format ``hub`` (TF2: ``DIR/classification``, ``DIR/feature_vector``)
or ``hub_tf1`` (``DIR`` is the module) and its ``export_info.json``; how the export was dispatched
does not matter. Output (written to a temporary directory, checked, then renamed into place)::

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
import tarfile
from typing import Dict, List, Optional, Sequence, Tuple, Union

from export import module_docs
from export.exporter import INFO_FILENAME
from export.module_docs import DocumentationError

PUBLISHABLE_FORMATS = tuple(module_docs.HUB_FORMAT)  # ("hub_tf1", "hub")
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
    archive: str
    doc: str
    members: List[str]  # archive member names, in order
    left_out: List[str]  # files of the module dir the hub does not accept (not archived)
    archive_bytes: int


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


def read_info(export_dir: str) -> Dict:
    path = os.path.join(export_dir, INFO_FILENAME)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path!r} does not exist: publish takes a directory written by export/")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def modules_of(export_dir: str, info: Dict, module_name: str) -> List[Tuple[str, str, str]]:
    """(role, module dir, hub name) of each module in an export."""
    fmt = info.get("format")
    if fmt not in PUBLISHABLE_FORMATS:
        raise ValueError(f"{export_dir!r} holds format {fmt!r}; publishable: {', '.join(sorted(PUBLISHABLE_FORMATS))}")
    if fmt == "hub_tf1":
        role = "classification" if info.get("num_classes") else "feature_vector"
        return [(role, export_dir, f"{module_name}/tf1/{role}")]
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
    from tensorflow.core.protobuf import saved_model_pb2

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
    from tensorflow.core.protobuf import saved_model_pb2

    with open(os.path.join(module_dir, "saved_model.pb"), "rb") as f:
        proto = saved_model_pb2.SavedModel.FromString(f.read())
    result = {}
    for meta_graph in proto.meta_graphs:
        tags = ",".join(sorted(meta_graph.meta_info_def.tags))
        result[tags] = {name: sorted(sig.outputs, key=lambda k: (k != "default", k))
                        for name, sig in meta_graph.signature_def.items() if not name.startswith("__")}
    return result


def publish(export_dir: Union[str, Sequence[str]], publish_dir: Optional[str] = None, *, publisher: str,
            module_name: Optional[str] = None, version: int = 1, license: str = "apache-2.0",
            overwrite: bool = False) -> List[PublishedModule]:
    """Archives and documents every hub module of ``export_dir`` (see the module docstring); a
    list of export directories (e.g. the hub and hub_tf1 exports of one model) goes into one
    ``publish_dir``.

    module_name: default the variant (``export_info.json`` model_name). Every page is checked with
    module_docs.check (file location and publisher page included) and every archive with
    check_archive before ``publish_dir`` is renamed into place; nothing is left on failure.
    """
    from export.atomic import atomic_export_dir
    from export.progress import step

    export_dirs = [export_dir] if isinstance(export_dir, (str, os.PathLike)) else list(export_dir)
    export_dirs = [os.path.abspath(os.fspath(d)) for d in export_dirs]
    if not export_dirs or (publish_dir is None and len(export_dirs) > 1):
        raise ValueError(f"Give one export dir, or several and a publish_dir; got {export_dir!r}, {publish_dir!r}")
    publish_dir = publish_dir or default_publish_dir(export_dirs[0])
    jobs = []
    for directory in export_dirs:
        info = read_info(directory)
        name = module_name or info["model_name"]
        check_request(info.get("format"), publisher, name, version, license, publish_dir, overwrite)
        jobs += [(info, *module) for module in modules_of(directory, info, name)]
    handles = [name for _, _, _, name in jobs]
    if len(set(handles)) != len(handles):
        raise ValueError(f"Two exports give the same module names {sorted(handles)}")
    published = []
    with atomic_export_dir(publish_dir, overwrite) as staging:
        docs_root = os.path.join(staging, "docs")
        os.makedirs(os.path.join(docs_root, publisher))
        os.makedirs(os.path.join(staging, "archives"))
        with open(os.path.join(docs_root, publisher, f"{publisher}.md"), "w", encoding="utf-8") as f:
            f.write(module_docs.publisher_page(publisher))
        for info, role, module_dir, name in jobs:
            with step(f"publish: packaging {publisher}/{name}/{version}"):
                members, left_out = archive_members(module_dir)
                archive_name = f"{publisher}-{name.replace('/', '-')}-{version}.tar.gz"
                archive = os.path.join(staging, "archives", archive_name)
                write_archive(module_dir, members, archive)
                check_archive(archive)
                page = module_docs.ModulePage(publisher, name, version, info["format"], role, archive_name,
                                              license, info, signatures_of(module_dir))
                doc = os.path.join(docs_root, publisher, "models", *name.split("/"), f"{version}.md")
                os.makedirs(os.path.dirname(doc), exist_ok=True)
                text = module_docs.render(page)
                module_docs.check(text, doc, docs_root)
                with open(doc, "w", encoding="utf-8") as f:
                    f.write(text)
            published.append(PublishedModule(page.handle, page.hub_format, role, module_dir, archive, doc,
                                             members, left_out, os.path.getsize(archive)))
    for item in published:  # the paths after the rename
        item.archive = os.path.join(publish_dir, os.path.relpath(item.archive, staging))
        item.doc = os.path.join(publish_dir, os.path.relpath(item.doc, staging))
    return published


def summary(published: List[PublishedModule]) -> str:
    lines = [f"Published {len(published)} module(s) (pages pass the tfhub.dev validator's rules):"]
    for item in published:
        lines.append(f"  {item.handle} ({item.format}): {item.archive} ({item.archive_bytes / 2**20:.1f} MiB, "
                     f"{len(item.members)} members), page {item.doc}")
    return "\n".join(lines)

