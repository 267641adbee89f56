"""Fingerprints of seglib's own code, the way build systems key outputs by what produced them.

Two scopes:

* ``"train"``: the library code that trains and evaluates a run (models, losses, metrics, training,
  data reading, preprocessing, sampling, the studies' data and evaluation modules). It is part of
  every run's cache key, so a change there retrains.
* ``"all"``: every file of the library (the report-side modules, the site templates too). It is part
  of an executed notebook's stamp, so a change to a table or figure function re-executes the
  notebook, which finds its runs in the cache and trains nothing.

A ``.py`` file is fingerprinted by its parsed code: the AST without docstrings, so comments,
docstrings, blank lines and formatting do not count (a GPU grid costs hours). Other files (templates,
CSS) count byte for byte. The parse depends on the Python version's AST, so another Python minor
version gives other fingerprints: the runs are retrained, as they may compute differently anyway.

:data:`REPORT_ONLY` lists what is outside the ``"train"`` scope; everything else is inside, so a new
module trains-side by default. ``tests/test_fingerprint.py`` checks that no train-scope module
imports a report-only one.
"""

from __future__ import annotations

import ast
import fnmatch
import functools
import hashlib
import threading
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent

#: Library files (glob patterns relative to the package folder) that cannot change what a run
#: computes: the command line, notebook execution, the run cache's bookkeeping, statistics, tables,
#: figures, the site, the notebook session and the measurements that notebooks make themselves.
REPORT_ONLY: tuple[str, ...] = (
    "__init__.py", "cli.py", "predict.py", "config/*", "runs/*", "report/*", "plots/*", "templates/*",
    "eval/stats.py", "eval/tables.py", "studies/session.py", "studies/collect.py",
    "studies/*/__init__.py", "studies/*/report.py", "studies/*/measure.py", "studies/*/step.py",
)
#: Report-only modules that training code may import for their types alone: the configuration's
#: dataclasses and validation (a run sees only the resolved configuration, which is in its key), the
#: typed cell read from that configuration (``RunConfig``) and the run cache's record of what a run
#: returns (``RunOutputs``).
INERT: tuple[str, ...] = ("config/__init__.py", "config/schema.py", "config/validate.py", "config/resolve.py",
                          "config/cell.py", "runs/__init__.py", "runs/cache.py")


def library_files() -> list[Path]:
    """Every file of the library, sorted (no caches, no compiled files)."""
    out = []
    for p in PACKAGE_DIR.rglob("*"):
        if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".pyc", ".pyo"):
            out.append(p)
    return sorted(out)


def relative(path: Path) -> str:
    return path.resolve().relative_to(PACKAGE_DIR).as_posix()


def in_train_scope(rel: str) -> bool:
    """Whether the library file ``rel`` (relative to the package folder) can change a run's result."""
    return not any(fnmatch.fnmatchcase(rel, pat) for pat in REPORT_ONLY)


#: CPython 3.11 keeps the AST converter's recursion depth per interpreter, not per thread: two threads parsing
#: at once raise ``SystemError: AST constructor recursion depth mismatch`` (gh-106905), seen when two studies
#: fingerprinted the library side by side. One parse at a time.
_AST_LOCK = threading.Lock()


def normalised_code(source: str, filename: str = "<code>") -> str:
    """The parsed code of ``source`` without docstrings, as a string (``ast.dump``)."""
    with _AST_LOCK:
        return _normalised_code(source, filename)


def _normalised_code(source: str, filename: str) -> str:
    tree = ast.parse(source, filename)
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree, annotate_fields=False, include_attributes=False)


@functools.lru_cache(maxsize=512)
def _file_digest(path: str, mtime_ns: int, size: int) -> str:
    p = Path(path)
    data = p.read_bytes()
    if p.suffix == ".py":
        data = normalised_code(data.decode("utf-8"), path).encode("utf-8")
    return hashlib.sha256(data).hexdigest()


def file_digest(path: Path) -> str:
    """SHA-256 of a library file's parsed code (``.py``) or bytes (anything else)."""
    st = path.stat()
    return _file_digest(str(path), st.st_mtime_ns, st.st_size)


def code_fingerprint(scope: str = "train", length: int = 16) -> str:
    """Fingerprint of the library's code in ``scope`` (``"train"`` or ``"all"``)."""
    if scope not in ("train", "all"):
        raise ValueError(f"scope must be 'train' or 'all', got {scope!r}")
    h = hashlib.sha256()
    for p in library_files():
        rel = relative(p)
        if scope == "train" and not in_train_scope(rel):
            continue
        h.update(f"{rel}\0{file_digest(p)}\n".encode())
    return h.hexdigest()[:length]
