"""Any ``nn.Module`` as an encoder: the layers to read are named by module path (``layer1``,
``blocks.3.mlp``) and read with forward hooks; the module's own output is the ``latent``.

This is how a backbone trained elsewhere (timm with ``features_only``, torchvision, a user's own model)
is probed: nothing about it needs to know replearn. A TorchScript module exposes no hooks, so only its
output is available. A ``torch.export`` program (``ExportedGraph``) is read at the nodes of its graph.
"""
from __future__ import annotations

import copy
import warnings
from typing import Any

import torch
import torch.fx
import torch.nn as nn

from replearn.errors import ConfigError
from replearn.config.registry import is_import_path
from replearn.encoders.base import Encoder, StageInfo, build_module


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
        self._describe_layers()

    def _describe_layers(self, batch: int = 2, fix: str = "check that it takes images of the dataset's shape") -> None:
        """``feature_info`` and ``latent_dim`` from one eval-mode pass over ``batch`` blank images."""
        with torch.no_grad():
            was_training = self.module.training
            self.eval()
            try:
                outs = self._run(torch.zeros(batch, *self.in_shape), self.taps + ["latent"])
            except ConfigError:
                raise
            except Exception as exc:
                shape = "×".join(map(str, self.in_shape))
                raise ConfigError(f"the module failed on a batch of {batch} blank {shape} images "
                                  f"({type(exc).__name__}: {' '.join(str(exc).split())[:120]})", fix) from None
            finally:
                self.train(was_training)
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


class _NodeRecorder(torch.fx.Interpreter):
    """Runs a graph module node by node, keeping the tensor each wanted node computes."""

    def __init__(self, module: torch.fx.GraphModule, wanted: set[str]) -> None:
        super().__init__(module)
        self.wanted = wanted
        self.values: dict[str, torch.Tensor] = {}

    def run_node(self, node: torch.fx.Node) -> Any:
        value = super().run_node(node)
        if node.name in self.wanted:
            self.values[node.name] = first_tensor(value)
        return value


class ExportedGraph(TappedModule):
    """A ``torch.export`` program as an encoder: ``layers`` are node names of its graph (``conv2d``, ``relu_1``),
    read by running the graph with an interpreter that keeps their values; its output is ``latent``.

    The program runs as exported (batch norm as traced: export the model in eval mode) and must accept any
    batch size (export it with ``dynamic_shapes=({0: torch.export.Dim("batch")},)``)."""

    def __init__(self, program: Any, in_shape: tuple[int, int, int], layers: list[str] | None = None) -> None:
        Encoder.__init__(self)
        self.module = program.module()
        self.in_shape = tuple(int(d) for d in in_shape)  # type: ignore[assignment]
        self.taps = list(layers or [])
        nodes = self.node_names()
        unknown = [t for t in self.taps if t not in nodes]
        if unknown:
            raise ConfigError(f"the exported program has no node '{unknown[0]}'",
                              f"choose node names such as {', '.join(nodes[:40])}{' …' if len(nodes) > 40 else ''}")
        if "latent" in self.taps:
            raise ConfigError("'latent' is the program's output, not one of its nodes", "drop it from the layers")
        fix = ("export it for the dataset's image shape with a free batch size: torch.export.export(model.eval(), "
               "(x,), dynamic_shapes=({0: torch.export.Dim('batch')},))")
        for batch in (1, 3):  # extraction runs any batch size, the last batch often a single image
            self._describe_layers(batch, fix)

    def node_names(self) -> list[str]:
        """The names of the graph's operations, which ``--layer`` may name."""
        return [node.name for node in self.module.graph.nodes if node.op == "call_function"]

    def __deepcopy__(self, memo: dict) -> "ExportedGraph":
        """A deep copy, without the FutureWarning torch 2.13 gives while copying an exported program's tree specs."""
        clone = type(self).__new__(type(self))
        memo[id(self)] = clone
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            clone.__dict__.update({key: copy.deepcopy(value, memo) for key, value in self.__dict__.items()})
        return clone

    def train(self, mode: bool = True) -> "ExportedGraph":
        """Only this wrapper's flag: an exported program has no train/eval switch (it runs as it was exported)."""
        self.training = mode
        return self

    def _run(self, x: torch.Tensor, layers: list[str]) -> dict[str, torch.Tensor]:
        recorder = _NodeRecorder(self.module, {name for name in layers if name != "latent"})
        output = first_tensor(recorder.run(x))
        result = {name: recorder.values[name] for name in layers if name != "latent"}
        if "latent" in layers:
            result["latent"] = output.mean((2, 3)) if output.ndim == 4 else output.flatten(1)
        return result
