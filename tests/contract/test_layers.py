"""The package's layers, enforced: a module imports only from its own layer or a lower one (function-level
imports counted, ``TYPE_CHECKING`` blocks not). The order, lowest first, is the one docs/architecture.md draws:
what each package may use is visible from its place in this list."""
from __future__ import annotations

from test_architecture import _import_graph, _modules

LAYERS: list[set[str]] = [
    {"errors", "version", "_moved"},
    {"config"},                          # config sections, typed options, plug-in registries
    {"runtime"},                         # threads, processes, seeding, log lines
    {"rundir"},                          # where a run's files live, and reading/writing them
    {"data", "encoders", "metrics"},     # datasets; encoders and their features; pure array metrics
    {"regimes"},                         # training objectives: heads, losses, views
    {"training"},                        # the loop every regime shares
    {"interpret"},                       # attributions and the other looks inside a model
    {"analyses"},                        # plug-ins that turn features into tables, figures and sections
    {"report"},                          # the HTML report, from saved artifacts only
    {"experiment"},                      # one comparison: stages, plug-in resolution, preflight
    {"studies"},                         # sweeps and cross-run comparisons
    {"cli", "__main__", ""},             # the command line and the package's lazy front door
]
RANK = {package: i for i, layer in enumerate(LAYERS) for package in layer}


def layer_of(module: str) -> int:
    """The layer of ``replearn.<package>.…`` (``""`` is replearn/__init__.py itself)."""
    parts = module.split(".")
    return RANK[parts[1] if len(parts) > 1 else ""]


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Every import of a module from a higher layer, as 'importer -> imported'."""
    return sorted(f"{a} -> {b}" for a, targets in graph.items() for b in targets if layer_of(b) > layer_of(a))


def test_every_package_has_a_layer():
    packages = {m.split(".")[1] if "." in m else "" for m in _modules()}
    assert packages - set(RANK) == set(), "add the new package to LAYERS (and to docs/architecture.md)"


def test_no_module_imports_from_a_higher_layer():
    assert upward_imports(_import_graph(_modules())) == []


def test_the_layer_check_finds_a_planted_upward_import():
    graph = _import_graph(_modules())
    graph["replearn.metrics.probes"] = graph["replearn.metrics.probes"] | {"replearn.training.loop"}
    assert upward_imports(graph) == ["replearn.metrics.probes -> replearn.training.loop"]
