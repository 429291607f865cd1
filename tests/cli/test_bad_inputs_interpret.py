"""Bad inputs of the attribution analyses' options (B210–B229: attributions, sanity, faithfulness), checked like
the main catalogue (tests/cli/test_bad_inputs.py): exit status 2, one line naming the problem and the fix, no
traceback, nothing on disk changed, under 30 s. The options are checked before the run directory exists."""
from __future__ import annotations

import pytest

import helpers
from helpers import plugin_module, tiny, write_yaml

REUSING_NET = """
import torch.nn as nn

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.act = nn.ReLU()

    def forward(self, x):
        return self.act(self.conv2(self.act(self.conv1(x)))).mean((2, 3))
"""


def tiny_run(t, *sets: str) -> list[str]:
    """A run of the tiny blob dataset (30 test images, conv stages stage1 and stage2) with ``--set`` options."""
    argv = ["run", write_yaml(t, tiny(t)), "--set", "analysis.skip=[]"]  # the tiny config leaves them out
    for s in sets:
        argv += ["--set", s]
    return argv


CASES = [
    ("B210", "attribution method that does not exist", lambda t: tiny_run(t, "analyses.attributions.methods=[integrated_gradients,occlusion]"), "choose one of: integrated_gradients, smoothgrad, gradient_x_input, gradcam"),
    ("B211", "sanity-check method that does not exist", lambda t: tiny_run(t, "analyses.sanity.methods=lime"), "config key 'analyses.sanity.methods' has invalid value 'lime'"),
    ("B212", "faithfulness method misspelt", lambda t: tiny_run(t, "analyses.faithfulness.methods=smoothgrads"), "did you mean 'smoothgrad'?"),
    ("B213", "Grad-CAM stage the encoder lacks", lambda t: tiny_run(t, "analyses.attributions.gradcam_stage=stage9"), "names the stage 'stage9', which is not one of its stages"),
    ("B214", "Grad-CAM at the latent vector", lambda t: tiny_run(t, "analyses.sanity.gradcam_stage=latent"), "which is its latent vector, not a spatial map"),
    ("B215", "more attribution images than the test split holds", lambda t: tiny_run(t, "analyses.attributions.images=31"), "asks for 31 test images but the test split holds 30"),
    ("B216", "more sanity-check images than the test split holds", lambda t: tiny_run(t, "analyses.sanity.images=500"), "set analyses.sanity.images to at most 30"),
    ("B217", "more faithfulness images than the test split holds", lambda t: tiny_run(t, "analyses.faithfulness.images=100"), "analyses.faithfulness.images' asks for 100 test images"),
    ("B218", "zero Integrated Gradients steps", lambda t: tiny_run(t, "analyses.attributions.ig_steps=0"), "analyses.attributions.ig_steps' must be >= 1, got 0"),
    ("B219", "negative SmoothGrad samples", lambda t: tiny_run(t, "analyses.sanity.smoothgrad_samples=-4"), "analyses.sanity.smoothgrad_samples' must be >= 1, got -4"),
    ("B220", "zero deletion/insertion steps", lambda t: tiny_run(t, "analyses.faithfulness.steps=0"), "analyses.faithfulness.steps' must be >= 1, got 0"),
    ("B221", "zero attribution images", lambda t: tiny_run(t, "analyses.attributions.images=0"), "analyses.attributions.images' must be >= 1, got 0"),
    ("B222", "zero SmoothGrad noise", lambda t: tiny_run(t, "analyses.faithfulness.smoothgrad_noise=0"), "analyses.faithfulness.smoothgrad_noise' must be > 0.0"),
    ("B223", "negative infidelity perturbations", lambda t: tiny_run(t, "analyses.faithfulness.infidelity_samples=-1"), "analyses.faithfulness.infidelity_samples' must be >= 0, got -1"),
    ("B224", "Grad-CAM asked for on an encoder that reuses one ReLU for two layers (Captum's hooks would misread it)", lambda t: tiny_run(t, f"model.name={plugin_module(t, 'plug_b224', REUSING_NET)}:Net", "model.layers=[conv1]", "analyses.attributions.gradcam_stage=conv1"), "calls its module 'module.act' 2 times in one forward pass"),
    ("B225", "no draws for the sanity checks' null floor", lambda t: tiny_run(t, "analyses.sanity.draws=0"), "analyses.sanity.draws' must be >= 1, got 0"),
]


@pytest.mark.parametrize("case_id, what, build, fragment", CASES, ids=[c[0] for c in CASES])
def test_interpret_bad_input_answers_in_one_line(case_id, what, build, fragment, tmp_path, capsys, monkeypatch):
    helpers.assert_refused_in_one_line(case_id, what, build, fragment, tmp_path, capsys, monkeypatch)


def test_interpret_case_ids_are_unique_in_order_and_in_range():
    ids = [case_id for case_id, *_ in CASES]
    assert ids == sorted(set(ids), key=lambda i: int(i[1:])) and all(210 <= int(i[1:]) <= 229 for i in ids)
