"""Reports that scale to ten regimes (issue 28): the figures a ten-regime run draws keep every label apart
(their text boxes, as matplotlib lays them out, do not intersect), and one-epoch training curves are points on
the epoch's own tick."""
import numpy as np
import pandas as pd
import pytest

from replearn.analyses import plots
from replearn.analyses.attributions import maps_figure
from replearn.analyses.sanity import sanity_figure
from replearn.interpret.sanity import METRICS

from helpers import overlapping_labels

REGIMES = [f"regime{i}" for i in range(10)]  # ten registered names (one objective would do: labels are the point)
LABELS = {**{r: f"{name} {i}" for i, (r, name) in enumerate(zip(REGIMES, ["supervised", "autoencoder", "denoising",
                                                                          "variational", "contrastive", "dino",
                                                                          "masked", "barlow", "vicreg", "byol"]))},
          "random": "random-init encoder", "pixels": "raw pixels", "pca": "PCA of pixels"}
COLOURS = [f"C{i}" for i in range(10)]
STYLES = {m: (LABELS[m], COLOURS[i % 10]) for i, m in enumerate(REGIMES + ["random", "pixels", "pca"])}
LAYERS = ["input", "stage1", "stage2", "stage3", "latent"]


class TenRegimes:
    """What the figures read of a run: each model's label and colour, and the models' order."""

    def style(self, model: str) -> tuple[str, str]:
        return STYLES.get(model, (model, "#7f7f7f"))

    def order(self, names: list[str]) -> list[str]:
        known = list(STYLES)
        return sorted(names, key=lambda n: known.index(n) if n in known else len(known))


def test_cka_of_ten_regimes_is_one_readable_matrix_per_seed():
    rng = np.random.RandomState(0)
    models = REGIMES + ["random"]
    rows = [{"pair": f"{a} vs {b}", "seed": seed, "layer_a": "latent", "layer_b": "latent", "cka": rng.rand()}
            for seed in (0, 1) for i, a in enumerate(models) for b in models[i + 1:]]
    fig = plots.cka_matrix(pd.DataFrame(rows), models, "latent", {m: LABELS[m] for m in models})
    assert len([ax for ax in fig.axes if ax.images]) == 2  # one matrix per seed, not 55 heatmaps
    assert fig.get_figheight() * 110 < 1200  # well under two screens
    assert overlapping_labels(fig) == []


def test_attribution_maps_of_ten_regimes_wrap_with_labels_apart():
    n, models = 8, [m for r in REGIMES for m in (r, f"{r}:head")] + ["random", "pixels"]
    rng = np.random.RandomState(0)
    maps = {m: rng.randn(n, 32, 32).astype(np.float32) for m in models}
    names = {m: (LABELS[m.split(":")[0]] + (" (own head)" if m.endswith(":head") else "")) for m in models}
    panels = [(method, maps) for method in ("integrated_gradients", "smoothgrad")]
    fig = maps_figure(rng.rand(n, 3, 32, 32), [f"class {i}" for i in range(n)], panels, names, "stage2")
    assert len(fig.axes) > len(panels)  # wrapped onto more rows than methods
    assert fig.get_figwidth() <= plots.PAGE_WIDTH + 1e-9
    assert overlapping_labels(fig) == []


def test_sanity_checks_of_ten_regimes_wrap_with_titles_apart():
    models = [m for r in REGIMES for m in (r, f"{r}:head")]
    rows = []
    for model in models:
        for method in ("integrated_gradients", "gradcam"):
            for test in ("cascading", "independent"):
                for step, layer in enumerate(["head", "latent", "stage3", "stage2", "stage1"], 1):
                    rows.append({"model": model, "method": method, "test": test, "layer": layer, "step": step,
                                 "seed": 0, **{m: 0.5 for m in METRICS}})
    fig = sanity_figure(pd.DataFrame(rows), models, TenRegimes())
    assert overlapping_labels(fig) == []


def probe_frame() -> pd.DataFrame:
    rows = [{"model": m, "layer": layer, "probe": probe, "test_accuracy": 0.5 + 0.04 * d + 0.01 * i, "seed": 0}
            for i, m in enumerate(REGIMES + ["random"]) for d, layer in enumerate(LAYERS)
            for probe in ("linear", "knn")]
    rows += [{"model": "pixels", "layer": "input", "probe": p, "test_accuracy": 0.6, "seed": 0}
             for p in ("linear", "knn")]
    return pd.DataFrame(rows)


@pytest.mark.parametrize("draw", ["accuracy_by_depth", "training_curves"])
def test_line_figures_of_ten_regimes_keep_their_legend_apart(draw):
    if draw == "accuracy_by_depth":
        fig = plots.accuracy_by_depth(probe_frame(), LAYERS, STYLES)
    else:
        histories = {r: pd.DataFrame({"epoch": [1, 2, 3], "train_loss": [1.0, 0.6, 0.4],
                                      "val_latent_probe_accuracy": [0.5, 0.7, 0.8]}) for r in REGIMES}
        fig = plots.training_curves(histories, STYLES)
    assert overlapping_labels(fig) == []


def test_one_epoch_training_curves_are_points_on_an_integer_tick():
    histories = {r: pd.DataFrame({"epoch": [1], "train_loss": [1.0], "val_latent_probe_accuracy": [0.7]})
                 for r in REGIMES[:2]}
    fig = plots.training_curves(histories, STYLES)
    for ax in fig.axes[:2]:
        assert list(ax.get_xticks()) == [1]
        assert all(line.get_marker() == "o" and line.get_markersize() >= 6 for line in ax.get_lines())
    plots.plt.close(fig)


def test_the_report_template_has_a_sticky_navigation_and_a_collapsed_configuration():
    import re

    from replearn.report.html import _env

    def section(id_: str, title: str) -> dict:
        return {"id": id_, "title": title, "guide": "", "bullets": [], "references": [], "figures": [],
                "table": None, "caption": "", "code": "name: x" if id_ == "config" else ""}

    html = _env().get_template("report.html.j2").render(
        title="t", run_dir="r", dataset_name="d", state="complete", state_message="", complete=True,
        wall_seconds=1.0, sections=[section("probes", "Probes"), section("config", "Configuration")],
        unreadable=[], not_written=[], version="0", rendered="now")
    assert re.search(r"nav \{[^}]*position: sticky; top: 0", html)
    assert '<section id="probes"><details open>' in html and '<section id="config"><details>' in html
    assert html.count("<summary><h2>") == 2


def test_the_overlap_check_sees_colliding_labels_and_ignores_ticks_that_are_not_drawn():
    fig, ax = plots.plt.subplots(figsize=(3, 2))
    ax.text(0.5, 0.5, "first label")
    ax.text(0.52, 0.5, "second label")
    assert overlapping_labels(fig) == [("first label", "second label")]
    fig, axes = plots.plt.subplots(1, 2, figsize=(4, 2))
    axes[0].set_ylim(0.45, 0.95)  # the locator also makes ticks at 0.4 and 1.0, outside the view: not drawn
    axes[0].set_yticks([0.4, 0.6, 0.8, 1.0])
    axes[1].set_visible(False)  # a hidden panel's tick labels are not drawn either
    assert overlapping_labels(fig) == []
