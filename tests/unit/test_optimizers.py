"""replearn's Adam, AdamW, SGD and schedule do torch.optim's arithmetic step for step, read and write its
checkpoint layout, and training with them never imports torch._dynamo (the reason they exist)."""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import torch

from replearn.training.optimizers import SGD, Adam, AdamW, LambdaSchedule, lr_factor

METHODS = {
    "adam": (Adam, lambda p, **k: torch.optim.Adam(p, **k)),
    "adamw": (AdamW, lambda p, **k: torch.optim.AdamW(p, **k)),
    "sgd": (SGD, lambda p, **k: torch.optim.SGD(p, momentum=0.9, **k)),
}


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3),
        torch.nn.BatchNorm2d(8),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(8 * 6 * 6, 4),
    ).to(memory_format=torch.channels_last)


def _train(model, opt, schedule, steps: int, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(5, 3, 8, 8, generator=g)
        opt.zero_grad(set_to_none=True)
        model(x).square().mean().backward()
        opt.step()
        schedule.step()


@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("decay", [0.0, 1e-2])
def test_each_method_matches_torch_optim_step_for_step(method, decay):
    ours_cls, theirs_cls = METHODS[method]
    ours, theirs = _model(), _model()
    opt = ours_cls(ours.parameters(), lr=0.01, weight_decay=decay)
    ref = theirs_cls(theirs.parameters(), lr=0.01, weight_decay=decay)
    _train(ours, opt, LambdaSchedule(opt, lr_factor(40)), 25)
    _train(theirs, ref, torch.optim.lr_scheduler.LambdaLR(ref, lr_factor(40)), 25)
    for a, b in zip(ours.parameters(), theirs.parameters(), strict=True):
        assert torch.equal(a, b)  # the same arithmetic in the same order: bit for bit
    assert opt.param_groups[0]["lr"] == pytest.approx(ref.param_groups[0]["lr"], rel=1e-12)
    assert opt.param_groups[0]["lr"] < 0.01  # the cosine decay has started


@pytest.mark.parametrize("method", sorted(METHODS))
def test_a_checkpoint_of_either_resumes_under_the_other_exactly(method):
    ours_cls, theirs_cls = METHODS[method]
    straight = _model()
    opt = ours_cls(straight.parameters(), lr=0.01, weight_decay=1e-3)
    _train(straight, opt, LambdaSchedule(opt, lr_factor(30)), 20)

    first = _model()  # 10 steps under torch.optim, then resumed from its checkpoint under ours
    ref = theirs_cls(first.parameters(), lr=0.01, weight_decay=1e-3)
    ref_schedule = torch.optim.lr_scheduler.LambdaLR(ref, lr_factor(30))
    _train(first, ref, ref_schedule, 10)
    resumed = copy.deepcopy(first)
    opt2 = ours_cls(resumed.parameters(), lr=0.01, weight_decay=1e-3)
    schedule2 = LambdaSchedule(opt2, lr_factor(30))
    opt2.load_state_dict(copy.deepcopy(ref.state_dict()))
    schedule2.load_state_dict(ref_schedule.state_dict())
    g = torch.Generator().manual_seed(1)
    for _ in range(10):  # the same batches the straight run saw at steps 1-10
        torch.randn(5, 3, 8, 8, generator=g)
    for _ in range(10):
        x = torch.randn(5, 3, 8, 8, generator=g)
        opt2.zero_grad()
        resumed(x).square().mean().backward()
        opt2.step()
        schedule2.step()
    for a, b in zip(resumed.parameters(), straight.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)

    # and ours resumes under torch.optim: one more step each, from the same weights, state and batch
    twin = copy.deepcopy(resumed)
    back = theirs_cls(twin.parameters(), lr=0.01, weight_decay=1e-3)
    back_schedule = torch.optim.lr_scheduler.LambdaLR(back, lr_factor(30))  # built, then both loaded
    back.load_state_dict(copy.deepcopy(opt2.state_dict()))  # as from a file: state_dict() shares its tensors
    back_schedule.load_state_dict(schedule2.state_dict())
    x = torch.randn(5, 3, 8, 8, generator=g)
    for model, opt in ((resumed, opt2), (twin, back)):
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()
    for a, b in zip(resumed.parameters(), twin.parameters(), strict=True):
        assert torch.equal(a, b)


def test_options_it_does_not_implement_are_refused_not_ignored():
    params = list(_model().parameters())
    with pytest.raises(TypeError, match="nesterov"):
        SGD(params, lr=0.1, nesterov=True)
    nesterov = torch.optim.SGD(params, lr=0.1, momentum=0.9, nesterov=True)
    with pytest.raises(ValueError, match="nesterov"):
        SGD(params, lr=0.1).load_state_dict(nesterov.state_dict())
    with pytest.raises(ValueError, match="amsgrad"):
        Adam(params, lr=0.1).load_state_dict(torch.optim.Adam(params, amsgrad=True).state_dict())
    assert AdamW(params, lr=0.1).param_groups[0]["weight_decay"] == torch.optim.AdamW(params).defaults["weight_decay"]


def test_a_state_for_another_model_is_refused():
    opt = Adam(_model().parameters(), lr=0.01)
    other = Adam(torch.nn.Linear(2, 2).parameters(), lr=0.01)
    with pytest.raises(ValueError, match="different number of parameters"):
        opt.load_state_dict(other.state_dict())


def test_the_schedule_warms_up_then_decays_to_zero():
    factor = lr_factor(100)
    assert [factor(i) for i in range(5)] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert factor(52) == pytest.approx(0.5, abs=0.02) and factor(100) == pytest.approx(0.0, abs=1e-12)
    assert lr_factor(100, "constant")(0) == 1.0


def test_training_and_feature_visualisation_never_import_torch_dynamo():
    probe = (
        "import sys, torch\n"
        "from replearn.encoders import create_encoder\n"
        "from replearn.interpret.featvis import visualise\n"
        "from replearn.training.steps import make_optimizer\n"
        "from types import SimpleNamespace as S\n"
        "enc = create_encoder('conv', {'in_shape': (1, 8, 8), 'channels': [4, 4], 'latent_dim': 4}, seed=0)\n"
        "opt, sched = make_optimizer(list(enc.parameters()), S(optimizer='adamw', lr=1e-3, weight_decay=0.0,"
        " schedule='cosine'), 10)\n"
        "enc.forward_features(torch.randn(4, 1, 8, 8))['latent'].sum().backward(); opt.step(); sched.step()\n"
        "visualise(enc, [('stage1', 0)], steps=2, lr=0.05, mean=[0.0], std=[1.0])\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "False"
