"""Tests of the report site: cross-references, generated pages, the offline renderer, _quarto.yml.

The executed notebooks are built here with nbformat, shaped as papermill leaves them
(``metadata.papermill``, an ``injected-parameters`` cell) with Quarto cell options,
a pandas HTML table and a matplotlib PNG, plus the ``results.json`` beside them.
``make_executed_dir`` is reused by tests/test_site_browser.py.
"""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path

import nbformat
import pandas as pd
import pytest
import yaml

from seglib.report import render as report
from seglib.report import crossref, pages
from seglib.report.fallback import MARKER, markdown_notebook, render_page

REPO = Path(__file__).resolve().parents[1]

# per synthetic study: its table label and its figure labels
FIXTURE_STUDIES = {
    "stroke": ("tbl-a1", ["fig-a2-memory", "fig-a3-curves"]),
    "prostate": ("tbl-b1", ["fig-b3-pr"]),
    "brain": ("tbl-c1", ["fig-c4-dsc"]),
}


def _png(seed: int) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 1.5), dpi=40)
    ax.plot([0, 1, 2], [seed, seed + 1, seed - 1])
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _results(study: str, tbl: str, figs: list[str]) -> dict:
    return {
        "study": study,
        "title": f"Study {study}: synthetic fixture",
        "profile": "quick",
        "data": f"synthetic phantoms ({study} layout)",
        "seglib_version": "0.1.0",
        "git_commit": "0123abcd",
        "claims": [
            {"id": f"{study}-claim-1", "claim": f"{study} claim one holds", "seed_says": "0.66",
             "measured": "0.61 [0.55, 0.67]", "p": 0.03, "verdict": "supported"},
            {"id": f"{study}-claim-2", "claim": f"{study} claim two | pipes", "seed_says": "better",
             "measured": "no difference", "p": None, "verdict": "inconclusive"},
        ],
        "headline": {"dice": {"mean": 0.61}, "epochs": 2},
        "provenance": {
            "parameters": {"profile": "quick", "train": {"epochs": 2, "lr": 0.01}},
            "packages": {"torch": "2.13.0", "monai": "1.6.1"},
            "device": "cpu (2 cores)",
            "runs": [{"run": "abc123", "label": "unet-dice-seed0", "wall_s": 12.34},
                     {"run": "def456", "label": "unet-bce-seed0", "wall_s": 7.5}],
        },
    }


