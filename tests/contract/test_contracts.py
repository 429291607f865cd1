"""Contract tests, parametrised over every registry: each registered dataset, encoder, regime and analysis
goes through the same checks, so a new built-in is tested the moment it is registered."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from replearn.analyses import ANALYSES, RunArtifacts
from replearn.config.sections import model_config
from replearn.data import DATASETS
from replearn.encoders import ENCODERS, build_encoder
from replearn.config.options import option_docs
from replearn.regimes import REGIMES, DataInfo, make_regime

SMALL_ENCODER = {"conv": {"channels": [4, 8]}, "resnet": {"depth": 10, "width": 4}}


def _documented(options_cls: type, prefix: str) -> None:
    assert dataclasses.is_dataclass(options_cls)
    options_cls()  # every option has a default
    for key, type_name, default, help_text in option_docs(options_cls, prefix):
        assert help_text.strip(), f"{key} has no help text"


@pytest.mark.parametrize("name", DATASETS.names())
def test_every_dataset_documents_its_options_and_says_where_its_files_are(name, tmp_path):
    cls = DATASETS.get(name)
    assert cls.name == name and cls.description
    _documented(cls.Options, "data")
    status = cls().status(str(tmp_path))
    assert isinstance(status, str) and status


CONV_VARIANTS = [{"batch_norm": False}, {"convs_per_stage": 3}, {"convs_per_stage": 2, "residual": True},
                 {"convs_per_stage": 2, "residual": True, "batch_norm": False}]
ENCODER_CASES = [(name, {}) for name in ENCODERS.names()] + [("conv", variant) for variant in CONV_VARIANTS]


@pytest.mark.parametrize("name,variant", ENCODER_CASES, ids=[f"{n}-{'-'.join(f'{k}={v}' for k, v in o.items()) or 'default'}"
                                                             for n, o in ENCODER_CASES])
def test_every_encoder_names_its_layers_and_returns_them(name, variant):
    encoder = build_encoder(model_config(name=name, latent_dim=5, **SMALL_ENCODER.get(name, {}), **variant),
                            (1, 16, 16), 0)
    options = getattr(ENCODERS.get(name), "Options", None)
    if options is not None:
        _documented(options, "model")
    names = encoder.layer_names
    assert names[-1] == "latent" and len(set(names)) == len(names)
    out = encoder.eval().forward_features(torch.randn(3, 1, 16, 16))
    assert list(out) == names
    for info in encoder.feature_info:
        assert tuple(out[info.name].shape[1:]) == ((info.channels,) if info.name == "latent" else
                                                   (info.channels, info.height, info.width)), info
    assert torch.equal(encoder(torch.zeros(2, 1, 16, 16)).detach(),
                       encoder.forward_features(torch.zeros(2, 1, 16, 16), ["latent"])["latent"].detach())
    modules = [id(m) for m in encoder.modules()]
    assert len(modules) == len(set(modules)), "an encoder must not reuse a module (hooks would see it twice)"


@pytest.mark.parametrize("name", REGIMES.names())
def test_every_regime_gives_a_finite_scalar_loss_and_its_metrics(name):
    regime = make_regime(name)
    _documented(type(regime).Options, f"regimes.{name}")
    encoder = build_encoder(model_config(channels=[4, 8], latent_dim=6), (1, 8, 8), 0)
    head = regime.build_head(encoder, DataInfo((1, 8, 8), 3))
    x, y = torch.randn(8, 1, 8, 8), torch.arange(8) % 3
    loss, sums = regime.loss(encoder, head, x, y if regime.needs_labels else None, torch.Generator().manual_seed(0))
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in encoder.parameters())
    metrics = regime.metrics({k: float(v) for k, v in sums.items()}, 8, 64)
    assert all(isinstance(v, float) for v in metrics.values())
    assert regime.label and regime.color.startswith("#")


@pytest.mark.parametrize("name", ANALYSES.names())
def test_every_analysis_declares_registered_requirements_and_renders_an_empty_run(name, tmp_path: Path):
    cls = ANALYSES.get(name)
    _documented(cls.Options, f"analyses.{name}")
    assert all(r in ANALYSES for r in cls.requires), cls.requires
    sections = cls().sections(RunArtifacts(tmp_path))  # a run with no files yet: nothing to show, no crash
    assert isinstance(sections, list)
