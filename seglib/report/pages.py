"""The generated pages of the report site: index (with the reproduction scorecard) and provenance.

Both are Markdown (pipe tables, inline HTML links) so that Quarto (Pandoc) and the
offline renderer (nbconvert's Markdown, mistune) render the same text; ``flavour``
only changes how a heading carries its anchor id (Pandoc ``{#id}`` attribute vs an
HTML ``<h2 id>``). Their inputs, for each study, are
``<executed_dir>/<study>.ipynb`` (papermill metadata: ``nb.metadata.papermill``)
and ``<executed_dir>/<study>/results.json`` written by the notebook.
"""

from __future__ import annotations

import html
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from seglib.report.tables import format_number, markdown_table

logger = logging.getLogger(__name__)

FLAVOURS = ("quarto", "html")


@dataclass(frozen=True)
class StudyInfo:
    letter: str
    title: str
    question: str
    seed_data: str


STUDIES: dict[str, StudyInfo] = {
    "stroke": StudyInfo(
        "A", "Ischemic stroke lesions, 3D",
        "Does (2+1)D convolution save enough memory to train at 128³ instead of 64³, and at what "
        "cost in accuracy? Does generalised Dice + cross-entropy beat DiceBCE?",
        "ISLES 2022 / ATLAS R2.0",
    ),
    "prostate": StudyInfo(
        "B", "Prostate gland, 2D",
        "How does the Tversky weighting (α on false positives, β = 1 − α) move Dice, precision, "
        "recall and F1 against a BCE baseline?",
        "PROSTATEx T2 with the Cuocolo et al. gland masks",
    ),
    "brain": StudyInfo(
        "C", "Brain lower-grade glioma, 2D",
        "Which loss (Dice, BCE, log-cosh Dice, shape-aware) and optimiser (Adam, SGD) train the "
        "best U-Net, and does U-Net++ beat U-Net?",
        "Kaggle lgg-mri-segmentation (TCGA)",
    ),
}


@dataclass
class StudyBuild:
    """What the executed directory holds for one study (missing parts are ``None``)."""

    study: str
    notebook: Path
    results_path: Path
    exists: bool
    results: dict | None = None
    papermill: dict = field(default_factory=dict)

    @property
    def page(self) -> str:
        return f"{self.study}.html"

    @property
    def label(self) -> str:
        info = STUDIES.get(self.study)
        return f"{info.letter} · {info.title}" if info else self.study

    @property
    def title(self) -> str:
        if self.results and self.results.get("title"):
            return str(self.results["title"])
        return self.label


