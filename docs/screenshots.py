"""Screenshots of a run's report for the docs: the whole page taken with headless Chromium at 1400 px wide
and 100% zoom, cut into consecutive pieces at blank rows (never through a figure or table), scaled to 90%.

    python docs/screenshots.py RUN_DIR PREFIX            # writes docs/PREFIX-1.png, docs/PREFIX-2.png, …
    python docs/screenshots.py RUN_DIR PREFIX --piece 2000

The report's section titles and each piece's rows are printed, for the list in docs/analyses.md. Needs
``chromium`` on PATH (apt-get install chromium) and Pillow.
"""

from __future__ import annotations

import argparse
import html.parser
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


class _Headings(html.parser.HTMLParser):
    """The report's section titles (its h2 elements), in order."""

    def __init__(self) -> None:
        super().__init__()
        self.titles: list[str] = []
        self._inside = False

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag == "h2":
            self._inside = True
            self.titles.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "h2":
            self._inside = False

    def handle_data(self, data: str) -> None:
        if self._inside:
            self.titles[-1] += data


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


def cut_points(image: Image.Image, piece: int) -> list[int]:
    """Row offsets at which to cut: about every ``piece`` rows, each at the start of a band of blank rows
    (the page's background colour) so that no figure, table or line of text is split."""
    rows = np.asarray(image.convert("L")).astype(np.int16)
    background = np.median(rows[:, -1])
    blank = (np.abs(rows - background) <= 2).all(axis=1)
    cuts, start = [0], 0
    while image.height - start > piece * 1.25:
        window = np.flatnonzero(blank[start + piece // 2 : start + piece]) + start + piece // 2
        at = int(window[-1]) if len(window) else start + piece
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
    titles = _Headings()
    titles.feed(report.read_text(encoding="utf-8"))
    print(f"{image.height} px, {len(cuts) - 1} pieces; sections: {', '.join(t.strip() for t in titles.titles)}")
    for i, (top, bottom) in enumerate(zip(cuts, cuts[1:], strict=False), 1):
        piece = image.crop((0, top, WIDTH, bottom))
        piece = piece.resize((round(WIDTH * SCALE), round(piece.height * SCALE)), Image.LANCZOS)
        name = f"{args.prefix}-{i}.png"
        piece.save(HERE / name, optimize=True)
        print(f"{name}: rows {top}–{bottom}")


if __name__ == "__main__":
    main()
