"""The docs' examples run: README.md's and docs/*.md's ``python`` blocks execute, their cheap ``avbench``
commands marked ``<!-- test -->`` exit 0, every page is in mkdocs.yml's nav and README's links resolve.

The convention is written up in docs/contributing.md ("Examples are tests"). Training commands are never
run here (they take minutes); only the cheap ones in CHEAP may be marked.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
PAGES = [REPO / "README.md", *sorted(DOCS.glob("**/*.md"))]

TEST_MARK = "<!-- test -->"
SKIP_MARK = "<!-- no-test -->"
SHELL = {"bash", "sh", "console", "shell"}
# Commands that finish in seconds and touch nothing: the only ones a <!-- test --> block may hold.
CHEAP = re.compile(r"^avbench( -[vq]+)?( --help| --version| list( \S+)?| show( \S+)+| \S+ --help| cache \S+ --help)$")


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # 1-based line of the opening fence
    lang: str
    body: str
    marker: str | None  # the HTML comment on the line just before the fence, if any

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"


def fenced_blocks(page: Path) -> list[Block]:
    """Every ``` fenced block of a Markdown page, with its language and the marker line above it."""
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks, i = [], 0
    while i < len(lines):
        m = re.match(r"^(\s*)(`{3,})\s*([\w+-]*)", lines[i])
        if not m:
            i += 1
            continue
        indent, fence, lang = m.group(1), m.group(2), m.group(3).lower()
        j = i + 1
        while j < len(lines) and not re.match(rf"^\s*{fence}\s*$", lines[j]):
            j += 1
        above = next((lines[k].strip() for k in range(i - 1, -1, -1) if lines[k].strip()), "")
        marker = above if above in (TEST_MARK, SKIP_MARK) else None
        body = "\n".join(line[len(indent):] if line.startswith(indent) else line for line in lines[i + 1:j])
        blocks.append(Block(page, i + 1, lang, body, marker))
        i = j + 1
    return blocks


ALL_BLOCKS = [b for page in PAGES for b in fenced_blocks(page)]
PYTHON = [b for b in ALL_BLOCKS if b.lang in ("python", "py") and b.marker != SKIP_MARK]
COMMANDS = [b for b in ALL_BLOCKS if b.lang in SHELL and b.marker == TEST_MARK]


def commands(block: Block) -> list[str]:
    out = []
    for line in block.body.splitlines():
        line = line.strip()
        if line.startswith("$ "):
            line = line[2:]
        line = re.sub(r"\s+#.*$", "", line) if not line.startswith("#") else ""
        if line:
            out.append(line)
    return out


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MLFLOW_ENABLE_ASYNC_LOGGING="false", MLFLOW_DISABLE_TELEMETRY="true")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def test_the_docs_have_examples_to_run():
    # the extractor itself: the README's plugin example and the contributing page's marked command are found
    assert any(b.page.name == "strategies.md" and "class MeanPool(Strategy)" in b.body for b in PYTHON)
    assert any(commands(b) == ["avbench list"] for b in COMMANDS)


def test_fence_parser_reads_language_marker_and_indented_blocks(tmp_path):
    page = tmp_path / "p.md"
    page.write_text("text\n\n<!-- test -->\n```bash\navbench list   # all\n$ avbench --help\n```\n\n"
                    "1. step\n   ```python\n   x = 1\n   ```\n<!-- no-test -->\n```python\nboom\n```\n")
    blocks = fenced_blocks(page)
    assert [(b.lang, b.marker, b.line) for b in blocks] == [("bash", TEST_MARK, 4), ("python", None, 10),
                                                              ("python", SKIP_MARK, 14)]
    assert commands(blocks[0]) == ["avbench list", "avbench --help"]
    assert blocks[1].body == "x = 1"


@pytest.mark.parametrize("block", PYTHON, ids=lambda b: b.where)
def test_python_example_runs(block, tmp_path):
    script = tmp_path / "example.py"
    script.write_text(block.body + "\n", encoding="utf-8")
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=_env(), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, f"{block.where} failed:\n{proc.stderr[-3000:]}"


@pytest.mark.parametrize("block", COMMANDS, ids=lambda b: b.where)
def test_marked_command_is_cheap_and_exits_0(block, tmp_path):
    cmds = commands(block)
    assert cmds, f"{block.where}: a <!-- test --> block with no command"
    for cmd in cmds:
        assert CHEAP.match(cmd), f"{block.where}: {cmd!r} is not a cheap command (see docs/contributing.md)"
        argv = [sys.executable, "-m", "avbench", *shlex.split(cmd)[1:]]
        proc = subprocess.run(argv, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, f"{block.where}: {cmd} exited {proc.returncode}:\n{proc.stderr[-3000:]}"
        assert proc.stdout.strip(), f"{block.where}: {cmd} printed nothing"


def test_cheap_pattern_refuses_work():
    for cmd in ("avbench list", "avbench show uavm --dataset synth", "avbench --help", "avbench run --help",
                "avbench cache verify --help"):
        assert CHEAP.match(cmd), cmd
    for cmd in ("avbench run --strategy uavm --dataset synth", "avbench tune --help && rm -rf x",
                "avbench cache verify PATH", "python -c 1", "avbench sweep --strategy uavm"):
        assert not CHEAP.match(cmd), cmd


def _nav_files(node) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, list):
        return [f for item in node for f in _nav_files(item)]
    if isinstance(node, dict):
        return [f for value in node.values() for f in _nav_files(value)]
    return []


def test_every_docs_page_is_in_the_nav_and_every_nav_entry_exists():
    nav = _nav_files(yaml.safe_load((REPO / "mkdocs.yml").read_text(encoding="utf-8"))["nav"])
    pages = {p.relative_to(DOCS).as_posix() for p in DOCS.glob("**/*.md")}
    assert sorted(set(nav) - pages) == [], "nav entries without a page"
    assert sorted(pages - set(nav)) == [], "pages missing from mkdocs.yml's nav"


def test_readme_is_short_names_the_test_command_and_its_links_resolve():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 150, "README is the newcomer's first page: the rest belongs in docs/"
    assert "tox" in text and "avbench run --strategy uavm --dataset synth" in text
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    local = [link.split("#")[0] for link in links if not re.match(r"^[a-z]+:", link) and not link.startswith("#")]
    assert local, "README links into the docs"
    missing = [link for link in local if link and not (REPO / link).exists()]
    assert missing == []