def read_results(path: Path) -> dict | None:
    """``results.json`` as a dict, ``None`` when absent; ValueError naming the file when unreadable."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def collect_studies(executed_dir) -> list[StudyBuild]:
    """The three known studies in order (present or not), then any other executed notebook."""
    executed_dir = Path(executed_dir)
    names = list(STUDIES)
    if executed_dir.is_dir():
        names += sorted(p.stem for p in executed_dir.glob("*.ipynb") if p.stem not in STUDIES)
    builds = []
    for name in names:
        nb_path = executed_dir / f"{name}.ipynb"
        build = StudyBuild(name, nb_path, executed_dir / name / "results.json", nb_path.is_file())
        if build.exists:
            build.results = read_results(build.results_path)
            meta = nbformat.read(nb_path, as_version=4).metadata
            build.papermill = dict(meta.get("papermill", {}))
        builds.append(build)
    return builds


# --------------------------------------------------------------------------- helpers
def _cell(value) -> str:
    """Text for a pipe-table cell: HTML-escaped, one line, no bare '|'."""
    if value is None or value == "":
        return "—"
    if isinstance(value, float):
        value = format_number(value)
    text = " ".join(str(value).split())
    return html.escape(text, quote=False).replace("|", "&#124;")


def _code(value) -> str:
    text = " ".join(str(value).split()).replace("`", "'").replace("|", "\\|")
    return f"`{text}`" if text else "—"


def _num(value, fmt: str = ".3g") -> str:
    if value is None:
        return "—"
    try:
        return format(float(value), fmt)
    except (TypeError, ValueError):
        return _cell(value)


def _heading(level: int, text: str, anchor: str, flavour: str) -> str:
    if flavour == "quarto":
        return f"{'#' * level} {text} {{#{anchor}}}"
    return f'<h{level} id="{anchor}">{html.escape(text, quote=False)}</h{level}>'


def _table(header: list[str], rows: list[list[str]]) -> str:
    return markdown_table(header, rows)


def _wide(table: str, flavour: str) -> list[str]:
    """A table in the page-width column: Quarto's ``.column-page`` div (Pandoc fenced div), or the same
    class as an HTML block around the Markdown table (CommonMark ends the block at the blank line)."""
    if flavour == "quarto":
        return ["::: {.column-page}", "", table, "", ":::"]
    return ['<div class="column-page">', "", table, "", "</div>"]


def _front_matter(title: str) -> str:
    return "---\n" + f"title: {json.dumps(title, ensure_ascii=False)}\n" + "---\n\n"


def _check_flavour(flavour: str) -> None:
    if flavour not in FLAVOURS:
        raise ValueError(f"flavour {flavour!r} is not one of {FLAVOURS}")


def _flatten(obj, prefix: str = "") -> list[tuple[str, object]]:
    if isinstance(obj, dict) and obj:
        out = []
        for key, value in obj.items():
            out += _flatten(value, f"{prefix}.{key}" if prefix else str(key))
        return out
    return [(prefix, obj)]


def _is_reference_run(results: dict) -> bool:
    profile = str(results.get("profile", "")).lower()
    data = str(results.get("data", "")).lower()
    return profile == "full" and "synthetic" not in data


# --------------------------------------------------------------------------- index
INDEX_TITLE = "seglib: reproducible U-Net segmentation studies"


def index_markdown(builds: list[StudyBuild], flavour: str = "quarto") -> str:
    """Body of the index page (no front matter)."""
    _check_flavour(flavour)
    out = [
        "**seglib** is a thin Python library for re-running published U-Net segmentation "
        "studies: dataset readers (NIfTI, TIFF) returning one `Case` record, U-Net variants, "
        "losses and metrics (MONAI where it has them), a cached run executor and statistics. "
        "Each study is a parameterised notebook executed by papermill under a profile "
        "(`smoke`: tiny synthetic data for the tests; `quick`: synthetic phantoms in each "
        "dataset's on-disk layout; `full`: the real dataset at the seed's settings). This site "
        "shows the executed notebooks as they ran; rendering it trains nothing.",
        "",
        _heading(2, "The studies", "studies", flavour),
        "",
    ]
    rows = []
    for b in builds:
        info = STUDIES.get(b.study)
        page = f'<a href="{b.page}">{_cell(b.label)}</a>' if b.exists else _cell(b.label) + " (not built)"
        res = b.results or {}
        rows.append([
            page,
            _cell(info.question if info else res.get("title")),
            _cell(info.seed_data if info else None),
            _cell(res.get("profile")),
            _cell(res.get("data")),
        ])
    out += [_table(["Study", "Question", "Seed's data", "Profile", "Data in this build"], rows), ""]

    built = [b for b in builds if b.results]
    if built and not all(_is_reference_run(b.results) for b in built):
        out += [
            "**Read this first.** Rows below whose profile is not `full` or whose data are "
            "synthetic test that the pipeline runs end to end and fills every table and figure; "
            "they do not reproduce the published studies and cannot support or refute a seed's "
            "claim. Only the `full` profile on the real datasets can.",
            "",
        ]
    out += [_heading(2, "Reproduction scorecard", "scorecard", flavour), "",
            "Per study: the mean of its primary metric per configuration with the 95 % CI (and the seed's "
            "published value where the seed gave one), then each claim of the seed beside what this build "
            "measured. Every page says which profile and data produced it.", ""]
    if not any(b.results.get("claims") for b in built):
        out += ["No study of this build has recorded claims yet.", ""]
    for b in built:
        res = b.results
        out += [_heading(3, b.label, f"summary-{b.study}", flavour), ""]
        out += [f'Profile `{_cell(res.get("profile"))}`, data: {_cell(res.get("data"))}. '
                f'<a href="{b.page}">The study page</a>.', ""]
        fig = res.get("index_figure")
        if fig and (b.results_path.parent / fig).is_file():
            metric = (res.get("summary") or {}).get("metric", "the primary metric")
            out += [f"![{_cell(b.label)}: {_cell(metric)} per configuration, mean and 95 % CI; "
                    f"diamonds: the seed's published values]({b.study}/{fig})", ""]
        rows = []
        for claim in res.get("claims") or []:
            measured = _cell(claim.get("measured"))
            p = claim.get("p")
            if p is not None:
                measured += f" (p = {_cell(format_number(p, p_value=True))})"
            rows.append([f'{_cell(claim.get("claim"))} <small><code>{_cell(claim.get("id", ""))}</code></small>',
                         _cell(claim.get("seed_says")), measured, f"**{_cell(claim.get('verdict'))}**"])
        if rows:
            out += _wide(_table(["Claim", "Seed says", "This build", "Verdict"], rows), flavour) + [""]
        else:
            out += ["This build tests none of the seed's claims for this study.", ""]

    missing_nb = [b for b in builds if not b.exists]
    missing_res = [b for b in builds if b.exists and b.results is None]
    if missing_nb or missing_res:
        out += [_heading(2, "Not in this build", "missing", flavour), ""]
        for b in missing_nb:
            out.append(f"- {_cell(b.label)}: no executed notebook `{b.notebook.as_posix()}` "
                       f"(run the study, e.g. `seglib run {b.study}`).")
        for b in missing_res:
            out.append(f"- {_cell(b.label)}: the notebook ran but wrote no "
                       f"`{b.results_path.as_posix()}`; its claims are not on the scorecard.")
        out.append("")
    out += ['Provenance of every run (parameters, versions, device, wall time): '
            '<a href="provenance.html">provenance</a>.', ""]
    return "\n".join(out)


def _write_page(executed_dir, out_path, title: str, markdown, flavour: str) -> Path:
    """Write ``markdown(builds, flavour)`` under ``title``'s front matter (``.qmd`` for Quarto)."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    body = markdown(collect_studies(executed_dir), flavour)
    out_path.write_text(_front_matter(title) + body, encoding="utf-8")
    logger.info("wrote %s", out_path)
    return out_path


