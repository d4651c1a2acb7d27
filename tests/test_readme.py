"""The README's two set-up commands (CI runs the test command verbatim, and both build without isolation), and its
Python code, which runs as pasted."""

from __future__ import annotations

import code
import re
import sys
from pathlib import Path

import pytest
import torch

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


# The README's step counts and sizes, shortened for the test (the text keeps the real ones).
SHORTER = {"200_000": "200", "10_000_000": "100_000", "epochs=200": "epochs=3"}


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.DOTALL)


class _Console(code.InteractiveConsole):
    """Python's interactive console (what ``python`` without arguments runs), raising what it would print."""

    def showsyntaxerror(self, filename=None, **kwargs):
        raise SyntaxError(f"the interactive interpreter cannot take this block as pasted: {sys.exc_info()[1]}")

    def showtraceback(self):
        raise sys.exc_info()[1]


def _run_in_console(block: str, namespace: dict) -> None:
    """Line by line, as a block pasted into the interactive interpreter arrives (a blank line ends a compound
    statement there, and a statement right after an indented block without one is a syntax error)."""
    console = _Console(namespace)
    for line in block.splitlines():
        console.push(line)
    assert not console.push(""), "the pasted block left a statement unfinished"


def _run_as_script(block: str, namespace: dict) -> None:
    exec(compile(block, "README.md", "exec"), namespace)


@pytest.mark.parametrize("run", [_run_as_script, _run_in_console], ids=["as-a-script", "pasted-into-python"])
def test_every_python_block_of_the_readme_runs_as_pasted(run):
    """Each block whole, in a fresh namespace, as a file and as pasted into ``python``; only the step counts and
    sizes are shortened. The Hessian it computes is checked against 2/N VᵀV."""
    blocks = _python_blocks()
    assert blocks
    for block in blocks:
        shortened = block
        for long, short in SHORTER.items():
            shortened = shortened.replace(long, short)
        namespace: dict = {"__name__": "__main__"}
        run(shortened, namespace)
        if "hessian" in namespace:
            hessian = namespace["hessian"]
            x = namespace["x"]
            powers = x.unsqueeze(-1) ** torch.arange(hessian.shape[0])
            torch.testing.assert_close(hessian, 2 / x.numel() * powers.T @ powers, rtol=1e-4, atol=1e-4)


ANSWER_BEGIN, ANSWER_END = "<!-- the report's answer: begin -->", "<!-- the report's answer: end -->"


def test_the_readme_quotes_the_committed_reports_answer():
    """'What the study shows' is the answer that opens the committed reference report, word for word: every
    paragraph of its "## The answer" section but the closing pointer to the tables (after a study re-run, copy the
    new section between the markers)."""
    readme = (ROOT / "README.md").read_text()
    quoted = readme[readme.index(ANSWER_BEGIN) + len(ANSWER_BEGIN) : readme.index(ANSWER_END)].strip()
    report = (ROOT / "pykernels" / "study" / "results" / "cpu-2core" / "report.md").read_text()
    start = report.index("## The answer\n") + len("## The answer\n")
    paragraphs = report[start : report.index("\n## ", start)].strip().split("\n\n")
    assert quoted == "\n\n".join(paragraphs[:-1])
    assert paragraphs[-1].startswith("Every number above")
