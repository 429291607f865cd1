"""Analyses as plug-ins: the computing order derived from ``requires``, options validated per analysis, a
user's analysis by import path from outside replearn, the report's choice of analyses; and the shared
helpers every analysis uses (feature-matrix validation, neighbour search)."""
from __future__ import annotations

import dataclasses
import textwrap

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from replearn.analyses import (ANALYSES, Analysis, RunArtifacts, Section, default_analyses, ordered_analyses,
                               report_analyses)
from replearn.analyses.order import dependency_order
from replearn.experiment.plugins import resolve
from replearn.metrics.arrays import as_feature_matrix
from replearn.errors import ConfigError, ReplearnError
from replearn.metrics.neighbours import _bf16_matmul_is_fast, nearest_neighbours
from replearn.report.html import build_context
from replearn.runtime.seeding import LABEL_DRAW, derive_seed

BUILT_IN = ["probes", "dimensions", "similarity", "label_efficiency", "projection", "structure", "inspection",
            "training", "summary", "run_info", "protocol", "attributions", "sanity", "faithfulness", "invariance",
            "robustness", "units", "tensorboard_export", "rulers", "collapse"]

PLUGIN = textwrap.dedent('''
    """A user's analysis, outside replearn: the gap between each model's linear and kNN probe."""
    from dataclasses import dataclass

    import pandas as pd

    from replearn.analyses import Analysis, Section
    from replearn.config.options import opt


    @dataclass
    class GapOptions:
        layer: str = opt("latent", "the layer compared")
        top: int = opt(3, "models listed in the report", min=1)


    class ProbeGap(Analysis):
        name = "probe_gap"
        order = 35
        requires = ("probes",)
        Options = GapOptions

        def compute(self, ctx):
            probes = ctx.tables["probes"]
            at = probes[probes.layer == self.options.layer].pivot_table(index="model", columns="probe",
                                                                         values="test_accuracy")
            return {"probe_gap": pd.DataFrame({"model": at.index, "seed": ctx.seed,
                                               "gap": (at["linear"] - at["knn"]).values})}

        def sections(self, run):
            gap = run.csv("probe_gap")
            if gap is None:
                return []
            rows = gap.sort_values("gap", ascending=False).head(self.options.top)
            return [Section("probe-gap", "Linear minus kNN probe", "How much a linear read-out adds.",
                            bullets=[f"{m}: {g:+.3f}" for m, g in zip(rows.model, rows.gap)])]


    class Unnamed(Analysis):
        requires = ("probe_gap",)


    def not_an_analysis():
        return None
''')


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """The module ``user_gap`` written into tmp_path and importable by path, as a user's own file is."""
    (tmp_path / "user_gap.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "user_gap"


def toy(name: str, requires: tuple[str, ...] = ()) -> type[Analysis]:
    return type(name.title(), (Analysis,), {"name": name, "requires": requires})


# ---- order ----------------------------------------------------------------------------------------------


def test_built_in_order_is_todays_and_every_requirement_computes_first():
    assert default_analyses() == BUILT_IN
    assert [name for name, _ in ANALYSES.items()][:len(BUILT_IN)] == BUILT_IN
    ordered = ordered_analyses(default_analyses(), {})
    assert [a.name for a in ordered] == BUILT_IN
    done: set[str] = set()
    for analysis in ordered:
        assert set(analysis.requires) <= done, analysis.name
        done.add(analysis.name)
    requires = {a.name: a.requires for a in ordered if a.requires}
    assert requires == {"label_efficiency": ("probes",), "structure": ("projection",), "summary": ("probes",),
                        "attributions": ("probes",), "sanity": ("probes",), "faithfulness": ("probes",),
                        "robustness": ("probes",), "rulers": ("probes",)}


def test_order_follows_requires_and_keeps_ties_in_registration_order(monkeypatch):
    a, b, c, d = toy("toy_a", ("toy_c",)), toy("toy_b"), toy("toy_c", ("toy_b",)), toy("toy_d")
    for cls in (a, b, c, d):  # toy_a registered before the analysis it requires
        monkeypatch.setitem(ANALYSES._entries, cls.name, cls)
    names = ["toy_a", "toy_b", "toy_c", "toy_d"]
    assert [x.name for x in ordered_analyses(names)] == ["toy_b", "toy_c", "toy_a", "toy_d"]
    assert [x.name for x in ordered_analyses(["toy_d", "toy_b", "toy_c", "toy_a"])] == ["toy_d", "toy_b", "toy_c",
                                                                                       "toy_a"]
    assert "toy_a" not in default_analyses()  # only the package's own analyses are defaults
    assert dependency_order({"x": (), "y": ("z",), "z": (), "w": ("y", "x")}) == ["x", "z", "y", "w"]


def test_missing_requirement_names_both_analyses(monkeypatch):
    monkeypatch.setitem(ANALYSES._entries, "toy_a", toy("toy_a", ("toy_missing",)))
    with pytest.raises(ConfigError, match="'toy_a' requires the analysis 'toy_missing'") as info:
        ordered_analyses(["probes", "toy_a"])
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="'label_efficiency' requires the analysis 'probes'"):
        ordered_analyses(["label_efficiency", "dimensions"])


