"""Write the generated parts of the docs from their single sources:

* ``docs/configuration.md``, the option reference: every config key with its type, default and meaning, from
  the option declarations (``replearn.experiment.plugins.plugin_docs``: the sections' own keys, then every registered
  dataset's, encoder's, regime's and analysis's options);
* ``docs/similarity.md``'s invariance table, from ``replearn.metrics.similarity_measures.MEASURES``;
* ``docs/reliability.md``, the bad-input catalogue: every case of ``tests/cli/test_bad_inputs*.py`` (``CASES``) with
  the message fragment replearn answers with and, where the case is a plain command line, that command.

Only the text between each file's ``<!-- generated:… -->`` markers is rewritten. ``tests/integration/test_docs.py``
regenerates both in memory and fails when a file is stale.

    python docs/generate.py          # rewrite the generated blocks
    python docs/generate.py --check  # exit 1 if either is out of date
"""
from __future__ import annotations

import argparse
import importlib.util
import re
import shlex
import sys
from pathlib import Path
from typing import Any, Callable

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OPTIONS_MARKERS = ("<!-- generated:options:start -->", "<!-- generated:options:end -->")
CATALOGUE_MARKERS = ("<!-- generated:catalogue:start -->", "<!-- generated:catalogue:end -->")
INVARIANCE_MARKERS = ("<!-- generated:invariance:start -->", "<!-- generated:invariance:end -->")
LONG_ARGUMENT = 48  # longer arguments are shortened in the catalogue's command column


def one_line(text: str) -> str:
    """Text for one Markdown table cell: no line breaks, pipes escaped (they would end the cell)."""
    return " ".join(str(text).split()).replace("|", "\\|")


def cell(text: str) -> str:
    """Plain text for a table cell, where ``<key>`` is shown as such, not taken for an HTML tag."""
    return re.sub(r"<(?=[A-Za-z/!?])", "&lt;", one_line(text))


def code(text: str) -> str:
    """A code span for a table cell (double backticks when the text holds one)."""
    text = one_line(text)
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def yaml_value(value: Any) -> str:
    """A default as it would be written in a config file."""
    text = yaml.safe_dump(value, default_flow_style=True, allow_unicode=True).strip()
    return text[:-4].strip() if text.endswith("\n...") else text.removesuffix("...").strip()


# ---------------------------------------------------------------- configuration reference


def option_groups(rows: list[tuple[str, str, Any, str]]) -> list[tuple[str, str, list[tuple[str, str, Any, str]]]]:
    """The rows of ``plugin_docs`` grouped by where they are written: (title, note, rows) in their order."""
    groups: dict[str, tuple[str, list]] = {}
    for key, type_name, default, help_text in rows:
        if " [" in key:  # "data.image_size [dataset folder]": a plug-in's own key, written in its section
            key, owner = key[:-1].split(" [", 1)
            kind, name = owner.split(" ", 1)
            title = f"`{key.split('.')[0]}` — {kind} `{name}`"
            note = f"Only when `{key.split('.')[0]}.name` is `{name}`."
        elif key.startswith(("regimes.", "analyses.")):
            section, name = key.split(".")[:2]
            kind = "regime" if section == "regimes" else "analysis"
            title = f"`{section}.{name}` — {kind} `{name}`"
            note = f"Options of the {kind} `{name}`, written under `{section}: {{{name}: {{…}}}}`."
        elif "." in key:
            section = key.split(".")[0]
            title = f"`{section}`"
            note = {"data": "Keys every dataset has.", "model": "Keys every encoder has."}.get(section, "")
        else:
            title, note = "`name`", "The run's name."
        groups.setdefault(title, (note, []))[1].append((key, type_name, default, help_text))
    return [(title, note, items) for title, (note, items) in groups.items()]


def options_block() -> str:
    from replearn.experiment.plugins import plugin_docs

    lines = []
    for title, note, rows in option_groups(plugin_docs()):
        lines += [f"### {title}", ""]
        if note:
            lines += [note, ""]
        lines += ["| key | type | default | meaning |", "|---|---|---|---|"]
        for key, type_name, default, help_text in rows:
            lines.append(f"| `{key}` | {code(type_name)} | {code(yaml_value(default))} | {cell(help_text)} |")
        lines.append("")
    return "\n".join(lines).rstrip()


