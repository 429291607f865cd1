"""What a model file is, and reading it without running anything it contains.

``torch.save`` files (replearn checkpoints, state_dicts) are zip archives of a pickle and raw tensor records;
they are read with ``weights_only=True`` after the archive's sizes are checked against the memory available,
so neither code in the pickle nor a record that inflates to gigabytes gets a chance to run or allocate.
TorchScript archives (``torch.jit.save``) and ``torch.export`` programs (``.pt2``) are different: loading
either can run code the file carries — TorchScript's ``__setstate__`` methods, and in torch 2.13
``torch.export.load``'s pickled weights, constants and sample inputs (``torch.load(weights_only=False)``,
``pickle.loads``) and the shape expressions it evaluates with ``sympy.sympify`` — so they are opened only
when the user passes ``--trust-model-code``.
"""
from __future__ import annotations

import logging
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from replearn.rundir.io import load_weights_only
from replearn.data.readers import MAX_INFLATION, available_memory
from replearn.errors import CheckpointError

TORCH_SAVE, TORCHSCRIPT, EXPORTED_PROGRAM = "torch.save file", "TorchScript archive", "torch.export program"
CODE_FORMATS = (TORCHSCRIPT, EXPORTED_PROGRAM)
TRUST_FLAG = "--trust-model-code"
MAX_PICKLE_BYTES = 16 << 20  # a torch.save pickle indexes its tensors: kilobytes, ~1 MB for thousands of tensors
MAX_DIRECTORY_BYTES = 16 << 20  # one entry (~100 bytes) per tensor: under 1 MB for the largest models
UNREADABLE_FIX = "save it with torch.save (PyTorch 1.6 or later); if it was copied, copy it again"


def model_file_kind(path: Path) -> str:
    """TORCHSCRIPT, EXPORTED_PROGRAM or TORCH_SAVE, from the archive's member names alone (nothing is read);
    a file that is not a zip archive counts as TORCH_SAVE, which ``check_archive`` then refuses."""
    try:
        if _directory_size(path) > MAX_DIRECTORY_BYTES:
            return TORCH_SAVE  # too long to list: check_archive refuses it
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return TORCH_SAVE
    tails = {name.split("/", 1)[-1] for name in names}
    if "constants.pkl" in tails or any(t.startswith("code/") for t in tails):
        return TORCHSCRIPT
    if {"archive_format", "serialized_exported_program.json"} & tails or any(t.startswith("models/") for t in tails):
        return EXPORTED_PROGRAM
    return TORCH_SAVE


def check_archive(path: Path, limit: int | None = None) -> None:
    """Refuse, before anything is read, a model file that is not a zip archive, whose list of records is too
    long to read, whose records declare more bytes than ``limit`` (default: half the available memory),
    inflate like a zip bomb, or hold a pickle larger than any model's index of tensors."""
    limit = available_memory() // 2 if limit is None else limit
    try:
        listing = _directory_size(path)
        if listing > MAX_DIRECTORY_BYTES:
            raise CheckpointError(f"'{path}' lists its records in {listing / 2**20:.0f} MiB, more than the "
                                  f"{MAX_DIRECTORY_BYTES >> 20} MiB any saved model needs (hundreds of thousands of "
                                  "records)", "use the file as torch.save wrote it")
        with zipfile.ZipFile(path) as zf:
            members = zf.infolist()
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise CheckpointError(f"'{path}' is not a readable PyTorch file ({type(exc).__name__}: not a complete zip "
                              "archive, which torch.save writes since PyTorch 1.6; older formats cannot be "
                              "size-checked before loading)", UNREADABLE_FIX) from None
    total = sum(m.file_size for m in members)
    if total > limit:
        raise CheckpointError(f"'{path}' declares {total / 2**30:.1f} GiB of records, more than the "
                              f"{limit / 2**30:.1f} GiB of memory available", "free memory, or use a smaller model")
    for member in members:
        if member.file_size > 1 << 20 and member.file_size > MAX_INFLATION * max(1, member.compress_size):
            raise CheckpointError(f"'{path}': record '{member.filename}' inflates from {member.compress_size:,} to "
                                  f"{member.file_size:,} bytes, which no saved model does (torch.save does not "
                                  "compress)", "use the file as torch.save wrote it")
        if member.filename.endswith(".pkl") and member.file_size > MAX_PICKLE_BYTES:
            raise CheckpointError(f"'{path}': its index '{member.filename}' is {member.file_size / 2**20:.0f} MiB, "
                                  f"more than the {MAX_PICKLE_BYTES >> 20} MiB a model's index needs",
                                  "save the tensors themselves: torch.save(model.state_dict(), path)")


def _directory_size(path: Path) -> int:
    """The size of the zip's central directory (the list of its members, which zipfile reads whole), from
    the end record at the file's tail; 0 when there is none (zipfile then says why it is not a zip)."""
    with open(path, "rb") as fh:
        end = zipfile._EndRecData(fh)  # the standard library's own reader of the (zip64) end record
    return int(end[zipfile._ECD_SIZE]) if end else 0


def read_weights(path: Path) -> Any:
    """The object in a torch.save file, read with ``weights_only=True`` (tensors and plain values) once
    ``check_archive`` has bounded its size; anything that would need arbitrary unpickling is refused."""
    check_archive(path)
    return load_weights_only(path, f"'{path}'", UNREADABLE_FIX)


def refuse_code_file(path: Path, kind: str, with_model: bool) -> CheckpointError:
    """The one-line refusal of a TorchScript or torch.export file that the user has not trusted to run code."""
    if with_model:
        return CheckpointError(f"'{path}' is a {kind}, not a state_dict: --model reads weights only, and this file "
                               "would run code it contains", "pass torch.save(model.state_dict(), path) with --model")
    deprecated = " (TorchScript is deprecated: prefer torch.export .pt2 files)" if kind == TORCHSCRIPT else ""
    return CheckpointError(f"'{path}' is a {kind}; loading it runs code the file contains",
                           f"pass a state_dict with --model (no code runs), or add {TRUST_FLAG} if you trust the "
                           f"file's author{deprecated}")


def load_code_file(path: Path, kind: str) -> Any:
    """A trusted TorchScript module or torch.export ``ExportedProgram`` (this runs code the file contains),
    after ``check_archive``; torch's warnings and log lines during the load are kept off stderr."""
    check_archive(path)
    loggers = [logging.getLogger(name) for name in ("torch.export", "torch._export")]  # and their children
    levels = [log.level for log in loggers]
    for log in loggers:
        log.setLevel(logging.CRITICAL + 1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if kind == TORCHSCRIPT:
                return torch.jit.load(str(path), map_location="cpu")
            return torch.export.load(str(path))
    except Exception as exc:  # torch's loaders raise many types for a damaged file
        saver = "torch.jit.save" if kind == TORCHSCRIPT else "torch.export.save"
        raise CheckpointError(f"'{path}' is not a loadable {kind} ({type(exc).__name__}: {str(exc)[:100]})",
                              f"save it again with {saver}; if it was copied, copy it again") from None
    finally:
        for log, level in zip(loggers, levels):
            log.setLevel(level)
