"""The pieces of a training step, as plain functions: batch order, per-step randomness, augmentation, the
optimiser and schedule, gradient-norm groups, evaluation of a split and the cost of a step."""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

from replearn.runtime import threads as parallel

from replearn.runtime import seeding
from replearn.encoders import Encoder
from replearn.errors import ConfigError
from replearn.encoders.extract import eval_mode
from replearn.regimes import Regime
from replearn.runtime.seeding import derive_seed
from replearn.training.optimizers import SGD, Adam, AdamW, LambdaSchedule, Optimizer, lr_factor


def resolve_device(name: str) -> torch.device:
    """The device ``train.device`` names (auto: CUDA when present)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device is 'cuda' but no CUDA device is available", "use --set train.device=auto")
    return torch.device(name)


def layer_groups(encoder: Encoder, head: nn.Module, head_name: str
                 ) -> tuple[list[str], list[nn.Parameter], list[int]]:
    """Named layers for gradient norms: each named layer of the encoder (by the module ``feature_info``
    gives it; parameters outside those modules form 'other'), then the regime's head."""
    names = list(encoder.layer_names)
    prefixes = [(s.name, s.module + ".") for s in encoder.feature_info if s.module]
    params, index = [], []
    for pname, p in encoder.named_parameters():
        layer = next((name for name, prefix in prefixes if pname.startswith(prefix)), "other")
        if layer not in names:
            names.append(layer)
        params.append(p)
        index.append(names.index(layer))
    names.append(head_name)
    for p in head.parameters():
        params.append(p)
        index.append(len(names) - 1)
    return names, params, index


def step_generator(seed: int, epoch: int, step: int, device: torch.device, rank: int = 0) -> torch.Generator:
    """The random source of one training step (augmentation, noise, sampling): a pure function of
    (seed, epoch, step), so that a resumed run draws exactly what an uninterrupted one would; each further
    process (``rank``) of a distributed run draws its own stream for its share of the batch."""
    base = derive_seed((seed, epoch, step, 1), seeding.STEP)
    return torch.Generator(device=device).manual_seed(base if rank == 0 else derive_seed((base, rank), RANK_STREAM))


RANK_STREAM = (1, 998_244_353)  # (a step's seed, rank): the step's draws on a further process of a distributed run


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """bfloat16 autocast for ``train.precision`` bf16 (on CUDA or the CPU); nothing for fp32."""
    if precision != "bf16":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def fast_cuda(device: torch.device, precision: str) -> None:
    """On CUDA, let cuDNN pick the fastest convolution algorithms when the results need not be bit-for-bit
    repeatable (bf16 already gives that up); nothing on the CPU."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = precision == "bf16"


GPU_RESIDENT_SHARE = 0.25  # the training images move to the GPU when they take at most this share of its free memory


def resident_images(images: Any, device: torch.device, augment: bool) -> Any:
    """The training images on the GPU when they are one tensor that fits (no host-to-device copy per batch),
    else as they are (the CPU; streamed or joined images; batches augmented on the CPU)."""
    if device.type != "cuda" or augment or not isinstance(images, torch.Tensor):
        return images
    free, _ = torch.cuda.mem_get_info(device)
    if images.numel() * images.element_size() > GPU_RESIDENT_SHARE * free:
        return images
    return images.to(device, non_blocking=True)


@torch.no_grad()
def evaluate(regime: Regime, encoder: Encoder, head: nn.Module, x: torch.Tensor, y: torch.Tensor,
             device: torch.device, batch_size: int = 1000) -> dict[str, float]:
    """The regime's loss and metrics over a whole split, in eval mode, with fixed randomness."""
    total_loss, sums = 0.0, {}
    with eval_mode(encoder, head):
        for start in range(0, len(x), batch_size):
            xb = to_device(x[start:start + batch_size], device)
            yb = y[start:start + batch_size].to(device) if regime.needs_labels else None
            loss, batch_sums = regime.loss(encoder, head, xb, yb, torch.Generator(device=device).manual_seed(start))
            total_loss += float(loss) * len(xb)
            for key, value in batch_sums.items():
                sums[key] = sums.get(key, 0.0) + float(value)
    n = max(1, len(x))
    return {"loss": total_loss / n, **regime.metrics(sums, n, x[0].numel() if len(x) else 1)}


