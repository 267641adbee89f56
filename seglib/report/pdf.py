"""PDF of the offline site's pages through headless Chromium's print-to-PDF.

Quarto makes the PDFs itself (LaTeX) when it renders the site; without Quarto the
pages are printed by Chromium, which lays them out as a browser shows them
(``@media print`` rules of the template hide the navbar's stickiness and the folded code).
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import tempfile
from pathlib import Path

logger = logging.getLogger(__name__)

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--no-pdf-header-footer",
)


def find_chromium() -> str | None:
    """Path of a Chromium/Chrome executable, or ``None``."""
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").is_file() else None


def print_pdf(html_paths, out_dir, chromium: str | None = None, timeout: float = 120.0) -> list[Path]:
    """Print each HTML file to ``out_dir/<stem>.pdf``; returns the PDF paths.

    Raises FileNotFoundError when no Chromium is found and RuntimeError (with
    Chromium's message) when a page fails to print.
    """
    chromium = chromium or find_chromium()
    if not chromium:
        raise FileNotFoundError(f"no Chromium found (looked for {', '.join(CHROMIUM_NAMES)})")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for page in html_paths:
        page = Path(page).resolve()
        target = (out_dir / f"{page.stem}.pdf").resolve()
        with tempfile.TemporaryDirectory(prefix="seglib-chromium-") as profile:
            cmd = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                   f"--print-to-pdf={target}", page.as_uri()]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        if proc.returncode != 0 or not target.is_file():
            raise RuntimeError(f"Chromium could not print {page} to PDF (exit {proc.returncode}): "
                               f"{proc.stderr.strip()[-2000:]}")
        logger.info("printed %s", target)
        written.append(target)
    return written
