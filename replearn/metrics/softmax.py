"""Multinomial logistic regression fitted to convergence by L-BFGS on tall, skinny feature matrices: the solver
behind every linear probe, several penalties at once."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch


class TallSkinnyProducts:
    """The two products of every logistic-regression step, ``W @ zᵀ`` and ``G @ z``, for a tall feature
    matrix z (n ≫ d) and a few rows W, G.

    On CPU they run through NumPy's BLAS (OpenBLAS in NumPy's wheels) on the same memory: for these
    shapes it is 1.5–2× faster than torch's MKL on the AMD CPUs measured (``benchmarks/bench_probe.py``).
    While it works, ``threads()`` lowers torch's own thread count to 1 so torch's spinning OpenMP
    workers do not compete with BLAS's for the cores; the element-wise work between products is small.
    """

    def __init__(self, z: torch.Tensor) -> None:
        self.use_numpy = z.device.type == "cpu" and z.dtype in (torch.float32, torch.float64)
        if self.use_numpy:
            self.z = np.ascontiguousarray(z.numpy())
            self.zt = np.ascontiguousarray(self.z.T)
        else:
            self.z, self.zt = z, z.T.contiguous()

    def logits(self, weight: torch.Tensor) -> torch.Tensor:
        """weight (rows × d) @ zᵀ → rows × n."""
        return torch.from_numpy(weight.detach().numpy() @ self.zt) if self.use_numpy else weight @ self.zt

    def gradient(self, residual: torch.Tensor) -> torch.Tensor:
        """residual (rows × n) @ z → rows × d."""
        return torch.from_numpy(residual.numpy() @ self.z) if self.use_numpy else residual @ self.z

    @contextmanager
    def threads(self) -> Iterator[None]:
        before = torch.get_num_threads()
        if self.use_numpy:
            torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(before)


class _SoftmaxLoss:
    """Mean cross-entropy + λ/2 · ‖W‖² of multinomial logistic regression on z, and its gradient, for any
    number of problems at once (one row of parameters each: W (k×d) then b (k), flattened)."""

    def __init__(self, z: torch.Tensor, target: torch.Tensor, num_classes: int) -> None:
        self.n, self.d = z.shape
        self.k = num_classes
        self.products = TallSkinnyProducts(z)
        self.target_rows = target.to(z.device).view(1, 1, self.n)
        self.minus_one = torch.full((1, 1, self.n), -1.0, dtype=z.dtype, device=z.device)

    def __call__(
        self, params: torch.Tensor, penalties: torch.Tensor, rows: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Loss (rows,) and gradient (rows × parameters) of the problems whose parameters are given (``rows``:
        which problems they are; every problem here shares z)."""
        n, k, d, m = self.n, self.k, self.d, len(params)
        weight = params[:, : k * d].reshape(m * k, d)
        logits = self.products.logits(weight).view(m, k, n)
        return _loss_and_gradient(
            logits,
            params,
            penalties,
            self.target_rows.expand(m, 1, n),
            self.minus_one.expand(m, 1, n),
            lambda r: self.products.gradient(r.view(m * k, n)),
        )


