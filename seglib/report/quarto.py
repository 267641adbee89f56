"""The Quarto renderer: stage the site sources in one folder, then ``quarto render`` them.

Why a staging folder (``build/site_src`` by default): Quarto names each output
after its path inside the project, and the executed notebooks live in
``build/executed/`` while the index is generated; rendering them in place would
give ``_site/build/executed/stroke.html``. Staging gives a flat project::

    build/site_src/_quarto.yml      the repository's _quarto.yml (missing pages removed)
    build/site_src/index.qmd        generated (seglib.report.pages.write_index)
    build/site_src/provenance.qmd   generated (seglib.report.pages.write_provenance)
    build/site_src/<study>.ipynb    copied from build/executed/, outputs as papermill left them
    build/site_src/<study>/...      tables, figures, results.json (Quarto ``resources``)

rendered with ``quarto render build/site_src --output-dir <out_dir> --no-execute``, so
the pages are ``index.html``, ``<study>.html``, ``provenance.html`` as in the offline
renderer. The repository's ``_quarto.yml`` stays the one place the site is configured.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from pathlib import Path

import nbformat
import yaml

from seglib.report import pages
from seglib.report.crossref import drop_stderr
from seglib.report.fallback import ASSET_SUFFIXES, prepare_out_dir

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]


def default_quarto_config() -> Path:
    """``./_quarto.yml`` if present, else the one at the root of the seglib checkout."""
    for candidate in (Path.cwd() / "_quarto.yml", REPO_ROOT / "_quarto.yml"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"no _quarto.yml in {Path.cwd()} or {REPO_ROOT}; pass quarto_config= to render_site")


def _page_exists(entry, site_src: Path) -> bool:
    href = entry.get("href") if isinstance(entry, dict) else entry
    return not isinstance(href, str) or href.startswith(("http:", "https:")) or (site_src / href).is_file()


def stage_site(executed_dir, site_src, quarto_config=None, pdf_engine: str | None = None) -> Path:
    """Write the Quarto project of the site into ``site_src`` (emptied first); returns it.

    ``pdf_engine``: the TeX engine found (:func:`seglib.report.pdf.find_tex`), set as the ``pdf`` format's
    ``pdf-engine`` unless the configuration names one; ``None`` (no TeX) removes the ``pdf`` format and
    turns the HTML pages' ``format-links`` off, so no page links to a PDF Quarto cannot make (the PDFs
    printed by Chromium are linked afterwards, :func:`seglib.report.pdf.add_pdf_links`)."""
    executed_dir, site_src = Path(executed_dir), Path(site_src)
    config_path = Path(quarto_config) if quarto_config else default_quarto_config()
    try:
        config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ValueError(f"{config_path}: not valid YAML ({exc})") from exc
    prepare_out_dir(site_src)
    builds = pages.collect_studies(executed_dir)
    pages.write_index(executed_dir, site_src / "index.qmd", flavour="quarto")
    pages.write_provenance(executed_dir, site_src / "provenance.qmd", flavour="quarto")
    for b in builds:
        if not b.exists:
            continue
        nbformat.write(drop_stderr(nbformat.read(b.notebook, as_version=4)), site_src / b.notebook.name)
        folder = b.results_path.parent
        if folder.is_dir():
            for path in folder.rglob("*"):
                if path.is_file() and path.suffix.lower() in ASSET_SUFFIXES:
                    dest = site_src / b.study / path.relative_to(folder)
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(path, dest)
    formats = config.get("format")
    if isinstance(formats, dict):
        if pdf_engine is None:
            formats.pop("pdf", None)
            html_fmt = formats.get("html")
            if isinstance(html_fmt, dict):
                html_fmt["format-links"] = False
            elif "html" in formats or not formats:
                formats["html"] = {"format-links": False}
        elif isinstance(formats.get("pdf"), dict):
            formats["pdf"].setdefault("pdf-engine", pdf_engine)
    project = config.setdefault("project", {})
    project["render"] = [r for r in project.get("render", []) if "*" in r or (site_src / r).is_file()]
    navbar = config.get("website", {}).get("navbar", {})
    for side in ("left", "right"):
        if side in navbar:
            navbar[side] = [e for e in navbar[side] if _page_exists(e, site_src)]
    header = (f"# Staged by seglib.report.quarto.stage_site from {config_path}; "
              f"pages without an executed notebook removed"
              f"{'' if pdf_engine else '; no TeX engine, so no pdf format'}. Do not edit.\n")
    (site_src / "_quarto.yml").write_text(
        header + yaml.safe_dump(config, sort_keys=False, allow_unicode=True), encoding="utf-8")
    logger.info("staged the Quarto project in %s", site_src)
    return site_src


def run_quarto(site_src, out_dir, pdf: bool = True, quarto: str = "quarto") -> list[Path]:
    """``quarto render`` the staged project into ``out_dir``; returns the PDFs it made.

    Raises RuntimeError with Quarto's own message when it fails.
    """
    site_src, out_dir = Path(site_src), Path(out_dir).resolve()
    prepare_out_dir(out_dir)          # refuse a foreign folder: Quarto empties its output dir
    cmd = [quarto, "render", str(site_src), "--output-dir", str(out_dir), "--no-execute"]
    if not pdf:
        cmd += ["--to", "html"]
    logger.info("running %s", " ".join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    logger.debug("quarto stdout:\n%s", proc.stdout)
    if proc.returncode != 0:
        message = (proc.stderr.strip() or proc.stdout.strip())[-4000:]
        raise RuntimeError(f"quarto render failed (exit {proc.returncode}): {message}")
    if proc.stderr.strip():
        logger.info("quarto: %s", proc.stderr.strip()[-2000:])
    # the site's own PDFs (one per page), not PDFs a study folder holds as a resource
    return sorted(out_dir.glob("*.pdf")) if pdf else []