def make_executed_notebook(study: str, tbl: str, figs: list[str], seed: int = 1):
    """An executed-looking notebook with one table and ``figs`` figures, cross-referenced."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["papermill"] = {
        "start_time": "2025-01-01T10:00:00", "end_time": "2025-01-01T10:01:40",
        "duration": 100.0, "parameters": {"profile": "quick"}, "exception": None,
        "input_path": f"notebooks/{study}.ipynb", "output_path": f"build/executed/{study}.ipynb",
    }
    params = nbformat.v4.new_code_cell('profile = "quick"', execution_count=1)
    params.metadata["tags"] = ["injected-parameters"]
    refs = " and ".join(f"@{f}" for f in figs)
    cells = [
        nbformat.v4.new_markdown_cell(f"# Study {study}\n\nResults in @{tbl} and {refs}. "
                                      f"Literal `@{figs[0]}` stays; [@{figs[0]}] and -@{tbl}."),
        params,
    ]
    df = pd.DataFrame({"loss": ["dice", "bce"], "Dice": [0.61, 0.58]})
    tcell = nbformat.v4.new_code_cell(f'#| label: {tbl}\n#| tbl-cap: "Losses of **{study}**"\ndf',
                                      execution_count=2)
    tcell.outputs = [nbformat.v4.new_output(
        "execute_result", execution_count=2,
        data={"text/html": df.to_html(), "text/plain": df.to_string()})]
    cells.append(tcell)
    for i, label in enumerate(figs):
        fcell = nbformat.v4.new_code_cell(f'#| label: {label}\n#| fig-cap: "Figure about {label}"\n'
                                          f"plot()", execution_count=3 + i)
        fcell.outputs = [nbformat.v4.new_output(
            "display_data", data={"image/png": _png(seed + i), "text/plain": "<Figure>"})]
        cells.append(fcell)
    nb.cells = cells
    return nb


def make_executed_dir(root: Path, studies=tuple(FIXTURE_STUDIES)) -> Path:
    """``root/build/executed`` with the given synthetic studies (notebook, results, tables, figures)."""
    executed = Path(root) / "build" / "executed"
    executed.mkdir(parents=True, exist_ok=True)
    for seed, study in enumerate(studies):
        tbl, figs = FIXTURE_STUDIES[study]
        nbformat.write(make_executed_notebook(study, tbl, figs, seed), executed / f"{study}.ipynb")
        folder = executed / study
        (folder / "tables").mkdir(parents=True, exist_ok=True)
        (folder / "figures").mkdir(parents=True, exist_ok=True)
        (folder / "tables" / f"{tbl}.csv").write_text("loss,Dice\ndice,0.61\n")
        (folder / "figures" / f"{figs[0]}.png").write_bytes(base64.b64decode(_png(seed)))
        (folder / "figures" / "index-summary.png").write_bytes(base64.b64decode(_png(seed + 7)))
        results = _results(study, tbl, figs)
        results["index_figure"] = "figures/index-summary.png"
        results["summary"] = {"metric": "Dice per case", "rows": []}
        (folder / "results.json").write_text(json.dumps(results))
    return executed


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("site")
    executed = make_executed_dir(root)
    info = report.render_site(executed, root / "_site", renderer="fallback", pdf=False)
    return info


# --------------------------------------------------------------------------- crossref
def test_cell_options_are_split_from_code_as_yaml():
    opts, code = crossref.split_cell_options('#| label: fig-x\n#| fig-cap: "A: b"\nplot()\n#| not')
    assert opts == {"label": "fig-x", "fig-cap": "A: b"}
    assert code == "plot()\n#| not"
    assert crossref.split_cell_options("x = 1") == ({}, "x = 1")
    with pytest.raises(ValueError, match=r"nb, cell 3: .*'key: value'"):
        crossref.split_cell_options("#| just text\n1", where="nb, cell 3")


def test_references_resolve_and_code_spans_stay_literal():
    floats = {"fig-a": crossref.Float("fig-a", "fig", 2, ""), "tbl-b": crossref.Float("tbl-b", "tbl", 1, "")}
    text, missing = crossref.resolve_references(
        "See @fig-a. Also [@tbl-b], -@fig-a, @Fig-a, `@fig-a`, me@fig-a.org and @fig-zz.", floats)
    assert 'See <a class="crossref" href="#fig-a">Figure 2</a>.' in text
    assert 'Also <a class="crossref" href="#tbl-b">Table 1</a>,' in text
    assert '<a class="crossref" href="#fig-a">2</a>,' in text       # -@ suppresses the prefix
    assert "`@fig-a`" in text and "me@fig-a.org" in text
    assert missing == ["fig-zz"] and "?@fig-zz" in text


def test_prepare_notebook_numbers_floats_in_order_and_applies_options():
    nb = make_executed_notebook("stroke", "tbl-a1", ["fig-a2-memory", "fig-a3-curves"])
    hidden = nbformat.v4.new_code_cell("#| include: false\nsecret = 1")
    quiet = nbformat.v4.new_code_cell("#| echo: false\n#| output: false\nx")
    quiet.outputs = [nbformat.v4.new_output("stream", name="stdout", text="noise")]
    nb.cells += [hidden, quiet]
    out, floats, missing = crossref.prepare_notebook(nb, "stroke")
    assert [(f.label, f.name) for f in floats.values()] == [
        ("tbl-a1", "Table 1"), ("fig-a2-memory", "Figure 1"), ("fig-a3-curves", "Figure 2")]
    assert missing == []
    assert not any("secret" in c.source for c in out.cells)
    assert out.cells[-1].outputs == [] and out.cells[-1].metadata["seglib_hide_input"]
    assert all(not c.source.startswith("#|") for c in out.cells if c.cell_type == "code")
    assert out.cells[2].metadata["seglib_xref"]["caption_html"] == "Losses of <strong>stroke</strong>"
    assert nb.cells[2].source.startswith("#| label")                 # input left unchanged
    dup = make_executed_notebook("x", "tbl-a1", ["fig-a", "fig-a"])
    with pytest.raises(ValueError, match="label 'fig-a' is used by two cells"):
        crossref.prepare_notebook(dup, "x")


# --------------------------------------------------------------------------- generated pages
def test_write_index_scorecard_lists_every_claim_with_profile_and_data(tmp_path):
    executed = make_executed_dir(tmp_path, studies=("stroke", "brain"))
    out = pages.write_index(executed, tmp_path / "site_src" / "index.qmd")
    text = out.read_text()
    assert text.startswith('---\ntitle: "seglib: reproducible')
    front = yaml.safe_load(text.split("---")[1])
    assert front["title"] == pages.INDEX_TITLE
    rows = [line for line in text.splitlines() if "-claim-" in line]
    assert len(rows) == 4
    for line in rows:                                                  # claim · seed says · this build · verdict
        assert line.count(" | ") == 3, line
    for study in ("stroke", "brain"):                                  # each study: profile, data, its figure
        section = text.split(f"{{#summary-{study}}}")[1].split("###")[0]
        assert "Profile `quick`, data: synthetic phantoms" in section
        assert f"]({study}/figures/index-summary.png)" in section
    assert "two &#124; pipes" in text                                  # a '|' cannot split a cell
    assert "(p = 0.030)" in text and "**inconclusive**" in text
    assert "Read this first" in text                                   # quick/synthetic is flagged
    assert "::: {.column-page}" in text                                # the scorecard at page width
    assert "Headline numbers" not in text                              # no key/value dumps
    # prostate is missing: listed, not linked, no crash
    assert "## Not in this build {#missing}" in text
    assert "build/executed/prostate.ipynb" in text and 'href="prostate.html"' not in text


def test_provenance_lists_parameters_packages_device_runs_and_papermill(tmp_path):
    executed = make_executed_dir(tmp_path, studies=("prostate",))
    text = pages.write_provenance(executed, tmp_path / "provenance.qmd").read_text()
    assert "## B · Prostate gland, 2D {#prov-prostate}" in text
    for needle in ("`train.lr`", "`0.01`", "| `monai` | 1.6.1 |", "cpu (2 cores)", "`0123abcd`",
                   "2025-01-01 10:00:00", "| papermill duration (s) | 100.0 |",
                   "| `abc123` | unet-dice-seed0 | — | — | 12.3 |", "**19.8**",
                   'href="prostate/results.json"'):
        assert needle in text, needle


def test_unreadable_results_json_names_the_file(tmp_path):
    executed = make_executed_dir(tmp_path, studies=("brain",))
    (executed / "brain" / "results.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"brain[/\\]results.json: not valid JSON"):
        pages.collect_studies(executed)


# --------------------------------------------------------------------------- fallback site
def test_fallback_site_pages_navigation_and_numbering(site):
    out = site["index"].parent
    assert site["renderer"] == "fallback"
    names = sorted(p.name for p in site["pages"])
    assert names == ["brain.html", "index.html", "prostate.html", "provenance.html", "stroke.html"]
    for page in site["pages"]:
        text = page.read_text()
        for href in ("index.html", "stroke.html", "prostate.html", "brain.html", "provenance.html"):
            assert f'href="{href}"' in text, (page.name, href)
        assert "cdnjs" not in text and "require.js" not in text          # offline pages
    stroke = (out / "stroke.html").read_text()
    assert '<figure class="seglib-float seglib-float-tbl" id="tbl-a1">' in stroke
    assert re.search(r'id="fig-a3-curves">\s*<div class="jp-Cell-outputWrapper">.*?'
                     r'<img alt="Figure 2: Figure about fig-a3-curves"[^>]*src="data:image/png;base64,'
                     r'.*?Figure 2</span>: Figure about fig-a3-curves</figcaption>\s*</figure>',
                     stroke, re.DOTALL)
    assert 'Results in <a class="crossref" href="#tbl-a1">Table 1</a> and' in stroke
    assert '<a class="crossref" href="#fig-a3-curves">Figure 2</a>' in stroke
    assert "?@" not in stroke and "#| label" not in stroke
    assert '<details class="seglib-code"><summary>Code</summary>' in stroke
    assert 'href="provenance.html#prov-stroke"' in stroke
    assert (out / "stroke" / "tables" / "tbl-a1.csv").is_file()
    assert (out / "stroke" / "results.json").is_file()
    index = (out / "index.html").read_text()
    assert index.count("-claim-") == 6 and "Not in this build" not in index
    assert '<h2 id="scorecard">' in index
    assert index.count('<div class="column-page">') == 3                # one scorecard per study, page width
    assert re.search(r'<div class="column-page">\s*<table>', index)      # the Markdown table inside the div
    assert 'src="stroke/figures/index-summary.png"' in index
    assert "Other formats" not in index and "pdf/" not in index          # no PDF, no link to one
    assert site["pdf"] == [] and "pdf=False" in site["pdf_note"]


def test_fallback_with_missing_notebooks_renders_what_exists(tmp_path):
    executed = make_executed_dir(tmp_path, studies=("brain",))
    info = report.render_site(executed, tmp_path / "_site", renderer="fallback", pdf=False)
    assert sorted(p.name for p in info["pages"]) == ["brain.html", "index.html", "provenance.html"]
    assert info["missing"] == ["stroke", "prostate"]
    index = info["index"].read_text()
    assert "Not in this build" in index and "build/executed/stroke.ipynb" in index
    assert 'href="stroke.html"' not in index
    # a second render replaces the first; a foreign folder is refused
    report.render_site(executed, tmp_path / "_site", renderer="fallback", pdf=False)
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("x")
    with pytest.raises(ValueError, match="not made by seglib.report.render_site"):
        report.render_site(executed, foreign, renderer="fallback", pdf=False)
    assert (foreign / "keep.txt").exists()


def test_render_page_rejects_unknown_code_mode(tmp_path):
    with pytest.raises(ValueError, match=r"code='folded': expected one of \('fold'"):
        render_page(markdown_notebook("t", "x"), tmp_path / "p.html", title="t", nav=[], code="folded")


def test_render_site_argument_errors(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="Unknown renderer 'quatro'. Did you mean \"quarto\"?"):
        report.render_site(tmp_path, tmp_path / "_site", renderer="quatro")
    monkeypatch.setattr(report.shutil, "which", lambda name: None)
    monkeypatch.setattr(report, "find_chromium", lambda: None)
    with pytest.raises(RuntimeError, match="quarto is not on PATH"):
        report.render_site(tmp_path, tmp_path / "_site", renderer="quarto")
    info = report.render_site(tmp_path, tmp_path / "_site", renderer="auto", pdf=True)
    assert info["renderer"] == "fallback" and info["missing"] == ["stroke", "prostate", "brain"]
    assert info["pdf"] == [] and "needs Quarto (with LaTeX) or Chromium" in info["pdf_note"]
    assert (tmp_path / "_site" / MARKER).exists()


@pytest.mark.skipif(not report.find_chromium(), reason="Chromium is not installed")
def test_print_pdf_with_chromium(site, tmp_path):
    from seglib.report.pdf import print_pdf

    pdfs = print_pdf([site["index"]], tmp_path / "pdf")
    assert [p.name for p in pdfs] == ["index.pdf"]
    assert pdfs[0].read_bytes()[:5] == b"%PDF-"


# --------------------------------------------------------------------------- Quarto
def test_quarto_yml_is_a_non_executing_website_with_the_right_pages():
    cfg = yaml.safe_load((REPO / "_quarto.yml").read_text())
    project = cfg["project"]
    assert project["type"] == "website" and project["output-dir"] == "_site"
    assert project["render"] == ["index.qmd", "stroke.ipynb", "prostate.ipynb", "brain.ipynb",
                                 "provenance.qmd"]
    assert cfg["execute"]["enabled"] is False
    assert cfg["jupyter"] == "seglib"
    assert set(cfg["format"]) == {"html", "pdf"}
    navbar = [item["href"] for item in cfg["website"]["navbar"]["left"]]
    assert navbar == project["render"]
    assert cfg["crossref"]["fig-prefix"] == "Figure" and cfg["crossref"]["tbl-prefix"] == "Table"


def test_stage_site_copies_notebooks_and_drops_missing_pages(tmp_path):
    from seglib.report.quarto import stage_site

    executed = make_executed_dir(tmp_path, studies=("stroke", "brain"))
    src = stage_site(executed, tmp_path / "site_src", quarto_config=REPO / "_quarto.yml")
    cfg = yaml.safe_load((src / "_quarto.yml").read_text())
    assert cfg["project"]["render"] == ["index.qmd", "stroke.ipynb", "brain.ipynb", "provenance.qmd"]
    assert [i["href"] for i in cfg["website"]["navbar"]["left"]] == cfg["project"]["render"]
    for name in ("index.qmd", "provenance.qmd", "stroke.ipynb", "brain.ipynb",
                 "stroke/results.json", "brain/tables/tbl-c1.csv"):
        assert (src / name).is_file(), name
    assert "{#prov-brain}" in (src / "provenance.qmd").read_text()
    nb = nbformat.read(src / "stroke.ipynb", as_version=4)
    assert nb.cells[2].source.startswith("#| label: tbl-a1")           # options kept for Quarto


FAKE_QUARTO = r"""#!/bin/sh
# A stand-in for `quarto render SRC --output-dir OUT --no-execute [--to html]`: records its arguments, writes
# one page per source (a Quarto-like page with a TOC nav) and, without --to (all formats), one PDF per page.
echo "$@" > "$(dirname "$0")/args.txt"
if [ -n "$FAIL_QUARTO" ]; then echo "ERROR: boom" >&2; exit 1; fi
src="$2"; out=""; to=""
while [ $# -gt 0 ]; do
  [ "$1" = "--output-dir" ] && out="$2"
  [ "$1" = "--to" ] && to="$2"
  shift
done
if [ -z "$to" ] && [ -n "$FAIL_QUARTO_PDF" ]; then echo "ERROR: No TeX installation was detected" >&2; exit 1; fi
mkdir -p "$out"
for f in "$src"/*.qmd "$src"/*.ipynb; do
  name=$(basename "$f"); name="${name%.*}"
  printf '<html><head><title>%s</title></head><body><nav id="TOC"><h2>On this page</h2></nav><main><h1>%s</h1><p>page text</p></main></body></html>' "$name" "$name" > "$out/$name.html"
  if [ -z "$to" ]; then printf '%%PDF-1.4 fake' > "$out/$name.pdf"; fi
done
"""


@pytest.fixture
def fake_quarto(tmp_path, monkeypatch):
    """A stand-in ``quarto`` on PATH (Quarto itself is not installable here); returns its folder."""
    import os
    import stat

    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "quarto"
    fake.write_text(FAKE_QUARTO)
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    return bindir


def _staged_formats(root: Path) -> dict:
    return yaml.safe_load((root / "build" / "site_src" / "_quarto.yml").read_text())["format"]


def test_quarto_renderer_calls_quarto_and_surfaces_errors(tmp_path, monkeypatch, fake_quarto):
    bindir = fake_quarto
    monkeypatch.chdir(tmp_path)
    executed = make_executed_dir(tmp_path, studies=("prostate",))
    info = report.render_site(executed, tmp_path / "_site", renderer="auto", pdf=False,
                              quarto_config=REPO / "_quarto.yml")
    args = (bindir / "args.txt").read_text().split()
    assert info["renderer"] == "quarto" and args[0] == "render"
    assert args[args.index("--to") + 1] == "html" and "--no-execute" in args
    assert info["index"] == tmp_path / "_site" / "index.html"
    # no PDF asked: no pdf format staged and no "Other formats" link on the HTML pages
    formats = _staged_formats(tmp_path)
    assert "pdf" not in formats and formats["html"]["format-links"] is False
    assert "PDF" not in (tmp_path / "_site" / "prostate.html").read_text()
    monkeypatch.setenv("FAIL_QUARTO", "1")
    with pytest.raises(RuntimeError, match="quarto render failed .*ERROR: boom"):
        report.render_site(executed, tmp_path / "_site2", renderer="quarto", pdf=True,
                           quarto_config=REPO / "_quarto.yml")


def test_quarto_pdf_with_tex_is_quartos_own(tmp_path, monkeypatch, fake_quarto):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(report, "find_tex", lambda: ("xelatex", "/opt/tex/bin/xelatex"))
    executed = make_executed_dir(tmp_path, studies=("prostate",))
    info = report.render_site(executed, tmp_path / "_site", renderer="quarto", pdf=True,
                              quarto_config=REPO / "_quarto.yml")
    args = (fake_quarto / "args.txt").read_text().split()
    assert "--to" not in args                                           # every format, pdf included
    assert _staged_formats(tmp_path)["pdf"]["pdf-engine"] == "xelatex"
    assert sorted(p.name for p in info["pdf"]) == ["index.pdf", "prostate.pdf", "provenance.pdf"]
    assert info["pdf_note"] is None


@pytest.mark.skipif(not report.find_chromium(), reason="Chromium is not installed")
@pytest.mark.parametrize("quarto_pdf_fails", [False, True])
def test_quarto_pdf_without_tex_prints_the_html_pages_with_chromium(tmp_path, monkeypatch, fake_quarto,
                                                                     quarto_pdf_fails):
    """No TeX (or Quarto's PDF fails with the TeX found): Quarto renders HTML only, Chromium prints each
    page, and each page links to its PDF, which exists."""
    monkeypatch.chdir(tmp_path)
    if quarto_pdf_fails:
        monkeypatch.setattr(report, "find_tex", lambda: ("lualatex", "/opt/tex/bin/lualatex"))
        monkeypatch.setenv("FAIL_QUARTO_PDF", "1")
    else:
        monkeypatch.setattr(report, "find_tex", lambda: None)
    executed = make_executed_dir(tmp_path, studies=("prostate",))
    info = report.render_site(executed, tmp_path / "_site", renderer="quarto", pdf=True,
                              quarto_config=REPO / "_quarto.yml")
    args = (fake_quarto / "args.txt").read_text().split()
    assert args[args.index("--to") + 1] == "html"
    assert "pdf" not in _staged_formats(tmp_path)
    site = tmp_path / "_site"
    assert sorted(p.relative_to(site).as_posix() for p in info["pdf"]) == [
        "pdf/index.pdf", "pdf/prostate.pdf", "pdf/provenance.pdf"]
    for page in ("index", "prostate", "provenance"):
        assert (site / "pdf" / f"{page}.pdf").read_bytes()[:5] == b"%PDF-"
        html_text = (site / f"{page}.html").read_text()
        assert f'href="pdf/{page}.pdf"' in html_text and "Other Formats" in html_text
    assert info["pdf_note"] is None


def test_quarto_pdf_without_tex_or_chromium_is_skipped_with_one_line(tmp_path, monkeypatch, fake_quarto):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(report, "find_tex", lambda: None)
    monkeypatch.setattr(report, "find_chromium", lambda: None)
    executed = make_executed_dir(tmp_path, studies=("prostate",))
    info = report.render_site(executed, tmp_path / "_site", renderer="quarto", pdf=True,
                              quarto_config=REPO / "_quarto.yml")
    assert info["pdf"] == [] and "\n" not in info["pdf_note"]
    assert "no TeX engine" in info["pdf_note"] and "no Chromium" in info["pdf_note"]
    assert "PDF" not in (tmp_path / "_site" / "prostate.html").read_text()


def test_find_tex_looks_on_path_then_in_tinytex(tmp_path, monkeypatch):
    from seglib.report import pdf

    monkeypatch.setattr(pdf.shutil, "which", lambda name: None)
    monkeypatch.setattr(pdf.Path, "home", staticmethod(lambda: tmp_path))
    monkeypatch.delenv("APPDATA", raising=False)
    assert pdf.find_tex() is None
    engine = tmp_path / ".TinyTeX" / "bin" / "x86_64-linux" / "xelatex"
    engine.parent.mkdir(parents=True)
    engine.write_text("")
    assert pdf.find_tex() == ("xelatex", str(engine))
    monkeypatch.setattr(pdf.shutil, "which", lambda name: f"/usr/bin/{name}" if name == "pdflatex" else None)
    assert pdf.find_tex() == ("pdflatex", "/usr/bin/pdflatex")


# --------------------------------------------------------------------------- readable tables
def test_display_table_formats_for_reading():
    import numpy as np

    from seglib.eval.tables import ci_columns
    from seglib.report.tables import display_table, format_number

    low, high = ci_columns("dice (per case)")
    df = pd.DataFrame({"configuration": ["a", "b", "c"], "dice (per case)": [0.80312, 0.7, np.nan],
                       low: [0.7831, 0.6, np.nan], high: [0.8204, 0.8, np.nan],
                       "volume diff, ml": [5.666667, 2.0, 3.25], "p (Holm)": [np.nan, 0.00001, 0.2],
                       "seed's DSC": [0.9, 0.95, np.nan], "parameters": [1234567, 890, 12]})
    t = display_table(df, uuid="tbl-x")
    assert t.headers == ["configuration", "dice (per case) [95 % CI]", "volume diff, ml", "p (Holm)",
                         "seed's DSC", "parameters"]
    assert t.cells.iloc[0].tolist() == ["a", "0.803 [0.783, 0.820]", "5.67", "—", "0.900", "1,234,567"]
    assert t.cells.iloc[1, 3] == "< 0.001" and t.cells.iloc[2, 1] == "—"
    assert t.bold.iloc[0, 1] and not t.bold.iloc[1, 1]                # highest Dice
    assert t.bold.iloc[1, 2] and t.bold["volume diff, ml"].sum() == 1  # lowest volume difference
    assert not t.bold["seed's DSC"].any()                             # the seed's numbers are not ranked
    html_text = t._repr_html_()
    assert "<tbody>" in html_text and "row_heading" not in html_text   # no index column
    assert "font-weight: bold" in html_text
    assert "| **0.803 [0.783, 0.820]** |" in t.to_markdown()
    assert format_number(0.0093) == "0.0093" and format_number(123.456) == "123"
    assert format_number(1.5e-7) == "1.50e-07" and format_number(None) == "—"


# --------------------------------------------------------------------------- generated prose
def test_result_sentences_follow_the_numbers():
    import numpy as np

    from seglib.eval.tables import results_table
    from seglib.report.prose import describe_devices, describe_results

    rng = np.random.default_rng(0)
    n = 12
    base = rng.uniform(0.5, 0.7, n)
    cases = pd.concat([pd.DataFrame({"config": c, "seed": 0, "case_id": [f"c{i}" for i in range(n)],
                                     "dice": base + shift})
                       for c, shift in (("base", 0.0), ("better", 0.1), ("same", 0.0))], ignore_index=True)
    text = describe_results(results_table(cases, ["dice"], "base"), "base")
    assert "**better**" in text and "1 of 2 configurations differ" in text and "better (p = " in text
    assert "2·2/2^12" in text and "can reach the 0.05 level" in text
    few = cases[cases["case_id"].isin(["c0", "c1", "c2", "c3", "c4", "c5"])]
    text = describe_results(results_table(few, ["dice"], "base"), "base")
    assert "**cannot** find a difference" in text
    runs = pd.DataFrame({"device": ["cpu", "cpu"], "precision": ["bf16", "bf16"]})
    assert describe_devices(runs) == "Every run trained on **cpu** in **bf16** precision (from each run's provenance)."
    mixed = pd.DataFrame({"device": ["cuda:0", "cpu"], "precision": ["bf16", "fp32"]})
    assert "1 on **cuda:0** in **bf16**" in describe_devices(mixed)


def test_a_grid_of_folds_is_described_as_a_cross_validation():
    from types import SimpleNamespace

    from seglib.report.prose import describe_runs

    summary = {"runs": 4, "hits": 0, "trained": 4, "seconds": 12.0}
    runs = pd.DataFrame({"device": ["cpu"] * 4, "precision": ["bf16"] * 4, "fold": [0, 1, 2, 3]})
    cases = pd.DataFrame({"case_id": [f"p{i}" for i in range(10)]})
    text = describe_runs(SimpleNamespace(summary=summary, runs=runs, cases=cases))
    assert "the 4 folds of a patient-level cross-validation" in text and "pool 10 patients" in text
    assert "averages the 4 models" in text
    one = SimpleNamespace(summary=summary, runs=runs.assign(fold=0), cases=cases)
    assert "cross-validation" not in describe_runs(one)
    assert "cross-validation" not in describe_runs(SimpleNamespace(summary=summary, runs=runs.drop(columns="fold"),
                                                                   cases=cases))
