"""Errors that are not replearn's own (issue 22, items 4, 5, 6 and 8): every failure ends in one line with
exit status 2, a run that fails after it started records ``failed`` with the reason in status.json, inputs
that once exhausted memory are refused by a fresh process in seconds with bounded memory, and the fixes of
the causes — a last batch of one image, one test image per class, a PCA whose cost grew with the image size
squared, plug-ins that exit or print at import — give correct results where the input is valid.
"""
from __future__ import annotations

import json
import os
import pickle
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from replearn.cli.main import foreign_error, main
from replearn.config.sections import config_from_dict, model_config
from replearn.data import load_dataset
from replearn.encoders import build_encoder
from replearn.errors import ConfigError
from replearn.encoders.extract import pca_baseline, randomised_components
from replearn.experiment.preflight import (_forward_counts, check_features_fit, check_model_fits, measure_encoder,
                                           model_size)
from replearn.regimes import DataInfo, Regime, make_regime
from replearn.config.registry import import_object
from replearn.metrics.clustering import class_silhouette, cluster_scores
from replearn.training import Trainer, TrainSettings
from replearn.training.loop import check_step_output

from helpers import INTERPRETABILITY, make_blob_images, tiny_config

PROBE = ("import resource, sys\nfrom replearn.cli.main import main\ncode = main(sys.argv[1:])\n"
         "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\nsys.exit(code)")


def blobs(tmp: Path, n_train: int = 96) -> Path:
    x, y = make_blob_images(n_train, seed=1)
    tx, ty = make_blob_images(30, seed=2)
    path = tmp / "blobs.npz"
    np.savez(path, train_x=x, train_y=y, test_x=tx, test_y=ty)
    return path


def write_config(tmp: Path, **sections: dict) -> str:
    raw = tiny_config(blobs(tmp))
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    if "model" in sections:  # another encoder: its own keys only
        raw["model"] = {"latent_dim": 6, **sections["model"]}
    path = tmp / "exp.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def status(run_dir: Path) -> dict:
    return json.loads((run_dir / "status.json").read_text())


def run_bounded(argv: list[str], cwd: Path, timeout: int = 120, **env: str) -> tuple[subprocess.CompletedProcess,
                                                                                     float, float]:
    """``replearn argv`` in a fresh process: (result, seconds, peak memory in MiB)."""
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, cwd=cwd,
                            timeout=timeout, env={**os.environ, "REPLEARN_DATA": str(cwd / "none"), **env})
    peak = int(result.stdout.split()[-1]) / 1024 if result.stdout.split() else float("nan")
    return result, time.monotonic() - started, peak


def one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    assert lines[0].startswith("replearn: error: ") and " — fix: " in lines[0], lines[0]
    return lines[0]


# ---------------------------------------------------------------- a run that fails after it started

BREAKS_DURING_TRAINING = """
import torch
from replearn.regimes import Regime

CALLS = [0]

class Plug(Regime):
    name = "breaks"

    def build_head(self, encoder, data):
        return torch.nn.Identity()

    def loss(self, encoder, head, x, y, generator):
        z = encoder(x)
        if torch.is_grad_enabled() and encoder.training:  # a training step: preflight's, then the trainer's
            CALLS[0] += 1
            if CALLS[0] >= 4:  # the third training step of the run
{failure}
        return z.square().mean(), {{}}
"""

FAILURES = [  # (what the regime does in the run's third training step, in the one line, in status.json)
    ("raise RuntimeError('the plug-in broke')", "RuntimeError: the plug-in broke", "RuntimeError: the plug-in broke"),
    ("raise MemoryError()", "ran out of memory (MemoryError)", "MemoryError"),
    ("raise RuntimeError(\"DefaultCPUAllocator: can't allocate memory: you tried to allocate 4e11 bytes\")",
     "ran out of memory (RuntimeError: DefaultCPUAllocator", "can't allocate memory"),
    ("raise SystemExit(0)", "called sys.exit(0)", "called sys.exit(0)"),
    ("open('/nonexistent-replearn-input/weights.txt')",
     "could not read '/nonexistent-replearn-input/weights.txt' during the run (No such file or directory)",
     "could not read '/nonexistent-replearn-input/weights.txt'"),
    ("return z.square().mean(), {'agreement': 0.5}", "returned the statistic 'agreement' as a float",
     "returned the statistic 'agreement' as a float"),
    ("return z.square().mean(), None", "returned its statistics as None", "returned its statistics as None"),
]


