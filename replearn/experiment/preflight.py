"""Checks made before a run directory exists: the data fit the analyses, the model and the analysed features
fit in memory, and one training step of every regime works, returns what the trainer needs and gives a
finite loss (so a broken plug-in fails in one line, early)."""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from replearn.experiment import costs
from replearn.config.sections import Config
from replearn.data import Dataset, analysis_view, available_memory
from replearn.encoders import Encoder, build_encoder
from replearn.errors import ConfigError, ReplearnError
from replearn.runtime.log import format_duration, log
from replearn.runtime.threads import count_flops
from replearn.regimes import DataInfo, Regime
from replearn.training.loop import check_step_output

MIN_TEST_IMAGES = 10
# training keeps each parameter four times (weights, gradients and Adam's two moments) and each layer's
# output once for the backward pass; the head and transient buffers are not counted, so the estimate errs
# low and only a model that cannot fit is refused
PARAMETER_COPIES, ACTIVATION_COPIES = 4, 1
# the analyses hold the raw-pixel and PCA baselines' features (float32) of every analysed image, and the
# probes a standardised copy of them
FEATURE_COPIES = 2
# an encoder this small is run on one real image to count its activations (milliseconds), a larger one on
# the meta device (nothing allocated, but about a second of PyTorch set-up on first use)
SMALL_MODEL_PARAMETERS, SMALL_MODEL_PIXELS = 5_000_000, 3 * 64 * 64

PLAN_LOG_SECONDS = 60  # runs predicted to take at least this long print their plan before starting

def check_data_fits(cfg: Config, data: Dataset, device: torch.device | str = "cpu") -> None:
    """Fail before training if the analyses ask for more than the data (the images they analyse) hold, or the
    model or the analysed features would not fit in memory."""
    analysed = analysis_view(data, cfg.analysis.max_images_per_split, cfg.data.split_seed)
    counts = np.bincount(analysed.train_y.numpy(), minlength=data.num_classes)
    present = counts[counts > 0]
    need = max(cfg.analysis.label_counts)
    if present.min() < need:
        rarest = data.class_names[int(np.flatnonzero(counts == present.min())[0])]
        limit = (f" of the {len(analysed.train_y)} analysed (analysis.max_images_per_split)"
                 if analysed is not data else "")
        raise ConfigError(f"analysis.label_counts asks for {need} labels per class but class '{rarest}' has only "
                          f"{int(present.min())} training images{limit}",
                          f"set analysis.label_counts to values of at most {int(present.min())}, or use more data"
                          + (" (or raise analysis.max_images_per_split)" if limit else ""))
    if len(data.test_y) < MIN_TEST_IMAGES:
        fix = (f"set data.test_subset to at least {MIN_TEST_IMAGES} (or 0 for the whole test split)"
               if cfg.data.test_subset else f"give the dataset at least {MIN_TEST_IMAGES} test images")
        raise ConfigError(f"the test split has {len(data.test_y)} images; the analyses (CKA, clustering, "
                          f"neighbourhoods) need at least {MIN_TEST_IMAGES}", fix)
    check_features_fit(analysed, cfg.model.latent_dim)
    check_model_fits(cfg, data.image_shape, cfg.train.batch_size, device)
    build_encoder(cfg.model, data.image_shape, 0)


def run_shape(cfg: Config, data: Dataset, analysed: Dataset) -> costs.RunShape:
    """The shape the cost model predicts from: the analysed splits, the images, the encoder's layers and its
    forward FLOPs per image (see ``measure_encoder``; a rough size from the pixels where it cannot run)."""
    size = measure_encoder(cfg, data.image_shape)
    layers = size.layers if size else 3
    flops = size.flops_per_image if size and size.flops_per_image else 2e3 * math.prod(data.image_shape)
    return costs.RunShape(len(analysed.train_y), len(analysed.val_y), len(analysed.test_y), tuple(data.image_shape),
                          data.num_classes, len(cfg.train.regimes), layers, cfg.model.latent_dim, max(flops, 1.0),
                          cfg.analysis, dict(cfg.analyses))


