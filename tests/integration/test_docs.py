"""Every fenced code block of README.md and docs/*.md runs here, one test per block (id ``file:line``), and the
generated parts of the docs are current.

How a block runs depends on its language:

* ``bash``, ``sh``: the whole block is one bash script (``-e -o pipefail``); ``console``: its ``$ `` lines are.
  They run in the document's own scratch directory, with ``.venv/bin`` first on PATH and the repository's
  ``experiments/`` linked into it, so commands read as if typed in the repository root while everything they
  write lands in the scratch directory.
* ``python``: run as a script (``python -``) in the same directory, so it can import modules written there.
* ``yaml``: a config (a mapping with one of the sections) is loaded with ``config_from_dict`` and resolved
  with ``replearn.experiment.plugins.resolve`` in that directory, so the plug-ins it names must import; other YAML is
  parsed.
* ``text``, ``output``: samples of output or of a directory's layout; not executed.

The blocks of one document run in order in one directory (a test also runs the earlier blocks of its
document when they have not run yet). An HTML comment on the line right before a fence changes that:

* ``<!-- docs-test: setup -->``: run before the document's other blocks. Identical setup blocks (the same
  text, naming the same file blocks) run once per session and their output is copied to each document that
  has one.
* ``<!-- docs-test: file NAME -->``: the block is the file NAME, written into the directory before any block
  runs (a Python file is compiled here, a config validated as above); another block of the document must
  use it (name it), which is where it runs: a run that imports the module or reads the config.
* ``<!-- docs-test: skip (reason) -->``: not run — for what installs software, downloads, needs a GPU or
  takes minutes. Every skip states its reason and there are at most ``MAX_SKIPS`` of them.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL, PYTHON, YAML, SAMPLES = {"bash", "sh", "console"}, {"python"}, {"yaml"}, {"text", "output"}
CONFIG_SECTIONS = {"name", "data", "model", "train", "analysis", "regimes", "analyses", "selection"}
MAX_SKIPS = 8
TIMEOUT = 600
FENCE = re.compile(r"^```([A-Za-z0-9_+-]*)\s*$")
MARKER = re.compile(r"^<!--\s*docs-test:\s*(?P<kind>skip|setup|file)\b\s*(?P<arg>.*?)\s*-->\s*$")
VENV_BIN = ROOT / ".venv" / "bin" if (ROOT / ".venv" / "bin" / "python").exists() else Path(sys.executable).parent


@dataclass
class Block:
    doc: Path
    line: int  # of the opening fence, 1-based
    lang: str
    text: str
    marker: str = ""  # "", "skip", "setup" or "file"
    arg: str = ""  # the skip's reason (without parentheses) or the file's name

    @property
    def id(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line}"

    @property
    def executed(self) -> bool:
        return self.lang not in SAMPLES and self.marker not in ("skip", "file")


def parse(doc: Path) -> list[Block]:
    """The fenced blocks of a Markdown file, with the marker on the line before each."""
    lines = doc.read_text(encoding="utf-8").splitlines()
    blocks, i = [], 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j].rstrip() == "```"), None)
        assert end is not None, f"{doc.name}:{i + 1}: code block is never closed"
        block = Block(doc, i + 1, opening.group(1), "\n".join(lines[i + 1:end]) + "\n")
        marker = MARKER.match(lines[i - 1]) if i else None
        if marker:
            block.marker, block.arg = marker.group("kind"), marker.group("arg")
            if block.marker == "skip":
                block.arg = block.arg[1:-1].strip() if block.arg.startswith("(") and block.arg.endswith(")") else ""
        blocks.append(block)
        i = end + 1
    return blocks


BLOCKS = {doc: parse(doc) for doc in DOCS}
ALL = [b for blocks in BLOCKS.values() for b in blocks]


def environment(base: Path) -> dict[str, str]:
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}", "MPLBACKEND": "Agg",
           "REPLEARN_CACHE": str(base / "cache"), "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("PYTHONPATH", None)
    return env


def execute(block: Block, where: Path, env: dict[str, str]) -> str | None:
    """Run one block in ``where``; None if it worked, else what went wrong."""
    if block.lang in SHELL:
        script = block.text if block.lang != "console" else "\n".join(
            line[2:] for line in block.text.splitlines() if line.startswith("$ "))
        command, stdin = ["bash", "-e", "-o", "pipefail", "-c", script], None
    elif block.lang in PYTHON:
        command, stdin = [str(VENV_BIN / "python"), "-"], block.text
    elif block.lang in YAML:
        return validate_yaml(block, where)
    else:
        return f"unknown block language {block.lang!r}"
    try:
        done = subprocess.run(command, input=stdin, cwd=where, env=env, capture_output=True, text=True,
                              timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        return f"did not finish within {TIMEOUT} s"
    if done.returncode != 0:
        return f"exit status {done.returncode}\n--- stdout ---\n{done.stdout[-3000:]}\n--- stderr ---\n{done.stderr[-3000:]}"
    return None


def validate_yaml(block: Block, where: Path) -> str | None:
    """A config block loads and its plug-ins resolve (imported from ``where``, then forgotten again)."""
    from replearn.config.sections import config_from_dict
    from replearn.errors import ReplearnError
    from replearn.experiment.plugins import resolve

    raw = yaml.safe_load(block.text)
    if not (isinstance(raw, dict) and CONFIG_SECTIONS & set(raw)):
        return None
    before, path_before = set(sys.modules), list(sys.path)
    cwd = os.getcwd()
    os.chdir(where)
    importlib.invalidate_caches()
    try:
        resolve(config_from_dict(raw))
    except ReplearnError as exc:
        return f"the config does not resolve: {exc.one_line()}"
    finally:
        os.chdir(cwd)
        sys.path[:] = path_before
        for name in set(sys.modules) - before:  # the user's modules of this document, not replearn's
            origin = getattr(sys.modules[name], "__file__", None) or ""
            if origin.startswith(str(where)):
                del sys.modules[name]
    return None


@dataclass
class Workspace:
    """One document's scratch directory and the outcome of each of its blocks that ran."""

    doc: Path
    path: Path
    env: dict[str, str]
    outcome: dict[int, str | None] = field(default_factory=dict)

    def populate(self, where: Path, files: list[Block] | None = None) -> None:
        """The repository's experiments/ and the document's file blocks (or ``files``), in ``where``."""
        where.mkdir(parents=True, exist_ok=True)
        (where / "experiments").symlink_to(ROOT / "experiments")
        for block in BLOCKS[self.doc] if files is None else files:
            if block.marker == "file":
                (where / block.arg).write_text(block.text, encoding="utf-8")

    def files_named_by(self, block: Block) -> list[Block]:
        """The file blocks that ``block`` names (by file or module name): what its outcome depends on."""
        return [b for b in BLOCKS[self.doc] if b.marker == "file"
                and re.search(rf"\b{re.escape(Path(b.arg).stem)}\b", block.text)]

    def run_setup(self, cache: dict[str, tuple[Path, str | None]], base: Path) -> None:
        for block in BLOCKS[self.doc]:
            if block.marker != "setup":
                continue
            files = self.files_named_by(block)
            key = hashlib.sha256("\n".join([block.lang, block.text, *(f"{b.arg}\n{b.text}" for b in files)])
                                 .encode()).hexdigest()[:16]
            if key not in cache:
                where = base / f"setup-{key}"
                self.populate(where, files)
                cache[key] = (where, execute(block, where, self.env))
            where, error = cache[key]
            for item in where.iterdir():
                target = self.path / item.name
                if item.name in ("experiments", "__pycache__") or target.exists():
                    continue
                if item.is_dir():
                    shutil.copytree(item, target, symlinks=True)
                else:
                    shutil.copy2(item, target)
            self.outcome[block.line] = error

    def run_through(self, block: Block) -> str | None:
        """Run the document's blocks up to ``block`` that have not run yet; ``block``'s outcome."""
        for earlier in BLOCKS[self.doc]:
            if earlier.line > block.line:
                break
            if earlier.executed and earlier.line not in self.outcome:
                self.outcome[earlier.line] = execute(earlier, self.path, self.env)
        return self.outcome[block.line]


