"""Which analyses a run computes, in which order, with which options.

``ordered_analyses`` resolves each spec (a registered name or an import path ``package.module:Name``),
builds the analysis with its ``analyses.<name>`` options validated against its ``Options``, and orders
the analyses so that each computes after those it ``requires`` — otherwise in the order given, so the
built-ins compute in their registration order (``default_analyses``). ``report_analyses`` is the
forgiving counterpart for re-rendering a report: it takes the analyses a finished run used from its saved
config and notes those that cannot be loaded here instead of failing.
"""
from __future__ import annotations

from typing import Any

from replearn.errors import ConfigError
from replearn.config.options import build_options, unknown_key
from replearn.analyses.base import ANALYSES, Analysis


def default_analyses(skip: list[str] | tuple[str, ...] = ()) -> list[str]:
    """The built-in analyses (those defined in this package), in registration order: the order they
    compute in when nothing requires otherwise; less those named in ``skip`` (``analysis.skip``)."""
    builtin = [name for name, cls in ANALYSES.items() if cls.__module__.startswith(f"{__package__}.")]
    for name in skip:
        if name not in builtin:
            raise ConfigError(f"analysis.skip names '{str(name)[:80]}', which is not a built-in analysis",
                              f"choose from: {', '.join(builtin)}")
    return [name for name in builtin if name not in skip]


def analysis_name(cls: type[Analysis], spec: str) -> str:
    """The name an analysis's options and requirements use: its registered ``name``, or for an import path
    without one the class name in lower case."""
    name = cls.name or cls.__name__.lower()
    if not name.replace("-", "_").isidentifier():
        raise ConfigError(f"analysis '{spec[:200]}' has the name {name[:80]!r}, which cannot be a config key",
                          "give the class a `name` of letters, digits and '_'")
    return name


def _build(cls: type[Analysis], name: str, raw: Any) -> Analysis:
    analysis = cls(build_options(cls.Options, f"analyses.{name}", {} if raw is None else raw))
    if not cls.name:
        analysis.name = name  # type: ignore[misc]
    return analysis


def resolve_analyses(specs: list[str]) -> dict[str, type[Analysis]]:
    """Each spec's class by its analysis name, in the order given; a spec repeated (by name or by import
    path) counts once, two different classes of one name are refused."""
    classes: dict[str, type[Analysis]] = {}
    for spec in specs:
        cls = ANALYSES.get(spec)
        name = analysis_name(cls, spec)
        if classes.get(name, cls) is not cls:
            raise ConfigError(f"two analyses are named '{name}' (the second is '{spec[:200]}')",
                              "give one of the classes another `name`")
        classes[name] = cls
    return classes


def dependency_order(requires: dict[str, tuple[str, ...]]) -> list[str]:
    """The names of ``requires`` (name → the names it requires) so that each comes after everything it
    requires; otherwise in the given order (at each step the first name whose requirements are placed)."""
    for name, needs in requires.items():
        for need in needs:
            if need not in requires:
                if need in ANALYSES and ANALYSES.get(need).__module__.startswith(f"{__package__}."):
                    raise ConfigError(f"analysis '{name}' requires the analysis '{need}', which analysis.skip "
                                      "leaves out", f"remove '{need}' from analysis.skip, or skip '{name}' too")
                raise ConfigError(f"analysis '{name}' requires the analysis '{need}', which is not among the "
                                  f"analyses run", f"add '{need}' to analysis.extra (its name or import path), "
                                  f"or leave '{name}' out")
    placed: list[str] = []
    waiting = list(requires)
    while waiting:
        ready = next((n for n in waiting if all(r in placed for r in requires[n])), None)
        if ready is None:
            raise ConfigError(f"analyses require each other in a cycle: {' → '.join(_cycle(requires, waiting))}",
                              "remove one of these requirements (an analysis can only read what was computed "
                              "before it)")
        placed.append(ready)
        waiting.remove(ready)
    return placed


def _cycle(requires: dict[str, tuple[str, ...]], waiting: list[str]) -> list[str]:
    """One cycle among the waiting names (each of which requires another waiting one), closed."""
    path = [waiting[0]]
    while True:
        step = next(r for r in requires[path[-1]] if r in waiting)
        if step in path:
            return path[path.index(step):] + [step]
        path.append(step)


def ordered_analyses(specs: list[str], options: dict[str, dict[str, Any]] | None = None) -> list[Analysis]:
    """The analyses ``specs`` names (registered names or import paths), each built with its options from
    ``options`` (analysis name → raw ``analyses.<name>`` mapping, validated against its ``Options``), in an
    order where each computes after those it ``requires`` (ties keep the order of ``specs``).

    A ConfigError (one line) for a spec that is not an analysis, options for an analysis that does not
    run, an invalid option, a requirement missing from ``specs``, or requirements in a cycle."""
    classes = resolve_analyses(list(specs))
    options = dict(options or {})
    for key in options:
        if key not in classes:
            raise unknown_key(f"analyses.{key}", [f"analyses.{n}" for n in classes],
                              f"analyses.<name> configures an analysis this run computes: {', '.join(classes)}")
    built = {name: _build(cls, name, options.get(name)) for name, cls in classes.items()}
    return [built[name] for name in dependency_order({name: cls.requires for name, cls in classes.items()})]


def report_analyses(config: dict[str, Any]) -> tuple[list[Analysis], list[str]]:
    """The analyses whose sections a run's report shows, sorted by ``order``: the built-ins and the run's
    ``analysis.extra`` (read from its saved config, plain data), each with its saved options; and a note
    naming each one that cannot be loaded here (a plug-in that does not import: its sections are left out;
    saved options that no longer validate: its sections use the defaults)."""
    section = config.get("analysis") if isinstance(config.get("analysis"), dict) else {}
    extra = section.get("extra") if isinstance(section.get("extra"), list) else []
    skip = section.get("skip") if isinstance(section.get("skip"), list) else []
    saved = config.get("analyses") if isinstance(config.get("analyses"), dict) else {}
    analyses: dict[str, Analysis] = {}
    notes = []
    builtin = [name for name in default_analyses() if name not in skip]
    for spec in [*builtin, *(str(s) for s in extra)]:
        try:
            name, cls = next(iter(resolve_analyses([spec]).items()))
            if name in analyses:
                continue
            try:
                analyses[name] = _build(cls, name, saved.get(name))
            except ConfigError as exc:
                analyses[name] = _build(cls, name, None)
                notes.append(f"the saved options of the analysis '{name}' ({exc.problem[:200]}; its sections "
                             "are shown with its default options)")
        except Exception as exc:  # a plug-in may fail in any way while loading: name it, show the rest
            reason = exc.problem if isinstance(exc, ConfigError) else f"{type(exc).__name__}: {exc}"
            notes.append(f"the sections of the analysis '{spec[:200]}', which could not be loaded "
                         f"({' '.join(reason.split())[:200]})")
    return sorted(analyses.values(), key=lambda a: a.order), notes
