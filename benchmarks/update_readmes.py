"""Write the measured figures of ``benchmarks/results/*.json`` into README.md, docs/benchmarks.md and
benchmarks/README.md.

Every timing that README quotes comes from here, never typed by hand; ``tests/test_readme_claims.py``
checks that the three files hold exactly what this script writes from the saved results. README gets one
row per command (its Results table); docs/benchmarks.md and benchmarks/README.md get every benchmark's
one-line result.

    python benchmarks/update_readmes.py          # rewrite the generated blocks
    python benchmarks/update_readmes.py --check  # exit 1 if any is out of date
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
ORDER = ["setup", "end_to_end", "objectives", "families", "layouts", "contention", "training", "probe", "projection",
         "extraction"]
BENCH_START, BENCH_END = "<!-- results:start -->", "<!-- results:end -->"
README_START, README_END = "<!-- timings:start -->", "<!-- timings:end -->"
STUDIES_START, STUDIES_END = "<!-- studies:start -->", "<!-- studies:end -->"


def load_results(folder: Path = RESULTS) -> dict[str, dict]:
    found = {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in folder.glob("*.json")}
    return {name: found[name] for name in sorted(found, key=lambda n: (ORDER.index(n) if n in ORDER else 99, n))}


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds} s" if seconds < 60 else f"{seconds // 60} min {seconds % 60:02d} s"


def where(result: dict) -> str:
    gflops = result.get("matmul_gflops")
    peak = f", matmul {gflops:.0f} GFLOP/s" if gflops else ""
    return f"{result.get('date', '?')}, {result.get('machine', '?')}{peak}"


def benchmarks_block(results: dict[str, dict]) -> str:
    lines = ["| benchmark | result | target | measured |", "|---|---|---|---|"]
    for name, r in results.items():
        lines.append(f"| {name} | {r['summary']} | {r.get('target', '')} | {where(r)} |")
    return "\n".join(lines)


def _probes(probes: dict[str, float]) -> str:
    names = {"supervised": "supervised", "autoencoder": "autoencoder", "denoising": "denoising", "vae": "VAE",
             "contrastive": "contrastive", "random": "random-init", "pca": "PCA", "pixels": "raw pixels"}
    return ", ".join(f"{names.get(m, m)} {v:.4f}" for m, v in sorted(probes.items(), key=lambda kv: -kv[1]))


def readme_block(results: dict[str, dict]) -> str:
    """The Results table of README: one measured wall time per command, with its machine."""
    rows = ["| command | wall time | peak memory | supervised classifier (test) | linear probe on the latent (test) | measured |",
            "|---|---|---|---|---|---|"]
    setup = results.get("setup")
    if setup:
        for key, label in (("run", "README command 1 on a fresh clone (venv, install, digits run)"),
                           ("test", "README command 2 on a fresh clone (venv, install, tests)")):
            if key in setup["results"]:
                rows.append(f"| {label} | {duration(setup['results'][key]['wall_s'])} | | | | {where(setup)}, quiet |")
    e2e = results.get("end_to_end", {}).get("results", {})
    commands = {"digits": "`replearn run` (digits)", "fashion-mnist": "`replearn run fashion_mnist`"}
    for name, r in e2e.items():
        rows.append(f"| {commands.get(name, name)} | {duration(r['wall_s'])} | {r['peak_rss_mb'] / 1024:.1f} GB | "
                    f"{r['supervised_test_accuracy']:.4f} | {_probes(r['latent_probe'])} | "
                    f"{where(results['end_to_end'])}, quiet |")
    objectives = results.get("objectives", {}).get("results", {}).get("objectives")
    if objectives:
        rows.append(f"| `replearn run objectives` (5 regimes) | {duration(objectives['wall_s'])} | "
                    f"{objectives['peak_rss_mb'] / 1024:.1f} GB | {objectives['supervised_test_accuracy']:.4f} | "
                    f"{_probes(objectives['latent_probe'])} | {where(results['objectives'])}, "
                    f"{results['objectives'].get('conditions', 'quiet')} |")
    families = results.get("families", {}).get("results", {}).get("families")
    if families:
        flagged = ", ".join(families.get("collapse_flagged", [])) or "none"
        rows.append(f"| `replearn run families` (10 regimes; collapse flagged: {flagged}) | "
                    f"{duration(families['wall_s'])} | {families['peak_rss_mb'] / 1024:.1f} GB | "
                    f"{families['supervised_test_accuracy']:.4f} | {_probes(families['latent_probe'])} | "
                    f"{where(results['families'])}, {results['families'].get('conditions', 'quiet')} |")
    layouts = results.get("layouts")
    names = {"stl10": "STL-10, published binary layout, 600 images of 96²",
             "folder224": "a folder of 600 JPEG colour images of 224²",
             "folder256": "a folder of 90 JPEG images of 320², decoded at 256 px"}
    if layouts:
        runs = [f"{names.get(r['run'], r['run'])}: {r['state']} in {duration(r['wall_s'])} "
                f"({duration(r['wall_s'] * layouts['matmul_gflops'] / 193)} scaled to 193 GFLOP/s)"
                for r in layouts.get("results", [])]
        peak = max((r["peak_rss_mb"] for r in layouts.get("results", [])), default=0) / 1024
        rows.append(f"| `replearn run`, 1 epoch, every default analysis, on {'; '.join(runs)} | | up to "
                    f"{peak:.1f} GB | | | {where(layouts)}, {layouts.get('conditions', 'quiet')} |")
    contention = results.get("contention")
    if contention:
        competitor = "a busy loop" if contention.get("competitor") == "loop" else "the same run"
        for name, r in contention["results"].items():
            new, old = r["new"], r["library"]
            rows.append(f"| `replearn run` ({name}) beside {competitor} | {duration(new['busy_s'])} "
                        f"({new['slowdown']:.2f}× its quiet {duration(new['quiet_s'])}; library thread defaults: "
                        f"{old['slowdown']:.2f}×) | | | | {where(contention)}, busy |")
    return "\n".join(rows)


def _studies(results: dict[str, dict]) -> list[dict]:
    return [r for name, r in results.items() if name.startswith("study-")]


def _number(value: object) -> float | None:
    """A table cell as a number: a float, or a string that reads as one (a column that also holds '–' is read
    as text); None otherwise."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    try:
        return float(str(value))
    except ValueError:
        return None


