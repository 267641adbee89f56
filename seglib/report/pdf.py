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


#: the TeX engines Quarto can make a PDF with (Quarto's ``pdf-engine``)
TEX_ENGINES = ("lualatex", "xelatex", "pdflatex", "tectonic")


def _tinytex_dirs() -> list[Path]:
    """Where ``quarto install tinytex`` puts TinyTeX (Linux, macOS, Windows)."""
    import os

    home = Path.home()
    dirs = [home / ".TinyTeX", home / "Library" / "TinyTeX"]
    if os.environ.get("APPDATA"):
        dirs.append(Path(os.environ["APPDATA"]) / "TinyTeX")
    return dirs


def find_tex() -> tuple[str, str] | None:
    """``(engine, path)`` of a TeX engine for Quarto's PDF: on PATH, else in Quarto's TinyTeX; or ``None``."""
    for engine in TEX_ENGINES:
        found = shutil.which(engine)
        if found:
            return engine, found
    for root in _tinytex_dirs():
        for engine in TEX_ENGINES:
            hits = sorted(root.glob(f"bin/*/{engine}")) + sorted(root.glob(f"bin/*/{engine}.exe"))
            if hits:
                return engine, str(hits[0])
    return None


def add_pdf_links(html_paths, pdfs, site_dir) -> list[Path]:
    """Give each HTML page whose PDF exists a link to it ("Other formats: PDF"); returns the pages changed.

    Pages without a PDF get no link. Quarto pages get it in the table of contents' margin (as Quarto's
    own "Other Formats" section), the offline pages under the navbar (``.seglib-formats``).
    """
    from bs4 import BeautifulSoup

    site_dir = Path(site_dir).resolve()
    by_stem = {Path(p).stem: Path(p).resolve() for p in pdfs if Path(p).is_file()}
    changed = []
    for page in html_paths:
        page = Path(page)
        pdf = by_stem.get(page.stem)
        if pdf is None:
            continue
        href = pdf.relative_to(site_dir).as_posix() if pdf.is_relative_to(site_dir) else pdf.as_uri()
        soup = BeautifulSoup(page.read_text(encoding="utf-8"), features="html.parser")
        toc = soup.select_one("nav#TOC") or soup.select_one("#quarto-margin-sidebar")
        if toc is not None:
            block = BeautifulSoup(
                f'<div class="quarto-alternate-formats"><h2>Other Formats</h2><ul><li>'
                f'<a href="{href}"><i class="bi bi-file-pdf"></i>PDF</a></li></ul></div>', "html.parser")
            toc.append(block)
        else:
            block = BeautifulSoup(f'<p class="seglib-formats">Other formats: <a href="{href}">PDF</a></p>',
                                  "html.parser")
            main = soup.find("main")
            if main is None:
                (soup.body or soup).insert(0, block)
            else:
                main.insert(0, block)
        page.write_text(str(soup), encoding="utf-8")
        changed.append(page)
    return changed
