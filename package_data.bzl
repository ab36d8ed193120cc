# The package data of efficientnet_tf (paths inside the package), stated once:
# efficientnet_tf/BUILD.bazel globs it for the py_library, setup.py reads this list
# (ast.literal_eval) for package_data.
# //tests:packaging_test checks that the wheel and the Bazel target ship the same files.
PACKAGE_DATA = [
    "data/*.txt",
    "data/*.json",
]
