"""A user's own regime and encoder, written in their own module, run end to end by import path with no
edit inside replearn/; and the registries that make that possible."""
import json
import sys
import textwrap

import pandas as pd
import pytest
import torch
import yaml

from replearn.cli.main import main
from replearn.errors import ConfigError
from replearn.config.registry import Registry, import_object

from helpers import tiny_config

PLUGIN = textwrap.dedent('''
    """A user's plug-ins: a regime that predicts the image's mean brightness, and a two-layer MLP encoder."""
    import torch
    import torch.nn as nn

    from replearn.encoders import Encoder, StageInfo
    from replearn.regimes import Regime


    class Brightness(Regime):
        name = "brightness"
        label = "brightness regression"
        color = "#123456"

        def build_head(self, encoder, data):
            return nn.Linear(encoder.latent_dim, 1)

        def loss(self, encoder, head, x, y, generator):
            target = x.mean((1, 2, 3))
            error = (head(encoder(x)).squeeze(1) - target).square()
            return error.mean(), {"brightness_sq_error": error.detach().sum()}

        def metrics(self, sums, images, pixels):
            return {"brightness_mse": sums["brightness_sq_error"] / images}


    class TinyMLP(Encoder):
        def __init__(self, in_shape, latent_dim, hidden=12):
            super().__init__()
            self.in_shape, self.latent_dim = tuple(in_shape), latent_dim
            size = in_shape[0] * in_shape[1] * in_shape[2]
            self.hidden = nn.Sequential(nn.Flatten(), nn.Linear(size, hidden), nn.ReLU())
            self.out = nn.Linear(hidden, latent_dim)
            self.feature_info = [StageInfo("hidden", hidden, 1, 1, 1, "hidden"),
                                 StageInfo("latent", latent_dim, 1, 1, 0, "out")]

        def forward_features(self, x, layers=None):
            wanted = self.check_layers(layers)
            h = self.hidden(x)
            out = {"hidden": h, "latent": self.out(h)}
            return {k: out[k] for k in wanted}
''')


@pytest.fixture
def plugin_dir(tmp_path, monkeypatch):
    (tmp_path / "my_plugins.py").write_text(PLUGIN)
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    sys.modules.pop("my_plugins", None)


def test_user_regime_and_encoder_run_end_to_end_by_import_path(plugin_dir, blob_npz, capsys):
    raw = tiny_config(blob_npz, epochs=2, regimes=["supervised", "my_plugins:Brightness"])
    raw["model"] = {"name": "my_plugins:TinyMLP", "latent_dim": 6, "kwargs": {"hidden": 10}}
    (plugin_dir / "exp.yaml").write_text(yaml.safe_dump(raw))
    out = plugin_dir / "run"
    assert main(["run", "exp.yaml", "--out", str(out), "--quiet"]) == 0
    probes = pd.read_csv(out / "metrics" / "probes.csv")
    assert {"brightness", "supervised", "random"} <= set(probes.model)
    assert set(probes[probes.model == "brightness"].layer) == {"hidden", "latent"}
    models = json.loads((out / "models.json").read_text())
    assert {"name": "brightness", "label": "brightness regression", "color": "#123456"}.items() <= \
        next(m for m in models if m["name"] == "brightness").items()
    assert (out / "metrics" / "train_brightness_seed0.csv").is_file()
    html = (out / "report.html").read_text()
    assert "brightness regression" in html
    ckpt = torch.load(out / "checkpoints" / "brightness_seed0.pt", weights_only=True)
    assert ckpt["encoder_spec"] == {"name": "my_plugins:TinyMLP",
                                    "kwargs": {"in_shape": [1, 8, 8], "latent_dim": 6, "hidden": 10}}
    # both regimes started from the same initial encoder: the init checkpoint is what each began with
    init = torch.load(out / "checkpoints" / "init_seed0.pt", weights_only=True)["encoder"]
    assert set(init) == set(ckpt["encoder"])
    capsys.readouterr()
    # replearn probe rebuilds the user's encoder from the checkpoint (its import path confirmed with --model:
    # replearn imports no module a file names) and reproduces the run's probe
    assert main(["probe", str(out / "checkpoints" / "brightness_seed0.pt"), "--dataset", "npz", "--layer", "latent",
                 "--model", "my_plugins:TinyMLP", "--json", str(plugin_dir / "probe.json")]) == 0
    result = json.loads((plugin_dir / "probe.json").read_text())["results"][0]
    run_acc = probes.query("model == 'brightness' and layer == 'latent' and probe == 'linear'").test_accuracy.iloc[0]
    assert abs(result["linear_test_accuracy"] - run_acc) <= 0.005


