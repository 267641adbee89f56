"""Offline renderer: the report site with nbconvert and one template, when Quarto is absent.

nbconvert's ``HTMLExporter`` renders each executed notebook (no execution) with the
template ``seglib/templates/seglib_site`` (which extends JupyterLab's): a navbar to
the index, the three studies and the provenance appendix; code input folded;
figures and tables numbered and cross-referenced by :mod:`seglib.report.crossref`.
The index and provenance pages are the Markdown of :mod:`seglib.report.pages` put in
a one-cell notebook and rendered by the same exporter, so every page shares the
template. Images stay embedded (data URIs); the study folders of tables, figures
and ``results.json`` are copied next to the pages.

Pages: ``index.html``, ``<study>.html``, ``provenance.html`` under ``out_dir`` —
the same names Quarto gives them (see ``_quarto.yml``).
"""

from __future__ import annotations

import logging
import shutil
from datetime import datetime, timezone
from pathlib import Path

import nbconvert
import nbformat
from bs4 import BeautifulSoup
from nbconvert import HTMLExporter

import seglib
from seglib.report import crossref, pages

logger = logging.getLogger(__name__)

TEMPLATE_DIR = Path(__file__).resolve().parents[1] / "templates"
TEMPLATE_NAME = "seglib_site"
CODE_MODES = ("fold", "hide", "show")
MARKER = ".seglib-site"
ASSET_SUFFIXES = {".csv", ".json", ".png", ".svg", ".pdf"}


class _NoAltWarning(logging.Filter):
    """nbconvert warns of images without alt text; :func:`_figure_alt_text` adds it after."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Alternative text is missing" not in record.getMessage()


_NBCONVERT_LOG = logging.getLogger("seglib.report.nbconvert")
_NBCONVERT_LOG.addFilter(_NoAltWarning())


def make_exporter() -> HTMLExporter:
    """The HTMLExporter with seglib's template, without prompts."""
    exporter = HTMLExporter(template_name=TEMPLATE_NAME,
                            extra_template_basedirs=[str(TEMPLATE_DIR)])
    exporter.exclude_input_prompt = True
    exporter.exclude_output_prompt = True
    exporter.log = _NBCONVERT_LOG
    return exporter


def nav_items(builds: list[pages.StudyBuild], current: str) -> list[dict]:
    """Navbar entries: Home, each built study, Provenance; ``current`` is the active page name."""
    items = [("index.html", "Home")]
    items += [(b.page, b.label) for b in builds if b.exists]
    items.append(("provenance.html", "Provenance"))
    return [{"href": h, "text": t, "active": h == current} for h, t in items]


def _has_math(nb: nbformat.NotebookNode) -> bool:
    return any(c.cell_type == "markdown" and ("$" in c.source or "\\(" in c.source)
               for c in nb.cells)


def _footer() -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (f"Rendered {stamp} by seglib {seglib.__version__} with nbconvert "
            f"{nbconvert.__version__} (offline renderer; no code was executed).")


def render_page(nb: nbformat.NotebookNode, out_path: Path, *, title: str, nav: list[dict],
                code: str = "fold", provenance_href: str | None = None,
                exporter: HTMLExporter | None = None) -> dict:
    """Render one notebook to ``out_path``; returns ``{"path", "floats", "unresolved"}``."""
    if code not in CODE_MODES:
        raise ValueError(f"code={code!r}: expected one of {CODE_MODES}")
    prepared, floats, unresolved = crossref.prepare_notebook(nb, name=out_path.stem)
    prepared.metadata["title"] = title
    resources = {
        "seglib": {
            "nav": nav,
            "code": code,
            "math": _has_math(prepared),
            "footer": _footer(),
            "provenance_href": provenance_href,
        },
        "metadata": {"name": out_path.stem},
    }
    body, _ = (exporter or make_exporter()).from_notebook_node(prepared, resources=resources)
    body = _figure_alt_text(body)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(body, encoding="utf-8")
    return {"path": out_path, "floats": floats, "unresolved": unresolved}


def _figure_alt_text(page: str) -> str:
    """Give the images of a numbered figure its caption as alternative text."""
    soup = BeautifulSoup(page, features="html.parser")
    for figure in soup.select("figure.seglib-float-fig"):
        caption = figure.find("figcaption")
        for img in figure.find_all("img"):
            img["alt"] = " ".join(caption.get_text().split()) if caption else figure.get("id", "")
    return str(soup)


def markdown_notebook(title: str, body: str) -> nbformat.NotebookNode:
    """A one-cell notebook holding a generated page (``# title`` then ``body``)."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell(f"# {title}\n\n{body}")]
    return nb


def prepare_out_dir(out_dir: Path) -> None:
    """Empty ``out_dir`` if it is a site made before (ours or Quarto's); refuse any other folder."""
    if out_dir.exists():
        if not out_dir.is_dir():
            raise ValueError(f"out_dir {out_dir} exists and is not a directory")
        ours = (out_dir / MARKER).exists() or (out_dir / "site_libs").is_dir()
        if any(out_dir.iterdir()) and not ours:
            raise ValueError(
                f"out_dir {out_dir} is not empty and was not made by seglib.report.render_site "
                f"(no {MARKER}); choose another folder or empty it")
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    (out_dir / MARKER).write_text("made by seglib.report.render_site; emptied on each render\n")


def copy_assets(build: pages.StudyBuild, out_dir: Path) -> list[Path]:
    """Copy the study's tables, figures and results.json next to its page."""
    src = build.results_path.parent
    copied = []
    if src.is_dir():
        for path in sorted(src.rglob("*")):
            if path.is_file() and path.suffix.lower() in ASSET_SUFFIXES:
                dest = out_dir / build.study / path.relative_to(src)
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, dest)
                copied.append(dest)
    return copied


def render_fallback(executed_dir, out_dir, code: str = "fold") -> dict:
    """Render the whole site offline; returns ``{"index", "pages", "missing", "unresolved"}``."""
    executed_dir, out_dir = Path(executed_dir), Path(out_dir)
    builds = pages.collect_studies(executed_dir)
    prepare_out_dir(out_dir)
    exporter = make_exporter()
    rendered: list[Path] = []
    unresolved: dict[str, list[str]] = {}

    index = out_dir / "index.html"
    body = pages.index_markdown(builds, flavour="html")
    render_page(markdown_notebook(pages.INDEX_TITLE, body), index, title=pages.INDEX_TITLE,
                nav=nav_items(builds, "index.html"), code=code, exporter=exporter)
    rendered.append(index)

    for b in builds:
        if not b.exists:
            continue
        nb = crossref.drop_stderr(nbformat.read(b.notebook, as_version=4))
        info = render_page(nb, out_dir / b.page, title=crossref.notebook_title(nb, b.title),
                           nav=nav_items(builds, b.page), code=code,
                           provenance_href=f"provenance.html#prov-{b.study}", exporter=exporter)
        if info["unresolved"]:
            unresolved[b.study] = info["unresolved"]
        copy_assets(b, out_dir)
        rendered.append(info["path"])

    prov = out_dir / "provenance.html"
    body = pages.provenance_markdown(builds, flavour="html")
    render_page(markdown_notebook(pages.PROVENANCE_TITLE, body), prov,
                title=pages.PROVENANCE_TITLE, nav=nav_items(builds, "provenance.html"),
                code=code, exporter=exporter)
    rendered.append(prov)
    return {
        "index": index,
        "pages": rendered,
        "missing": [b.study for b in builds if not b.exists],
        "unresolved": unresolved,
    }