class _StackedSoftmaxLoss:
    """``_SoftmaxLoss`` for problems on different feature matrices of one shape: problem r reads z[r // per]
    (``per`` penalties per matrix). Each matrix keeps its own ``TallSkinnyProducts``; a step multiplies each
    matrix once with the rows of all its running problems (no per-problem copy of a matrix). Matrices with
    fewer samples are padded to one height: ``counts[s]`` rows of matrix s are samples, the rest weigh 0."""

    def __init__(
        self, z: torch.Tensor, target: torch.Tensor, num_classes: int, per: int, counts: torch.Tensor | None = None
    ) -> None:
        self.sets, self.n, self.d = z.shape
        self.k, self.per = num_classes, per
        self.matrices = [TallSkinnyProducts(z[i]) for i in range(self.sets)]
        self.products = self.matrices[0]  # its threads(): the same for every matrix
        self.target = target.to(z.device).view(self.sets, 1, self.n)
        self.minus_one = torch.full((1, 1, self.n), -1.0, dtype=z.dtype, device=z.device)
        self.weight = None
        if counts is not None and bool((counts != self.n).any()):
            rows = torch.arange(self.n, device=z.device)[None, :] < counts.to(z.device)[:, None]
            self.weight = (rows.to(z.dtype) / counts.to(z.dtype)[:, None]).view(self.sets, 1, self.n)

    def __call__(
        self, params: torch.Tensor, penalties: torch.Tensor, rows: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        n, k, d, m = self.n, self.k, self.d, len(params)
        sets = (torch.arange(m, device=params.device) if rows is None else rows) // self.per
        groups = [(s, torch.nonzero(sets == s).squeeze(1)) for s in sets.unique().tolist()]
        logits = torch.empty(m, k, n, dtype=params.dtype, device=params.device)
        for s, pick in groups:
            weight = params[pick, : k * d].reshape(len(pick) * k, d)
            logits[pick] = self.matrices[s].logits(weight).view(len(pick), k, n)

        def gradient_of(residual: torch.Tensor) -> torch.Tensor:
            out = torch.empty(m, k, d, dtype=params.dtype, device=params.device)
            for s, pick in groups:
                part = residual[pick].reshape(len(pick) * k, n)
                out[pick] = self.matrices[s].gradient(part).view(len(pick), k, d)
            return out.view(m * k, d)

        return _loss_and_gradient(
            logits,
            params,
            penalties,
            self.target[sets],
            self.minus_one.expand(m, 1, n),
            gradient_of,
            None if self.weight is None else self.weight[sets],
        )


def _loss_and_gradient(
    logits: torch.Tensor,
    params: torch.Tensor,
    penalties: torch.Tensor,
    target: torch.Tensor,
    minus_one: torch.Tensor,
    gradient_of: Any,
    row_weight: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean cross-entropy + λ/2 · ‖W‖² and its gradient from the problems' logits (m × k × n) without the
    bias; ``gradient_of`` maps the residual (m × k × n) to its product with the features. ``row_weight``
    (m × 1 × n): each sample's weight in place of 1/n (1/count for a padded problem's samples, 0 for its
    padding)."""
    m, k, n = logits.shape
    kd = params.shape[1] - k
    logits.add_(params[:, kd:, None])
    logits -= logits.amax(1, keepdim=True)
    picked = logits.gather(1, target)
    p = logits.exp_()
    total = p.sum(1, keepdim=True)
    if row_weight is None:
        cross_entropy = (total.log().sum((1, 2)) - picked.sum((1, 2))) / n
    else:
        cross_entropy = ((total.log() - picked) * row_weight).sum((1, 2))
    loss = cross_entropy + 0.5 * penalties * params[:, :kd].square().sum(1)
    p.mul_(total.reciprocal_())
    p.scatter_add_(1, target, minus_one)
    if row_weight is not None:  # each sample's own weight, folded into the residual
        p.mul_(row_weight)
    grad_w, grad_b = gradient_of(p), p.sum(2)
    if row_weight is None:
        grad_w.div_(n), grad_b.div_(n)
    grad = torch.empty_like(params)
    grad[:, :kd] = grad_w.view(m, kd) + penalties[:, None] * params[:, :kd]
    grad[:, kd:] = grad_b.view(m, k)
    return loss, grad


class _CurvatureHistory:
    """The last ``mem`` L-BFGS pairs (step, gradient change) of every problem, in a ring buffer; a pair with
    ρ = 0 (empty, or skipped for lack of curvature) has no effect."""

    def __init__(self, mem: int, problems: int, size: int, like: torch.Tensor) -> None:
        opts = {"dtype": like.dtype, "device": like.device}
        self.mem = mem
        self.steps = torch.zeros(mem, problems, size, **opts)
        self.changes = torch.zeros_like(self.steps)
        self.rho = torch.zeros(mem, problems, **opts)
        self.gamma = torch.ones(problems, **opts)

    def direction(self, g: torch.Tensor, idx: torch.Tensor, it: int) -> torch.Tensor:
        """−H·g by the two-loop recursion over the stored pairs, newest first, for the running problems
        ``idx`` at once (g: their gradients)."""
        everyone = len(idx) == self.steps.shape[1]
        s_hist, y_hist, r_hist = (
            (self.steps, self.changes, self.rho)
            if everyone
            else (self.steps[:, idx], self.changes[:, idx], self.rho[:, idx])
        )
        q = g.clone()
        order = [(it - 1 - j) % self.mem for j in range(min(it, self.mem))]
        alphas = []
        for slot in order:
            a = r_hist[slot] * torch.linalg.vecdot(s_hist[slot], q)
            q.addcmul_(a[:, None], y_hist[slot], value=-1.0)
            alphas.append(a)
        r = q.mul_(self.gamma[idx, None])
        for slot, a in zip(reversed(order), reversed(alphas)):
            b = r_hist[slot] * torch.linalg.vecdot(y_hist[slot], r)
            r.addcmul_((a - b)[:, None], s_hist[slot])
        return -r

    def record(
        self, idx: torch.Tensor, it: int, s_vec: torch.Tensor, y_vec: torch.Tensor, accepted: torch.Tensor
    ) -> None:
        """Store iteration ``it``'s pairs of the problems ``idx``; those without positive curvature, or whose
        line search failed (``accepted`` False), are stored with ρ = 0 and keep their scaling γ."""
        sy = (s_vec * y_vec).sum(1)
        good = (sy > 1e-10 * (s_vec.norm(dim=1) * y_vec.norm(dim=1)).clamp_min(1e-30)) & accepted
        slot = it % self.mem
        self.steps[slot, idx], self.changes[slot, idx] = s_vec, y_vec
        self.rho[slot, idx] = torch.where(good, 1.0 / sy.clamp_min(1e-30), torch.zeros_like(sy))
        self.gamma[idx] = torch.where(good, sy / (y_vec * y_vec).sum(1).clamp_min(1e-30), self.gamma[idx])


def _backtrack(
    loss_fn: _SoftmaxLoss | _StackedSoftmaxLoss,
    rows: torch.Tensor,
    penalties: torch.Tensor,
    x_old: torch.Tensor,
    f_old: torch.Tensor,
    g: torch.Tensor,
    direction: torch.Tensor,
    slope: torch.Tensor,
    t: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Armijo backtracking from step ``t`` (halved up to 40 times) for each problem: the new parameters,
    loss and gradient, and which problems found no decrease (they keep their old point)."""
    new_x, new_f, new_g = x_old.clone(), f_old.clone(), g.clone()
    pending = torch.ones(len(x_old), dtype=torch.bool, device=x_old.device)
    for _ in range(40):
        pos = torch.nonzero(pending).squeeze(1)
        trial = x_old[pos] + t[pos, None] * direction[pos]
        f_trial, g_trial = loss_fn(trial, penalties[pos], rows[pos])
        accepted = f_trial <= f_old[pos] + 1e-4 * t[pos] * slope[pos]
        ok = pos[accepted]
        new_x[ok], new_f[ok], new_g[ok] = trial[accepted], f_trial[accepted], g_trial[accepted]
        pending[ok] = False
        t[pos[~accepted]] *= 0.5
        if not pending.any():
            break
    return new_x, new_f, new_g, pending


@torch.no_grad()
def fit_softmax_regression(
    z: torch.Tensor,
    target: torch.Tensor,
    num_classes: int,
    l2s: list[float],
    max_iter: int = 1000,
    tol: float = 1e-4,
    history: int = 200,
    init: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Multinomial logistic regression for several L2 penalties at once, each fitted to convergence.

    Minimises, for each penalty λ, mean cross-entropy + λ/2 · ‖W‖² by L-BFGS until its largest absolute
    gradient entry is ≤ ``tol`` (scikit-learn's lbfgs criterion and default) or ``max_iter`` iterations.
    The problems are independent: each keeps its own curvature history, step length and stopping test
    (one shared line search would let the weakest penalty slow every other), and only their matrix
    products are batched, so one pass over the features serves all penalties still running. A long
    history (200 pairs; each costs one d-vector per class, nothing per sample) makes L-BFGS behave like
    full BFGS on these small problems: on Fashion-MNIST it cuts the iterations to scikit-learn's tolerance
    from ≈ 750 (history 20) to ≈ 175. Steps are found by Armijo backtracking from the unit step.
    ``init`` (W: L×d×K, b: L×K) starts from those weights instead of zero (a warm start: the same optimum,
    reached in fewer iterations from a nearby solution). Returns (W: L×d×K, b: L×K, iterations of the
    slowest penalty).
    """
    n, d = z.shape
    n_l, k = len(l2s), num_classes
    loss_fn = _SoftmaxLoss(z, target, k)
    lam = torch.tensor(l2s, dtype=z.dtype, device=z.device)
    start = None
    if init is not None:
        w0, b0 = init
        start = torch.cat([w0.to(z).transpose(1, 2).reshape(n_l, k * d), b0.to(z).reshape(n_l, k)], 1)
    x, iterations = _minimise(loss_fn, lam, k * (d + 1), max_iter, tol, _history_size(history, max_iter, n), start)
    w = x[:, : k * d].reshape(n_l, k, d).transpose(1, 2).contiguous()
    return w, x[:, k * d :].clone(), iterations


@torch.no_grad()
def fit_softmax_regression_stacked(
    z: torch.Tensor,
    target: torch.Tensor,
    num_classes: int,
    l2s: list[float],
    max_iter: int = 1000,
    tol: float = 1e-4,
    history: int = 200,
    counts: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """``fit_softmax_regression`` on several feature matrices of one shape at once (z: sets × n × d, target:
    sets × n), every penalty on every matrix: the same independent L-BFGS problems, with their products
    batched, so that many small fits (e.g. label-efficiency draws of every size) share each step's overhead.
    ``counts`` (sets,): how many leading rows of each matrix are samples (the rest is padding, which weighs
    nothing; default: every row). Returns (W: sets × L × d × K, b: sets × L × K, iterations of the slowest
    problem)."""
    sets, n, d = z.shape
    n_l, k = len(l2s), num_classes
    loss_fn = _StackedSoftmaxLoss(z, target, k, n_l, counts)
    lam = torch.tensor(l2s, dtype=z.dtype, device=z.device).repeat(sets)
    x, iterations = _minimise(loss_fn, lam, k * (d + 1), max_iter, tol, _history_size(history, max_iter, n))
    w = x[:, : k * d].reshape(sets, n_l, k, d).transpose(2, 3).contiguous()
    return w, x[:, k * d :].reshape(sets, n_l, k).clone(), iterations


def _history_size(history: int, max_iter: int, n: int) -> int:
    """Curvature pairs to keep: long histories pay off when a pass over the data costs more than the recursion
    over the history (a few images: a short one)."""
    return max(1, min(history, max_iter, max(10, n // 100)))


def _minimise(
    loss_fn: _SoftmaxLoss | _StackedSoftmaxLoss,
    lam: torch.Tensor,
    size: int,
    max_iter: int,
    tol: float,
    history: int,
    start: torch.Tensor | None = None,
) -> tuple[torch.Tensor, int]:
    """L-BFGS from zero (or ``start``) on every problem (one per penalty in ``lam``), each with its own history,
    step length and stopping test (see ``fit_softmax_regression``); returns the parameters and the most
    iterations any problem took."""
    n_l = len(lam)
    rows = torch.arange(n_l, device=lam.device)
    if start is not None and start.shape != (n_l, size):
        raise ValueError(f"a warm start of shape {tuple(start.shape)} for {n_l} problems of {size} parameters")
    x = torch.zeros(n_l, size, dtype=lam.dtype, device=lam.device) if start is None else start.clone()
    with loss_fn.products.threads():
        loss, grad = loss_fn(x, lam, rows)
        pairs = _CurvatureHistory(history, n_l, size, x)
        active = grad.abs().amax(1) > tol
        iterations = torch.zeros(n_l, dtype=torch.long, device=lam.device)
        for it in range(max_iter):
            if not active.any():
                break
            idx = torch.nonzero(active).squeeze(1)
            g = grad[idx]
            direction = pairs.direction(g, idx, it)
            slope = (g * direction).sum(1)
            uphill = slope >= 0
            if uphill.any():  # a stale history: fall back to steepest descent for those problems
                direction[uphill] = -g[uphill]
                slope[uphill] = -(g[uphill] ** 2).sum(1)
            t = torch.ones(len(idx), dtype=lam.dtype, device=lam.device)
            if it == 0:
                t = torch.clamp(1.0 / g.abs().sum(1), max=1.0)  # torch's first-step scaling from zero
            x_old = x[idx]
            new_x, new_f, new_g, pending = _backtrack(loss_fn, idx, lam[idx], x_old, loss[idx], g, direction, slope, t)
            stalled = idx[pending]  # no decrease found even for tiny steps: converged to float precision
            pairs.record(idx, it, new_x - x_old, new_g - g, ~pending)
            x[idx], loss[idx], grad[idx] = new_x, new_f, new_g
            iterations[idx] += 1
            active[idx] = new_g.abs().amax(1) > tol
            active[stalled] = False
    return x, int(iterations.max())
