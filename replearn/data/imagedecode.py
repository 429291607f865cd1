"""Image-file decoding with Pillow, run in worker processes (Pillow holds the GIL while decoding small images,
so threads would not help): plain functions of file paths that return arrays or reasons, never raise; the
worker pool that runs them, which ends with the run however it ends; and bounded reads of regular files.

Only regular files are read, opened without blocking (a fifo or a device named ``x.png`` is refused, never
read), no larger than ``MAX_FILE_BYTES``, and an image whose header claims more pixels than Pillow's
decompression-bomb limit is a bad file, not an allocation.
"""
from __future__ import annotations

import contextlib
import ctypes
import hashlib
import multiprocessing
import os
import signal
import stat
import threading
import warnings
from typing import Any, Callable, Iterator

import numpy as np

from replearn.errors import DataError

GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}
MAX_FILE_BYTES = 1 << 30  # no image file replearn reads is larger (a link to a disk image named .png is refused)
READ_BLOCK = 1 << 20
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
FILE_KINDS = {stat.S_IFIFO: "a fifo", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
              stat.S_IFSOCK: "a socket", stat.S_IFDIR: "a folder", stat.S_IFLNK: "a link"}


def file_kind(mode: int) -> str:
    """What a file of this ``st_mode`` is, in words ("a fifo", "a character device", …)."""
    return FILE_KINDS.get(stat.S_IFMT(mode), "a special file")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror  # without the path, which the caller names
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 80 else text[:80] + "…"


def open_regular(path: str) -> tuple[int, int]:
    """An open descriptor of ``path`` and its size, if it is a regular file of at most MAX_FILE_BYTES; else
    OSError or ValueError saying why. Opened without blocking, so a fifo or a device never stalls the call."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ValueError(f"not a regular file but {file_kind(info.st_mode)}")
        if info.st_size > MAX_FILE_BYTES:
            raise ValueError(f"{info.st_size / 2**30:.1f} GiB, larger than the {MAX_FILE_BYTES / 2**30:.0f} GiB "
                             "an image file may have")
    except BaseException:
        os.close(fd)
        raise
    return fd, info.st_size


def file_digest(path: str) -> tuple[int, bytes]:
    """The size and SHA-256 of a regular file's bytes, read in blocks (memory stays bounded) and no further
    than the size it had when opened; OSError or ValueError when it cannot be read."""
    fd, size = open_regular(path)
    digest = hashlib.sha256()
    try:
        done = 0
        while done < size:
            block = os.read(fd, min(READ_BLOCK, size - done))
            if not block:
                break
            digest.update(block)
            done += len(block)
    finally:
        os.close(fd)
    return done, digest.digest()


@contextlib.contextmanager
def _image(path: str) -> Iterator[Any]:
    """The Pillow image of a regular file; a decompression bomb (more pixels than Pillow's limit) raises."""
    from PIL import Image

    fd, _ = open_regular(path)
    with os.fdopen(fd, "rb") as fh, warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(fh) as im:
            yield im


def scan_headers(paths: list[str]) -> list[tuple[str, int, int] | str]:
    """For each file, (mode, width, height) from its header alone, or the reason it cannot be opened."""
    out: list[tuple[str, int, int] | str] = []
    for path in paths:
        try:
            with _image(path) as im:
                out.append((im.mode, im.size[0], im.size[1]))
        except Exception as exc:  # Pillow raises many types for bad files; each becomes a reason string
            out.append(_reason(exc))
    return out


def decode(paths: list[str], size: int, colour: bool) -> list[np.ndarray | str]:
    """Each file as a uint8 C×H×W array (C = 3 if ``colour`` else 1), resized so its shorter side is ``size``
    and centre-cropped square when ``size`` > 0; or the reason it cannot be decoded."""
    from PIL import Image, ImageOps

    out: list[np.ndarray | str] = []
    for path in paths:
        try:
            with _image(path) as im:
                im.load()
                if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):  # 16-bit / float grey: scale to 8 bits
                    values = np.asarray(im, dtype=np.float64)
                    high = 65535.0 if im.mode.startswith("I;16") else max(1.0, float(values.max()))
                    im = Image.fromarray(np.clip(values / high * 255.0 + 0.5, 0, 255).astype(np.uint8))
                im = im.convert("RGB" if colour else "L")
                if size and im.size != (size, size):
                    im = ImageOps.fit(im, (size, size), Image.Resampling.BILINEAR)
                array = np.asarray(im, dtype=np.uint8)
            out.append(array.transpose(2, 0, 1) if colour else array[None])
        except Exception as exc:  # a truncated or corrupt file is reported, not raised
            out.append(_reason(exc))
    return out


