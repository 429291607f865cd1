"""The report's SVG/PDF copies: written by the worker process without blocking the report, and inline when
the worker dies part-way."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from replearn.analyses.exports import VectorExports  # noqa: E402


def _figure(value: float) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [0, value])
    return fig


def test_every_submitted_figure_gets_its_vector_copies(tmp_path):
    (tmp_path / "figures").mkdir()
    exports = VectorExports()
    for i in range(4):
        exports.submit(_figure(i), tmp_path, f"f{i}")
    assert exports.finish() == []
    for i in range(4):
        assert (tmp_path / "figures" / f"f{i}.svg").read_text().lstrip().startswith("<?xml")
        assert (tmp_path / "figures" / f"f{i}.pdf").read_bytes().startswith(b"%PDF")


def test_two_workers_share_the_figures(tmp_path):
    (tmp_path / "figures").mkdir()
    exports = VectorExports(workers=2)
    for i in range(6):
        exports.submit(_figure(i), tmp_path, f"f{i}")
    assert len(exports._workers) == 2
    assert exports.finish() == []
    assert sorted(p.name for p in (tmp_path / "figures").glob("*.pdf")) == [f"f{i}.pdf" for i in range(6)]


def test_figures_after_the_worker_dies_are_written_inline(tmp_path):
    (tmp_path / "figures").mkdir()
    exports = VectorExports(workers=1)
    exports.submit(_figure(0), tmp_path, "first")
    assert len(exports._workers) == 1
    worker = exports._workers[0]
    worker.kill()
    worker.wait()
    for i in range(3):
        exports.submit(_figure(i), tmp_path, f"late{i}")
    notes = exports.finish()
    assert any("worker exit" in note for note in notes)
    for i in range(3):
        assert (tmp_path / "figures" / f"late{i}.pdf").read_bytes().startswith(b"%PDF")


def test_the_worker_imports_matplotlib_but_neither_pandas_nor_torch():
    """Every report with SVG or PDF copies starts its workers: each imports what drawing needs and no more (pandas
    alone would add a fifth of a second of CPU to each)."""
    import subprocess
    import sys

    from replearn.analyses.exports import WORKER_CODE

    probe = WORKER_CODE.split(";")[0] + "; import sys; print(sorted({m.split('.')[0] for m in sys.modules}))"
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert "'matplotlib'" in loaded and "'pandas'" not in loaded and "'torch'" not in loaded, loaded