@pytest.mark.parametrize("index", range(len(FAILURES)))
def test_run_failing_after_it_started_records_failed_with_the_reason(index, tmp_path, capsys, monkeypatch):
    failure, in_line, in_status = FAILURES[index]
    monkeypatch.chdir(tmp_path)
    module = f"plug_breaks_{index}"
    (tmp_path / f"{module}.py").write_text(BREAKS_DURING_TRAINING.format(failure=" " * 16 + failure))
    out = tmp_path / "run"
    config = write_config(tmp_path, train={"regimes": [f"{module}:Plug"]})
    code = main(["run", config, "--out", str(out), "--quiet"])
    line = one_error_line(capsys.readouterr().err)
    assert code == 2
    assert in_line in line
    recorded = status(out)
    assert recorded["state"] == "failed" and in_status in recorded["message"], recorded


BREAKS_IN_EVAL_MODE = """
import torch
from replearn.regimes import Regime

class Plug(Regime):
    name = "evalbreaks"

    def build_head(self, encoder, data):
        return torch.nn.Identity()

    def loss(self, encoder, head, x, y, generator):
        if not encoder.training:  # first met while the run plans its clock, right after it is marked running
            raise ValueError("no evaluation here")
        return encoder(x).square().mean(), {}
"""


def test_a_failure_while_the_run_is_being_prepared_is_recorded_too(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "plug_eval_breaks.py").write_text(BREAKS_IN_EVAL_MODE)
    out = tmp_path / "run"
    code = main(["run", write_config(tmp_path, train={"regimes": ["plug_eval_breaks:Plug"]}), "--out", str(out),
                 "--quiet"])
    assert code == 2 and "ValueError: no evaluation here" in one_error_line(capsys.readouterr().err)
    assert status(out) == {**status(out), "state": "failed", "message": "ValueError: no evaluation here"}


def test_foreign_error_shows_its_traceback_only_when_asked(tmp_path):
    (tmp_path / "plug_debug.py").write_text(BREAKS_DURING_TRAINING.format(
        failure=" " * 16 + "raise RuntimeError('the plug-in broke')"))
    argv = ["run", write_config(tmp_path, train={"regimes": ["plug_debug:Plug"]}), "--out", str(tmp_path / "a"),
            "--quiet"]
    plain, _, _ = run_bounded(argv, tmp_path)
    assert plain.returncode == 2
    assert "RuntimeError: the plug-in broke" in one_error_line(plain.stderr) and "REPLEARN_DEBUG=1" in plain.stderr
    argv[3] = str(tmp_path / "b")
    debug, _, _ = run_bounded(argv, tmp_path, REPLEARN_DEBUG="1")
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "the plug-in broke" in debug.stderr
    assert status(tmp_path / "b")["state"] == "failed"


def test_foreign_errors_name_the_problem_and_the_fix():
    memory = foreign_error(MemoryError()).one_line()
    assert "ran out of memory" in memory and "train.batch_size" in memory
    allocator = foreign_error(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 9e12 "
                                           "bytes")).one_line()
    assert allocator.startswith("ran out of memory") and "model.width" in allocator
    missing = foreign_error(FileNotFoundError(2, "No such file or directory", "/x/y")).one_line()
    assert missing.startswith("FileNotFoundError: No such file or directory '/x/y' — fix: check that the path")
    assert "nested too deeply" in foreign_error(RecursionError("maximum recursion depth exceeded")).one_line()
    other = foreign_error(KeyError("k")).one_line()
    assert other.startswith("KeyError: 'k' — fix:") and "REPLEARN_DEBUG=1" in other and "\n" not in other


def test_plugins_are_still_looked_up_when_the_working_directory_was_removed(tmp_path, monkeypatch):
    gone = tmp_path / "gone"
    gone.mkdir()
    monkeypatch.chdir(gone)
    gone.rmdir()  # os.getcwd() now raises FileNotFoundError
    with pytest.raises(ConfigError, match=r"'plug_nowhere:Plug' could not be imported \(ModuleNotFoundError"):
        import_object("plug_nowhere:Plug", "regime")
    assert import_object("json:dumps", "regime") is json.dumps


# ---------------------------------------------------------------- plug-ins: what happens at import is theirs

