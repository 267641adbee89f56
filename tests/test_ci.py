"""The CI script runs the README's test command, and the Makefile's targets do what the README says."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_commands():
    text = (ROOT / "README.md").read_text()
    return re.findall(r"^\s*(make \w+)\s*$", text, re.M)


def test_readme_names_exactly_two_setup_commands():
    setup = (ROOT / "README.md").read_text().split("## Set-up", 1)[1].split("\n## ", 1)[0]
    cmds = re.findall(r"^\s*(make \w+)\s*$", setup, re.M)
    assert cmds == ["make report", "make test"]


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in readme_commands()
    lines = [ln.strip() for ln in ci.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    assert "make test" in lines
    assert ci.startswith("#!/usr/bin/env bash") and "set -euo pipefail" in ci


def test_makefile_installs_cpu_torch_kernel_and_runs_pytest():
    mk = (ROOT / "Makefile").read_text()
    assert "torch==2.13.0" in mk
    assert "ipykernel install" in mk and "--name seglib" in mk
    test_target = mk.split("\ntest:", 1)[1].split("\n\n", 1)[0]
    assert "pytest" in test_target
    report_target = mk.split("\nreport:", 1)[1].split("\n\n", 1)[0]
    assert "seglib report" in report_target


def test_kernel_name_is_the_same_everywhere():
    from seglib.report.notebooks import KERNEL_NAME

    assert KERNEL_NAME == "seglib"
    quarto = (ROOT / "_quarto.yml")
    if quarto.exists():
        assert re.search(r"jupyter:\s*seglib", quarto.read_text())
