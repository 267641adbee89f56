"""Quarto-style cell options, figure/table numbering and cross-references for nbconvert.

Quarto reads options from the leading ``#| key: value`` lines of a code cell
(https://quarto.org/docs/computations/execution-options.html) and numbers every
cell whose ``label`` starts with ``fig-`` or ``tbl-``; ``@fig-x`` in Markdown becomes
"Figure N" linked to the float. nbconvert knows none of this, so the offline
renderer does it here, written by hand (no maintained library does it for
nbconvert): :func:`prepare_notebook` returns a copy of the notebook with

- the option lines removed from the displayed source;
- ``include: false`` cells dropped, ``output: false`` outputs dropped,
  ``echo: false`` inputs hidden; ``column: page`` (Quarto's article layout) kept as
  ``cell.metadata["seglib_column"]``, which the template turns into a ``.column-page`` div;
- ``cell.metadata["seglib_xref"] = {"label", "kind", "number", "name", "caption_html"}``
  on every labelled figure/table cell (the template wraps its outputs in a
  ``<figure id=label>`` with the caption "Figure N: …");
- references in Markdown cells replaced by ``<a class="crossref" href="#label">Figure N</a>``
  (``-@fig-x`` gives the number alone; ``[@fig-x]`` drops the brackets).
  An unknown label is shown as ``?@label``, as Quarto does, and reported.

Only references within one page are resolved (Quarto websites do the same;
cross-page references are a Quarto *book* feature).
"""

from __future__ import annotations

import copy
import html
import logging
import re
from dataclasses import dataclass

import mistune
import nbformat
import yaml

logger = logging.getLogger(__name__)

KIND_NAMES = {"fig": "Figure", "tbl": "Table"}

# [@fig-x], -@fig-x, @fig-x, @Fig-x; a label ends with a word character, so the
# full stop of "see @fig-x." is not part of it.
_REF = re.compile(
    r"(?P<open>\[)?(?P<neg>-)?(?<![\w@.])@(?P<label>(?i:fig|tbl)-[\w-]*\w)(?(open)\])"
)
# code spans and fenced blocks, where "@fig-x" is literal text
_CODE = re.compile(r"(```.*?```|~~~.*?~~~|`[^`\n]*`)", re.DOTALL)


@dataclass(frozen=True)
class Float:
    """A numbered figure or table: ``label`` (its anchor id), ``kind`` ("fig"/"tbl"), ``number``."""

    label: str
    kind: str
    number: int
    caption: str

    @property
    def name(self) -> str:
        """"Figure 3" / "Table 1"."""
        return f"{KIND_NAMES[self.kind]} {self.number}"


def split_cell_options(source: str, where: str = "cell") -> tuple[dict, str]:
    """Split the leading ``#|`` option lines of a code cell from its code.

    Returns ``(options, code)``; ``options`` is ``{}`` when there are none. The
    option lines are YAML once the ``#|`` prefix (and one space) is removed, so
    multi-line values work as in Quarto. Raises ValueError naming ``where`` when
    they are not a YAML mapping.
    """
    lines = source.splitlines()
    n = 0
    while n < len(lines) and lines[n].startswith("#|"):
        n += 1
    if n == 0:
        return {}, source
    body = "\n".join(line[3:] if line.startswith("#| ") else line[2:] for line in lines[:n])
    try:
        options = yaml.safe_load(body)
    except yaml.YAMLError as exc:
        raise ValueError(f"{where}: cannot parse the Quarto cell options (#| lines): {exc}") from exc
    if options is None:
        options = {}
    if not isinstance(options, dict):
        raise ValueError(
            f"{where}: Quarto cell options (#| lines) must be 'key: value' pairs, got {options!r}"
        )
    return options, "\n".join(lines[n:])


def caption_html(text) -> str:
    """Inline Markdown of a caption to HTML (a list, as for sub-figures, is joined with '; ')."""
    if text is None:
        return ""
    if isinstance(text, (list, tuple)):
        text = "; ".join(str(t) for t in text)
    rendered = mistune.html(str(text)).strip()
    if rendered.startswith("<p>") and rendered.endswith("</p>") and rendered.count("<p>") == 1:
        rendered = rendered[3:-4]
    return rendered