def plan_run(cfg: Config, data: Dataset, analyses: list[str], device: torch.device | str = "cpu",
             available: int | None = None, rate: float | None = None) -> list[costs.Phase]:
    """Each phase's predicted time and peak memory (``costs.plan_run``) for this run (``log_plan`` logs it); a
    phase that cannot fit in the memory available (``available`` bytes; default: what is free now) is refused
    in one line naming the option that bounds it, before anything is written."""
    analysed = analysis_view(data, cfg.analysis.max_images_per_split, cfg.data.split_seed)
    shape = run_shape(cfg, data, analysed)
    rate = costs.matmul_rate() if rate is None else rate
    resident = 0 if data.streamed else len(data.train_y) + len(data.val_y) + len(data.test_y)
    # one seed's features at a time: every encoder's stages (pooled to at most max_stage_features, halving with
    # depth in a typical encoder: about twice the first stage's in all) and its latent, for every analysed image
    stages = min(2 * shape.layer_features, max(0, shape.layers - 1) * shape.layer_features)
    held = 4.0 * (resident * shape.pixels + FEATURE_COPIES * shape.images * (shape.pixels + shape.latent)
                  + shape.images * shape.encoders * (stages + shape.latent))
    size = model_size(cfg, data.image_shape, cfg.train.batch_size)
    training = 4.0 * (PARAMETER_COPIES * size[0] + ACTIVATION_COPIES * size[1]) if size else 0.0
    work = costs.Workload(len(data.train_y), cfg.train.epochs, len(cfg.train.seeds), cfg.train.batch_size,
                          len(cfg.analysis.figure_formats))
    phases = costs.plan_run(shape, analyses, work, rate, held, training)
    available = available_memory() if available is None else available
    if torch.device(device).type == "cpu":
        worst = max(phases, key=lambda p: p.bytes)
        if worst.bytes > available:
            raise ConfigError(f"the {worst.name} phase would need about {costs.format_bytes(worst.bytes)} of memory "
                              f"({shape.images:,} analysed images of {shape.pixels:,} pixels), more than the "
                              f"{costs.format_bytes(available)} available", f"lower {worst.fix}")
    return phases


def log_plan(phases: list[costs.Phase]) -> None:
    """Log the plan (predicted time, its largest phases, peak memory) of a run predicted to take a minute or
    more: called once every check has passed, so that a refused run still answers in one line."""
    total = sum(p.seconds for p in phases)
    if total < PLAN_LOG_SECONDS:  # a short run's plan would be noise
        return
    top = sorted(phases, key=lambda p: -p.seconds)[:4]
    log(f"plan: ≈ {format_duration(total)} at {costs.matmul_rate() / 1e9:.0f} GFLOP/s ("
        + ", ".join(f"{p.name} {format_duration(p.seconds)}" for p in top)
        + f"); peak memory ≈ {costs.format_bytes(max(p.bytes for p in phases))}")


def check_features_fit(analysed: Dataset, latent_dim: int, available: int | None = None) -> None:
    """Refuse analysed data whose raw-pixel features (and the copies the analyses make of them) would need
    more than the memory available (``available`` bytes; default: what the machine has free now)."""
    images = len(analysed.train_y) + len(analysed.val_y) + len(analysed.test_y)
    pixels = math.prod(analysed.image_shape)
    need = FEATURE_COPIES * images * (pixels + latent_dim) * 4
    available = available_memory() if available is None else available
    if need > available:
        raise ConfigError(f"the analyses would hold {images:,} images × {pixels:,} pixel features "
                          f"({need / 2**30:,.1f} GiB with the copies they make), more than the "
                          f"{available / 2**30:,.1f} GiB of memory available",
                          "analyse fewer images (analysis.max_images_per_split, data.train_subset, data.test_subset) "
                          "or smaller ones (data.image_size for image folders)")


def check_model_fits(cfg: Config, image_shape: tuple[int, int, int], batch_size: int, device: torch.device | str,
                     available: int | None = None) -> None:
    """Refuse a model whose parameters and one batch's activations would need more memory than the device
    has (``available`` bytes; default: what it has free now), measured without allocating anything."""
    size = model_size(cfg, image_shape, batch_size)
    if size is None:
        return
    params, activations = size
    need = 4 * (PARAMETER_COPIES * params + ACTIVATION_COPIES * activations)
    available = device_memory(torch.device(device)) if available is None else available
    if need > available:
        raise ConfigError(f"the encoder ({_model_words(cfg)}) has {params:,} parameters and {activations:,} "
                          f"activation values per batch of {batch_size}: training it needs at least "
                          f"{need / 2**30:,.1f} GiB, more than the {available / 2**30:,.1f} GiB of memory available",
                          "use a smaller model (model.channels or model.width, model.latent_dim) or a smaller "
                          "train.batch_size")


@dataclass(frozen=True)
class EncoderSize:
    """What the preflight checks and the cost model read from one forward pass of the configured encoder."""
    parameters: int
    activations_per_image: int  # values output by its leaf modules (0: the forward could not run)
    flops_per_image: float  # multiply-add FLOPs in its convolutions and linear layers (0: could not run)
    layers: int


def measure_encoder(cfg: Config, image_shape: tuple[int, int, int]) -> EncoderSize | None:
    """The configured encoder's size from one image's forward pass; None when it cannot be built. The
    parameters are counted on PyTorch's meta device (shapes only: nothing is allocated). A small encoder then
    runs one real image (milliseconds), a large one runs on the meta device (nothing allocated, but about a
    second of PyTorch set-up on first use)."""
    try:
        with torch.device("meta"):
            encoder = build_encoder(cfg.model, image_shape, 0)
    except Exception:  # noqa: BLE001 — e.g. a plug-in that reads weight values: the real build reports errors
        return None
    params = sum(p.numel() for p in encoder.parameters())
    layers = len(getattr(encoder, "layer_names", ())) or 3
    if params <= SMALL_MODEL_PARAMETERS and math.prod(image_shape) <= SMALL_MODEL_PIXELS:
        try:
            real = build_encoder(cfg.model, image_shape, 0).eval()
            return EncoderSize(params, *_forward_counts(real, image_shape, "cpu"), layers)
        except Exception:  # noqa: BLE001 — measured on the meta device instead
            pass
    return EncoderSize(params, *_forward_counts(encoder, image_shape, "meta"), layers)