def test_cycle_is_refused_and_named():
    with pytest.raises(ConfigError, match="cycle: (a → b → c → a|b → c → a → b|c → a → b → c)"):
        dependency_order({"a": ("b",), "b": ("c",), "c": ("a",), "d": ()})
    with pytest.raises(ConfigError, match="cycle: s → s"):
        dependency_order({"s": ("s",)})


def test_a_spec_given_twice_runs_once_and_two_classes_of_one_name_are_refused(monkeypatch):
    assert [a.name for a in ordered_analyses(["probes", "probes"])] == ["probes"]
    monkeypatch.setitem(ANALYSES._entries, "toy_probes", type("Probes2", (Analysis,), {"name": "probes"}))
    with pytest.raises(ConfigError, match="two analyses are named 'probes'"):
        ordered_analyses(["probes", "toy_probes"])


# ---- a user's analysis by import path, its options --------------------------------------------------------


def test_plugin_by_import_path_gets_validated_options_and_runs_after_what_it_requires(plugin):
    spec = f"{plugin}:ProbeGap"
    analyses = ordered_analyses([spec, "probes"], {"probe_gap": {"top": "5", "layer": "input"}})
    assert [a.name for a in analyses] == ["probes", "probe_gap"]
    gap = analyses[1]
    assert gap.options.top == 5 and gap.options.layer == "input"
    assert ordered_analyses(default_analyses() + [spec])[-1].options.top == 3  # defaults
    with pytest.raises(ConfigError, match=r"'analyses\.probe_gap\.top' must be >= 1"):
        ordered_analyses(["probes", spec], {"probe_gap": {"top": 0}})
    with pytest.raises(ConfigError, match=r"analyses\.probe_gap\.top.*type int"):
        ordered_analyses(["probes", spec], {"probe_gap": {"top": "many"}})
    with pytest.raises(ConfigError, match=r"unknown config key 'analyses\.probe_gap\.tpo'.*analyses\.probe_gap\.top"):
        ordered_analyses(["probes", spec], {"probe_gap": {"tpo": 1}})
    with pytest.raises(ConfigError, match=r"unknown config key 'analyses\.probe_gp'.*did you mean 'analyses\.probe_gap'"):
        ordered_analyses(["probes", spec], {"probe_gp": {"top": 1}})
    with pytest.raises(ConfigError, match="'probe_gap' requires the analysis 'probes'"):
        ordered_analyses([spec])


def test_plugin_without_a_name_is_named_after_its_class_and_can_be_required(plugin):
    analyses = ordered_analyses([f"{plugin}:Unnamed", "probes", f"{plugin}:ProbeGap"])
    assert [a.name for a in analyses] == ["probes", "probe_gap", "unnamed"]
    assert analyses[-1].options is not None


@pytest.mark.parametrize("attr, words", [("not_an_analysis", "names a function, not an Analysis"),
                                         ("GapOptions", "names the class GapOptions, not an Analysis"),
                                         ("Nowhere", "has no attribute 'Nowhere'")])
def test_import_path_that_is_not_an_analysis_is_refused_in_one_line(plugin, attr, words):
    with pytest.raises(ConfigError, match=words) as info:
        ordered_analyses([f"{plugin}:{attr}"])
    assert "\n" not in str(info.value)