@pytest.fixture(scope="session")
def workspaces(tmp_path_factory):
    base = tmp_path_factory.mktemp("docs")
    made: dict[Path, Workspace] = {}
    cache: dict[str, tuple[Path, str | None]] = {}

    def get(doc: Path) -> Workspace:
        if doc not in made:
            name = str(doc.relative_to(ROOT)).replace("/", "-").removesuffix(".md")
            ws = Workspace(doc, base / name, environment(base))
            ws.populate(ws.path)
            ws.run_setup(cache, base)
            made[doc] = ws
        return made[doc]

    return get


@pytest.mark.parametrize("block", [b for b in ALL if b.lang not in SAMPLES], ids=lambda b: b.id)
def test_code_block_runs(block: Block, workspaces):
    if block.marker == "skip":
        pytest.skip(f"marked skip: {block.arg}")
    ws = workspaces(block.doc)
    if block.marker == "file":
        if block.lang in PYTHON:
            compile(block.text, block.arg, "exec")
        elif block.lang in YAML:
            error = validate_yaml(block, ws.path)
            assert error is None, f"{block.id} ({block.arg}): {error}"
        module = Path(block.arg).stem
        users = [b for b in BLOCKS[block.doc] if b is not block and b.marker != "skip"
                 and re.search(rf"\b{re.escape(module)}\b", b.text)]
        assert users, f"{block.id}: the file {block.arg} is not used by any block of {block.doc.name}"
        return
    error = ws.run_through(block)
    failed_before = [f"{block.doc.name}:{line}" for line, e in ws.outcome.items() if e and line < block.line]
    assert error is None, f"{block.id} failed" + (f" (earlier blocks failed too: {failed_before})"
                                                  if failed_before else "") + f": {error}"


