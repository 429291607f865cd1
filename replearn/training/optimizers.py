"""Adam, AdamW and SGD with momentum, and a learning-rate schedule by a factor per step, step for step the
arithmetic of ``torch.optim`` (its single-tensor CPU path; tests compare them) and its checkpoint format.

Why not ``torch.optim`` itself: its first call imports ``torch._dynamo`` (≈ 1.3 s), in every process that
trains, though nothing here compiles — a tenth of the default digits run. These classes do the same updates
with the ``torch._foreach_*`` kernels, which ``torch.optim`` uses on accelerators; their ``state_dict`` has
``torch.optim``'s layout, so a checkpoint written by either resumes under the other.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch


class Optimizer:
    """One parameter group (``param_groups[0]``: ``params``, ``lr`` and the method's hyperparameters) and a
    state per parameter; ``step`` updates the parameters that have a gradient."""

    defaults: dict[str, Any] = {}
    fixed: dict[str, Any] = {}  # torch.optim's options this class implements only at their default

    def __init__(self, params: Iterable[torch.nn.Parameter], lr: float, **hyper: Any) -> None:
        params = list(params)
        if not params:
            raise ValueError("the optimiser got an empty parameter list")
        unknown = set(hyper) - set(self.defaults)
        if unknown:
            raise TypeError(f"{type(self).__name__} takes no option {', '.join(sorted(unknown))}")
        self.param_groups: list[dict[str, Any]] = [{"params": params, "lr": lr, **self.defaults, **hyper, **self.fixed}]
        self.state: dict[torch.Tensor, dict[str, torch.Tensor]] = {}

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Drop (or zero) every parameter's gradient."""
        for p in self.param_groups[0]["params"]:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()

    @torch.no_grad()
    def step(self) -> None:
        """One update of the parameters that have a gradient."""
        group = self.param_groups[0]
        params = [p for p in group["params"] if p.grad is not None]
        if params:
            self._update(group, params, [p.grad for p in params])

    def _update(self, group: dict[str, Any], params: list[torch.Tensor], grads: list[torch.Tensor]) -> None:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """``torch.optim``'s layout: parameters by their index in the group."""
        group = self.param_groups[0]
        index = {id(p): i for i, p in enumerate(group["params"])}
        return {
            "state": {index[id(p)]: dict(s) for p, s in self.state.items()},
            "param_groups": [
                {**{k: v for k, v in group.items() if k != "params"}, "params": list(range(len(group["params"])))}
            ],
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a ``state_dict`` of this class or of the ``torch.optim`` one of the same method."""
        groups = state_dict["param_groups"]
        params = self.param_groups[0]["params"]
        if len(groups) != 1 or len(groups[0]["params"]) != len(params):
            raise ValueError("the saved optimiser state has a different number of parameters than the model")
        saved = groups[0]
        unsupported = {k: saved[k] for k, v in self.fixed.items() if k in saved and saved[k] != v}
        if unsupported:
            raise ValueError(
                f"the saved optimiser state uses {unsupported}, which {type(self).__name__} does not implement"
            )
        self.param_groups[0].update({k: v for k, v in saved.items() if k != "params"})
        self.state = {}
        for i, p in enumerate(params):
            entry = state_dict["state"].get(saved["params"][i])
            if entry is not None:
                self.state[p] = {
                    k: (v.detach().clone() if k == "step" else v.detach().to(p.device, p.dtype).clone())
                    for k, v in entry.items()
                }


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015) with L2 weight decay added to the gradient, as ``torch.optim.Adam``."""

    defaults = {"betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0}
    fixed = {"amsgrad": False, "maximize": False}
    decoupled = False

    def _update(self, group: dict[str, Any], params: list[torch.Tensor], grads: list[torch.Tensor]) -> None:
        lr, (beta1, beta2), eps, decay = group["lr"], group["betas"], group["eps"], group["weight_decay"]
        for p in params:
            if p not in self.state:
                self.state[p] = {
                    "step": torch.tensor(0.0),
                    "exp_avg": torch.zeros_like(p),
                    "exp_avg_sq": torch.zeros_like(p),
                }
        states = [self.state[p] for p in params]
        if decay != 0:
            if self.decoupled:
                torch._foreach_mul_(params, 1 - lr * decay)
            else:
                grads = list(torch._foreach_add(grads, params, alpha=decay))
        exp_avgs, exp_avg_sqs = [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states]
        torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - beta2)
        steps = []
        for s in states:
            s["step"] += 1
            steps.append(s["step"].item())
        denom = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_div_(denom, [(1 - beta2**t) ** 0.5 for t in steps])
        torch._foreach_add_(denom, eps)
        torch._foreach_addcdiv_(params, exp_avgs, denom, [-(lr / (1 - beta1**t)) for t in steps])


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter 2019), as ``torch.optim.AdamW``."""

    defaults = {**Adam.defaults, "weight_decay": 1e-2}
    decoupled = True


class SGD(Optimizer):
    """Stochastic gradient descent with heavy-ball momentum and L2 weight decay, as ``torch.optim.SGD``
    (no dampening, no Nesterov)."""

    defaults = {"momentum": 0.9, "weight_decay": 0.0}
    fixed = {"dampening": 0.0, "nesterov": False, "maximize": False}

    def _update(self, group: dict[str, Any], params: list[torch.Tensor], grads: list[torch.Tensor]) -> None:
        lr, momentum, decay = group["lr"], group["momentum"], group["weight_decay"]
        if decay != 0:
            grads = list(torch._foreach_add(grads, params, alpha=decay))
        if momentum != 0:
            for p, g in zip(params, grads, strict=True):
                if p not in self.state:
                    self.state[p] = {"momentum_buffer": g.detach().clone()}
                else:
                    self.state[p]["momentum_buffer"].mul_(momentum).add_(g)
            grads = [self.state[p]["momentum_buffer"] for p in params]
        torch._foreach_add_(params, grads, alpha=-lr)


class LambdaSchedule:
    """The learning rate at step ``t`` is the initial rate times ``factor(t)``, set from construction (t = 0)
    on; ``step`` moves to the next step. ``torch.optim.lr_scheduler.LambdaLR``'s behaviour and checkpoint keys."""

    def __init__(self, optimizer: Optimizer, factor: Callable[[int], float]) -> None:
        self.optimizer, self.factor = optimizer, factor
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = 0
        self._apply()

    def _apply(self) -> None:
        for group, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            group["lr"] = base * self.factor(self.last_epoch)

    def step(self) -> None:
        self.last_epoch += 1
        self._apply()

    def get_last_lr(self) -> list[float]:
        return [group["lr"] for group in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        return {
            "base_lrs": list(self.base_lrs),
            "last_epoch": self.last_epoch,
            "_step_count": self.last_epoch + 1,
            "_last_lr": self.get_last_lr(),
            "lr_lambdas": [None] * len(self.base_lrs),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.base_lrs = list(state_dict["base_lrs"])
        self.last_epoch = int(state_dict["last_epoch"])


def lr_factor(total_steps: int, schedule: str = "cosine", warmup_fraction: float = 0.05) -> Callable[[int], float]:
    """The learning rate's factor per step under ``train.schedule``: 1 throughout for ``constant``; for ``cosine``
    a linear warm-up over ``warmup_fraction`` of the steps, then cosine decay to 0 at ``total_steps``."""
    warmup = max(1, int(warmup_fraction * total_steps))

    def factor(step: int) -> float:
        if schedule == "constant":
            return 1.0
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor
