"""cli_smoke_test: runs a binary once and checks its exit status and output.

    cli_smoke_test(
        name = "cli_list_test",
        binary = ":cli",
        args = ["list"],
        expect_output = "efficientnetv2-xl",   # extended regex, no single quotes
    )

The binary runs from the test's runfiles (as `bazel run` would, minus the
working directory), so the test fails when a BUILD dependency or a data file
is missing, or when the module's command line does not parse.
"""

_SCRIPT = "//third_party/bazel:cli_smoke_test.sh"

def cli_smoke_test(name, binary, expect_output, args = [], expect_status = 0, size = "small", **kwargs):
    """Declares an sh_test that runs `binary args` (see the module docstring)."""
    # Bazel expands "$(...)" in args and splits each item like a Bourne
    # shell: escape the regex's "$" and quote it.
    regex = "'" + expect_output.replace("$", "$$") + "'"
    native.sh_test(
        name = name,
        size = size,
        srcs = [_SCRIPT],
        args = [str(expect_status), regex, "$(rootpath %s)" % binary] + args,
        data = [binary],
        **kwargs
    )
