"""House rules on imports that import-linter does not check (its contracts are in .importlinter):
the project's own modules are imported at module level, so the dependency graph is the real one,
and no module reaches into another's private names."""

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGES = ("efficientnet_tf", "export", "train", "bench")
# bench's parent and worker processes each load one runtime (TensorFlow, OpenVINO, ONNX Runtime,
# torch) and no other: in one process they crashed or slowed each other (docs/performance.md).
RUNTIME_ISOLATED = {"bench/workers.py", "bench/common.py", "bench/stages.py", "bench/profile.py"}


def _sources():
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            yield path.relative_to(ROOT).as_posix(), ast.parse(path.read_text(), str(path))


def _ours(module):
    return bool(module) and module.split(".")[0] in PACKAGES


def _imported_module(node):
    return node.module if isinstance(node, ast.ImportFrom) else node.names[0].name


def test_own_modules_are_imported_at_module_level():
    found = []
    for name, tree in _sources():
        if name in RUNTIME_ISOLATED:
            continue
        for function in ast.walk(tree):
            if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(function):
                if isinstance(node, (ast.Import, ast.ImportFrom)) and _ours(_imported_module(node)):
                    found.append(f"{name}:{node.lineno} in {function.name}(): {ast.unparse(node)}")
    assert not found, "function-level imports of the project's own modules:\n" + "\n".join(found)


def test_no_module_imports_another_modules_private_names():
    found = []
    for name, tree in _sources():
        aliases = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and _ours(node.module):
                for alias in node.names:
                    if alias.name.startswith("_") and not alias.name.startswith("__"):
                        found.append(f"{name}:{node.lineno}: from {node.module} import {alias.name}")
                    aliases.add(alias.asname or alias.name)
            elif isinstance(node, ast.Import):
                aliases.update(a.asname or a.name for a in node.names if _ours(a.name))
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in aliases and node.attr.startswith("_")
                    and not node.attr.startswith("__")):
                found.append(f"{name}:{node.lineno}: {node.value.id}.{node.attr}")
    assert not found, "private names used across modules:\n" + "\n".join(found)
