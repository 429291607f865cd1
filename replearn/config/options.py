"""Typed options, the leaf every config section and plug-in builds on.

An option is a dataclass field declared with ``opt(default, help, min=…, choices=…)``; ``build_options``
coerces raw YAML/CLI values to the declared types and checks their ranges, and ``option_docs`` turns the
same declarations into ``--help`` text and the configuration docs. ``safe_load_bounded`` is the YAML
loader for anything a user hands in (bounded alias expansion, no duplicate keys). Nothing here imports
another replearn module but ``errors``.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from dataclasses import field
from typing import Any, Iterable

import yaml

from replearn.errors import ConfigError

MAX_YAML_NODES = 100_000  # a config expands to a few hundred; aliases can make 400 bytes expand to billions

# keys that were renamed: old key -> the text of the fix
RENAMED = {"train.autoencoder_epochs": "use regimes.autoencoder.epochs (every regime has its own epochs option)"}


def opt(default: Any, help: str, *, min: float | None = None, max: float | None = None,
        gt: float | None = None, choices: tuple | None = None, list_default: bool = False,
        may_be_empty: bool = False) -> Any:
    """A declared option: its default, help text and bounds (kept in the dataclass field's metadata)."""
    meta = {"help": help, "min": min, "max": max, "gt": gt, "choices": choices, "may_be_empty": may_be_empty}
    if list_default or isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


def type_name(tp: Any) -> str:
    return str(tp).replace("typing.", "").replace("<class '", "").replace("'>", "")


def coerce(key: str, value: Any, tp: Any) -> Any:
    """Convert a YAML/CLI value to the field's declared type, or raise a ConfigError naming both."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return coerce(key, value, inner[0])
    if origin is list:
        if isinstance(value, str) and "," in value:  # --set key=1e-3,1e-2 means the list [1e-3, 1e-2]
            value = [yaml.safe_load(part) if part.strip() else part for part in value.split(",")]
        if not isinstance(value, (list, tuple)):
            value = [value]
        return [coerce(key, v, args[0]) for v in value]
    if origin is dict:
        if isinstance(value, dict) and all(isinstance(k, str) for k in value):
            return dict(value)
        raise ConfigError(f"config key '{key}' must be a mapping of names to values, got {excerpt(value)}",
                          f"write {key} as 'name: value' lines or {{name: value}}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, bool):
            raise ConfigError(f"config key '{key}' must be a word, got {value} (YAML reads yes, no, on and off as "
                              "true or false)", f"choose a value from docs/configuration.md; a word YAML would read "
                                                f"as true or false goes in quotes ({key}='…')")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
    raise ConfigError(f"config key '{key}' must be of type {type_name(tp)}, got {excerpt(value)}",
                      f"set {key} to a{'n' if type_name(tp)[0] in 'aeiou' else ''} {type_name(tp)} value"
                      + (", or a list as [a, b]" if isinstance(value, str) and "," in value else ""))


def excerpt(value: Any, limit: int = 60) -> str:
    """A bounded repr for messages: a value built from YAML aliases can be huge."""
    if isinstance(value, (list, tuple, dict)):
        return f"a {type(value).__name__} of {len(value)} items"
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 200:
        return f"an integer of {len(str(value)) if value.bit_length() < 10_000 else 'thousands of'} digits"
    if isinstance(value, str) and len(value) > limit:
        return repr(value[:limit]) + "…"
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


def check_range(key: str, value: Any, meta: typing.Mapping[str, Any]) -> None:
    """Check a coerced value (or each entry of a list) against an option's declared bounds and choices."""
    choices, low, above, high = meta.get("choices"), meta.get("min"), meta.get("gt"), meta.get("max")
    values = value if isinstance(value, list) else [value]
    if isinstance(value, list) and not value and not meta.get("may_be_empty"):
        raise ConfigError(f"config key '{key}' must not be an empty list", f"give {key} at least one value")
    for v in values:
        if v is None:
            continue
        if isinstance(v, float) and not math.isfinite(v):
            raise ConfigError(f"config key '{key}' must be finite, got {v}", f"set {key} to a finite number")
        shown = excerpt(v)
        if choices is not None and v not in choices:
            close = difflib.get_close_matches(str(v)[:100], [str(c) for c in choices], n=1, cutoff=0.5)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise ConfigError(f"config key '{key}' has invalid value {shown}",
                              f"{hint}choose one of: {', '.join(map(str, choices))}")
        if low is not None and v < low:
            raise ConfigError(f"config key '{key}' must be >= {low}, got {shown}", f"set {key} to at least {low}")
        if above is not None and v <= above:
            raise ConfigError(f"config key '{key}' must be > {above}, got {shown}",
                              f"set {key} to a value above {above}")
        if high is not None and v > high:
            raise ConfigError(f"config key '{key}' must be <= {high}, got {shown}", f"set {key} to at most {high}")


def build_options(cls: type, prefix: str, values: dict[str, Any], known: Iterable[str] = (), owner: str = "") -> Any:
    """An instance of the options dataclass ``cls`` from ``values``, every key's type and range checked.

    ``prefix`` names the keys in messages (``regimes.vae`` gives ``regimes.vae.beta``); ``known`` lists other
    valid keys of the same section, offered when a key is misspelt; ``owner`` names the plug-in the options
    belong to (``encoder 'resnet'``), for messages."""
    if not isinstance(values, dict):
        raise ConfigError(f"config section '{prefix}' must be a mapping, got {excerpt(values)}",
                          f"write '{prefix}:' followed by indented 'key: value' lines")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for name, value in values.items():
        key = f"{prefix}.{name}"
        if name not in fields:
            valid = [f"{prefix}.{f}" for f in fields] + list(known)
            if not owner:
                raise unknown_key(key, valid)
            by_name = {v.rsplit(".", 1)[-1]: v for v in valid}
            close = [by_name[c] for c in difflib.get_close_matches(str(name)[:100], list(by_name), n=1, cutoff=0.7)]
            raise ConfigError(f"config key {excerpt(key)} is not an option of {owner} (its options: "
                              f"{', '.join(fields) or 'none'})", f"did you mean '{close[0]}'?" if close else
                              "remove it, or choose the plug-in it belongs to")
        coerced = coerce(key, value, hints[name])
        check_range(key, coerced, fields[name].metadata)
        kwargs[name] = coerced
    return cls(**kwargs)


def unknown_key(key: str, valid: Iterable[str], extra_fix: str = "") -> ConfigError:
    """The error for a key no section declares, suggesting the closest valid key."""
    if key in RENAMED:
        return ConfigError(f"config key '{key}' no longer exists", RENAMED[key])
    close = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.5) if len(key) <= 100 else []
    hint = f"did you mean '{close[0]}'?" if close else (extra_fix or "see `replearn run --help` for the valid keys")
    return ConfigError(f"unknown config key {excerpt(key)}", hint)