def test_plugin_computes_from_the_probes_table_and_adds_a_report_section(plugin, tmp_path):
    (gap_cls,) = [type(a) for a in ordered_analyses(["probes", f"{plugin}:ProbeGap"]) if a.name == "probe_gap"]
    probes = pd.DataFrame({"model": ["ae", "ae", "sup", "sup"], "layer": "latent", "probe": ["linear", "knn"] * 2,
                           "test_accuracy": [0.8, 0.7, 0.9, 0.95]})

    class Ctx:  # the parts of a SeedContext this analysis reads
        seed, tables = 0, {"probes": probes}

    frame = gap_cls().compute(Ctx())["probe_gap"]
    assert frame.gap.round(3).tolist() == [0.1, -0.05]
    run_dir = tmp_path / "run"
    (run_dir / "metrics").mkdir(parents=True)
    frame.to_csv(run_dir / "metrics" / "probe_gap.csv", index=False)
    (run_dir / "config.yaml").write_text(f"analysis:\n  extra: ['{plugin}:ProbeGap', 'gone_module:Thing']\n"
                                         "analyses:\n  probe_gap:\n    top: 1\n")
    context = build_context(run_dir)
    (section,) = [s for s in context["sections"] if s["id"] == "probe-gap"]
    assert section["bullets"] == ["ae: +0.100"]  # top: 1 from the saved options
    assert any("'gone_module:Thing'" in note for note in context["unreadable"])


def test_report_takes_the_runs_analyses_and_notes_those_it_cannot_load(plugin):
    analyses, notes = report_analyses({"analysis": {"extra": [f"{plugin}:ProbeGap", "probes", "gone:Thing"]},
                                       "analyses": {"probe_gap": {"top": 7}, "inspection": {"queries": -1}}})
    names = [a.name for a in analyses]
    assert sorted(names) == sorted(BUILT_IN + ["probe_gap"])
    assert [a.order for a in analyses] == sorted(a.order for a in analyses)
    assert next(a for a in analyses if a.name == "probe_gap").options.top == 7
    assert next(a for a in analyses if a.name == "inspection").options.queries == 6  # invalid saved: defaults
    assert len(notes) == 2 and "'inspection'" in notes[0] and "'gone:Thing'" in notes[1]
    assert report_analyses({})[1] == [] and [a.name for a in report_analyses({"analysis": "junk"})[0]]


def test_report_of_a_run_without_extra_renders_every_built_in(tmp_path):
    analyses, notes = report_analyses(RunArtifacts(tmp_path).config)
    assert sorted(a.name for a in analyses) == sorted(BUILT_IN) and notes == []


def test_built_in_options_are_declared():
    (inspection,) = ordered_analyses(["inspection"], {"inspection": {"queries": 3}})
    assert (inspection.options.queries, inspection.options.neighbours) == (3, 5)
    with pytest.raises(ConfigError, match=r"analyses\.inspection\.neighbours"):
        ordered_analyses(["inspection"], {"inspection": {"neighbours": 0}})
    with pytest.raises(ConfigError, match=r"unknown config key 'analyses\.probes\.k'"):
        ordered_analyses(["probes"], {"probes": {"k": 1}})


def test_label_draw_seeds_are_the_formula_they_replaced():
    for seed, n, draw in [(0, 1, 0), (3, 10, 4), (123, 100, 9)]:
        assert derive_seed((seed, n, draw), LABEL_DRAW) == seed * 7919 + n * 104_729 + draw


# ---- shared helpers ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad, words", [(np.zeros(5), "2-D"), (np.zeros((1, 3)), "at least 2 rows"),
                                        (np.zeros((4, 0)), "one feature"), (np.full((3, 2), np.nan), "NaN"),
                                        (np.array([[1e300, 0], [0, 1]]), "infinite"),
                                        (np.array([["a", "b"]], dtype=object), "numeric array")])
def test_feature_matrix_check_names_the_problem(bad, words):
    with pytest.raises(ReplearnError, match=words):
        as_feature_matrix(bad, "features", min_rows=2)


