"""The cost model (issue 28): the plan's memory is bounded in pixels (no d×d term), preflight refuses in one
line what cannot fit, naming the option, and the run ETA follows the analyses' plan, corrected as they run."""
import numpy as np
import pytest

from replearn.experiment import costs
from replearn.config.sections import config_from_dict
from replearn.data import load_dataset
from replearn.errors import ConfigError
from replearn.runtime.log import RunClock
from replearn.experiment.preflight import plan_run

ANALYSES = ["probes", "label_efficiency", "dimensions", "similarity", "structure", "projection", "attributions",
            "sanity", "faithfulness", "robustness", "units"]


def colour_config(tmp_path, size: int, n: int = 45):
    rng = np.random.RandomState(0)
    x = rng.randint(0, 255, size=(n, size, size, 3)).astype(np.uint8)
    y = np.arange(n) % 3
    path = tmp_path / f"colour{size}.npz"
    np.savez(path, train_x=x[: n * 2 // 3], train_y=y[: n * 2 // 3], test_x=x[n * 2 // 3:], test_y=y[n * 2 // 3:])
    return config_from_dict({"name": "c", "data": {"name": "npz", "root": str(path), "val_fraction": 0.2},
                             "model": {"channels": [4, 8], "latent_dim": 8},
                             "analysis": {"label_counts": [1], "figure_formats": ["png"]}})


def test_the_plan_of_a_256px_folder_fits_where_a_pixel_covariance_would_not(tmp_path):
    cfg = colour_config(tmp_path, 256)
    data = load_dataset(cfg.data)
    phases = plan_run(cfg, data, ANALYSES, available=64 * 2**30, rate=50e9)
    assert [p.name for p in phases][:2] == ["train", "extraction"] and phases[-1].name == "render"
    d = 3 * 256 * 256
    assert max(p.bytes for p in phases) < 2 * 2**30 < d * d * 8  # the d×d covariance alone would be 288 GiB
    assert all(p.seconds >= 0 for p in phases)


def test_a_run_that_cannot_fit_is_refused_naming_the_option(tmp_path):
    cfg = colour_config(tmp_path, 128)
    data = load_dataset(cfg.data)
    phases = plan_run(cfg, data, ANALYSES, available=64 * 2**30, rate=50e9)
    worst = max(phases, key=lambda p: p.bytes)
    with pytest.raises(ConfigError) as refused:
        plan_run(cfg, data, ANALYSES, available=int(worst.bytes * 0.9), rate=50e9)
    line = refused.value.one_line()
    assert "\n" not in line and f"the {worst.name} phase would need" in line
    assert "lower " in line and ("analysis." in line or "data.image_size" in line or "train." in line)


def test_pca_cost_takes_the_route_the_code_takes():
    gram, cov = costs.pca_cost(600, 27_648, 32), costs.pca_cost(60_000, 784, 32)
    assert gram.bytes < 128 * 2**20  # a 600² Gram matrix and column blocks, not 27,648² (5.7 GiB)
    assert cov.bytes == 3 * 784 * 784 * 8
    assert costs.pca_cost(15_000, 150_528, 32).bytes < 1 * 2**30  # randomised: (n + d)·q


def test_analysis_costs_grow_linearly_in_pixels_beyond_their_caps():
    from replearn.config.sections import AnalysisConfig

    def seconds(size: int, images: int) -> dict[str, float]:
        shape = costs.RunShape(images * 8 // 10, images // 10, images // 10, (3, size, size), 10, 2, 4, 32,
                               2e4 * size * size, AnalysisConfig())
        return costs.analysis_seconds(ANALYSES, shape, 50e9)

    small, large = seconds(96, 600), seconds(192, 600)
    for name in ANALYSES:
        assert large[name] / small[name] <= 4.0 * 1.2, name  # pixels ×4: no phase grows faster than the work


def test_run_clock_follows_the_analyses_plan_and_corrects_it():
    clock = RunClock(seeds=1)
    clock.plan("regime", steps=10, step_cost=1.0)
    clock.plan_analyses({"extraction": 1.0, "probes": 4.0, "projection": 5.0}, render_seconds=10.0)
    clock.begin("regime")
    clock.trained(10, 5.0)
    assert clock.eta() == pytest.approx(20.0)  # training done: the plan of every analysis and the report
    clock.analysis_done("extraction", 1.0)
    clock.analysis_done("probes", 8.0)  # twice as long as predicted: what is left grows too, damped by the plan
    prior = RunClock.PRIOR_SHARE * 10.0
    assert clock.correction() == pytest.approx((9.0 + prior) / (5.0 + prior))
    assert clock.eta() == pytest.approx((5.0 + 10.0) * (9.0 + prior) / (5.0 + prior))
    clock.analysis_done("projection", 9.0)
    clock.analysed(18.0)
    assert clock.eta() == pytest.approx(10.0 * (18.0 + prior) / (10.0 + prior))  # the report alone
    clock.finished_rendering()
    assert clock.eta() == 0.0


def test_the_memory_error_names_the_size_asked_and_the_options_that_bound_it():
    from replearn.cli.main import foreign_error

    line = foreign_error(RuntimeError("DefaultCPUAllocator: not enough memory: you tried to allocate 34359738368 "
                                      "bytes")).one_line()
    assert "32.0 GiB asked at once" in line and "data.image_size" in line and "analysis.analysis_points" in line


def test_the_cli_refuses_a_plan_that_cannot_fit_before_the_run_directory_exists(blob_npz, tmp_path, monkeypatch,
                                                                                 capsys):
    import yaml

    from helpers import tiny_config
    from replearn.cli import main

    config = tmp_path / "exp.yaml"
    config.write_text(yaml.safe_dump(tiny_config(blob_npz)))
    monkeypatch.setattr("replearn.experiment.preflight.device_memory", lambda _device: 1 << 40)  # training fits
    monkeypatch.setattr("replearn.experiment.preflight.available_memory", lambda: 75_000)  # the features (71 kB) fit
    assert main(["run", str(config), "--out", str(tmp_path / "run")]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("replearn: error")]
    assert len(lines) == 1 and "phase would need about" in lines[0] and "— fix: lower " in lines[0]
    assert not (tmp_path / "run").exists()
