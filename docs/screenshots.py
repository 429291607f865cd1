"""Screenshots of a run's report for the docs: the whole page taken with headless Chromium at 1400 px wide
and 100% zoom, cut into consecutive pieces at blank rows (never through a figure or table), scaled to 90% and
stored with a 256-colour palette.

    python docs/screenshots.py RUN_DIR PREFIX            # writes docs/PREFIX-1.png, docs/PREFIX-2.png, …
    python docs/screenshots.py RUN_DIR PREFIX --piece 2000

The report's section titles and each piece's rows are printed, for the list in docs/analyses.md. Needs
``chromium`` on PATH (apt-get install chromium) and Pillow.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
WIDTH = 1400
SCALE = 0.9


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        sys.exit("screenshots: chromium is not on PATH (apt-get install -y chromium)")
    return found


def section_tops(report: Path, height: int) -> list[tuple[str, int]]:
    """Each section title (h2) with its distance from the top of the page, in CSS pixels: measured in a copy of
    the report with a script added (the report's own policy forbids scripts) and read back from the DOM."""
    page = report.read_text(encoding="utf-8")
    page = re.sub(r"<meta[^>]*Content-Security-Policy[^>]*>", "", page, flags=re.I)
    script = (
        "<script>addEventListener('load', () => document.querySelectorAll('h2').forEach("
        "h => h.setAttribute('data-top', Math.round(h.getBoundingClientRect().top + scrollY))));</script>"
    )
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "measure.html"
        copy.write_text(page.replace("</body>", script + "</body>"), encoding="utf-8")
        dom = subprocess.run(
            [_chromium(), "--headless", "--no-sandbox", "--dump-dom", f"--window-size={WIDTH},{height}", copy.as_uri()],
            check=True,
            capture_output=True,
            text=True,
            timeout=300,
        ).stdout
    return [
        (re.sub(r"<[^>]+>", "", title).strip(), int(top))
        for top, title in re.findall(r'<h2[^>]*data-top="(\d+)"[^>]*>(.*?)</h2>', dom, flags=re.S)
    ]


def page_image(report: Path, height: int) -> Image.Image:
    """The report rendered in a WIDTH × ``height`` window, blank rows at the bottom cut off."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("screenshots: chromium is not on PATH (apt-get install -y chromium)")
    with tempfile.TemporaryDirectory() as tmp:
        shot = Path(tmp) / "page.png"
        subprocess.run(
            [
                chromium,
                "--headless",
                "--no-sandbox",
                "--hide-scrollbars",
                f"--screenshot={shot}",
                f"--window-size={WIDTH},{height}",
                report.resolve().as_uri(),
            ],
            check=True,
            capture_output=True,
            timeout=300,
        )
        image = Image.open(shot).convert("RGB")
        image.load()
    rows = np.asarray(image)
    used = np.flatnonzero((rows != rows[-1:, :, :]).any(axis=(1, 2)))
    return image.crop((0, 0, WIDTH, int(used[-1]) + 24 if len(used) else image.height))


def cut_points(image: Image.Image, piece: int, gap: int = 28) -> list[int]:
    """Row offsets at which to cut: about every ``piece`` rows, in the middle of the last band of at least
    ``gap`` blank rows (the page's background colour across the whole width: the space between sections,
    figures and tables, never inside one) before it; the widest band when there is none that wide."""
    rows = np.asarray(image.convert("L")).astype(np.int16)
    background = np.median(rows[:, -1])
    blank = (np.abs(rows - background) <= 2).all(axis=1)
    bands, begin = [], None  # (first row, length) of each run of blank rows
    for row, empty in enumerate(blank):
        if empty and begin is None:
            begin = row
        elif not empty and begin is not None:
            bands.append((begin, row - begin))
            begin = None
    cuts, start = [0], 0
    while image.height - start > piece * 1.25:
        inside = [(b, n) for b, n in bands if start + piece // 2 <= b + n // 2 <= start + piece]
        wide = [(b, n) for b, n in inside if n >= gap]
        if wide:
            at = wide[-1][0] + wide[-1][1] // 2
        elif inside:
            first, length = max(inside, key=lambda band: band[1])
            at = first + length // 2
        else:
            at = start + piece
        cuts.append(at)
        start = at
    return cuts + [image.height]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("prefix", help="file name prefix in docs/, e.g. digits")
    parser.add_argument("--piece", type=int, default=2000, help="about this many pixels per piece (default 2000)")
    parser.add_argument("--height", type=int, default=40000, help="the window height to render the page in")
    args = parser.parse_args()
    report = args.run_dir / "report.html"
    image = page_image(report, args.height)
    cuts = cut_points(image, args.piece)
    for old in HERE.glob(f"{args.prefix}-[0-9]*.png"):
        old.unlink()
    tops = section_tops(report, args.height)
    print(f"{image.height} px, {len(cuts) - 1} pieces")
    for i, (top, bottom) in enumerate(zip(cuts, cuts[1:], strict=False), 1):
        piece = image.crop((0, top, WIDTH, bottom))
        piece = piece.resize((round(WIDTH * SCALE), round(piece.height * SCALE)), Image.LANCZOS)
        name = f"{args.prefix}-{i}.png"
        piece.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
            HERE / name, optimize=True
        )  # a 256-colour palette: a quarter of the bytes, text as sharp
        starting = [title for title, at in tops if top <= at < bottom]
        print(f"{name}: rows {top}–{bottom}; sections starting here: {', '.join(starting) or '(continued)'}")


if __name__ == "__main__":
    main()