def option_docs(cls: type, prefix: str) -> list[tuple[str, str, Any, str]]:
    """(key, type, default, help) of every option of the dataclass ``cls``, keys under ``prefix``."""
    hints = typing.get_type_hints(cls)
    rows = []
    for sub in dataclasses.fields(cls):
        default = sub.default if sub.default is not dataclasses.MISSING else sub.default_factory()
        rows.append((f"{prefix}.{sub.name}", type_name(hints[sub.name]), default, sub.metadata.get("help", "")))
    return rows


def options_dict(options: Any) -> dict[str, Any]:
    """An options dataclass as plain data (for config.yaml and checkpoints)."""
    return dataclasses.asdict(options) if dataclasses.is_dataclass(options) else {}


def safe_load_bounded(text: str, what: str) -> Any:
    """``yaml.safe_load`` that refuses duplicate keys and documents whose aliases expand past
    ``MAX_YAML_NODES`` nodes (a "billion laughs" file), before anything is constructed."""
    loader = yaml.SafeLoader(text)
    try:
        try:
            node = loader.get_single_node()
        except RecursionError:
            raise ConfigError(f"{what} is nested too deeply", "write the config as plain sections of key: value lines") from None
        if node is None:
            return None
        _check_yaml_nodes(node, what)
        try:
            return loader.construct_document(node)
        except (ValueError, OverflowError, RecursionError) as exc:
            raise ConfigError(f"{what} holds a value YAML cannot represent ({type(exc).__name__})",
                              "check for extremely long numbers or deep nesting") from None
    finally:
        loader.dispose()


def _check_yaml_nodes(root: yaml.Node, what: str) -> None:
    """Count the nodes of the alias-expanded document (shared subtrees counted as often as they are used,
    computed without expanding them) and refuse a mapping that gives one key twice."""
    sizes: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in sizes:
            continue
        if isinstance(node, yaml.ScalarNode):
            sizes[id(node)] = 1
            continue
        children = ([c for pair in node.value for c in pair] if isinstance(node, yaml.MappingNode)
                    else list(node.value))
        if children_done:
            total = 1 + sum(sizes.get(id(c), 0) for c in children)
            sizes[id(node)] = total
            if total > MAX_YAML_NODES:
                raise ConfigError(f"{what} expands to more than {MAX_YAML_NODES:,} values through its YAML aliases "
                                  f"(&anchor / *alias)", "write the values out instead of nesting aliases")
            continue
        if isinstance(node, yaml.MappingNode):
            seen: set[str] = set()
            for key, _ in node.value:
                if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
                    if key.value in seen:
                        raise ConfigError(f"{what} gives the key {excerpt(key.value)} twice in one mapping "
                                          f"(line {key.start_mark.line + 1})",
                                          "keep one of them: a repeated key or section would silently replace the "
                                          "earlier one")
                    seen.add(key.value)
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in sizes)
