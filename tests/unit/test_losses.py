"""Each Siamese / supervised-contrastive loss and its gradient against a reference transcribed from the paper's
own pseudo-code (Barlow Twins' and VICReg's Algorithm 1 in PyTorch, BYOL's and SimSiam's algorithm listings,
SupCon's eq. 2 written out as sums), in float64 to 1e-6; BYOL's target update against its formula."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from replearn.regimes.losses import (barlow_twins_loss, byol_loss, cosine_tau, ema_update, off_diagonal,
                                     simsiam_loss, supcon_loss, vicreg_loss)

N, D = 9, 6
TOL = 1e-6


def pair(seed: int = 0, scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    a = scale * torch.randn(N, D, generator=g, dtype=torch.float64)
    b = a + 0.5 * torch.randn(N, D, generator=g, dtype=torch.float64)  # correlated, as two views are
    return a.requires_grad_(), b.requires_grad_()


def grads(loss: torch.Tensor, *inputs: torch.Tensor) -> list[torch.Tensor]:
    return [g if g is not None else torch.zeros_like(x)
            for g, x in zip(torch.autograd.grad(loss, inputs, allow_unused=True), inputs)]


def assert_same(ours: torch.Tensor, reference: torch.Tensor, *inputs: torch.Tensor) -> None:
    assert abs(ours.item() - reference.item()) < TOL, (ours.item(), reference.item())
    for g_ours, g_ref in zip(grads(ours, *inputs), grads(reference, *inputs)):
        assert torch.allclose(g_ours, g_ref, atol=TOL, rtol=0), (g_ours - g_ref).abs().max()


# --- references, transcribed from the papers -------------------------------------------------------------

def barlow_twins_reference(z_a: torch.Tensor, z_b: torch.Tensor, lambd: float) -> torch.Tensor:
    """Zbontar et al. 2021, Algorithm 1 (the in-place off_diagonal(c_diff).mul_(lambda) as a weight matrix)."""
    n, d = z_a.shape
    z_a_norm = (z_a - z_a.mean(0)) / z_a.std(0)
    z_b_norm = (z_b - z_b.mean(0)) / z_b.std(0)
    c = torch.mm(z_a_norm.T, z_b_norm) / n
    c_diff = (c - torch.eye(d, dtype=c.dtype)).pow(2)
    weight = torch.full((d, d), lambd, dtype=c.dtype).fill_diagonal_(1.0)
    return (c_diff * weight).sum()


def vicreg_reference(z_a: torch.Tensor, z_b: torch.Tensor, lam: float, mu: float, nu: float) -> torch.Tensor:
    """Bardes et al. 2022, Algorithm 1 (off_diagonal(m).pow(2).sum() written as the sum of squares minus the
    diagonal's)."""
    n, d = z_a.shape
    sim_loss = F.mse_loss(z_a, z_b)
    std_z_a = torch.sqrt(z_a.var(dim=0) + 1e-04)
    std_z_b = torch.sqrt(z_b.var(dim=0) + 1e-04)
    std_loss = torch.mean(F.relu(1 - std_z_a)) + torch.mean(F.relu(1 - std_z_b))
    z_a = z_a - z_a.mean(dim=0)
    z_b = z_b - z_b.mean(dim=0)
    cov_z_a = (z_a.T @ z_a) / (n - 1)
    cov_z_b = (z_b.T @ z_b) / (n - 1)

    def off_sq(m: torch.Tensor) -> torch.Tensor:
        return m.pow(2).sum() - torch.diagonal(m).pow(2).sum()

    cov_loss = off_sq(cov_z_a) / d + off_sq(cov_z_b) / d
    return lam * sim_loss + mu * std_loss + nu * cov_loss


def byol_reference(q: torch.Tensor, z_target: torch.Tensor) -> torch.Tensor:
    """Grill et al. 2020, eq. 2: ‖q̄ − z̄′‖², q̄ = q/‖q‖, z̄′ = sg(z′)/‖z′‖, mean over the batch."""
    z_target = z_target.detach()
    q_bar = q / q.norm(dim=1, keepdim=True)
    z_bar = z_target / z_target.norm(dim=1, keepdim=True)
    return (q_bar - z_bar).pow(2).sum(1).mean()


def simsiam_reference(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Chen & He 2021, Algorithm 1, D(p, z)."""
    z = z.detach()  # stop gradient
    p = F.normalize(p, dim=1)
    z = F.normalize(z, dim=1)
    return -(p * z).sum(dim=1).mean()


def supcon_reference(z: torch.Tensor, labels: list[int], tau: float) -> torch.Tensor:
    """Khosla et al. 2020, eq. 2 (L_out), as the sums are written, divided by the number of anchors."""
    z = z / z.norm(dim=1, keepdim=True)
    total, anchors = z.new_zeros(()), 0
    for i in range(len(z)):
        positives = [p for p in range(len(z)) if p != i and labels[p] == labels[i]]
        if not positives:
            continue
        denominator = sum(torch.exp(z[i] @ z[a] / tau) for a in range(len(z)) if a != i)
        term = sum(torch.log(torch.exp(z[i] @ z[p] / tau) / denominator) for p in positives)
        total = total - term / len(positives)
        anchors += 1
    return total / anchors


# --- tests ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("lambd", [0.0051, 0.5])
def test_barlow_twins_loss_and_gradient_equal_the_papers_pseudo_code(lambd):
    a, b = pair()
    assert_same(barlow_twins_loss(a, b, lambd), barlow_twins_reference(a, b, lambd), a, b)


@pytest.mark.parametrize("scale", [0.2, 3.0])  # small: the variance hinge is active; large: it is not
def test_vicreg_loss_and_gradient_equal_the_papers_pseudo_code(scale):
    a, b = pair(1, scale)
    loss, terms = vicreg_loss(a, b, 25.0, 25.0, 1.0)
    assert_same(loss, vicreg_reference(a, b, 25.0, 25.0, 1.0), a, b)
    assert terms["invariance"].item() == pytest.approx(F.mse_loss(a, b).item(), abs=TOL)
    assert (float(terms["variance"]) > 0) == (scale < 1)


def test_vicreg_weights_weigh_their_own_term():
    a, b = pair(3)
    _, terms = vicreg_loss(a, b)
    loss, _ = vicreg_loss(a, b, 2.0, 3.0, 5.0)
    expected = 2.0 * terms["invariance"] + 3.0 * terms["variance"] + 5.0 * terms["covariance"]
    assert loss.item() == pytest.approx(expected.item(), abs=TOL)


def test_byol_loss_and_gradient_equal_the_listing_and_no_gradient_reaches_the_target():
    q, z = pair(4)
    assert_same(byol_loss(q, z), byol_reference(q, z), q, z)
    g_target = torch.autograd.grad(byol_loss(q, z), z, allow_unused=True)[0]
    assert g_target is None


@pytest.mark.parametrize("stop_gradient", [True, False])
def test_simsiam_loss_and_gradient_equal_the_listing_with_and_without_stop_gradient(stop_gradient):
    p, z = pair(5)
    ours = simsiam_loss(p, z, stop_gradient)
    if stop_gradient:
        assert_same(ours, simsiam_reference(p, z), p, z)
    else:  # the ablation: the same value, and a gradient into z that is D's gradient with z and p swapped
        assert ours.item() == pytest.approx(simsiam_reference(p, z).item(), abs=TOL)
        g_z = torch.autograd.grad(ours, z)[0]
        expected = torch.autograd.grad(simsiam_reference(z, p), z)[0]
        assert torch.allclose(g_z, expected, atol=TOL, rtol=0)


@pytest.mark.parametrize("tau", [0.1, 0.5])
def test_supcon_loss_and_gradient_equal_eq_2_written_as_sums(tau):
    g = torch.Generator().manual_seed(6)
    z = torch.randn(2 * N, D, generator=g, dtype=torch.float64).requires_grad_()
    labels = [0, 1, 2, 0, 1, 2, 0, 1, 3] * 2  # two views of 9 images; classes of different sizes
    assert_same(supcon_loss(z, torch.tensor(labels), tau), supcon_reference(z, labels, tau), z)


def test_supcon_skips_anchors_without_positives_and_equals_nt_xent_with_unique_labels():
    from replearn.regimes.contrastive import nt_xent
    g = torch.Generator().manual_seed(7)
    z = torch.randn(2 * N, D, generator=g, dtype=torch.float64)
    unique = torch.arange(N).repeat(2)  # every image its own class: the only positive is the other view
    assert float(supcon_loss(z, unique, 0.5)) == pytest.approx(float(nt_xent(z[:N], z[N:], 0.5)[0]), abs=1e-5)
    lonely = torch.tensor([0, 0, 1])  # the third anchor has no positive: it is left out
    three = torch.randn(3, D, generator=g, dtype=torch.float64)
    assert float(supcon_loss(three, lonely, 0.5)) == pytest.approx(
        float(supcon_reference(three, lonely.tolist(), 0.5)), abs=TOL)


def test_off_diagonal_lists_every_entry_off_the_diagonal_once():
    m = torch.arange(16.0).view(4, 4)
    assert sorted(off_diagonal(m).tolist()) == sorted(v for i, row in enumerate(m.tolist())
                                                       for j, v in enumerate(row) if i != j)


def test_ema_update_follows_the_formula():
    online, target = nn.Linear(3, 2), nn.Linear(3, 2)
    before = [p.detach().clone() for p in target.parameters()]
    ema_update(online, target, 0.9)
    for xi_new, xi, theta in zip(target.parameters(), before, online.parameters()):
        assert torch.allclose(xi_new, 0.9 * xi + 0.1 * theta, atol=1e-7)
    ema_update(online, target, 1.0)  # τ = 1: the target stays
    ema_update(online, target, 0.0)  # τ = 0: the target becomes the online network
    for xi, theta in zip(target.parameters(), online.parameters()):
        assert torch.equal(xi, theta)


def test_cosine_tau_rises_from_base_to_one_on_the_published_schedule():
    base, total = 0.996, 100
    assert cosine_tau(0, total, base) == pytest.approx(base)
    assert cosine_tau(total, total, base) == pytest.approx(1.0)
    for k in (10, 50, 73):
        assert cosine_tau(k, total, base) == pytest.approx(1 - (1 - base) * (math.cos(math.pi * k / total) + 1) / 2)
    taus = [cosine_tau(k, total, base) for k in range(total + 1)]
    assert all(a <= b for a, b in zip(taus, taus[1:]))
