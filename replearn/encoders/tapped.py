"""Any ``nn.Module`` as an encoder: the layers to read are named by module path (``layer1``,
``blocks.3.mlp``) and read with forward hooks; the module's own output is the ``latent``.

This is how a backbone trained elsewhere (timm with ``features_only``, torchvision, a user's own model)
is probed: nothing about it needs to know replearn. A TorchScript module exposes no hooks, so only its
output is available.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from ..errors import ConfigError
from ..registry import is_import_path
from .base import Encoder, StageInfo, build_module


def first_tensor(out: Any) -> torch.Tensor:
    """The tensor a module returned: itself, or the first tensor of a tuple, list or dict (timm's
    ``features_only`` returns a list; some backbones return (features, logits))."""
    if isinstance(out, torch.Tensor):
        return out
    items = out.values() if isinstance(out, dict) else out if isinstance(out, (list, tuple)) else []
    for item in items:
        if isinstance(item, torch.Tensor):
            return item
    raise ConfigError(f"the module returned a {type(out).__name__} without a tensor in it",
                      "wrap it so that forward returns the feature tensor")


class TappedModule(Encoder):
    """Wraps ``module``; ``layers`` are module paths read by forward hooks, then the output as ``latent``."""

    def __init__(self, module: nn.Module, in_shape: tuple[int, int, int], layers: list[str] | None = None) -> None:
        super().__init__()
        self.module = module
        self.in_shape = tuple(int(d) for d in in_shape)  # type: ignore[assignment]
        self.taps = list(layers or [])
        scripted = isinstance(module, torch.jit.ScriptModule)
        if self.taps and scripted:
            raise ConfigError("a TorchScript module exposes only its output, not inner layers",
                              "drop --layer (the output is probed as 'latent'), or probe the eager model's state_dict")
        paths = dict(module.named_modules())
        unknown = [t for t in self.taps if t not in paths or t == ""]
        if unknown:
            valid = [p for p in paths if p][:40]
            raise ConfigError(f"the module has no layer '{unknown[0]}'",
                              f"choose module paths such as {', '.join(valid)}{' …' if len(paths) > 41 else ''}")
        if "latent" in self.taps:
            raise ConfigError("'latent' is the module's output, not one of its layers", "drop it from the layers")
        with torch.no_grad():
            was_training = module.training
            module.eval()
            try:
                outs = self._run(torch.zeros(2, *self.in_shape), self.taps + ["latent"])
            except ConfigError:
                raise
            except Exception as exc:
                raise ConfigError(f"the module failed on {'×'.join(map(str, self.in_shape))} images "
                                  f"({type(exc).__name__}: {str(exc)[:120]})",
                                  "check that it takes images of the dataset's shape") from None
            finally:
                module.train(was_training)
        self.feature_info = [self._info(name, out) for name, out in outs.items()]
        self.latent_dim = self.feature_info[-1].channels

    def _info(self, name: str, out: torch.Tensor) -> StageInfo:
        if name != "latent" and out.ndim == 4:
            reduction = max(1, self.in_shape[1] // max(1, out.shape[2]))
            return StageInfo(name, int(out.shape[1]), int(out.shape[2]), int(out.shape[3]), reduction, name)
        return StageInfo(name, int(out[0].numel()), 1, 1, 0, name)

    def _run(self, x: torch.Tensor, layers: list[str]) -> dict[str, torch.Tensor]:
        captured: dict[str, torch.Tensor] = {}
        handles = [self.module.get_submodule(name).register_forward_hook(
            lambda _m, _i, out, name=name: captured.__setitem__(name, first_tensor(out)))
            for name in layers if name != "latent"]
        try:
            output = first_tensor(self.module(x))
        finally:
            for handle in handles:
                handle.remove()
        skipped = [name for name in layers if name != "latent" and name not in captured]
        if skipped:
            raise ConfigError(f"layer '{skipped[0]}' is not run by the module's forward", "choose a layer that forward uses")
        result = {name: captured[name] for name in layers if name != "latent"}
        if "latent" in layers:  # a feature map as output is averaged over space, like a backbone's pooling
            result["latent"] = output.mean((2, 3)) if output.ndim == 4 else output.flatten(1)
        return result

    def forward_features(self, x: torch.Tensor, layers: list[str] | None = None) -> dict[str, torch.Tensor]:
        return self._run(x, self.check_layers(layers))


def tapped_encoder(path: str, kwargs: dict[str, Any], in_shape: tuple[int, int, int], layers: list[str],
                   seed: int) -> Encoder:
    """A plain ``nn.Module`` from the factory or class at import path ``path`` (called with ``kwargs``, seeded),
    read at ``layers`` (module paths) by forward hooks, its output as 'latent' (``TappedModule``)."""
    if not is_import_path(path):
        raise ConfigError(f"model.layers is set, so model.name must be an import path, not '{path}'",
                          "write package.module:factory (e.g. torchvision.models:resnet18), or drop model.layers "
                          "for a registered encoder")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = build_module(path, kwargs, "model.name", "model.kwargs")
    return TappedModule(module, in_shape, layers)