def test_registry_names_import_paths_and_errors(plugin_dir):
    reg: Registry = Registry("widget")

    @reg.register("round")
    class Round:
        pass

    assert reg.get("round") is Round and "round" in reg and reg.names() == ["round"]
    with pytest.raises(ConfigError, match="unknown widget 'rund'.*did you mean 'round'"):
        reg.get("rund")
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("round")(type("Other", (), {}))
    assert import_object("my_plugins:TinyMLP", "encoder").__name__ == "TinyMLP"
    with pytest.raises(ConfigError, match="has no attribute 'Nope'"):
        import_object("my_plugins:Nope", "regime")
    with pytest.raises(ConfigError, match="not of the form"):
        import_object("my_plugins:", "regime")
    with pytest.raises(ConfigError, match="could not be imported"):
        import_object("not_a_module_anywhere:X", "regime")


def test_plugin_options_are_validated_like_config_keys(plugin_dir, blob_npz):
    from replearn.config.sections import config_from_dict
    from replearn.experiment.plugins import resolve

    raw = tiny_config(blob_npz, regimes=["my_plugins:Brightness"])
    raw["regimes"] = {"brightness": {"epochs": 1}}
    with pytest.raises(ConfigError, match="another budget.*train.budget=per-regime"):
        resolve(config_from_dict(raw))
    raw["train"]["budget"] = "per-regime"
    assert resolve(config_from_dict(raw)).epochs_for("brightness") == 1
    raw["regimes"] = {"brightness": {"epoch": 1}}
    with pytest.raises(ConfigError, match="'regimes.brightness.epoch' is not an option of regime 'brightness'.*did you "
                                          "mean 'regimes.brightness.epochs'"):
        resolve(config_from_dict(raw))
    raw["regimes"] = {"vae": {"beta": 2.0}}
    with pytest.raises(ConfigError, match="options for 'vae', which train.regimes does not train"):
        resolve(config_from_dict(raw))


FOUR_KINDS = PLUGIN + textwrap.dedent('''

    from dataclasses import dataclass

    import numpy as np
    import pandas as pd

    from replearn.analyses import Analysis, Section
    from replearn.data import Dataset, DatasetSource, LabelledArrays
    from replearn.config.options import opt


    @dataclass
    class StripesOptions:
        classes: int = opt(3, "how many stripe orientations (classes)", min=2, max=4)
        size: int = opt(8, "image side in pixels", min=4)


    class Stripes(DatasetSource):
        """Images of one bright row, column or diagonal per class, plus noise."""

        description = "synthetic stripes"
        Options = StripesOptions

        def make(self, n, seed):
            rng = np.random.RandomState(seed)
            s, k = self.options.size, self.options.classes
            y = np.arange(n) % k
            x = rng.randint(0, 60, size=(n, s, s)).astype(np.uint8)
            for i, label in enumerate(y):
                [x[i, s // 2, :], x[i, :, s // 2], x[i].reshape(-1)[::s + 1], x[i, 1, :]][label] += 150
            return x, y

        def load(self, cfg):
            train_x, train_y = self.make(120, 1)
            test_x, test_y = self.make(40, 2)
            names = [f"stripe{i}" for i in range(self.options.classes)]
            return Dataset.from_arrays("stripes", LabelledArrays(train_x, train_y, test_x, test_y, names), cfg,
                                       source="my_plugins", scale=255.0)


    @dataclass
    class GapOptions:
        layer: str = opt("latent", "the layer compared with each model's best layer")


    class ProbeGap(Analysis):
        """How far each model's chosen layer lags behind its best layer (reads the probes' table)."""

        name = "probe_gap"
        requires = ("probes",)
        Options = GapOptions

        def compute(self, ctx):
            probes = ctx.tables["probes"]
            linear = probes[probes.probe == "linear"]
            rows = []
            for model, part in linear.groupby("model"):
                chosen = part[part.layer == self.options.layer]
                if len(chosen):
                    rows.append({"model": model, "seed": ctx.seed, "layer": self.options.layer,
                                 "gap": float(part.test_accuracy.max() - chosen.test_accuracy.iloc[0])})
            return {"probe_gap": pd.DataFrame(rows)}

        def sections(self, run):
            frame = run.csv("probe_gap")
            if frame is None:
                return []
            return [Section("probe-gap", "Probe gap (plug-in)", guide="best layer minus the chosen layer",
                            bullets=[f"{m}: {g:.3f}" for m, g in zip(frame.model, frame.gap)])]
''')


