"""Code fingerprints: parsed code, not text; the training scope holds everything a run depends on."""

from __future__ import annotations

import ast

import pytest

from seglib.fingerprint import (INERT, PACKAGE_DIR, REPORT_ONLY, code_fingerprint, in_train_scope, library_files,
                                normalised_code, relative)

CODE = '''"""Module docstring."""
import math


def f(x):
    """Docstring."""
    return math.sqrt(x)  # a comment
'''


def test_comments_docstrings_and_formatting_do_not_count():
    reworded = CODE.replace("Docstring.", "Another docstring,\n    over two lines.").replace("# a comment", "")
    reformatted = reworded.replace("return math.sqrt(x)", "return math.sqrt(\n        x\n    )") + "\n\n"
    assert normalised_code(CODE) == normalised_code(reworded) == normalised_code(reformatted)
    without = CODE.replace('    """Docstring."""\n', "")
    assert normalised_code(without) == normalised_code(CODE)


@pytest.mark.parametrize("change", [("math.sqrt(x)", "math.sqrt(x) + 1"), ("def f(x)", "def f(y=0, x=1)"),
                                    ("import math", "import math as m\nmath = m")])
def test_a_change_of_code_counts(change):
    assert normalised_code(CODE.replace(*change)) != normalised_code(CODE)


def test_a_function_that_is_only_a_docstring_stays_valid():
    assert "Pass" in normalised_code('def f():\n    """Only this."""\n')


def test_scopes():
    assert not in_train_scope("plots/bars.py") and not in_train_scope("report/pages.py")
    assert not in_train_scope("templates/seglib_site/index.html.j2") and not in_train_scope("eval/tables.py")
    assert not in_train_scope("studies/brain/report.py") and in_train_scope("studies/brain/data.py")
    assert in_train_scope("nn/losses.py") and in_train_scope("data/preprocess.py") and in_train_scope("train/loop.py")
    assert in_train_scope("eval/metrics.py") and in_train_scope("studies/pipeline.py")
    assert in_train_scope("some_new_module.py")  # new code is training code until it is listed as report-only
    assert len(code_fingerprint("train")) == 16 and code_fingerprint("train") != code_fingerprint("all")
    with pytest.raises(ValueError, match="scope must be 'train' or 'all'"):
        code_fingerprint("everything")


def _seglib_imports(path) -> set[str]:
    """Every ``seglib.x.y`` module a file imports, at the top or inside a function."""
    tree = ast.parse(path.read_text())
    pkg = "seglib." + ".".join(relative(path).removesuffix(".py").split("/")[:-1])
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("seglib"))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = pkg.rstrip(".").split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            if base.startswith("seglib"):
                out.add(base)
                out.update(f"{base}.{a.name}" for a in node.names)  # from seglib.x import module
    return out


def _module_file(name: str):
    """The library file of module ``seglib.a.b`` (None when ``name`` is not a module, e.g. a function)."""
    parts = name.split(".")[1:]
    for cand in (PACKAGE_DIR.joinpath(*parts).with_suffix(".py"), PACKAGE_DIR.joinpath(*parts, "__init__.py")):
        if parts and cand.is_file():
            return cand
    return None


def test_training_code_never_imports_report_only_code():
    """A run's key covers the training scope only: if training code imported a report-only module,
    a change there could change a run without retraining it."""
    bad = []
    for path in library_files():
        if path.suffix != ".py" or not in_train_scope(relative(path)):
            continue
        for name in sorted(_seglib_imports(path)):
            origin = _module_file(name)
            if origin is not None and not in_train_scope(relative(origin)) and relative(origin) not in INERT:
                bad.append(f"{relative(path)} imports {name}")
    assert not bad, "training code imports report-only modules (REPORT_ONLY):\n" + "\n".join(bad)
    assert REPORT_ONLY
