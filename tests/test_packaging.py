"""The wheel, the Bazel targets and the source tree ship the same files.

For each packaged top-level package (efficientnet_tf, export, train) three
file lists must agree:
  source: the files under <package>/ in the source tree (minus BUILD files
          and Python caches);
  wheel:  the files under <package>/ in the wheel `pip wheel .` builds from
          a copy of the source tree (setup.py: find_packages + package_data);
  bazel:  the files under <package>/ in this test's runfiles, i.e. the srcs
          and data of the py_library targets //tests:packaging_test depends
          on (only under `bazel test`; skipped under plain pytest).
A data file added to the tree but not to setup.py's package_data, or not to a
BUILD target's data glob, fails here and names the file. Not shipped anywhere,
and so not compared: BUILD files and a directory's README.md (documentation
for people reading the source, e.g. third_party/README.md).
"""

import configparser
import os
import shutil
import subprocess
import sys
import zipfile

import pytest

WORKSPACE = "efficientnet_tf_repo"  # workspace(name = ...) in WORKSPACE
PACKAGES = ("efficientnet_tf", "export", "train")
# Package data that must be in every distribution (labels for predictions).
REQUIRED_DATA = ("efficientnet_tf/data/imagenet_labels.txt",
                 "efficientnet_tf/data/imagenet_synsets.txt")
# Never copied into the wheel's build tree: VCS data, environments, build
# outputs and Bazel's convenience symlinks (copytree would follow them).
_IGNORE = shutil.ignore_patterns(".git", ".venv", "venv", "bazel-*", "build", "dist",
                                 "*.egg-info", "__pycache__", "*.pyc", ".pytest_cache")
_NOT_PACKAGED = ("BUILD", "BUILD.bazel", "README.md")


def _package_files(root):
    """Relative paths of the files under root/<package> for every package."""
    files = set()
    for package in PACKAGES:
        for dirpath, dirnames, filenames in os.walk(os.path.join(root, package)):
            dirnames[:] = [d for d in dirnames if d != "__pycache__"]
            files.update(os.path.relpath(os.path.join(dirpath, f), root)
                         for f in filenames
                         if not f.endswith(".pyc") and f not in _NOT_PACKAGED)
    return files


def _runfiles_root():
    """This workspace's directory in the runfiles tree, or None outside Bazel."""
    runfiles = os.environ.get("RUNFILES_DIR")
    return os.path.join(runfiles, WORKSPACE) if runfiles else None


def _source_root():
    runfiles = _runfiles_root()
    if runfiles:  # runfiles are symlinks into the source tree
        return os.path.dirname(os.path.realpath(os.path.join(runfiles, "setup.py")))
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _diff(name_a, a, name_b, b):
    return f"only in {name_a}: {sorted(a - b)}; only in {name_b}: {sorted(b - a)}"


@pytest.fixture(scope="module")
def source_root():
    return _source_root()


@pytest.fixture(scope="module")
def wheel(source_root, tmp_path_factory):
    """Path of the wheel built (no dependencies, no network) from a copy of the tree."""
    # A copy: an in-tree build writes build/ and *.egg-info into the source
    # tree, which is read-only under Bazel and shared with other users here.
    tmp = tmp_path_factory.mktemp("wheel")
    tree = tmp / "src"
    shutil.copytree(source_root, tree, ignore=_IGNORE)
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
         "--disable-pip-version-check", "-q", "-w", str(tmp / "dist"), str(tree)],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (path,) = (tmp / "dist").glob("*.whl")
    return path


@pytest.fixture(scope="module")
def wheel_names(wheel):
    with zipfile.ZipFile(wheel) as z:
        return z.namelist()


def test_wheel_holds_exactly_the_packages(wheel_names):
    top = {n.split("/", 1)[0] for n in wheel_names if ".dist-info/" not in n}
    assert top == set(PACKAGES), f"wheel top level {sorted(top)}, expected {sorted(PACKAGES)}"


def test_wheel_matches_source_tree(source_root, wheel_names):
    source = _package_files(source_root)
    wheel = {n for n in wheel_names if n.split("/", 1)[0] in PACKAGES}
    assert wheel == source, _diff("wheel", wheel, "source tree", source)
    assert set(REQUIRED_DATA) <= wheel, f"missing package data: {sorted(set(REQUIRED_DATA) - wheel)}"


def test_console_script_module_is_packaged(wheel, wheel_names):
    """The efficientnet-tf script's module is in the wheel (Bazel: //efficientnet_tf:cli)."""
    (entry_points,) = [n for n in wheel_names if n.endswith(".dist-info/entry_points.txt")]
    parser = configparser.ConfigParser()
    with zipfile.ZipFile(wheel) as z:
        parser.read_string(z.read(entry_points).decode())
    scripts = dict(parser["console_scripts"])
    assert scripts == {"efficientnet-tf": "efficientnet_tf.__main__:main"}, scripts
    module = scripts["efficientnet-tf"].split(":")[0]
    assert module.replace(".", "/") + ".py" in wheel_names


def test_bazel_targets_match_wheel(wheel_names):
    runfiles = _runfiles_root()
    if runfiles is None:
        pytest.skip("not under `bazel test`: the Bazel targets are not compared")
    bazel = _package_files(runfiles)
    wheel = {n for n in wheel_names if n.split("/", 1)[0] in PACKAGES}
    assert bazel == wheel, _diff("bazel runfiles", bazel, "wheel", wheel)
