"""The README and every page of docs/ run: each fenced python and bash block is executed, or says
on the line before its fence why it cannot run here (``<!-- not run: REASON -->``)."""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys
import textwrap

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RUNNABLE = ("python", "bash")
# Fences that are shown, never run: listings and outputs.
SHOWN = ("text", "yaml", "json", "console", "")
NOT_RUN = re.compile(r"^<!-- not run: (.+\S) -->$")
# A reason that points at an identical block run on another page (checked, so it cannot go stale).
SAME_BLOCK = re.compile(r"the same block runs in (\S+\.md)")
FENCE = re.compile(r"^(\s*)```(\S*)\s*$")


def blocks(page: pathlib.Path):
    """(language, code, first line number, not-run reason or None) of each fenced block."""
    lines = page.read_text().splitlines()
    found, i = [], 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        indent, language = match.groups()
        end = i + 1
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        if end == len(lines):
            raise ValueError(f"{page.name}:{i + 1}: the ``` fence is never closed")
        code = textwrap.dedent("\n".join(line[len(indent):] if line.startswith(indent) else line
                                         for line in lines[i + 1:end]))
        reason = NOT_RUN.match(lines[i - 1].strip()) if i else None
        found.append((language, code, i + 1, reason.group(1) if reason else None))
        i = end + 1
    return found


def test_every_block_is_run_or_says_why_not():
    problems = []
    for page in PAGES:
        for language, code, line, reason in blocks(page):
            where = f"{page.relative_to(ROOT)}:{line}"
            if language not in RUNNABLE + SHOWN:
                problems.append(f"{where}: fence language {language!r} is neither run "
                                f"({', '.join(RUNNABLE)}) nor a listing ({', '.join(SHOWN[:-1])})")
            if reason and language not in RUNNABLE:
                problems.append(f"{where}: a 'not run' mark on a {language or 'plain'} block, "
                                "which is never run anyway")
            same = SAME_BLOCK.search(reason or "")
            if same and not any(other == (language, code) for other in _run_blocks(same.group(1))):
                problems.append(f"{where}: says the same block runs in {same.group(1)}, "
                                "which runs no identical block")
    assert not problems, "\n".join(problems)


def _run_blocks(relative: str):
    """(language, code) of the blocks ``relative`` (a page path) runs; none if it is no page."""
    page = ROOT / relative
    if page not in PAGES:
        return []
    return [(language, code) for language, code, _, reason in blocks(page)
            if language in RUNNABLE and reason is None]


def test_the_marker_parser_reads_pages_as_written(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("intro\n\n```python\nx = 1\n```\n\n<!-- not run: needs a TPU -->\n```bash\n"
                    "python -m train.main --tpu=x\n```\n\n- item\n  ```text\n  out\n  ```\n")
    assert blocks(page) == [("python", "x = 1", 3, None),
                            ("bash", "python -m train.main --tpu=x", 8, "needs a TPU"),
                            ("text", "out", 13, None)]


def _runnable_pages():
    return [page for page in PAGES
            if any(lang in RUNNABLE and reason is None for lang, _, _, reason in blocks(page))]


# Runs python blocks one after another in one interpreter and namespace, as a reader's session
# would: reads a JSON string (a block) per line, prints a sentinel line after each.
_DRIVER = """
import json, sys, traceback
namespace = {"__name__": "__main__"}
for line in sys.stdin:
    try:
        exec(compile(json.loads(line), "<snippet>", "exec"), namespace)
        status = "ok"
    except BaseException:
        traceback.print_exc()
        status = "failed"
    sys.stdout.flush(); sys.stderr.flush()
    print("\\x00SNIPPET " + status, flush=True)
"""


class _Python:
    def __init__(self, cwd, env, log):
        self.log = log
        self.process = subprocess.Popen([sys.executable, "-u", "-c", _DRIVER], cwd=cwd, env=env,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=log, text=True)

    def run(self, code):
        self.process.stdin.write(json.dumps(code) + "\n")
        self.process.stdin.flush()
        out = []
        for line in self.process.stdout:
            if line.startswith("\x00SNIPPET "):
                return line.split()[1] == "ok", "".join(out)
            out.append(line)
        return False, "".join(out) + "(the interpreter ended)"

    def close(self):
        self.process.stdin.close()
        self.process.wait(timeout=60)


@pytest.mark.integration
@pytest.mark.parametrize("page", _runnable_pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_page_snippets_run(page, tmp_path):
    """A page's blocks run in order in one temporary folder: python blocks in one interpreter
    (they share names), bash blocks with ``bash -e`` between them."""
    env = dict(os.environ, EFFICIENTNET_TF_HOME=str(tmp_path / "cache"), TF_CPP_MIN_LOG_LEVEL="2",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
               PATH=os.pathsep.join([os.path.dirname(sys.executable), os.environ["PATH"]]),
               MPLBACKEND="Agg")
    work = tmp_path / "work"
    work.mkdir()
    log_path = tmp_path / "python-stderr.txt"
    with open(log_path, "w") as log:
        python = _Python(work, env, log)
        try:
            for language, code, line, reason in blocks(page):
                if reason is not None or language not in RUNNABLE:
                    continue
                where = f"{page.relative_to(ROOT)}:{line}"
                if language == "python":
                    ok, out = python.run(code)
                    assert ok, (f"{where}: the python block failed\n--- stdout\n{out[-3000:]}\n"
                                f"--- stderr\n{log_path.read_text()[-5000:]}")
                    continue
                result = subprocess.run(["bash", "-e", "-c", code], cwd=work, env=env,
                                        capture_output=True, text=True, timeout=600)
                assert result.returncode == 0, (
                    f"{where}: the bash block failed (exit {result.returncode})\n--- stdout\n"
                    f"{result.stdout[-3000:]}\n--- stderr\n{result.stderr[-5000:]}")
        finally:
            python.close()


def test_generated_pages_match_the_results():
    from bench import report

    for path, text in report.generated_pages().items():
        with open(path) as f:
            assert f.read() == text, f"{path} is stale: run python -m bench.report"


def test_results_files_name_no_machine_paths():
    found = []
    for path in sorted((ROOT / "bench" / "results").glob("*.json")):
        text = path.read_text()
        found += [f"{path.name}: {m}" for m in re.findall(r'"(/(?:tmp|work|root|home|Users)/[^"]*)"', text)]
        found += [f"{path.name}: {m}" for m in re.findall(r"[ =](/(?:tmp|work|root|home|Users)/\S*)", text)]
    assert not found, "\n".join(found)


def test_the_format_table_lists_exactly_the_formats():
    import export

    text = (ROOT / "docs" / "export.md").read_text()
    rows = re.findall(r"^\| `([a-z0-9_]+)`", text, re.M)
    assert [r.split(" ")[0] for r in rows] == list(export.FORMATS), (
        "docs/export.md's format table must have one row per export.formats.FORMATS entry, in order")
