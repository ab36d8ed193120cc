"""Tests for pytest_runner: the mapping from Bazel's test env to pytest."""

import os
import sys

import pytest

import pytest_runner


def test_args_outside_bazel_are_only_the_files():
    args = pytest_runner.pytest_args(["tests/test_a.py"], {})
    assert args == ["-p", "no:cacheprovider", "-ra", "tests/test_a.py"]


def test_args_map_bazel_env_to_pytest_options():
    env = {
        "XML_OUTPUT_FILE": "/out/test.xml",
        "TESTBRIDGE_TEST_ONLY": "test_round",
        "TEST_TMPDIR": "/t",
    }
    args = pytest_runner.pytest_args(["-m", "not slow", "tests/test_a.py"], env)
    assert "--junitxml=/out/test.xml" in args
    assert args[args.index("-k") + 1] == "test_round"
    assert "--basetemp=/t/pytest" in args
    # Our own arguments come last, in order, so pytest sees the files.
    assert args[-3:] == ["-m", "not slow", "tests/test_a.py"]


def test_sandbox_environ_points_home_and_tmp_at_test_tmpdir():
    assert pytest_runner.sandbox_environ({}) == {}
    assert pytest_runner.sandbox_environ({"TEST_TMPDIR": "/t"}) == {
        "HOME": "/t",
        "TMPDIR": "/t",
    }


def test_no_tests_collected_passes_only_when_allowed():
    no_tests = pytest.ExitCode.NO_TESTS_COLLECTED
    assert pytest_runner.exit_code(no_tests, allow_no_tests=True) == 0
    assert pytest_runner.exit_code(no_tests, allow_no_tests=False) == 5
    failed = pytest.ExitCode.TESTS_FAILED
    assert pytest_runner.exit_code(failed, allow_no_tests=True) == 1
    assert pytest_runner.exit_code(pytest.ExitCode.OK, allow_no_tests=False) == 0


def test_editable_install_finders_are_removed():
    editable = type("_EditableFinder", (), {"__module__": "__editable___pkg_0_1_finder"})
    other = type("PathFinder", (), {"__module__": "importlib._bootstrap_external"})
    assert pytest_runner.without_editable_hooks([other, editable]) == [other]


def test_runs_inside_bazel_with_private_home():
    # Under `bazel test` the runner has already redirected HOME and TMPDIR
    # and dropped editable-install hooks.
    test_tmpdir = os.environ.get("TEST_TMPDIR")
    if not test_tmpdir:
        pytest.skip("only meaningful under `bazel test`")
    assert os.environ["HOME"] == test_tmpdir
    assert os.path.expanduser("~") == test_tmpdir
    assert not [h for h in sys.meta_path + sys.path_hooks
                if getattr(h, "__module__", "").startswith("__editable___")]
