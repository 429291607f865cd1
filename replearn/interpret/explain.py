"""What the attribution analyses share: the models explained on a seed (each as a hook-safe copy on the
encoder's device), the test images they are explained on, the dataset-mean reference image, and the
module behind a named stage (Grad-CAM's layer, a stage to randomise)."""
from __future__ import annotations

import contextlib
import copy
from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn as nn

from replearn.encoders import Encoder
from replearn.errors import ConfigError

HEAD_SUFFIX = ":head"  # a regime's own classifier is explained as the model "<regime>:head"


@contextlib.contextmanager
def seeded(seed: int, device: torch.device | None = None) -> Iterator[None]:
    """Draws inside the block start from ``seed`` (on the CPU, and on ``device`` when it is a GPU); the global
    random state is restored afterwards. (``torch.manual_seed`` would also queue seeds for every lazily
    initialised accelerator backend, which costs more than a small attribution.)"""
    cuda = device is not None and device.type == "cuda"
    with torch.random.fork_rng(devices=[device] if cuda else []):
        torch.default_generator.manual_seed(int(seed))
        if cuda:
            with torch.cuda.device(device):
                torch.cuda.manual_seed(int(seed))
        yield


def hookable(model: nn.Module) -> nn.Module:
    """An eval-mode deep copy of ``model`` that Captum's hooks can read: every activation's in-place switch
    (``nn.ReLU(inplace=True)`` and the like) turned off, and its parameters frozen (attributions take
    gradients with respect to the input only). The original model is left as it is."""
    clone = copy.deepcopy(model).eval()
    for module in clone.modules():
        if isinstance(getattr(module, "inplace", None), bool):
            module.inplace = False
    for param in clone.parameters():
        param.requires_grad_(False)
    return clone


def check_hookable(encoder: nn.Module, example: torch.Tensor | None = None, name: str = "the encoder") -> None:
    """Refuse (ConfigError) an encoder that Captum's hooks would misread even after ``hookable``: one that
    calls the same module object more than once in a forward pass (a forward hook counts the calls; Captum
    would attribute every call to one layer), or that changes a module's output in place later in the pass
    (a functional in-place operation such as ``F.relu(x, inplace=True)`` or ``x.relu_()``, which
    ``hookable`` cannot switch off). ``example``: an input batch (default two blank images of
    ``encoder.in_shape``)."""
    clone = hookable(encoder)
    if example is None:
        shape = getattr(encoder, "in_shape", None)
        if shape is None:
            raise ConfigError(f"{name} has no in_shape, so no example input can be made", "pass an example batch")
        example = torch.zeros(2, *shape)
    device = next((p.device for p in clone.parameters()), example.device)
    calls: Counter[int] = Counter()
    paths: dict[int, str] = {}
    outputs: list[tuple[str, torch.Tensor, int]] = []

    def hook(module: nn.Module, _inputs: Any, out: Any) -> None:
        calls[id(module)] += 1
        if isinstance(out, torch.Tensor):
            outputs.append((paths[id(module)], out, out._version))

    handles = []
    for path, module in clone.named_modules():
        if path:  # the model itself is called once by definition
            paths.setdefault(id(module), path)
            handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            clone(example.to(device))
    finally:
        for handle in handles:
            handle.remove()
    reused = [(paths[key], n) for key, n in calls.items() if n > 1]
    if reused:
        path, n = reused[0]
        raise ConfigError(f"{name} calls its module '{path}' {n} times in one forward pass (one module object "
                          "reused, e.g. a single nn.ReLU for every stage), which breaks Captum's hooks: they "
                          "would attribute every call to one layer",
                          "give every use its own module (e.g. a new nn.ReLU() per stage), or leave the "
                          "attribution analyses out")
    changed = [path for path, out, version in outputs if out._version != version]
    if changed:
        raise ConfigError(f"{name} changes the output of its module '{changed[0]}' in place later in the forward "
                          "pass (e.g. F.relu(x, inplace=True) or x.relu_()), which breaks Captum's hooks",
                          "use out-of-place operations in forward (F.relu(x), x = x + y), or leave the "
                          "attribution analyses out")


def encoder_of(model: nn.Module) -> Encoder | None:
    """The encoder inside an explained model (a probe's or a head's), None for a probe on pixels."""
    return next((m for m in model.modules() if isinstance(m, Encoder)), None)


def spatial_stages(encoder: Encoder) -> list[str]:
    """The encoder's stages with a spatial map (every named layer but the latent vector)."""
    return [s.name for s in encoder.feature_info if s.spatial]


def default_stage(encoder: Encoder, min_side: int = 4) -> str | None:
    """Grad-CAM's default stage: the deepest stage whose map is at least ``min_side`` pixels on its shorter
    side (a coarser map says little about where), else the first stage larger than one pixel; None without
    one (an encoder of vectors only)."""
    stages = [s for s in encoder.feature_info if s.spatial and s.height * s.width > 1]
    if not stages:
        return None
    wide = [s for s in stages if min(s.height, s.width) >= min_side]
    return (wide[-1] if wide else stages[0]).name