def test_feature_matrix_keeps_values_and_avoids_copies():
    x = np.random.RandomState(0).randn(6, 3)
    assert np.shares_memory(as_feature_matrix(x, dtype=torch.float64).numpy(), x)
    assert torch.equal(as_feature_matrix(x), torch.from_numpy(x).float())
    assert torch.equal(as_feature_matrix(x[:, ::-1]), torch.from_numpy(x[:, ::-1].copy()).float())  # a reversed view
    t = torch.randn(4, 2)
    assert as_feature_matrix(t).data_ptr() == t.data_ptr()


def brute_force(queries, keys, k, metric, exclude_self=False):
    q, kk = queries.double(), keys.double()
    if metric == "cosine":
        score = F.normalize(q, dim=1) @ F.normalize(kk, dim=1).T
    else:
        score = -torch.cdist(q, kk)
    if exclude_self:
        score.fill_diagonal_(-float("inf"))
    values, idx = score.sort(dim=1, descending=True, stable=True)
    return (values[:, :k] if metric == "cosine" else -values[:, :k]), idx[:, :k]


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("d", [8, 160])  # 160: the bfloat16 candidate search where the CPU has it
@pytest.mark.parametrize("exclude_self", [False, True])
def test_neighbours_match_brute_force(metric, d, exclude_self):
    gen = torch.Generator().manual_seed(d)
    keys = torch.randn(700, d, generator=gen)
    queries = keys if exclude_self else torch.randn(130, d, generator=gen)
    values, idx = nearest_neighbours(queries, keys, 9, metric, exclude_self=exclude_self, chunk=50)
    want_values, want_idx = brute_force(queries, keys, 9, metric, exclude_self)
    assert idx.shape == (len(queries), 9)
    assert torch.equal(idx, want_idx)
    assert torch.allclose(values.double(), want_values, atol=1e-4)
    if exclude_self:
        assert not (idx == torch.arange(len(keys))[:, None]).any()


def test_neighbours_keep_the_dtype_for_euclidean_and_clip_k():
    x = torch.randn(5, 3, dtype=torch.float64)
    values, idx = nearest_neighbours(x, x, 10, "euclidean", exclude_self=True)
    assert values.dtype == torch.float64 and idx.shape == (5, 4)
    with pytest.raises(ReplearnError, match="metric"):
        nearest_neighbours(x, x, 2, "manhattan")
    with pytest.raises(ReplearnError, match="at least 2 key rows"):
        nearest_neighbours(x[:1], x[:1], 2, exclude_self=True)


# The searches the analyses made by hand before the shared helper, kept verbatim: the helper must give
# exactly their numbers (same candidates, same tie handling), duplicates included.

def _old_cosine_topk(train, query, k, chunk=1024):
    train = F.normalize(train.float(), dim=1)
    query = F.normalize(query.float(), dim=1)
    k = min(k, len(train))
    candidates = min(len(train), 2 * k + 8)
    use_bf16 = train.device.type == "cpu" and train.shape[1] >= 128 and candidates < len(train) \
        and _bf16_matmul_is_fast()
    train_low = train.bfloat16() if use_bf16 else None
    sims, idxs = [], []
    for start in range(0, len(query), chunk):
        q = query[start:start + chunk]
        if use_bf16:
            _, cand = (q.bfloat16() @ train_low.T).topk(candidates, dim=1)
            rows = train.index_select(0, cand.flatten()).view(len(q), candidates, -1)
            exact = torch.bmm(rows, q[:, :, None]).squeeze(2)
            top, pos = exact.topk(k, dim=1)
            idx = cand.gather(1, pos)
        else:
            top, idx = (q @ train.T).topk(k, dim=1)
        sims.append(top)
        idxs.append(idx)
    return torch.cat(sims), torch.cat(idxs)


def _old_neighbour_sets(t, k):
    k = min(k, len(t) - 1)
    _, idx = _old_cosine_topk(t, t, k + 1)
    is_self = idx == torch.arange(len(t))[:, None]
    drop = torch.where(is_self.any(1), is_self.float().argmax(1), torch.full((len(t),), k))
    keep = torch.ones_like(idx, dtype=torch.bool)
    keep[torch.arange(len(t)), drop] = False
    return idx[keep].view(len(t), k)


