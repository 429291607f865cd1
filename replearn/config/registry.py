"""Named plug-ins: one small ``Registry`` per kind (regimes, encoders, datasets, analyses).

Like timm's ``register_model`` / ``create_model`` and solo-learn's ``METHODS``: adding a plug-in is one
new file plus one ``@REGISTRY.register("name")``. A user's own plug-in needs no edit inside replearn:
wherever a config takes a registered name it also takes an import path ``package.module:Name``, which
is imported on first use (the current directory is searched too, as ``python -m`` would).
"""
from __future__ import annotations

import contextlib
import difflib
import importlib
import io
import os
import sys
from typing import Any, Callable, Generic, Iterator, TypeVar

from replearn.errors import ConfigError

T = TypeVar("T")


def is_import_path(name: str) -> bool:
    """Whether ``name`` looks like ``package.module:Name`` rather than a registered name."""
    return ":" in name


def import_object(path: str, what: str) -> Any:
    """The object an import path ``package.module:Name`` (or ``module:Outer.Inner``) names. Whatever happens
    while the module is imported is reported as the plug-in's: an exception, or a ``sys.exit`` (an argparse
    error at import time exits too), with what the module printed to stderr quoted in the one line."""
    module_name, _, attr = path.partition(":")
    if not module_name or not attr or not all(part.isidentifier() for part in [*module_name.split("."),
                                                                               *attr.split(".")]):
        raise ConfigError(f"{what} import path '{path[:200]}' is not of the form package.module:Name",
                          "write the module's dotted name, a colon, then the class or function name")
    with _search_current_directory():
        obj: Any = _import_plugin_module(path, module_name, what)
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"{what} import path '{path[:200]}': module '{module_name}' has no attribute "
                              f"'{attr}'", f"check the name after the colon in '{path[:200]}'")
        obj = getattr(obj, part)
    return obj


@contextlib.contextmanager
def _search_current_directory() -> Iterator[None]:
    """Let plug-in modules be found in the current directory, as ``python -m`` would (if it still exists),
    for this import only: sys.path is left as it was."""
    try:
        cwd = os.getcwd()
    except OSError:  # the working directory was removed: there is nothing there to import from
        cwd = None
    added = cwd is not None and cwd not in sys.path
    if added:
        sys.path.append(cwd)
    try:
        yield
    finally:
        if added and cwd in sys.path:
            sys.path.remove(cwd)


def _import_plugin_module(path: str, module_name: str, what: str) -> Any:
    """Import a plug-in's module with its stderr captured, so that what it prints (an argparse usage message,
    a warning) is either passed on after a successful import or quoted as the plug-in's in the error."""
    captured = io.StringIO()
    fix = (f"check that module '{module_name}' is importable from here (it is looked up on sys.path and in the "
           "current directory)")
    try:
        with contextlib.redirect_stderr(captured):
            module = importlib.import_module(module_name)
    except SystemExit as exit_:  # sys.exit() or an argparse error in the plug-in's top-level code
        raise ConfigError(f"{what} plug-in module '{module_name}' (from '{path[:200]}') called "
                          f"sys.exit({_short(repr(exit_.code), 40)}) while being imported{_printed(captured)}",
                          "a plug-in module must not exit or parse the command line when imported: move that code "
                          "under `if __name__ == \"__main__\":`") from None
    except Exception as exc:  # a user's module may fail in any way while importing
        reason = f"{type(exc).__name__}: {_short(str(exc).splitlines()[0], 160)}" if str(exc).strip() \
            else type(exc).__name__
        raise ConfigError(f"{what} import path '{path[:200]}' could not be imported ({reason})"
                          f"{_printed(captured)}", fix) from None
    if captured.getvalue():
        sys.stderr.write(captured.getvalue())
    return module


def _printed(captured: io.StringIO) -> str:
    """The last line a plug-in printed to stderr, quoted as its own (empty when it printed nothing)."""
    lines = [line.strip() for line in captured.getvalue().splitlines() if line.strip()]
    return f"; the plug-in printed: {_short(lines[-1], 200)!r}" if lines else ""


def _short(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "…"


class Registry(Generic[T]):
    """Plug-ins of one kind by name. ``check`` validates what an import path brings in (and returns it,
    possibly adapted); registered entries are trusted."""

    def __init__(self, kind: str, check: Callable[[Any, str], T] | None = None) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._check = check

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: ``@REGIMES.register("vae")`` above a class or function."""
        if not name or is_import_path(name):
            raise ValueError(f"invalid {self.kind} name {name!r}")

        def add(obj: T) -> T:
            if name in self._entries and self._entries[name] is not obj:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._entries[name] = obj
            return obj

        return add

    def get(self, name: str) -> T:
        """The entry registered as ``name``, or the object an import path names (checked)."""
        if not isinstance(name, str) or not name:
            raise ConfigError(f"a {self.kind} name must be a non-empty string, got {str(name)[:80]!r}",
                              f"choose one of: {', '.join(self.names())}")
        if name in self._entries:
            return self._entries[name]
        if is_import_path(name):
            obj = import_object(name, self.kind)
            return self._check(obj, name) if self._check else obj
        close = difflib.get_close_matches(name, self.names(), n=1, cutoff=0.5)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise ConfigError(f"unknown {self.kind} '{name[:200]}'",
                          f"{hint}choose one of: {', '.join(self.names())}, or give an import path "
                          "package.module:Name")

    def names(self) -> list[str]:
        return list(self._entries)

    def items(self) -> Iterator[tuple[str, T]]:
        return iter(list(self._entries.items()))

    def __contains__(self, name: object) -> bool:
        return name in self._entries