def test_a_dataset_an_analysis_a_regime_and_an_encoder_run_end_to_end_by_import_path(tmp_path, monkeypatch):
    """Four plug-in kinds from one user module, each with its own options, with no edit inside replearn/."""
    (tmp_path / "four_kinds.py").write_text(FOUR_KINDS)
    monkeypatch.chdir(tmp_path)
    raw = tiny_config(tmp_path / "unused.npz", epochs=2, regimes=["supervised", "four_kinds:Brightness"])
    raw["data"] = {"name": "four_kinds:Stripes", "classes": 4, "size": 8, "val_fraction": 0.2}
    raw["model"] = {"name": "four_kinds:TinyMLP", "latent_dim": 6, "kwargs": {"hidden": 10}}
    raw["analysis"]["extra"] = ["four_kinds:ProbeGap"]
    raw["analyses"] = {"probe_gap": {"layer": "hidden"}}
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(raw))
    out = tmp_path / "run"
    try:
        assert main(["run", "exp.yaml", "--out", str(out), "--quiet"]) == 0
    finally:
        sys.modules.pop("four_kinds", None)
    dataset = json.loads((out / "dataset.json").read_text())
    assert dataset["name"] == "stripes" and dataset["num_classes"] == 4  # the dataset's own option took effect
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["data"]["classes"] == 4 and saved["analyses"]["probe_gap"] == {"layer": "hidden"}
    gap = pd.read_csv(out / "metrics" / "probe_gap.csv")  # computed after, and from, the probes' table
    probes = pd.read_csv(out / "metrics" / "probes.csv").query("probe == 'linear'")
    assert set(gap.layer) == {"hidden"} and {"supervised", "brightness", "random"} <= set(gap.model)
    for model, value in zip(gap.model, gap.gap):
        part = probes[probes.model == model]
        assert value == pytest.approx(part.test_accuracy.max() - part[part.layer == "hidden"].test_accuracy.iloc[0])
    html = (out / "report.html").read_text()
    assert "Probe gap (plug-in)" in html and "brightness regression" in html
    assert set(probes[probes.model == "brightness"].layer) == {"hidden", "latent"}


def test_plugin_options_of_each_kind_are_checked_before_anything_runs(tmp_path, monkeypatch):
    (tmp_path / "four_kinds.py").write_text(FOUR_KINDS)
    monkeypatch.chdir(tmp_path)
    base = tiny_config(tmp_path / "unused.npz", regimes=["supervised"])
    base["data"] = {"name": "four_kinds:Stripes"}
    cases = [({"data": {"name": "four_kinds:Stripes", "classes": 9}}, "data.classes' must be <= 4"),
             ({"data": {"name": "four_kinds:Stripes", "clases": 3}}, "did you mean 'data.classes'"),
             ({"model": {"name": "four_kinds:TinyMLP", "channels": [3]}}, "not an option of encoder 'four_kinds:TinyMLP', which declares no"),
             ({"analysis": {**base["analysis"], "extra": ["four_kinds:ProbeGap"]},
               "analyses": {"probe_gap": {"layr": "x"}}}, "did you mean 'analyses.probe_gap.layer'"),
             ({"analyses": {"probe_gap": {"layer": "x"}}}, "unknown config key 'analyses.probe_gap'")]
    try:
        for change, message in cases:
            (tmp_path / "bad.yaml").write_text(yaml.safe_dump({**base, **change}))
            with pytest.raises(ConfigError, match=message):
                from replearn.experiment.experiment import Experiment

                Experiment("bad.yaml", out=tmp_path / "never")
            assert not (tmp_path / "never").exists()
    finally:
        sys.modules.pop("four_kinds", None)


def test_a_plugin_in_the_current_directory_is_imported_without_changing_sys_path(tmp_path, monkeypatch):
    import sys

    from replearn.config.registry import import_object

    (tmp_path / "my_cwd_plugin.py").write_text("ANSWER = 42\n")
    monkeypatch.chdir(tmp_path)
    before = list(sys.path)
    assert import_object("my_cwd_plugin:ANSWER", "test") == 42
    assert sys.path == before