def _old_euclidean_self(x, k, chunk):
    sq = (x * x).sum(1)
    idx_parts, dist_parts = [], []
    for start in range(0, len(x), chunk):
        block = x[start:start + chunk]
        d2 = (sq[start:start + chunk, None] + sq[None, :] - 2.0 * block @ x.T).clamp_min_(0.0)
        rows = torch.arange(len(block))
        d2[rows, rows + start] = float("inf")
        dist, idx = d2.topk(k, dim=1, largest=False)
        idx_parts.append(idx)
        dist_parts.append(dist.sqrt())
    return torch.cat(dist_parts), torch.cat(idx_parts)


@pytest.mark.parametrize("d", [16, 160])
def test_neighbours_are_exactly_the_searches_they_replaced(d):
    rng = np.random.RandomState(0)
    x = torch.from_numpy(rng.randn(600, d).astype(np.float32))
    x[100:140] = x[0:40].clone()  # duplicated rows
    x[200:215] = x[5].clone()     # a row with more duplicates than neighbours
    for got, want in [(nearest_neighbours(x[400:], x[:400], 12, chunk=64), _old_cosine_topk(x[:400], x[400:], 12, 64)),
                      (nearest_neighbours(x, x, 9, "euclidean", True, 2048), _old_euclidean_self(x, 9, 2048)),
                      (nearest_neighbours(x.double(), x.double(), 2, "euclidean", True, 1024),
                       _old_euclidean_self(x.double(), 2, 1024))]:
        assert torch.equal(got.values, want[0]) and torch.equal(got.indices, want[1])
    assert torch.equal(nearest_neighbours(x, x, 10, exclude_self=True).indices, _old_neighbour_sets(x, 10))


def test_skip_leaves_out_built_ins_and_refuses_unknown_names_and_broken_requirements(tiny_cfg):
    kept = default_analyses(["projection", "structure"])
    assert "projection" not in kept and "structure" not in kept and "probes" in kept
    assert [n for n in default_analyses() if n not in ("projection", "structure")] == kept
    with pytest.raises(ConfigError, match="'nonsense', which is not a built-in analysis"):
        default_analyses(["nonsense"])
    with pytest.raises(ConfigError, match="requires the analysis 'projection', which analysis.skip leaves out") as info:
        ordered_analyses(default_analyses(["projection"]))
    assert "remove 'projection' from analysis.skip" in str(info.value)
    config = dataclasses.replace(tiny_cfg, analysis=dataclasses.replace(tiny_cfg.analysis, skip=["projection", "structure"]))
    assert {"projection", "structure"}.isdisjoint(a.name for a in resolve(config).analyses)
    analyses, notes = report_analyses({"analysis": {"skip": ["projection"]}})
    assert "projection" not in [a.name for a in analyses] and not notes


def test_bf16_is_not_timed_on_an_x86_cpu_without_native_bf16(tmp_path, monkeypatch):
    """An x86 CPU whose flags lack avx512_bf16 and amx_bf16 emulates bfloat16 matmuls: the search keeps float32
    without timing them (the timing took 1.7 s there); with either flag, or no flags to read, it times them."""
    import types

    import replearn.metrics.neighbours as neighbours

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\nprocessor\t: 1\nflags\t\t: fpu\n")
    assert neighbours._x86_cpu_flags(str(cpuinfo)) == {"fpu", "sse2", "avx2", "fma"}
    assert neighbours._x86_cpu_flags(str(tmp_path / "absent")) is None

    def no_timing() -> float:
        raise AssertionError("timed a matmul")

    monkeypatch.setattr(neighbours, "_BF16_FAST", None)
    monkeypatch.setattr(neighbours, "_x86_cpu_flags", lambda: {"avx2", "fma"})
    monkeypatch.setattr(neighbours, "time", types.SimpleNamespace(perf_counter=no_timing))
    assert neighbours._bf16_matmul_is_fast() is False
    for flags in ({"avx512f", "avx512_bf16"}, None):
        monkeypatch.setattr(neighbours, "_BF16_FAST", None)
        monkeypatch.setattr(neighbours, "_x86_cpu_flags", lambda flags=flags: flags)
        with pytest.raises(AssertionError, match="timed a matmul"):
            neighbours._bf16_matmul_is_fast()