def stage_module(encoder: nn.Module, stage: str) -> nn.Module:
    """The module whose output is the encoder's layer ``stage`` (its ``StageInfo.module``), or a ConfigError
    naming the stages it has."""
    info = next((s for s in getattr(encoder, "feature_info", []) if s.name == stage), None)
    names = [s.name for s in getattr(encoder, "feature_info", [])]
    if info is None:
        raise ConfigError(f"the encoder has no stage '{stage}'", f"choose one of: {', '.join(names) or 'none'}")
    for root in (encoder, getattr(encoder, "module", None)):  # a wrapped module's layers are named inside it
        if isinstance(root, nn.Module) and info.module:
            try:
                return root.get_submodule(info.module)
            except AttributeError:
                continue
    raise ConfigError(f"the encoder's layer '{stage}' is not the output of one of its modules",
                      "choose a stage of a registered encoder or a module path of a wrapped one")


def check_stage(encoder: Encoder, stage: str, key: str) -> None:
    """Refuse a Grad-CAM stage the encoder lacks or that is not a spatial map (``key``: the option's name)."""
    spatial = [s.name for s in encoder.feature_info if s.spatial and s.height * s.width > 1]
    if stage not in spatial:
        what = ("is its latent vector, not a spatial map" if stage == "latent" else
                "is a single pixel or a vector, not a spatial map" if stage in encoder.layer_names else
                "is not one of its stages")
        raise ConfigError(f"config key '{key}' names the stage '{stage}', which {what}",
                          f"choose one of: {', '.join(spatial) or 'none (leave gradcam out of the methods)'}")
    stage_module(encoder, stage)


def check_image_count(n: int, data: Any, key: str) -> None:
    available = int(len(data.test_y))
    if n > available:
        raise ConfigError(f"config key '{key}' asks for {n} test images but the test split holds {available}",
                          f"set {key} to at most {available}")


def select_images(test_y: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` test images, as many of each class as can be (the same for every model, seed and analysis)."""
    from replearn.data import stratified_subset
    n = min(n, len(test_y))
    idx = stratified_subset(test_y, n, seed)[:n]
    return np.sort(idx)


def mean_image(x: Any, limit: int = 10_000, chunk: int = 2048) -> torch.Tensor:
    """The mean image (1×C×H×W) of a split in the model's normalised input space: the attribution baseline
    and the reference pixels of the deletion and insertion curves. Images read from disk: at most ``limit``,
    evenly spaced."""
    n = len(x)
    rows = np.arange(n) if n <= limit else np.linspace(0, n - 1, limit).round().astype(np.int64)
    total = None
    for start in range(0, len(rows), chunk):
        part = rows[start:start + chunk]
        batch = x[torch.from_numpy(part)] if isinstance(x, torch.Tensor) else x[part]
        s = batch.double().sum(0, keepdim=True)
        total = s if total is None else total + s
    return (total / len(rows)).float()


@dataclass
class Explained:
    """One explained model: its name (a model, or '<regime>:head' for a regime's own classifier) and a
    hook-safe copy of its class-logit target on the encoder's device."""

    name: str
    model: nn.Module
    device: torch.device

    @property
    def encoder(self) -> Encoder | None:
        return encoder_of(self.model)


def explained_targets(ctx: Any, heads: bool = True) -> list[Explained]:
    """The models an attribution analysis explains on a seed (``targets.explained_models``: raw pixels on
    the first seed, the random-init encoder and every regime, each through its latent probe) and, with
    ``heads``, every regime's own linear classifier (``<regime>:head``)."""
    from replearn.interpret.targets import HeadLogits, explained_models, latent_probe
    out = []
    for model in explained_models(ctx):
        encoder = ctx.encoders.get(model)
        device = next((p.device for p in encoder.parameters()), torch.device("cpu")) if encoder is not None \
            else torch.device("cpu")
        out.append(Explained(model, hookable(latent_probe(ctx, model)).to(device), device))
        head = own_classifier(ctx.heads.get(model)) if heads else None
        if head is not None:
            out.append(Explained(model + HEAD_SUFFIX, hookable(HeadLogits(encoder, head)).to(device), device))
    return out


def own_classifier(head: nn.Module | None) -> nn.Module | None:
    """A regime's linear classifier on the latent, if its head is one or holds one (``classifier``)."""
    from replearn.regimes.heads import ClassifierHead
    if isinstance(head, ClassifierHead):
        return head
    inner = getattr(head, "classifier", None)
    return inner if isinstance(inner, ClassifierHead) else None


def model_label(run: Any, name: str) -> str:
    """How the report names an explained model."""
    if name.endswith(HEAD_SUFFIX):
        return f"{run.style(name[:-len(HEAD_SUFFIX)])[0]} (own head)"
    return run.style(name)[0]


def model_color(run: Any, name: str) -> str:
    return run.style(name.removesuffix(HEAD_SUFFIX))[1]


def order_models(run: Any, names: list[str]) -> list[str]:
    """Explained models in the run's order, each regime's own head right after its probe."""
    base = run.order([n.removesuffix(HEAD_SUFFIX) for n in names])
    present = set(names)
    out = []
    for b in base:
        out += [n for n in (b, b + HEAD_SUFFIX) if n in present and n not in out]
    return out
