"""The README's two set-up commands: CI runs the test command verbatim, and both build without isolation."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    return re.findall(r"```bash\n(python3 -m venv .venv .*)\n```", (ROOT / "README.md").read_text())


def test_readme_has_exactly_two_setup_commands():
    commands = _readme_commands()
    assert len(commands) == 2
    study, tests = commands
    assert study.endswith("pykernels-study") and tests.endswith("python -m pytest")
    for command in commands:
        assert "--no-build-isolation" in command and "-c .ci/constraints.txt" in command


def test_ci_runs_the_readme_test_command():
    assert _readme_commands()[1] in (ROOT / ".ci" / "run").read_text().splitlines()


def test_constraints_pin_torch_and_the_package_keeps_a_range():
    assert "torch==2.13.0" in (ROOT / ".ci" / "constraints.txt").read_text().splitlines()
    assert '"torch>=' in (ROOT / "pyproject.toml").read_text()
