"""`replearn probe` of models replearn did not train: an nn.Module by import path with its state_dict, read
at named layers by forward hooks, a torch.export program read at its output and graph nodes, and a
TorchScript file (the last two only with --trust-model-code). Each result must equal a probe computed here
directly from the same model's activations."""
from __future__ import annotations

import json
import sys
import warnings

import numpy as np
import pytest
import torch

from replearn.cli.main import main
from replearn.config.sections import DataConfig
from replearn.data import load_dataset
from replearn.encoders.tapped import TappedModule
from replearn.metrics.probes import linear_probe

USER_MODULE = '''
import torch.nn as nn

class TinyNet(nn.Module):
    def __init__(self, width=8):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(width, 2 * width, 3, padding=1, stride=2), nn.ReLU())
        self.head = nn.Linear(2 * width, 5)

    def forward(self, x):
        return self.head(self.block(self.stem(x)).mean((2, 3)))
'''


@pytest.fixture
def user_model(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    (tmp_path / "user_tinynet.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("user_tinynet", None)
    import importlib

    module = importlib.import_module("user_tinynet")
    torch.manual_seed(0)
    net = module.TinyNet(width=6)
    with torch.no_grad():  # non-trivial batch-norm statistics, so eval mode matters
        net.stem[1].running_mean.uniform_(-0.5, 0.5)
        net.stem[1].running_var.uniform_(0.5, 2.0)
    torch.save(net.state_dict(), tmp_path / "tinynet.pt")
    return net


def direct_probe(net: torch.nn.Module, layer: str, data) -> float:
    """The same protocol by hand: eval-mode activations of ``layer`` (pooled like replearn does for maps)."""
    import torch.nn.functional as F

    from replearn.encoders.extract import pooled_grid

    grabbed = {}
    target = dict(net.named_modules())[layer]
    handle = target.register_forward_hook(lambda m, i, o: grabbed.__setitem__("x", o))
    net.eval()
    feats = {}
    with torch.no_grad():
        for split in ("train", "val", "test"):
            net(getattr(data, f"{split}_x"))
            x = grabbed["x"]
            if x.ndim == 4:
                info = TappedModule(net, data.image_shape, [layer]).feature_info[0]
                x = F.adaptive_avg_pool2d(x, pooled_grid(info, 1024))
            feats[split] = x.flatten(1)
    handle.remove()
    return linear_probe(*((feats[s], getattr(data, f"{s}_y")) for s in ("train", "val", "test")),
                        [1e-5, 1e-4, 1e-3, 1e-2], 500, 3e-4).test_accuracy


def test_state_dict_probed_by_import_path_at_two_named_layers(user_model, tmp_path, capsys):
    out = tmp_path / "result.json"
    code = main(["probe", str(tmp_path / "tinynet.pt"), "--dataset", "digits", "--model", "user_tinynet:TinyNet",
                 "--model-kwargs", '{"width": 6}', "--layer", "stem", "--layer", "block.0", "--json", str(out)])
    assert code == 0, capsys.readouterr().err
    result = json.loads(out.read_text())
    data = load_dataset(DataConfig())
    got = {row["layer"]: row["linear_test_accuracy"] for row in result["results"]}
    assert set(got) == {"stem", "block.0"}
    for layer in ("stem", "block.0"):
        assert got[layer] == pytest.approx(direct_probe(user_model, layer, data), abs=1e-4), layer
    protocol = result["protocol"]
    assert protocol["splits"] == {"train": len(data.train_y), "val": len(data.val_y), "test": len(data.test_y)}
    assert protocol["l2_chosen_on"] == "validation" and protocol["tol"] == 3e-4


def test_torchscript_file_is_probed_at_its_output(user_model, tmp_path, capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is deprecated as of torch 2.13
        torch.jit.save(torch.jit.script(user_model.eval()), str(tmp_path / "tinynet.ts"))
    out = tmp_path / "ts.json"
    assert main(["probe", str(tmp_path / "tinynet.ts"), "--dataset", "digits", "--trust-model-code",
                 "--json", str(out)]) == 0, capsys.readouterr().err
    rows = json.loads(out.read_text())["results"]
    data = load_dataset(DataConfig())
    with torch.no_grad():
        feats = {s: user_model(getattr(data, f"{s}_x")) for s in ("train", "val", "test")}
    expected = linear_probe(*((feats[s], getattr(data, f"{s}_y")) for s in ("train", "val", "test")),
                            [1e-5, 1e-4, 1e-3, 1e-2], 500, 3e-4).test_accuracy
    assert [r["layer"] for r in rows] == ["latent"]
    assert rows[0]["linear_test_accuracy"] == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("argv_tail, fragment", [
    (["--model", "user_tinynet:TinyNet", "--model-kwargs", '{"width": 6}', "--layer", "stem.9"],
     "the module has no layer 'stem.9' — fix: choose module paths such as stem, stem.0"),
    (["--model", "user_tinynet:TinyNet", "--model-kwargs", '{"width": 4}'], "shape differs for stem.0.weight"),
    (["--model", "no_such_module_x:Net"], "could not be imported"),
    (["--model", "user_tinynet:TinyNet", "--model-kwargs", "[1]"], "--model-kwargs must be a JSON object"),
])
def test_foreign_model_errors_are_one_line(user_model, tmp_path, capsys, argv_tail, fragment):
    capsys.readouterr()
    assert main(["probe", str(tmp_path / "tinynet.pt"), "--dataset", "digits", *argv_tail]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and fragment in err, err
    assert not list(tmp_path.glob("*.json"))


def test_features_export_matches_the_models_activations(user_model, tmp_path, capsys):
    out = tmp_path / "feats.npz"
    assert main(["features", str(tmp_path / "tinynet.pt"), "--dataset", "digits", "--model", "user_tinynet:TinyNet",
                 "--model-kwargs", '{"width": 6}', "--layer", "block.0", "--layer", "latent",
                 "--out", str(out)]) == 0, capsys.readouterr().err
    arrays = dict(np.load(out))
    data = load_dataset(DataConfig())
    assert list(arrays["layers"]) == ["block.0", "latent"]
    user_model.eval()
    with torch.no_grad():
        logits = user_model(data.test_x)
    assert np.allclose(arrays["latent.test"], logits.numpy(), atol=1e-5)
    assert np.array_equal(arrays["labels.val"], data.val_y.numpy())
    assert arrays["block.0.train"].shape[0] == len(data.train_y)
    fingerprints = arrays["images.test"]  # what `replearn similarity` checks two exports' image sets by
    assert fingerprints.shape == (len(data.test_y),) and len(set(fingerprints.tolist())) == len(np.unique(
        data.test_x.numpy().reshape(len(data.test_y), -1), axis=0))


def test_features_export_of_a_replearn_checkpoint_reproduces_its_probe(tmp_path, capsys):
    """The exported latent of a run's checkpoint, probed here, gives the accuracy `replearn probe` reports."""
    run_dir = tmp_path / "run"
    skip = "[dimensions, similarity, label_efficiency, projection, structure, inspection, rulers, collapse, " \
           "attributions, sanity, faithfulness, invariance, robustness, units]"  # only its checkpoint is read here
    assert main(["run", "--set", "train.epochs=1", "--set", f"analysis.skip={skip}", "--set",
                 "analysis.figure_formats=png", "--out", str(run_dir), "--quiet"]) == 0
    ckpt = run_dir / "checkpoints" / "supervised_seed0.pt"
    assert main(["features", str(ckpt), "--dataset", "digits", "--layer", "latent", "--out", str(tmp_path / "f.npz")]) == 0
    assert main(["probe", str(ckpt), "--dataset", "digits", "--layer", "latent", "--json", str(tmp_path / "p.json")]) == 0
    arrays = dict(np.load(tmp_path / "f.npz"))
    direct = linear_probe(*((arrays[f"latent.{s}"], arrays[f"labels.{s}"]) for s in ("train", "val", "test")),
                          [1e-5, 1e-4, 1e-3, 1e-2], 500, 3e-4).test_accuracy
    reported = json.loads((tmp_path / "p.json").read_text())["results"][0]["linear_test_accuracy"]
    assert reported == pytest.approx(direct, abs=1e-4)


def test_a_plain_module_by_import_path_trains_under_every_regime_and_is_probed_at_its_layers(user_model, tmp_path):
    """model.name = an nn.Module class by import path, model.layers = module paths: the same comparison as
    for replearn's own encoders (supervised head and autoencoder decoder built from the tapped shapes)."""
    import pandas as pd
    import yaml

    from helpers import tiny_config
    from helpers import blobs_npz

    raw = tiny_config(blobs_npz(tmp_path))
    raw["model"] = {"name": "user_tinynet:TinyNet", "kwargs": {"width": 4}, "layers": ["stem", "block"]}
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(raw))
    assert main(["run", str(tmp_path / "exp.yaml"), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    probes = pd.read_csv(tmp_path / "run" / "metrics" / "probes.csv")
    for model in ("random", "supervised", "autoencoder"):
        assert set(probes[probes.model == model].layer) == {"stem", "block", "latent"}
    sup = probes[(probes.model == "supervised") & (probes.layer == "latent") & (probes.probe == "linear")]
    assert sup.test_accuracy.iloc[0] > 0.9  # the blobs are easy: a trained module separates them
    checkpoint = tmp_path / "run" / "checkpoints" / "supervised_seed0.pt"
    probe = ["probe", str(checkpoint), "--dataset", "npz", "--set", f"data.root={tmp_path / 'blobs.npz'}",
             "--layer", "block", "--json", str(tmp_path / "p.json")]
    assert main(probe) == 2  # the checkpoint names an import path: replearn imports it only when the user does
    assert main([*probe, "--model", "user_tinynet:TinyNet"]) == 0
    assert json.loads((tmp_path / "p.json").read_text())["results"][0]["layer"] == "block"


def test_torch_export_program_is_probed_and_exported_at_its_output_and_graph_nodes(user_model, tmp_path, capsys):
    """A .pt2 program (exported in eval mode with a free batch size): its 'relu' node is the stem's output, its
    output the logits; the probe and the exported features equal those of the eager model."""
    program = torch.export.export(user_model.eval(), (torch.zeros(2, 1, 8, 8),),
                                  dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, str(tmp_path / "tinynet.pt2"))
    relu = next(n.name for n in program.graph.nodes if n.op == "call_function" and "relu" in n.name)
    out = tmp_path / "pt2.json"
    assert main(["probe", str(tmp_path / "tinynet.pt2"), "--dataset", "digits", "--trust-model-code",
                 "--layer", relu, "--layer", "latent", "--json", str(out)]) == 0, capsys.readouterr().err
    result = json.loads(out.read_text())
    data = load_dataset(DataConfig())
    got = {row["layer"]: row["linear_test_accuracy"] for row in result["results"]}
    assert got[relu] == pytest.approx(direct_probe(user_model, "stem", data), abs=1e-4)
    with torch.no_grad():
        logits = {s: user_model(getattr(data, f"{s}_x")) for s in ("train", "val", "test")}
    expected = linear_probe(*((logits[s], getattr(data, f"{s}_y")) for s in ("train", "val", "test")),
                            [1e-5, 1e-4, 1e-3, 1e-2], 500, 3e-4).test_accuracy
    assert got["latent"] == pytest.approx(expected, abs=1e-4)
    assert result["model"] == "torch.export" and result["trusted_code"] is True
    assert result["protocol"]["splits"]["test"] == len(data.test_y) and result["protocol"]["l2_chosen_on"] == "validation"
    assert main(["features", str(tmp_path / "tinynet.pt2"), "--dataset", "digits", "--trust-model-code",
                 "--layer", "latent", "--out", str(tmp_path / "f.npz")]) == 0
    assert np.allclose(np.load(tmp_path / "f.npz")["latent.test"], logits["test"].numpy(), atol=1e-5)