def _resolve(text: str, floats: dict[str, Float], missing: list[str]) -> str:
    def replace(match: re.Match) -> str:
        label = match.group("label")
        key = label[:3].lower() + label[3:]
        found = floats.get(key)
        if found is None:
            missing.append(key)
            return f'<strong class="crossref-missing">?@{html.escape(key)}</strong>'
        name = found.name
        if label[0].isupper():
            name = name[0].upper() + name[1:]
        text_ = str(found.number) if match.group("neg") else name
        return f'<a class="crossref" href="#{html.escape(key)}">{text_}</a>'

    parts = _CODE.split(text)
    # even indices are prose, odd ones the code spans captured by the split
    return "".join(p if i % 2 else _REF.sub(replace, p) for i, p in enumerate(parts))


def resolve_references(text: str, floats: dict[str, Float]) -> tuple[str, list[str]]:
    """Replace ``@fig-x``/``@tbl-x`` in Markdown ``text``; returns ``(text, unknown_labels)``."""
    missing: list[str] = []
    return _resolve(text, floats, missing), missing


def _truthy_false(value) -> bool:
    return value is False or (isinstance(value, str) and value.lower() == "false")


def prepare_notebook(nb: nbformat.NotebookNode, name: str = "notebook") -> tuple[
    nbformat.NotebookNode, dict[str, Float], list[str]
]:
    """Apply the cell options and number the floats of ``nb`` (left unchanged).

    Returns ``(copy, floats, unknown_references)`` with ``floats`` in page order.
    Raises ValueError on a duplicate label, naming it and ``name``.
    """
    nb = copy.deepcopy(nb)
    counters = {"fig": 0, "tbl": 0}
    floats: dict[str, Float] = {}
    cells = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            cells.append(cell)
            continue
        options, code = split_cell_options(cell.source, where=f"{name}, cell {index}")
        cell.source = code
        if _truthy_false(options.get("include", True)):
            continue
        if _truthy_false(options.get("output", True)):
            cell.outputs = []
        if _truthy_false(options.get("echo", True)):
            cell.metadata["seglib_hide_input"] = True
        if isinstance(options.get("column"), str):   # Quarto's page-layout column (body, page, screen, ...)
            cell.metadata["seglib_column"] = options["column"]
        label = options.get("label")
        if isinstance(label, str) and label[:4] in ("fig-", "tbl-"):
            kind = label[:3]
            if label in floats:
                raise ValueError(f"{name}: label {label!r} is used by two cells; labels must be unique")
            counters[kind] += 1
            cap = options.get(f"{kind}-cap", "")
            found = Float(label=label, kind=kind, number=counters[kind], caption=str(cap or ""))
            floats[label] = found
            cell.metadata["seglib_xref"] = {
                "label": label,
                "kind": kind,
                "number": found.number,
                "name": found.name,
                "caption_html": caption_html(cap),
            }
            if not cell.outputs:
                # keep the anchor that references point to
                logger.warning("%s: %s has no output", name, label)
                cell.outputs = [nbformat.v4.new_output(
                    "display_data", data={"text/plain": "(this cell produced no output)"})]
        cells.append(cell)
    nb.cells = cells
    missing: list[str] = []
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = _resolve(cell.source, floats, missing)
    for label in dict.fromkeys(missing):
        logger.warning("%s: reference @%s has no figure or table with that label", name, label)
    return nb, floats, list(dict.fromkeys(missing))


def notebook_title(nb: nbformat.NotebookNode, default: str) -> str:
    """The first level-1 Markdown heading of ``nb``, else ``default``."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return default


def drop_stderr(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The notebook without its ``stderr`` stream outputs (progress bars, log lines, warnings).

    They belong to the execution log (papermill's ``--log-output`` and the executed notebook in
    ``build/executed``), not to the report page; both renderers show the page without them.
    """
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = [o for o in cell.outputs
                            if not (o.get("output_type") == "stream" and o.get("name") == "stderr")]
    return nb