def model_size(cfg: Config, image_shape: tuple[int, int, int], batch_size: int) -> tuple[int, int] | None:
    """(parameters, activation values of one batch) of the configured encoder (see ``measure_encoder``)."""
    size = measure_encoder(cfg, image_shape)
    return None if size is None else (size.parameters, batch_size * size.activations_per_image)


def _forward_counts(encoder: Encoder, image_shape: tuple[int, int, int], device: str) -> tuple[int, float]:
    """(values output by every leaf module, FLOPs) of one image's forward pass on ``device``; (0, 0) when the
    forward cannot run there (e.g. one that needs values on the meta device)."""
    total = 0

    def count(_module: torch.nn.Module, _inputs: Any, output: Any) -> None:
        nonlocal total
        if isinstance(output, torch.Tensor):
            total += output.numel()

    leaves = [m for m in encoder.modules() if next(m.children(), None) is None]
    handles = [m.register_forward_hook(count) for m in leaves]
    image = torch.zeros((1, *image_shape), device=device)
    try:
        flops = count_flops([encoder], lambda: encoder(image))
    except Exception:  # noqa: BLE001 — a forward that needs values: the parameters alone are checked
        return 0, 0.0
    finally:
        for handle in handles:
            handle.remove()
    return total, flops


def device_memory(device: torch.device) -> int:
    """Bytes free on ``device``: the GPU's free memory, else the machine's available memory."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    return available_memory()


def _model_words(cfg: Config) -> str:
    own = {**(getattr(cfg.model, "plugin_options", None) or {}), **(cfg.model.kwargs or {})}
    shown = ", ".join(f"{k}={v}" for k, v in list(own.items())[:4])
    return f"{cfg.model.name}{', ' + shown if shown else ''}, latent_dim={cfg.model.latent_dim}"


def preflight(cfg: Config, regimes: list[Regime], data: Dataset, device: torch.device) -> None:
    """One training step of every regime on throwaway copies, so that a regime that fails, returns what the
    trainer cannot use, or whose loss is not finite is reported in one line before a run directory exists
    (the RNG is left untouched)."""
    n = min(len(data.train_x), cfg.train.batch_size, 64)
    info = DataInfo(data.image_shape, data.num_classes, data.mean, data.std)
    with torch.random.fork_rng(devices=[]):
        encoder0 = build_encoder(cfg.model, data.image_shape, 0)
        for regime in regimes:
            _first_step(regime, copy.deepcopy(encoder0).to(device), info, data, n, device)


def _first_step(regime: Regime, encoder: torch.nn.Module, info: DataInfo, data: Dataset, n: int,
                device: torch.device) -> None:
    where = f"regime '{regime.spec}'"
    try:
        head = regime.build_head(encoder, info).to(device)
        x = data.train_x[:n].to(device).contiguous(memory_format=torch.channels_last)
        y = data.train_y[:n].to(device) if regime.needs_labels else None
        output = regime.loss(encoder, head, x, y, torch.Generator(device=device).manual_seed(0))
    except ReplearnError:
        raise
    except Exception as exc:  # a plug-in may fail in any way: report it in one line
        raise _step_failure(where, exc, n) from None
    loss, stats = check_step_output(regime, output)
    if "sq_error" in stats:
        with torch.no_grad():
            rebuilt = regime.reconstruct(encoder.eval(), head.eval(), x[:1])
        encoder.train(), head.train()
        if rebuilt is None:
            raise ConfigError(f"{where} reports the statistic 'sq_error', which replearn reads as the squared error "
                              "of the reconstruction of the clean input (the report's reconstruction MSE), but it "
                              "reconstructs nothing (reconstruct() returns None)",
                              "report it under the regime's own key (e.g. 'brightness_sq_error') and turn it into a "
                              "metric in the regime's metrics()")
    if not bool(torch.isfinite(loss).all()):
        raise ConfigError(f"{where} gives a non-finite loss ({float(loss.detach())}) on the first training batch",
                          "check its loss for a division by zero or log of 0, or lower its weights")
    try:
        loss.backward()
    except Exception as exc:  # noqa: BLE001 — a loss whose backward fails is the regime's
        raise _step_failure(where, exc, n) from None


def _step_failure(where: str, exc: Exception, n: int) -> ConfigError:
    """The one-line error for a first training step that raised."""
    detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
    if n == 1 and "more than 1 value per channel" in detail:
        return ConfigError(f"train.batch_size=1 gives training batches of one image, on which batch norm (in the "
                           f"encoder or the head of {where}) cannot train", "set train.batch_size to 2 or more")
    return ConfigError(f"{where} failed on a first training batch ({type(exc).__name__}"
                       f"{': ' + detail if detail else ''})",
                       "fix the regime's build_head/loss, or remove it from train.regimes")
