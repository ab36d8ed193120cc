"""Entry point of every pytest_test target: runs pytest on the given files.

Bazel's py_test runs a single script; the project's tests are plain pytest
functions, so this runner hands the test files (passed as arguments by the
pytest_test macro) to pytest and maps Bazel's test environment onto pytest:
XML_OUTPUT_FILE -> --junitxml, TESTBRIDGE_TEST_ONLY (--test_filter) -> -k,
TEST_TMPDIR -> HOME, TMPDIR and pytest's --basetemp. It also switches off
editable installs (`pip install -e .`, as scripts/setup.sh does in .venv):
their import hook would load the project from the source tree whenever a
module is missing from the runfiles, hiding a missing BUILD dependency.

A leading --allow-no-tests (added by pytest_test for the two halves of a
split_slow target) turns pytest's "no tests collected" exit code into a
pass: a file without slow tests has an empty "_slow" half, and vice versa.
"""

import os
import sys

import pytest


def sandbox_environ(environ):
    """Returns the variables to set so nothing writes outside TEST_TMPDIR.

    Under Bazel's sandbox HOME is unset (so "~" is the read-only real home)
    and TMPDIR is the shared /tmp; keras (~/.keras), tfds and pytest's
    tmp_path would write there. TEST_TMPDIR is private and deleted by Bazel.
    """
    test_tmpdir = environ.get("TEST_TMPDIR")
    if not test_tmpdir:
        return {}
    return {"HOME": test_tmpdir, "TMPDIR": test_tmpdir}


def without_editable_hooks(hooks):
    """Returns `hooks` (sys.meta_path or sys.path_hooks) minus setuptools'
    editable-install finders, which live in modules named __editable___*."""
    return [h for h in hooks
            if not getattr(h, "__module__", "").startswith("__editable___")]


def pytest_args(argv, environ):
    """Builds pytest's argument list from our argv and Bazel's environment."""
    # No .pytest_cache inside the (read-only, symlinked) runfiles tree.
    args = ["-p", "no:cacheprovider", "-ra"]
    xml_output = environ.get("XML_OUTPUT_FILE")
    if xml_output:
        args.append("--junitxml=" + xml_output)
    test_filter = environ.get("TESTBRIDGE_TEST_ONLY")
    if test_filter:
        args += ["-k", test_filter]
    test_tmpdir = environ.get("TEST_TMPDIR")
    if test_tmpdir:
        args.append("--basetemp=" + os.path.join(test_tmpdir, "pytest"))
    return args + list(argv)


ALLOW_NO_TESTS = "--allow-no-tests"


def exit_code(pytest_code, allow_no_tests):
    """Bazel's verdict for pytest's exit code."""
    if allow_no_tests and pytest_code == pytest.ExitCode.NO_TESTS_COLLECTED:
        return 0
    return int(pytest_code)


def main():
    argv = sys.argv[1:]
    allow_no_tests = bool(argv) and argv[0] == ALLOW_NO_TESTS
    if allow_no_tests:
        argv = argv[1:]
    os.environ.update(sandbox_environ(os.environ))
    sys.meta_path[:] = without_editable_hooks(sys.meta_path)
    sys.path_hooks[:] = without_editable_hooks(sys.path_hooks)
    sys.path_importer_cache.clear()
    return exit_code(pytest.main(pytest_args(argv, os.environ)), allow_no_tests)


if __name__ == "__main__":
    sys.exit(main())
