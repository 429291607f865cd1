"""Reading and writing run artifacts safely.

Every write goes to a temporary file in the same directory and is renamed into place, so a crash or
``kill -9`` leaves each artifact either complete or absent. Checkpoints load with ``weights_only=True``:
tensors and plain containers only, never arbitrary pickled code.
"""
from __future__ import annotations

import io
import json
import os
import pickle
import stat
import tempfile
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from replearn.errors import CheckpointError, RunDirError
from replearn.rundir import layout

if TYPE_CHECKING:  # pandas only for the annotation: the report's figure workers import this module
    import pandas as pd
    import torch

RUN_MARKER = layout.MARKER
RUN_FORMAT = 1
_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temporary file and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def enclosing_run(directory: Path) -> Path | None:
    """The replearn run directory that ``directory`` is, or lies inside (links resolved), if any."""
    here = Path(os.path.realpath(directory))
    for folder in (here, *here.parents):
        if (folder / RUN_MARKER).is_file():
            return folder
    return None


def _refuse_special(path: Path, option: str) -> None:
    """Refuse an output path that exists as anything but a regular file: replacing it with one (the atomic
    rename does) would destroy a directory's place, a link, a fifo, a device or a socket."""
    if path.is_symlink():
        raise RunDirError(f"{option} '{path}' is a symbolic link; replearn does not replace links",
                          f"give {option} the path of a regular file, or a new name")
    if path.is_dir():
        raise RunDirError(f"{option} '{path}' is a directory", f"give {option} a file name, e.g. {path / 'out'}")
    if path.exists() and not stat.S_ISREG(path.stat().st_mode):
        raise RunDirError(f"{option} '{path}' is not a regular file (a fifo, device or socket)",
                          f"give {option} the path of a regular file, or a new name")


def check_output_file(path: str | Path, option: str, force: bool = False, own_default: bool = False) -> None:
    """Refuse, before any work, an output path replearn must not write: anything but a regular file, an existing
    file of a replearn run (its artifacts are never replaced, even with ``--force``, except ``own_default``,
    the command's own default output), an existing file without ``force``, or a place that cannot be written."""
    path = Path(path)
    _refuse_special(path, option)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise RunDirError(f"{option} '{path}': folder '{parent}' does not exist", f"create it or choose another {option}")
    run = enclosing_run(parent)
    if path.exists() and not own_default:
        if run is not None:
            raise RunDirError(f"{option} '{path}' is a file of the replearn run '{run}', and a run's files are never "
                              "replaced", f"write {option} outside the run directory, or to a new name")
        if not force:
            raise RunDirError(f"{option} '{path}' exists", f"pass --force to replace it, or choose another {option}")
    if not os.access(parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise RunDirError(f"{option} '{path}' is not writable", f"choose a writable place for {option}")


def write_output(path: str | Path, option: str, write: Any) -> Any:
    """Run ``write()`` once the path is checked again (something may have appeared there while the command
    worked); a failure of the file system (disk full, permissions) becomes a one-line error."""
    _refuse_special(Path(path), option)
    try:
        return write()
    except OSError as exc:
        raise RunDirError(f"could not write {option} '{path}' ({exc.strerror or type(exc).__name__})",
                          "free disk space or choose another place, then run the command again") from None


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray) or type(obj).__name__ == "Tensor":
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def write_csv(path: str | Path, frame: pd.DataFrame) -> Path:
    return atomic_write_text(path, frame.to_csv(index=False))


def save_npz(path: str | Path, **arrays: np.ndarray) -> Path:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return atomic_write_bytes(path, buffer.getvalue())


def load_npz(path: str | Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    import torch

    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def load_weights_only(path: Path, what: str, fix: str) -> Any:
    """The object in a torch.save file, read with ``weights_only=True`` (tensors and plain values only);
    a file that would need arbitrary unpickling is refused. ``what`` names the file in messages and ``fix``
    is the advice for a file that cannot be read."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "disallowed content"
        raise CheckpointError(f"{what} was refused: it holds objects other than tensors and plain values, which "
                              f"could run code when loaded ({first[:120]})",
                              "load only files written by replearn or saved as torch.save(model.state_dict()), "
                              "from sources you trust") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        raise CheckpointError(f"{what} is not a readable PyTorch file ({type(exc).__name__})", fix) from None


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``; refuse anything that needs arbitrary unpickling."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint '{path}' does not exist", "pass the path of a .pt file written by replearn")
    payload = load_weights_only(path, f"checkpoint '{path}'",
                                "it may be truncated; re-run training or copy the file again")
    if not isinstance(payload, dict) or payload.get("format") != "replearn-checkpoint":
        raise CheckpointError(f"'{path}' is not a replearn checkpoint", "pass a checkpoint from a run's checkpoints/ folder")
    return payload


def load_state_dict_checked(module: "torch.nn.Module", state: dict[str, "torch.Tensor"], what: str) -> None:
    """Load weights, naming every tensor whose presence or shape differs from the module's."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
             if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if missing or extra or wrong:
        parts = []
        if wrong:
            parts.append("shape differs for " + ", ".join(wrong[:4]) + (" …" if len(wrong) > 4 else ""))
        if missing:
            parts.append("missing " + ", ".join(missing[:4]) + (" …" if len(missing) > 4 else ""))
        if extra:
            parts.append("unexpected " + ", ".join(extra[:4]) + (" …" if len(extra) > 4 else ""))
        raise CheckpointError(f"{what} does not match the model ({'; '.join(parts)})",
                              "use the config the checkpoint was trained with (see its run's config.yaml)")
    module.load_state_dict(state)


def mark_run_dir(run_dir: Path, info: dict[str, Any]) -> None:
    write_json(run_dir / RUN_MARKER, {"format": RUN_FORMAT, **info})


def check_run_dir(run_dir: str | Path, need: str = "report") -> Path:
    """Return the run directory if it is one of replearn's, else raise a one-line RunDirError."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirError(f"run directory '{run_dir}' does not exist",
                          "pass a directory made by `replearn run` (see reports/)")
    if not (run_dir / RUN_MARKER).is_file() or not (run_dir / layout.CONFIG).is_file():
        raise RunDirError(f"'{run_dir}' is not a replearn run directory (no {RUN_MARKER} or {layout.CONFIG})",
                          f"pass a directory made by `replearn run`; to {need}, point at that run's folder")
    try:
        marker = read_json(run_dir / RUN_MARKER)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise RunDirError(f"'{run_dir / RUN_MARKER}' is corrupted", "re-run the experiment") from None
    if not isinstance(marker, dict) or marker.get("format") != RUN_FORMAT:
        raise RunDirError(f"'{run_dir}' was written by an incompatible replearn version",
                          "re-run the experiment with this version")
    return run_dir
