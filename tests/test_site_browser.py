"""The offline report site opened in headless Chromium (selenium): what a reader would see.

Served by a local ``http.server`` on 127.0.0.1 (a free port), every page is checked
in the DOM: no broken image, no broken internal link (the target answers 200 and
the ``#anchor`` exists there), each study page shows its numbered tables and
figures with captions, the index shows every claim of ``results.json``; no table is
wider than the page, has an index column or prints a float with more than 4 decimals;
each page's PDF exists and its first page, rendered to PNG by ``pdftoppm``, is not
blank; a screenshot of each page goes to ``build/screenshots/<page>.png``.

The site comes from ``build_site_from(executed_dir, out_dir)``; ``executed_dir`` is,
for now, synthetic executed notebooks (tests/test_report.py). To check the real
smoke-executed notebooks, make the ``executed_dir`` fixture return their folder.

Chromium and chromedriver are system packages (``apt-get install chromium
chromium-driver``): without them this module fails when ``CI=true`` and is skipped
otherwise.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import tempfile
import threading
import urllib.error
import urllib.request
from functools import partial
from html.parser import HTMLParser
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urldefrag, urljoin, urlparse

import nbformat
import pytest

from seglib.report.render import render_site
from seglib.report.crossref import split_cell_options

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
SCREENSHOTS = REPO / "build" / "screenshots"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")
CHROME_ARGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--no-first-run", "--window-size=1280,900")


def build_site_from(executed_dir, out_dir, pdf: bool = True) -> Path:
    """Render the offline site of ``executed_dir`` into ``out_dir`` (with each page's PDF, printed by
    Chromium); returns the site folder."""
    info = render_site(executed_dir, out_dir, renderer="fallback", pdf=pdf)
    return Path(info["out_dir"])


def _browser_problem() -> str | None:
    if importlib.util.find_spec("selenium") is None:
        return "selenium is not installed (pip install selenium)"
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not (Path(path).is_file() or shutil.which(path)):
            return f"{path} not found (apt-get install {package})"
    return None


@pytest.fixture(scope="module")
def executed_dir(smoke_build) -> Path:
    """The three study notebooks as executed with their smoke profile (tests/conftest.py)."""
    p, errors = smoke_build
    failed = {s: e for s, e in errors.items() if e is not None}
    assert not failed, f"smoke notebooks failed: {failed}"
    return p.executed


@pytest.fixture(scope="module")
def site_dir(executed_dir, tmp_path_factory) -> Path:
    return build_site_from(executed_dir, tmp_path_factory.mktemp("browser_site") / "_site")


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's signature
        pass


@pytest.fixture(scope="module")
def base_url(site_dir):
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietHandler, directory=str(site_dir)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def driver():
    problem = _browser_problem()
    if problem:
        if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
            pytest.fail(f"headless browser test cannot run in CI: {problem}")
        pytest.skip(f"headless browser test skipped: {problem}")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="seglib-selenium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in CHROME_ARGS:
        options.add_argument(arg)
    options.add_argument(f"--user-data-dir={profile}")
    browser = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    browser.set_page_load_timeout(30)
    yield browser
    browser.quit()
    shutil.rmtree(profile, ignore_errors=True)


class _Ids(HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        for key, value in attrs:
            if key == "id" or (tag == "a" and key == "name"):
                self.ids.add(value)


def _fetch(url: str, cache: dict) -> tuple[int, set[str]]:
    """HTTP status of ``url`` and the ids of its HTML (cached)."""
    if url not in cache:
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                status, body = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, body = exc.code, b""
        ids = _Ids()
        if url.endswith((".html", "/")):
            ids.feed(body.decode("utf-8", "replace"))
        cache[url] = (status, ids.ids)
    return cache[url]


def _pages(site_dir: Path) -> list[str]:
    return sorted(p.name for p in site_dir.glob("*.html"))


def _screenshot(driver, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    height = driver.execute_script(
        "return Math.max(document.body.scrollHeight, document.documentElement.scrollHeight,"
        " document.querySelector('main') ? document.querySelector('main').scrollHeight + 300 : 0);")
    driver.set_window_size(1280, min(max(int(height), 600), 6000))
    driver.save_screenshot(str(SCREENSHOTS / f"{Path(name).stem}.png"))
    driver.set_window_size(1280, 900)


def _labels(notebook: Path) -> list[str]:
    nb = nbformat.read(notebook, as_version=4)
    labels = []
    for cell in nb.cells:
        if cell.cell_type == "code":
            label = split_cell_options(cell.source)[0].get("label")
            if isinstance(label, str) and label[:4] in ("fig-", "tbl-"):
                labels.append(label)
    return labels


def test_every_page_has_working_images_links_and_a_screenshot(driver, site_dir, base_url):
    pages = _pages(site_dir)
    assert {"index.html", "provenance.html"} <= set(pages)
    cache: dict = {}
    problems = []
    for page in pages:
        url = urljoin(base_url, page)
        driver.get(url)
        assert driver.title, f"{page}: no <title>"
        broken = driver.execute_script(
            "return Array.from(document.images)"
            ".filter(i => !(i.complete && i.naturalWidth > 0))"
            ".map(i => (i.getAttribute('src') || '').slice(0, 60));")
        problems += [f"{page}: broken image {src}" for src in broken]
        nav = driver.execute_script(
            "return Array.from(document.querySelectorAll('nav a')).map(a => a.getAttribute('href'));")
        missing_nav = {"index.html", "provenance.html", *pages} - set(nav)
        problems += [f"{page}: navbar lacks {href}" for href in sorted(missing_nav)]
        hrefs = driver.execute_script(
            "return Array.from(document.querySelectorAll('a[href]')).map(a => a.getAttribute('href'));")
        for href in hrefs:
            if urlparse(href).scheme in ("http", "https", "mailto", "javascript", "data"):
                continue
            target, anchor = urldefrag(urljoin(url, href))
            status, ids = _fetch(target, cache)
            if status != 200:
                problems.append(f"{page}: link {href} answers HTTP {status}")
            elif anchor and anchor not in ids:
                problems.append(f"{page}: link {href}: no element with id {anchor!r}")
        _screenshot(driver, page)
    assert not problems, "\n".join(problems)
    for page in pages:
        assert (SCREENSHOTS / f"{Path(page).stem}.png").stat().st_size > 1000


def test_study_pages_show_numbered_tables_and_figures(driver, site_dir, executed_dir, base_url):
    studies = [p.stem for p in sorted(Path(executed_dir).glob("*.ipynb"))]
    assert studies, f"no executed notebook in {executed_dir}"
    for study in studies:
        labels = _labels(Path(executed_dir) / f"{study}.ipynb")
        driver.get(urljoin(base_url, f"{study}.html"))
        floats = driver.execute_script("""
            return Array.from(document.querySelectorAll('figure.seglib-float')).map(f => ({
              id: f.id,
              tables: f.querySelectorAll('table').length,
              images: f.querySelectorAll('img').length,
              caption: (f.querySelector('figcaption') || {}).textContent || ''}));""")
        assert [f["id"] for f in floats] == labels, study
        n_fig = n_tbl = 0
        for f in floats:
            if f["id"].startswith("fig-"):
                n_fig += 1
                assert f["images"] >= 1, (study, f)
                assert re.match(rf"\s*Figure {n_fig}\b", f["caption"]), (study, f)
            else:
                n_tbl += 1
                assert f["tables"] >= 1, (study, f)
                assert re.match(rf"\s*Table {n_tbl}\b", f["caption"]), (study, f)
        assert driver.execute_script(
            "return document.querySelectorAll('.crossref-missing').length;") == 0, study
        refs = driver.execute_script(
            "return Array.from(document.querySelectorAll('a.crossref')).map(a => a.textContent);")
        assert all(re.fullmatch(r"(Figure|Table) \d+|\d+", r) for r in refs), (study, refs)


def test_index_shows_every_claim_with_profile_and_data(driver, executed_dir, base_url):
    driver.get(base_url + "index.html")
    rows = driver.execute_script(
        "return Array.from(document.querySelectorAll('table tr')).map(r => r.textContent);")
    text = driver.execute_script("return document.body.innerText;")
    for results in sorted(Path(executed_dir).glob("*/results.json")):
        data = json.loads(results.read_text())
        for claim in data.get("claims", []):
            row = [r for r in rows if claim["id"] in r]
            assert len(row) == 1, (claim["id"], rows)
            assert claim["verdict"] in row[0], row[0]
        # the study's section of the scorecard names its profile and data, above its figure and claims
        section = driver.execute_script(
            "const h = document.getElementById(arguments[0]); let t = '', n = h && h.nextElementSibling;"
            "while (n && n.tagName !== 'H3' && n.tagName !== 'H2') { t += n.innerText + ' '; n = n.nextElementSibling; }"
            "return t;", f"summary-{data['study']}")
        assert f"Profile {data['profile']}, data: {data['data']}" in " ".join(section.split()), section[:300]
        fig = driver.execute_script(
            "return Array.from(document.images).filter(i => i.getAttribute('src') === arguments[0])"
            ".map(i => i.naturalWidth);", f"{data['study']}/{data['index_figure']}")
        assert fig and fig[0] > 300, (data["study"], fig)
    assert "Read this first" in text          # the smoke/quick profiles are not the real study


def test_tables_fit_the_page_have_no_index_column_and_few_decimals(driver, site_dir, base_url):
    problems = []
    for page in _pages(site_dir):
        driver.get(urljoin(base_url, page))
        tables = driver.execute_script("""
            const vw = document.documentElement.clientWidth;
            return Array.from(document.querySelectorAll('table')).map((t, i) => {
              const r = t.getBoundingClientRect();
              let clipped = false;
              for (let a = t.parentElement; a && a !== document.body; a = a.parentElement) {
                const o = getComputedStyle(a).overflowX;
                if ((o === 'auto' || o === 'scroll' || o === 'hidden') && a.scrollWidth > a.clientWidth + 1) clipped = true;
              }
              const head = t.querySelector('thead tr');
              return {i: i, left: r.left, right: r.right, vw: vw, clipped: clipped,
                      indexCells: t.querySelectorAll('tbody th, th.row_heading, th.blank, th.index_name').length,
                      firstHeader: head && head.cells.length ? head.cells[0].textContent.trim() : 'x',
                      text: t.innerText};
            });""")
        for t in tables:
            where = f"{page}: table {t['i'] + 1}"
            if t["left"] < -1 or t["right"] > t["vw"] + 1 or t["clipped"]:
                problems.append(f"{where} is wider than the page ({t['left']:.0f}..{t['right']:.0f} of {t['vw']})")
            if t["indexCells"] or not t["firstHeader"]:
                problems.append(f"{where} has an index column")
            long = re.findall(r"(?<![\w.])\d+\.\d{5,}\b", t["text"])
            if long:
                problems.append(f"{where} prints floats with more than 4 decimals: {long[:3]}")
        width = driver.execute_script("return [document.documentElement.scrollWidth, "
                                      "document.documentElement.clientWidth];")
        if width[0] > width[1] + 1:
            problems.append(f"{page}: the page scrolls sideways ({width[0]} > {width[1]} px)")
    assert not problems, "\n".join(problems)


def test_every_page_has_a_pdf_whose_first_page_is_not_blank(driver, site_dir, base_url, tmp_path):
    """Each page links its PDF (Chromium's print of it), the PDF exists and its first page, rendered to PNG
    by pdftoppm (poppler-utils), has ink on it."""
    import subprocess

    from PIL import Image

    pdftoppm = shutil.which("pdftoppm")
    if pdftoppm is None:
        if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
            pytest.fail("pdftoppm not found (apt-get install poppler-utils)")
        pytest.skip("pdftoppm not found (apt-get install poppler-utils)")
    for page in _pages(site_dir):
        stem = Path(page).stem
        pdf = site_dir / "pdf" / f"{stem}.pdf"
        assert pdf.is_file() and pdf.read_bytes()[:5] == b"%PDF-", pdf
        driver.get(urljoin(base_url, page))
        links = driver.execute_script(
            "return Array.from(document.querySelectorAll('a[href$=\".pdf\"]')).map(a => a.getAttribute('href'));")
        assert f"pdf/{stem}.pdf" in links, (page, links)
        out = tmp_path / stem
        subprocess.run([pdftoppm, "-png", "-r", "40", "-f", "1", "-l", "1", str(pdf), str(out)], check=True,
                       capture_output=True, timeout=120)
        png = next(tmp_path.glob(f"{stem}*.png"))
        gray = Image.open(png).convert("L")
        lo, hi = gray.getextrema()
        dark = sum(gray.histogram()[:200])                       # pixels darker than 200 of 255
        assert lo < 128 and dark > 0.002 * gray.width * gray.height, (page, lo, hi, dark)
