"""What every command's arguments share: the one-line argument errors, lazily computed help, and the common --threads
and --force options."""

from __future__ import annotations

import argparse
from typing import Any

THREADS_HELP = (
    "threads for the phases that run in parallel (default: auto, or $REPLEARN_THREADS): auto puts "
    "large convolutions and products on every available core and keeps small or memory-bound work "
    "on one thread per task, which stays fast when other programs share the CPU; a number fixes "
    "it, e.g. for bit-for-bit reproducible training (recorded in environment.json)"
)


def _apply_threads(value: str | None) -> None:
    from replearn.runtime import threads as parallel

    if value is not None:
        parallel.set_threads(parallel.parse_threads(value, "--threads"))
    parallel.thread_setting()  # a malformed $REPLEARN_THREADS fails here, before any work
    parallel.quiet_native_pools()


class UsageError(Exception):
    """A command line argparse refused: its message and the (sub)command whose --help shows the usage."""

    def __init__(self, prog: str, message: str) -> None:
        super().__init__(message)
        self.prog, self.message = prog, message


class OneLineParser(argparse.ArgumentParser):
    """argparse, with an argument error as one line (``main`` prints it, exit 2) instead of the multi-line usage,
    and without abbreviations: ``--npro 2`` is refused, not taken for ``--nproc`` (nor passed on to torchrun).
    Its help can end with text computed only when the help is shown (``epilog_extra``): every plug-in's config
    keys appear in ``replearn run --help`` without ``replearn --help`` or an argument error importing them."""

    def __init__(self, *args: Any, epilog_extra: Any = None, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)
        self.epilog_extra = epilog_extra

    def format_help(self) -> str:
        if self.epilog_extra is not None:
            self.epilog = f"{self.epilog or ''}\n{self.epilog_extra()}"
            self.epilog_extra = None
        return super().format_help()

    def error(self, message: str) -> Any:  # type: ignore[override]
        raise UsageError(self.prog, message)


FORCE_HELP = (
    "replace {option} if it is an existing file (never a file of a replearn run, nor anything that is not a "
    "regular file)"
)