def _cell(row: dict, value: str) -> str:
    """'0.871 [0.868, 0.874]'; a tie or a single seed (no low/high, or '–'): the value and the interval's name."""
    low, high = _number(row.get("95% low")), _number(row.get("95% high"))
    if low is not None and high is not None:
        return f"{row[value]:.3f} [{low:.3f}, {high:.3f}]"
    return f"{row[value]:.3f} ({row.get('interval') or 'no interval'})"


def _x_columns(frame_rows: list[dict], fixed: set[str]) -> list[str]:
    return [k for k in frame_rows[0] if k not in fixed] if frame_rows else []


def study_tables(study: dict) -> str:
    """A study's curves as Markdown: latent-probe accuracy [95% interval over seeds] per regime and swept
    value, and each regime's gap to the reference [paired-bootstrap 95% interval]."""
    probes, gaps = study["tables"].get("probes", []), study["tables"].get("gap", [])
    keys = _x_columns(probes, {"model", "accuracy", "95% low", "95% high", "interval", "seeds"})
    models = list(dict.fromkeys(r["model"] for r in probes))
    comparisons = list(dict.fromkeys(r["comparison"] for r in gaps))
    rows = {}
    for r in probes:
        rows.setdefault(tuple(r[k] for k in keys), {})[r["model"]] = _cell(r, "accuracy")
    for r in gaps:
        rows.setdefault(tuple(r[k] for k in keys), {})[r["comparison"]] = _cell(r, "accuracy difference")
    head = [k for k in keys if k != "panel" or len({x[0] for x in rows}) > 1]
    lines = ["| " + " | ".join(head + models + comparisons) + " |", "|" + "---|" * (len(head) + len(models) + len(comparisons))]
    for x, cells in rows.items():
        shown = [str(v) for k, v in zip(keys, x) if k in head]
        lines.append("| " + " | ".join(shown + [cells.get(m, "") for m in models + comparisons]) + " |")
    return "\n".join(lines)


def studies_block(results: dict[str, dict], full: bool) -> str:
    """Each recorded study: its command, runs, wall time and machine; with ``full`` its curves too."""
    out = []
    for study in _studies(results):
        name = study["spec"]["name"]
        line = (f"**`replearn sweep experiments/{name}_sweep.yaml`**: {study['runs']} runs in "
                f"{duration(study['wall_s'])} ({where(study)}, {study['conditions']}).")
        out += [line, "", study_tables(study), ""] if full else [f"- {line}"]
    return "\n".join(out).strip()


def replace_block(text: str, start: str, end: str, block: str) -> str:
    if start not in text or end not in text:
        raise SystemExit(f"markers {start} … {end} are missing")
    return text[:text.index(start)] + start + "\n" + block + "\n" + end + text[text.index(end) + len(end):]


def expected_files(results: dict[str, dict] | None = None) -> dict[Path, str]:
    """Each file with a generated block, as it should be now."""
    results = load_results() if results is None else results
    readme = ROOT / "README.md"
    out = {readme: replace_block(readme.read_text(encoding="utf-8"), README_START, README_END, readme_block(results))}
    for path in (ROOT / "docs" / "benchmarks.md", HERE / "README.md"):
        out[path] = replace_block(path.read_text(encoding="utf-8"), BENCH_START, BENCH_END, benchmarks_block(results))
    if _studies(results):
        out[readme] = replace_block(out[readme], STUDIES_START, STUDIES_END, studies_block(results, full=False))
        studies = ROOT / "docs" / "studies.md"
        out[studies] = replace_block(studies.read_text(encoding="utf-8"), STUDIES_START, STUDIES_END,
                                     studies_block(results, full=True))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only check; exit 1 if a file is out of date")
    args = parser.parse_args()
    stale = []
    for path, text in expected_files().items():
        if path.read_text(encoding="utf-8") != text:
            stale.append(path)
            if not args.check:
                path.write_text(text, encoding="utf-8")
    if args.check and stale:
        print("out of date: " + ", ".join(str(p.relative_to(ROOT)) for p in stale) +
              " — run python benchmarks/update_readmes.py", file=sys.stderr)
        sys.exit(1)
    print("up to date" if not stale else "rewrote " + ", ".join(str(p.relative_to(ROOT)) for p in stale))


if __name__ == "__main__":
    main()
