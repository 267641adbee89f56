"""Render the report site from the executed notebooks: Quarto when installed, else offline.

``render_site`` never executes a notebook: papermill has already run them into
``build/executed/<study>.ipynb`` (each with ``build/executed/<study>/results.json``,
``tables/``, ``figures/``). It makes ``_site/index.html`` (the package, the studies
and the reproduction scorecard), ``_site/<study>.html`` and ``_site/provenance.html``.

- ``renderer="quarto"``: the site is staged in ``build/site_src`` with the repository's
  ``_quarto.yml`` and rendered by ``quarto render``, see :mod:`seglib.report.quarto`. PDF: Quarto's own
  (LaTeX) where a TeX engine is found (``pdflatex``/``xelatex``/``lualatex``/``tectonic`` on PATH or
  Quarto's TinyTeX); otherwise the HTML pages are rendered alone (no ``pdf`` format, so no link to a
  missing PDF) and printed by headless Chromium; without Chromium either, no PDF and one line says why.
- ``renderer="fallback"``: nbconvert with seglib's one template, offline, no Node, no
  LaTeX; PDF through headless Chromium when installed, see :mod:`seglib.report.fallback`.
- ``renderer="auto"``: Quarto if ``quarto`` is on PATH, else the fallback.

A study whose executed notebook is missing is listed on the index page as not built.

Command line: ``python -m seglib.report [--executed build/executed] [--out _site]
[--renderer auto|quarto|fallback] [--no-pdf]``.
"""

from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path

from seglib.registry import look_up
from seglib.report import fallback, pages
from seglib.report.pdf import add_pdf_links, find_chromium, find_tex, print_pdf
from seglib.report.quarto import run_quarto, stage_site

logger = logging.getLogger(__name__)

RENDERERS = {"auto": "auto", "quarto": "quarto", "fallback": "fallback"}

__all__ = ["render_site", "write_index", "write_provenance", "find_chromium", "main"]

write_index = pages.write_index
write_provenance = pages.write_provenance


def render_site(executed_dir="build/executed", out_dir="_site", renderer: str = "auto",
                pdf: bool = True, *, site_src="build/site_src", quarto_config=None,
                code: str = "fold") -> dict:
    """Render the site; returns a dict describing what was made.

    Parameters: ``executed_dir`` holds the papermill-executed notebooks; ``out_dir``
    receives the site (emptied first; a non-empty folder that is not a previous site
    is refused); ``renderer`` is "auto", "quarto" or "fallback"; ``pdf`` asks for
    PDFs too; ``site_src`` is Quarto's staging folder; ``quarto_config`` the
    ``_quarto.yml`` to use (default: ``./_quarto.yml``, else the checkout's);
    ``code`` is "fold", "hide" or "show" for the code input in the fallback.

    Returns ``{"renderer", "out_dir", "index", "pages", "missing", "pdf", "pdf_note"}``:
    ``pages`` the HTML pages, ``missing`` the studies without an executed
    notebook, ``pdf`` the PDF paths and ``pdf_note`` why there are none (or ``None``).
    """
    renderer = look_up(renderer, RENDERERS, "renderer")
    executed_dir, out_dir = Path(executed_dir), Path(out_dir)
    quarto = shutil.which("quarto")
    if renderer == "quarto" and not quarto:
        raise RuntimeError("renderer='quarto' but quarto is not on PATH "
                           "(install it from https://quarto.org or use renderer='fallback')")
    chosen = "quarto" if renderer == "quarto" or (renderer == "auto" and quarto) else "fallback"
    if not executed_dir.is_dir():
        logger.warning("%s does not exist: the site will list every study as not built", executed_dir)

    pdfs: list[Path] = []
    note = None if pdf else "pdf=False: no PDF requested"
    if chosen == "quarto":
        tex = find_tex() if pdf else None
        stage_site(executed_dir, site_src, quarto_config=quarto_config, pdf_engine=tex[0] if tex else None)
        try:
            pdfs = run_quarto(site_src, out_dir, pdf=tex is not None, quarto=quarto)
        except RuntimeError as exc:
            if tex is None:
                raise
            logger.warning("Quarto's PDF (%s) failed, rendering HTML only and printing with Chromium: %s",
                           tex[0], str(exc)[-300:])
            tex = None
            stage_site(executed_dir, site_src, quarto_config=quarto_config, pdf_engine=None)
            pdfs = run_quarto(site_src, out_dir, pdf=False, quarto=quarto)
        out_dir = out_dir.resolve()
        builds = pages.collect_studies(executed_dir)
        missing = [b.study for b in builds if not b.exists]
        html_pages = sorted(out_dir.glob("*.html"))
        index = out_dir / "index.html"
        if pdf and tex is not None and not pdfs:
            note = f"quarto made no PDF with {tex[0]} (see its output above)"
        elif pdf and tex is None:
            pdfs, note = _chromium_pdfs(html_pages, out_dir,
                                        "no TeX engine (pdflatex, xelatex, lualatex, tectonic or Quarto's TinyTeX: "
                                        "`quarto install tinytex`)")
    else:
        made = fallback.render_fallback(executed_dir, out_dir, code=code)
        index, html_pages, missing = made["index"], made["pages"], made["missing"]
        if pdf:
            pdfs, note = _chromium_pdfs(html_pages, out_dir, "PDF output needs Quarto (with LaTeX) or Chromium; no Quarto")
    if note and pdf:
        logger.warning(note)
    logger.info("site rendered with %s: %s (%d pages%s)", chosen, index, len(html_pages),
                f", {len(pdfs)} PDFs" if pdfs else "")
    if missing:
        logger.warning("not built (no executed notebook in %s): %s", executed_dir, ", ".join(missing))
    return {"renderer": chosen, "out_dir": out_dir, "index": index, "pages": html_pages,
            "missing": missing, "pdf": pdfs, "pdf_note": note}


def _chromium_pdfs(html_pages, out_dir: Path, why_not_tex: str) -> tuple[list[Path], str | None]:
    """Print the pages with headless Chromium into ``out_dir/pdf`` and link each page to its PDF; or
    ``([], reason)`` without Chromium."""
    if not find_chromium():
        return [], (f"no PDF: {why_not_tex}, and no Chromium to print the HTML pages "
                    f"(apt-get install chromium)")
    pdfs = print_pdf(html_pages, out_dir / "pdf")
    add_pdf_links(html_pages, pdfs, out_dir)
    return pdfs, None


def main(argv=None) -> int:
    """``python -m seglib.report``: render the site and log where it is."""
    parser = argparse.ArgumentParser(prog="python -m seglib.report", description=__doc__.split("\n")[0])
    parser.add_argument("--executed", default="build/executed", help="executed notebooks folder")
    parser.add_argument("--out", default="_site", help="site output folder")
    parser.add_argument("--renderer", default="auto", choices=sorted(RENDERERS))
    parser.add_argument("--no-pdf", action="store_true", help="HTML only")
    parser.add_argument("--code", default="fold", choices=fallback.CODE_MODES)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    info = render_site(args.executed, args.out, renderer=args.renderer, pdf=not args.no_pdf,
                       code=args.code)
    logger.info("open %s", Path(info["index"]).resolve().as_uri())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