# ---------------------------------------------------------------- bad-input catalogue


def load_bad_input_cases() -> list[tuple]:
    """``CASES`` of every tests/cli/test_bad_inputs*.py, imported by file path (their helpers import
    ``conftest`` and each other)."""
    tests = ROOT / "tests"
    folders = [str(tests), str(tests / "cli")]
    added = [f for f in folders if f not in sys.path]
    sys.path[:0] = added
    cases: list[tuple] = []
    try:
        for path in sorted((tests / "cli").glob("test_bad_inputs*.py")):
            spec = importlib.util.spec_from_file_location(f"replearn_docs_{path.stem}", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            cases += list(getattr(module, "CASES", []))
    finally:
        for folder in added:
            sys.path.remove(folder)
    return cases


def plain_command(build: Callable) -> list[str] | None:
    """The command line of a case whose builder only assembles strings (a lambda that calls nothing but
    ``str`` and writes no file), built with the placeholder directory ``DIR``; else None."""
    body = getattr(build, "__code__", None)
    if body is None or build.__name__ != "<lambda>":
        return None
    if set(body.co_names) - {"str"} or any(hasattr(c, "co_code") for c in body.co_consts):
        return None
    argv = build(Path("DIR"))
    return argv if isinstance(argv, list) and all(isinstance(a, str) for a in argv) else None


def shorten(argument: str) -> str:
    return argument if len(argument) <= LONG_ARGUMENT else f"{argument[:24]}…({len(argument)} characters)"


def catalogue_block() -> str:
    lines = ["| id | bad input | the one-line answer contains | command (DIR: a scratch directory) |",
             "|---|---|---|---|"]
    for case_id, what, build, fragment in sorted(load_bad_input_cases(), key=lambda case: (len(case[0]), case[0])):
        argv = plain_command(build)
        command = code("replearn " + shlex.join(shorten(a) for a in argv)) if argv is not None else ""
        lines.append(f"| {case_id} | {cell(what)} | {code(fragment)} | {command} |")
    return "\n".join(lines)


# ---------------------------------------------------------------- files


def invariance_block() -> str:
    """docs/similarity.md's table of what each similarity measure is invariant to (asserted by
    tests/unit/test_similarity_measures.py)."""
    from replearn.metrics.similarity_measures import invariance_table
    return invariance_table()


def replace_block(text: str, markers: tuple[str, str], block: str, path: Path) -> str:
    start, end = markers
    if start not in text or end not in text:
        raise SystemExit(f"{path}: markers {start} … {end} are missing")
    return text[:text.index(start)] + start + "\n" + block + "\n" + end + text[text.index(end) + len(end):]


def expected_files() -> dict[Path, str]:
    """Each generated file's full text as it should be now."""
    out = {}
    for name, markers, build in (("configuration.md", OPTIONS_MARKERS, options_block),
                                 ("reliability.md", CATALOGUE_MARKERS, catalogue_block),
                                 ("similarity.md", INVARIANCE_MARKERS, invariance_block)):
        path = HERE / name
        out[path] = replace_block(path.read_text(encoding="utf-8"), markers, build(), path)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only check; exit 1 if a file is out of date")
    args = parser.parse_args()
    expected = expected_files()
    stale = [path for path, text in expected.items() if path.read_text(encoding="utf-8") != text]
    if args.check:
        if stale:
            print("out of date: " + ", ".join(str(p.relative_to(ROOT)) for p in stale) +
                  " — run python docs/generate.py", file=sys.stderr)
            sys.exit(1)
        print("up to date")
        return
    for path, text in expected.items():
        if path in stale:
            path.write_text(text, encoding="utf-8")
    print("up to date" if not stale else "rewrote " + ", ".join(str(p.relative_to(ROOT)) for p in stale))


if __name__ == "__main__":
    main()