def write_index(executed_dir, out_path, flavour: str = "quarto") -> Path:
    """Write the index page (``.qmd`` with front matter for Quarto) from ``executed_dir``."""
    return _write_page(executed_dir, out_path, INDEX_TITLE, index_markdown, flavour)


# --------------------------------------------------------------------------- provenance
PROVENANCE_TITLE = "Provenance"


def _files_list(b: StudyBuild) -> list[str]:
    folder = b.results_path.parent
    if not folder.is_dir():
        return []
    links = [f'<a href="{b.study}/{p.relative_to(folder).as_posix()}">{html.escape(p.name)}</a>'
             for p in sorted(folder.rglob("*")) if p.is_file() and p.suffix in (".csv", ".json")]
    return ["Files: " + ", ".join(links) + ".", ""] if links else []


def _stamp(value):
    """An ISO time stamp to the second ("2026-12-01T10:11:57.602541" → "2026-12-01 10:11:57")."""
    if not isinstance(value, str) or "T" not in value:
        return value
    return value.replace("T", " ", 1).split(".")[0]


def _runs_summary(prov: dict, key: str):
    """The runs' ``key`` ("device", "precision"): the one value, or each value with its count."""
    values = [r.get(key) for r in prov.get("runs") or [] if r.get(key) is not None]
    if not values:
        return prov.get(key)
    counts = {v: values.count(v) for v in dict.fromkeys(values)}
    if len(counts) == 1:
        return f"{values[0]} (all {len(values)} runs)"
    return ", ".join(f"{v} ({n} runs)" for v, n in counts.items())


def provenance_markdown(builds: list[StudyBuild], flavour: str = "quarto") -> str:
    """Body of the provenance appendix: one section per built study."""
    _check_flavour(flavour)
    out = ["For each study: the resolved parameters, the code version, package versions, the "
           "device and the wall time of every run, from the study's `results.json` and "
           "papermill's record in the executed notebook.", ""]
    for b in builds:
        if not b.exists:
            continue
        res = b.results or {}
        prov = res.get("provenance") or {}
        pm = b.papermill
        out += [_heading(2, b.label, f"prov-{b.study}", flavour), ""]
        summary = [
            ["Page", f'<a href="{b.page}">{_cell(b.title)}</a>'],
            ["Profile", _cell(res.get("profile"))],
            ["Data", _cell(res.get("data"))],
            ["seglib version", _cell(res.get("seglib_version"))],
            ["Git commit", _code(res.get("git_commit") or "unknown")],
            ["Device", _cell(_runs_summary(prov, "device"))],
            ["Precision", _cell(_runs_summary(prov, "precision"))],
            ["papermill start", _cell(_stamp(pm.get("start_time")))],
            ["papermill end", _cell(_stamp(pm.get("end_time")))],
            ["papermill duration (s)", _num(pm.get("duration"), ".1f")],
            ["papermill parameters", _code(json.dumps(pm.get("parameters") or {}, sort_keys=True))],
        ]
        if not b.results:
            summary.append(["results.json", "missing"])
        out += [_table(["Item", "Value"], summary), ""]
        params = _flatten(prov.get("parameters") or {})
        if params and params != [("", {})]:
            out += [_heading(3, "Resolved parameters", f"prov-{b.study}-parameters", flavour), ""]
            out += [_table(["Parameter", "Value"],
                           [[_code(k), _code(json.dumps(v))] for k, v in params]), ""]
        packages = prov.get("packages") or {}
        if packages:
            out += [_heading(3, "Package versions", f"prov-{b.study}-packages", flavour), ""]
            out += [_table(["Package", "Version"],
                           [[_code(k), _cell(v)] for k, v in sorted(packages.items())]), ""]
        runs = prov.get("runs") or []
        if runs:
            out += [_heading(3, "Runs", f"prov-{b.study}-runs", flavour), ""]
            rows = [[_code(r.get("run", "")), _cell(r.get("label")), _cell(r.get("device")),
                     _cell(r.get("precision")), _num(r.get("wall_s"), ".1f")] for r in runs]
            total = sum(float(r.get("wall_s") or 0.0) for r in runs)
            rows.append(["**total**", f"{len(runs)} runs", "", "", f"**{total:.1f}**"])
            out += [_table(["Run", "Label", "Device", "Precision", "Wall time (s)"], rows), ""]
        out += _files_list(b)
    if not any(b.exists for b in builds):
        out += ["No executed notebook in this build.", ""]
    return "\n".join(out)


def write_provenance(executed_dir, out_path, flavour: str = "quarto") -> Path:
    """Write the provenance page (``.qmd`` with front matter for Quarto) from ``executed_dir``."""
    return _write_page(executed_dir, out_path, PROVENANCE_TITLE, provenance_markdown, flavour)