# ---------------------------------------------------------------- signals and the worker pool


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """Within the block SIGTERM raises KeyboardInterrupt, as SIGINT does, unless the program handles SIGTERM
    itself (the run's Stopper, say): a run stopped while its images are read then ends its workers and
    removes what it had half-written, and the command reports an interrupted run instead of dying silently."""
    if threading.current_thread() is not threading.main_thread() \
            or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """SIGINT and SIGTERM held back until the block ends (then delivered): for steps that must not be cut
    in half, such as removing a half-written folder or starting worker processes."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _worker_setup(parent: int) -> None:
    """In each worker: the run's process decides when to stop (Ctrl-C reaches the whole process group) and
    then ends the workers; a worker whose parent dies is killed with it (Linux)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


class _Worker:
    """One decoding process with a pipe of its own each way. The parent keeps only its ends, so a worker that
    dies (killed while sending a large result, say) shows as the end of its pipe, never as a read that waits
    for ever: nothing here waits on a pipe another process could leave half-written."""

    def __init__(self, ctx: Any, fn: Callable[..., list], args: tuple) -> None:
        tasks_out, self.tasks = ctx.Pipe(duplex=False)
        self.results, results_in = ctx.Pipe(duplex=False)
        self.process = ctx.Process(target=_worker_loop, args=(tasks_out, results_in, fn, args, os.getpid()),
                                   daemon=True)
        self.process.start()
        tasks_out.close()  # the parent's copies of the worker's ends: with them closed, the worker's death
        results_in.close()  # is an end of file here

    def submit(self, index: int, chunk: list[str]) -> None:
        self.tasks.send((index, chunk))

    def result(self, index: int) -> list:
        try:
            got, value = self.results.recv()
        except (EOFError, OSError):
            raise DataError("an image-decoding worker process ended unexpectedly (killed, or out of memory?)",
                            "run again; if it recurs, set a smaller data.image_size or use fewer threads "
                            "(--threads 1 decodes in the main process)") from None
        if got != index or isinstance(value, BaseException):
            raise DataError(f"an image-decoding worker failed ({str(value)[:200]})", "report it as a bug")
        return value

    def stop(self, kill: bool) -> None:
        """End the worker: asked to, after its last result; killed at once otherwise. Bounded either way."""
        with contextlib.suppress(OSError, ValueError):
            if not kill:
                self.tasks.send(None)
        if kill:
            with contextlib.suppress(Exception):
                self.process.kill()
        self.process.join(timeout=WORKER_EXIT_SECONDS)
        if self.process.is_alive():
            with contextlib.suppress(Exception):
                self.process.kill()
            self.process.join(timeout=WORKER_EXIT_SECONDS)
        for end in (self.tasks, self.results):
            with contextlib.suppress(OSError):
                end.close()


WORKER_EXIT_SECONDS = 5.0


def _worker_loop(tasks: Any, results: Any, fn: Callable[..., list], args: tuple, parent: int) -> None:
    """In a worker: run ``fn`` on each chunk received, send back ``(index, result)``, until told to stop."""
    _worker_setup(parent)
    while True:
        try:
            task = tasks.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        index, chunk = task
        try:
            value: Any = fn(chunk, *args)
        except Exception as exc:  # noqa: BLE001 — fn reports bad files itself; anything else goes back whole
            value = RuntimeError(f"{type(exc).__name__}: {exc}")
        results.send((index, value))


def map_chunks(fn: Callable[..., list], chunks: list[list[str]], args: tuple, workers: int) -> Iterator[list]:
    """``fn(chunk, *args)`` for each chunk, in order: in this process when ``workers`` is 1 or the chunks are
    few, else in worker processes (chunk i goes to worker i mod N) with at most two chunks per worker in flight,
    so memory stays bounded. However the iteration ends (done, an exception, a signal's KeyboardInterrupt, the
    consumer closing it), no worker outlives it and the end is bounded in time: on anything but completion the
    workers are killed at once and no pipe is read again. A worker that dies (killed, out of memory) raises a
    one-line DataError instead of hanging the run."""
    if workers == 1 or len(chunks) < 8:
        for chunk in chunks:
            yield fn(chunk, *args)
        return
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"  # as torch's DataLoader
    ctx = multiprocessing.get_context(method)
    workers = min(workers, len(chunks))
    pool: list[_Worker] = []
    done = False
    try:
        with signals_held():  # the workers start with the stop signals held until _worker_setup has set
            pool.extend(_Worker(ctx, fn, args) for _ in range(workers))  # their handlers
            for index in range(min(len(chunks), 2 * workers)):
                pool[index % workers].submit(index, chunks[index])
        for index in range(len(chunks)):
            result = pool[index % workers].result(index)
            if index + 2 * workers < len(chunks):
                pool[index % workers].submit(index + 2 * workers, chunks[index + 2 * workers])
            yield result
        done = True
    finally:
        with signals_held():  # a second signal must not cut the cleaning up short and leave a worker behind
            for worker in pool:
                worker.stop(kill=not done)