def to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A batch on the device, channels-last (the layout convolutions run fastest in)."""
    return x.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)


def augment_batch(x: torch.Tensor, generator: torch.Generator, max_shift: int = 2) -> torch.Tensor:
    """Random horizontal flip and a random shift of up to ``max_shift`` pixels per image (edges replicated)."""
    n, _, h, w = x.shape
    flip = torch.rand(n, generator=generator) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    shift = torch.randint(0, 2 * max_shift + 1, (n,), generator=generator) * (2 * max_shift + 1) \
        + torch.randint(0, 2 * max_shift + 1, (n,), generator=generator)
    padded = F.pad(x, (max_shift,) * 4, mode="replicate")
    out = torch.empty_like(x)
    for code in shift.unique().tolist():
        rows = (shift == code).nonzero().squeeze(1)
        dy, dx = divmod(code, 2 * max_shift + 1)
        out[rows] = padded[rows, :, dy:dy + h, dx:dx + w]
    return out


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The training order of one epoch; a pure function of (seed, epoch) so that resuming is exact."""
    g = torch.Generator().manual_seed(derive_seed((seed, epoch), seeding.EPOCH_ORDER))
    return torch.randperm(n, generator=g)


def make_optimizer(params: list[nn.Parameter], t: Any, total_steps: int) -> tuple[Optimizer, LambdaSchedule]:
    """The optimiser ``t.optimizer`` (``t``: the train section or ``TrainSettings``) and its learning-rate schedule:
    constant, or a 5% linear warm-up then cosine decay over ``total_steps``."""
    method = {"sgd": SGD, "adamw": AdamW}.get(t.optimizer, Adam)
    opt = method(params, lr=t.lr, weight_decay=t.weight_decay)
    return opt, LambdaSchedule(opt, lr_factor(total_steps, t.schedule))


def training_step_flops(regime: Regime, encoder: Encoder, head: nn.Module, x: torch.Tensor, y: torch.Tensor | None,
                        batch_size: int) -> float:
    """FLOPs of one training step: one evaluation of the regime's loss on a small batch (eval mode, no
    autograd), scaled to the batch, times 3 for the backward pass."""
    with eval_mode(encoder, head):
        flops = parallel.count_flops([encoder, head], lambda: regime.loss(
            encoder, head, x, y if regime.needs_labels else None, torch.Generator(device=x.device).manual_seed(0)))
    return 3 * flops / len(x) * batch_size


def training_threads(regime: Regime, encoder: Encoder, head: nn.Module, x: torch.Tensor, y: torch.Tensor,
                     batch_size: int) -> int:
    """Threads for the training loop, from the FLOPs of one step (``training_step_flops``)."""
    return parallel.threads_for(training_step_flops(regime, encoder, head, x, y, batch_size),
                                phase=f"training {regime.name}")


@contextlib.contextmanager
def flush_denormals() -> Iterator[None]:
    """Treat subnormal floats as zero on the CPU while training. Adam's second-moment estimates of small
    gradients underflow into the subnormal range late in training, where each operation on them costs ~100×;
    without this an autoencoder epoch on Fashion-MNIST slowed from 26 s to 47 s over six epochs."""
    before = torch.set_flush_denormal(True)  # False where the CPU cannot (then nothing changes)
    try:
        yield
    finally:
        if before:
            torch.set_flush_denormal(False)


def eval_batch_size(regime: Regime, batch_size: int) -> int:
    """Batches for evaluation: large, unless the regime's loss depends on what else is in the batch (then the
    training batch size)."""
    return batch_size if regime.batch_dependent_loss else 1000