def test_every_block_names_a_known_language_and_skips_are_few_and_explained():
    known = SHELL | PYTHON | YAML | SAMPLES
    unknown = [f"{b.id} ({b.lang or 'no language'})" for b in ALL if b.lang not in known]
    assert not unknown, f"give these blocks one of the languages {sorted(known)}: {unknown}"
    skips = [b for b in ALL if b.marker == "skip"]
    unexplained = [b.id for b in skips if not b.arg]
    assert not unexplained, f"say why these blocks are skipped, as <!-- docs-test: skip (reason) -->: {unexplained}"
    assert len(skips) <= MAX_SKIPS, f"{len(skips)} skipped blocks (at most {MAX_SKIPS}): {[b.id for b in skips]}"
    files = [b for b in ALL if b.marker == "file"]
    assert all(b.arg and "/" not in b.arg for b in files), [b.id for b in files if not b.arg or "/" in b.arg]
    stray = [f"{doc.name}:{i + 1}" for doc in DOCS for i, line in enumerate(doc.read_text(encoding="utf-8").splitlines())
             if "docs-test" in line and not MARKER.match(line)]
    assert not stray, f"malformed docs-test markers: {stray}"


def load_generator():
    spec = importlib.util.spec_from_file_location("replearn_docs_generate", ROOT / "docs" / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_docs_are_current():
    """docs/configuration.md (from the option declarations) and docs/reliability.md's bad-input catalogue
    (from tests/cli/test_bad_inputs.py) hold exactly what docs/generate.py writes."""
    for path, expected in load_generator().expected_files().items():
        assert path.read_text(encoding="utf-8") == expected, \
            f"{path.relative_to(ROOT)} is out of date: run python docs/generate.py"


def test_catalogue_lists_every_bad_input_case():
    generator = load_generator()
    text = (ROOT / "docs" / "reliability.md").read_text(encoding="utf-8")
    cases = generator.load_bad_input_cases()
    assert len(cases) >= 30
    for case_id, what, _, fragment in cases:
        assert f"| {case_id} | {generator.cell(what)} |" in text, f"docs/reliability.md lacks the row of {case_id}"


def test_relative_links_point_at_files_that_exist():
    link = re.compile(r"\]\(([^)\s]+)\)")
    broken = []
    for doc in DOCS:
        for target in link.findall(doc.read_text(encoding="utf-8")):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            if not (doc.parent / target.split("#")[0]).exists():
                broken.append(f"{doc.relative_to(ROOT)} → {target}")
    assert not broken, f"links to missing files: {broken}"
