"""Image-file decoding with Pillow, run in worker processes (Pillow holds the GIL while decoding small images,
so threads would not help): plain functions of file paths that return arrays or reasons, never raise."""
from __future__ import annotations

import numpy as np

GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 80 else text[:80] + "…"


def scan_headers(paths: list[str]) -> list[tuple[str, int, int] | str]:
    """For each file, (mode, width, height) from its header alone, or the reason it cannot be opened."""
    from PIL import Image

    out: list[tuple[str, int, int] | str] = []
    for path in paths:
        try:
            with Image.open(path) as im:
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
            with Image.open(path) as im:
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
