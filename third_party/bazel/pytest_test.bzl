"""pytest_test: a py_test that runs plain pytest functions.

    pytest_test(
        name = "builder_test",
        srcs = ["test_builder.py"],
        deps = ["//efficientnet_tf"],
        split_slow = True,   # also make builder_test_slow (tag "slow")
    )

Each target runs `pytest <srcs>`. With split_slow, `name` runs the tests not
marked @pytest.mark.slow and `name + "_slow"` (tagged "slow", left out of the
default `bazel test //...` by .bazelrc; size `slow_size`, by default
"enormous": a 3600 s timeout) runs the marked ones; either half may
select no test at all (it then passes), so split_slow is safe on any file.
`srcs` are file names in the calling package. Third-party packages
(tensorflow, pytest, ...) come from the interpreter's virtualenv, not Bazel.
"""

_RUNNER = "//third_party/bazel:pytest_runner.py"

def _py_pytest(name, srcs, args, **kwargs):
    pkg = native.package_name()
    files = [(pkg + "/" + s) if pkg else s for s in srcs]
    native.py_test(
        name = name,
        main = _RUNNER,
        srcs = [_RUNNER] + srcs,
        args = args + files,
        python_version = "PY3",
        srcs_version = "PY3",
        **kwargs
    )

def pytest_test(
        name,
        srcs,
        args = [],
        split_slow = False,
        size = "medium",
        slow_size = "enormous",
        tags = [],
        **kwargs):
    """Declares pytest test targets for `srcs` (see the module docstring)."""
    if not split_slow:
        _py_pytest(name, srcs, args, size = size, tags = tags, **kwargs)
        return
    # Bazel splits `args` items like a Bourne shell, hence the inner quotes.
    allow = ["--allow-no-tests"]
    _py_pytest(name, srcs, allow + args + ["-m", "'not slow'"], size = size, tags = tags, **kwargs)
    _py_pytest(
        name + "_slow",
        srcs,
        allow + args + ["-m", "slow"],
        size = slow_size,
        tags = tags + ["slow"],
        **kwargs
    )