def test_plugin_exit_at_import_is_reported_as_the_plugins(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    (tmp_path / "plug_exit_now.py").write_text("import sys\nprint('leaving', file=sys.stderr)\nsys.exit(3)\n")
    with pytest.raises(ConfigError, match=r"plug-in module 'plug_exit_now' .* called sys.exit\(3\) while being "
                                          r"imported; the plug-in printed: 'leaving'"):
        import_object("plug_exit_now:Thing", "regime")
    assert "plug_exit_now" not in sys.modules


def test_plugin_output_at_import_is_passed_on_when_it_imports(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    (tmp_path / "plug_chatty.py").write_text("import sys\nprint('plug-in warming up', file=sys.stderr)\nTHING = 7\n")
    assert import_object("plug_chatty:THING", "regime") == 7
    assert "plug-in warming up" in capsys.readouterr().err


def test_keyboard_interrupt_while_importing_a_plugin_is_not_swallowed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    (tmp_path / "plug_ctrl_c.py").write_text("raise KeyboardInterrupt\n")
    with pytest.raises(KeyboardInterrupt):
        import_object("plug_ctrl_c:Thing", "regime")


def test_a_plugin_colour_in_any_matplotlib_form_is_kept_as_hex(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    (tmp_path / "plug_named_colour.py").write_text(
        "import torch\nfrom replearn.regimes import Regime\n\nclass Plug(Regime):\n    name = 'named'\n"
        "    color = 'tab:orange'\n    label = 'named colour'\n")
    regime = make_regime("plug_named_colour:Plug")
    assert regime.color == "#ff7f0e" and regime.label == "named colour"


# ---------------------------------------------------------------- what a regime's loss returns

class _Probe(Regime):
    name = "probe"


@pytest.mark.parametrize("output, fragment", [
    (torch.tensor(1.0), "not a (loss, stats) pair"),
    ((1.0, {}), "loss that is not a scalar tensor (a float)"),
    ((torch.ones(3), {}), "loss that is not a scalar tensor (a tensor of shape (3,))"),
    ((torch.tensor(1.0), None), "returned its statistics as None, not a dict"),
    ((torch.tensor(1.0), {"n": 3}), "returned the statistic 'n' as a int"),
    ((torch.tensor(1.0), {"n": torch.ones(2)}), "statistic 'n' as a tensor of shape (2,)"),
])
def test_a_loss_that_returns_what_the_trainer_cannot_use_is_named(output, fragment):
    with pytest.raises(ConfigError, match=r"regime 'probe'.*" + fragment.replace("(", r"\(").replace(")", r"\)")):
        check_step_output(_Probe(), output)
    loss, stats = check_step_output(_Probe(), (torch.tensor(2.0), {"correct": torch.tensor(5)}))
    assert float(loss) == 2.0 and int(stats["correct"]) == 5


# ---------------------------------------------------------------- the last batch of an epoch


RESNET_TO_1X1 = {"name": "resnet", "width": 4}  # on 8×8 images its last stage's batch norm sees 1×1 maps:
#                                                a batch of one image cannot be trained there


class _BatchSizes(Regime):
    """Records the size of every training batch."""

    name = "sizes"

    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[int] = []

    def build_head(self, encoder, data):
        return torch.nn.Identity()

    def loss(self, encoder, head, x, y, generator):
        if torch.is_grad_enabled() and encoder.training:
            self.sizes.append(len(x))
        return encoder(x).square().mean(), {}


class _Images:
    def __init__(self, n: int) -> None:
        x, y = make_blob_images(n, seed=4)
        self.train_x = torch.from_numpy(x).float().unsqueeze(1) / 255
        self.train_y = torch.from_numpy(y)
        self.val_x, self.val_y = self.train_x[:8], self.train_y[:8]


def test_a_last_batch_of_one_image_joins_the_batch_before():
    assert [Trainer.steps_in_epoch(n, 19) for n in (1, 19, 20, 38, 39, 77, 78)] == [1, 1, 1, 2, 2, 4, 5]
    regime, data = _BatchSizes(), _Images(77)
    encoder = build_encoder(model_config(**RESNET_TO_1X1, latent_dim=6), (1, 8, 8), 0)
    Trainer(regime, encoder, regime.build_head(encoder, DataInfo((1, 8, 8), 3)), data,
            TrainSettings(epochs=2, batch_size=19)).fit()
    assert regime.sizes == [19, 19, 19, 20] * 2  # every image once an epoch, no batch of one


def test_a_run_whose_last_batch_has_one_image_completes(tmp_path, capsys):
    config = write_config(tmp_path, model=RESNET_TO_1X1, train={"batch_size": 19, "epochs": 1})
    cfg = config_from_dict(yaml.safe_load(Path(config).read_text()))
    assert len(load_dataset(cfg.data).train_y) % 19 == 1  # the case this test is about
    out = tmp_path / "run"
    assert main(["run", config, "--out", str(out), "--quiet"]) == 0, capsys.readouterr().err
    assert status(out)["state"] == "complete"
    models = pd.read_csv(out / "metrics" / "models.csv")
    assert models.test_loss.notna().all() and len(models) == 2


def test_batch_norm_on_batches_of_one_is_refused_in_one_line(tmp_path, capsys):
    config = write_config(tmp_path, model=RESNET_TO_1X1, train={"batch_size": 1})
    assert main(["run", config, "--out", str(tmp_path / "run")]) == 2
    assert "set train.batch_size to 2 or more" in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------- one test image per class


def test_silhouette_is_undefined_not_an_error_with_one_image_per_class():
    rng = np.random.RandomState(0)
    z, one_each = rng.randn(10, 5), np.arange(10)
    assert np.isnan(class_silhouette(z, one_each))
    assert -1 <= class_silhouette(z, np.arange(10) % 5) <= 1  # two per class: defined
    assert class_silhouette(z, np.zeros(10, int)) == 0.0
    scores = cluster_scores(z, one_each)
    assert np.isnan(scores["silhouette"]) and 0 <= scores["kmeans_nmi"] <= 1


@pytest.mark.slow
def test_digits_with_one_test_image_per_class_completes_with_the_silhouette_left_blank(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["run", "--set", "data.test_subset=10", "--set", "train.epochs=1", "--set", "analysis.figure_formats=[png]",
            "--set", "train.regimes=[supervised]", "--set", f"analysis.skip=[{', '.join(INTERPRETABILITY)}]",
            "--out", str(out), "--quiet"]  # the interpretability analyses have their own runs with few images
    assert main(argv) == 0, capsys.readouterr().err
    structure = pd.read_csv(out / "metrics" / "structure.csv")
    assert structure.silhouette.isna().all() and structure.kmeans_nmi.notna().all()
    assert "The silhouette is left blank" in (out / "report.html").read_text()
    assert status(out)["state"] == "complete"


# ---------------------------------------------------------------- bounded PCA and memory checks


def test_pca_paths_agree_where_both_run():
    rng = np.random.RandomState(0)
    signal = rng.randn(300, 12) @ (rng.randn(12, 400) * np.linspace(3, 1, 12)[:, None])
    pixels = {split: torch.from_numpy(signal[rows] + 0.01 * rng.randn(len(rows), 400)).float()
              for split, rows in (("train", np.arange(200)), ("val", np.arange(200, 250)),
                                  ("test", np.arange(250, 300)))}
    exact = pca_baseline(pixels, 8)["latent"]
    state = torch.get_rng_state()
    bounded = pca_baseline(pixels, 8, exact_limit=100)["latent"]
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is left untouched
    for split in pixels:
        a, b = exact[split].double(), bounded[split].double()
        signs = torch.sign((a * b).sum(0))  # each component's sign is arbitrary in the exact path
        assert torch.allclose(a * signs, b, rtol=1e-3, atol=1e-3 * float(a.abs().max())), split
    again = pca_baseline(pixels, 8, exact_limit=100)["latent"]
    assert all(torch.equal(again[s], bounded[s]) for s in pixels)  # seeded: the same data, the same basis


def test_pca_of_large_images_never_builds_the_pixel_covariance():
    x = torch.randn(40, 200_000)  # a D×D covariance would need 320 GB
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    mean, basis = randomised_components(x, 8)
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert basis.shape == (200_000, 8) and torch.allclose(basis.T @ basis, torch.eye(8), atol=1e-4)
    assert grown_mib < 500, grown_mib
    assert torch.allclose(mean, x.mean(0))


def test_analysed_features_larger_than_memory_are_refused_before_anything_is_written(tmp_path, capsys,
                                                                                    monkeypatch):
    config = write_config(tmp_path)
    monkeypatch.setattr("replearn.experiment.preflight.available_memory", lambda: 10_000)
    assert main(["run", config, "--out", str(tmp_path / "run")]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "the analyses would hold 126 images × 64 pixel features" in line and "analysis.max_images_per_split" in line
    assert not (tmp_path / "run").exists()
    data = load_dataset(config_from_dict(yaml.safe_load(Path(config).read_text())).data)
    check_features_fit(data, 6, available=1 << 30)  # the same data fit in a GiB
    with pytest.raises(ConfigError, match="more than the 0.0 GiB"):
        check_features_fit(data, 6, available=10_000)


def test_model_size_is_measured_without_allocating_and_checked(tiny_cfg):
    params, activations = model_size(tiny_cfg, (1, 8, 8), 16)
    real = build_encoder(tiny_cfg.model, (1, 8, 8), 0)
    assert params == sum(p.numel() for p in real.parameters()) and activations > 16 * 8 * 8
    check_model_fits(tiny_cfg, (1, 8, 8), 16, "cpu", available=1 << 30)
    with pytest.raises(ConfigError, match=r"has \d[\d,]* parameters .* more than the"):
        check_model_fits(tiny_cfg, (1, 8, 8), 16, "cpu", available=1000)


def test_a_small_models_counts_from_one_real_image_equal_the_meta_device_counts(tiny_cfg):
    """The small-model shortcut (one real image) gives the meta device's activation and FLOP counts exactly."""
    with torch.device("meta"):
        on_meta = build_encoder(tiny_cfg.model, (1, 8, 8), 0)
    size = measure_encoder(tiny_cfg, (1, 8, 8))
    activations, flops = _forward_counts(on_meta, (1, 8, 8), "meta")
    assert (size.activations_per_image, size.flops_per_image) == (activations, flops)
    assert activations > 0 and flops > 0
    assert model_size(tiny_cfg, (1, 8, 8), 16)[1] == 16 * activations


# ---------------------------------------------------------------- fresh processes: bounded time and memory


def test_a_resnet_of_width_100000_is_refused_in_seconds_without_allocating(tmp_path):
    result, seconds, peak = run_bounded(["run", "--set", "model.name=resnet", "--set", "model.width=100000",
                                         "--out", str(tmp_path / "run")], tmp_path)
    assert result.returncode == 2 and "more than the" in one_error_line(result.stderr)
    assert seconds < 60 and peak < 1500, (seconds, peak)
    assert not (tmp_path / "run").exists()


def write_cifar10_binary(root: Path) -> Path:
    folder = root / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    rows = np.zeros((20, 3073), np.uint8)
    for name in [f"data_batch_{k}.bin" for k in range(1, 6)] + ["test_batch.bin"]:
        (folder / name).write_bytes(rows.tobytes())
    return folder


def test_a_6_gb_sparse_cifar_batch_is_refused_by_its_size(tmp_path):
    batch = write_cifar10_binary(tmp_path / "cifar") / "data_batch_2.bin"
    records = 6_000_000_000 // 3073 + 1  # whole records: only the format's count refuses it
    with open(batch, "r+b") as fh:
        fh.truncate(records * 3073)
    before = batch.stat()
    result, seconds, peak = run_bounded(["run", "--set", "data.name=cifar10", "--set",
                                         f"data.root={tmp_path / 'cifar'}", "--out", str(tmp_path / "run")],
                                        tmp_path)
    assert result.returncode == 2
    assert f"holds {records:,} records of 3073 bytes" in one_error_line(result.stderr)
    assert seconds < 60 and peak < 1500, (seconds, peak)
    assert (batch.stat().st_size, batch.stat().st_mtime_ns) == (before.st_size, before.st_mtime_ns)


def test_a_cifar_pickle_whose_labels_share_references_is_refused_in_seconds(tmp_path):
    folder = tmp_path / "cifar" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    good = {b"data": np.zeros((20, 3072), np.uint8), b"labels": [i % 10 for i in range(20)]}
    for name in [f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(pickle.dumps(good, protocol=2))
    inner = [0] * 20_000
    shared = pickle.dumps({b"data": np.zeros((20, 3072), np.uint8), b"labels": [inner] * 20_000}, protocol=2)
    assert len(shared) < 200_000  # a small file that NumPy would expand to 3.2 GB of int64
    (folder / "data_batch_4").write_bytes(shared)
    result, seconds, peak = run_bounded(["run", "--set", "data.name=cifar10", "--set",
                                         f"data.root={tmp_path / 'cifar'}", "--out", str(tmp_path / "run")],
                                        tmp_path)
    assert result.returncode == 2 and "'labels'[0] is a list of 20000 items" in one_error_line(result.stderr)
    assert seconds < 60 and peak < 1500, (seconds, peak)


def test_model_kwargs_nested_100000_deep_is_one_line_in_a_fresh_process(tmp_path):
    result, seconds, _ = run_bounded(["probe", str(tmp_path / "m.pt"), "--dataset", "digits", "--model",
                                      "torch.nn:Identity", "--model-kwargs", "[" * 100_000], tmp_path)
    assert result.returncode == 2 and "--model-kwargs must be a JSON object" in one_error_line(result.stderr)
    assert seconds < 60
