"""The test matrix's axes, defined once (backends x dtypes x devices x cases), and shared helpers."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

import pykernels

# Backends under test against the reference; the "torch" backend *is* the reference (tested in test_reference).
KERNEL_BACKENDS = ["cpp", "numba"]
DTYPES = [torch.float32, torch.float64]
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

# Relative tolerances against a float64 reference computed from the same (upcast) inputs. The kernels do their
# math in float64, so float32 results are off by little more than their final rounding.
RTOL = {torch.float32: 2e-6, torch.float64: 1e-12, torch.float16: 2e-3, torch.bfloat16: 2e-2}


@dataclass(frozen=True)
class Case:
    """One input configuration: shape of x, polynomial degree, whether x/y are non-contiguous views."""

    name: str
    shape: tuple[int, ...]
    degree: int
    contiguous: bool = True

    def __str__(self) -> str:
        return self.name


CASES = [
    Case("n1", (1,), 4),
    Case("degree0", (50,), 0),
    Case("seed_column", (100, 1), 4),
    Case("matrix", (7, 13), 3),
    Case("high_degree", (257,), 11),  # beyond the unrolled degrees: the dynamic-degree path
    Case("noncontiguous", (300,), 5, contiguous=False),
    Case("parallel", (100_003,), 4),  # several chunks, a ragged tail: the threaded path
]

DOT_LENGTHS = [1, 7, 100, 100_003]


def make_tensor(shape, dtype, device, *, contiguous=True, low=-1.5, high=1.5, seed=0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    if contiguous:
        data = torch.empty(shape, dtype=torch.float64).uniform_(low, high, generator=generator)
        return data.to(dtype=dtype, device=device)
    # every other element of a twice-as-long last dimension: same shape, non-unit stride
    wide = torch.empty((*shape[:-1], 2 * shape[-1]), dtype=torch.float64).uniform_(low, high, generator=generator)
    view = wide.to(dtype=dtype, device=device)[..., ::2]
    assert not view.is_contiguous()
    return view


def make_poly_inputs(case: Case, dtype, device, *, requires_grad=False):
    x = make_tensor(case.shape, dtype, device, contiguous=case.contiguous, seed=1)
    y = make_tensor(case.shape, dtype, device, contiguous=case.contiguous, seed=2)
    coeffs = make_tensor((case.degree + 1,), dtype, device, seed=3)
    for t in (x, y, coeffs):
        t.requires_grad_(requires_grad)
    return x, y, coeffs


def make_dot_inputs(n: int, dtype, device, *, requires_grad=False):
    a = make_tensor((n,), dtype, device, seed=4).requires_grad_(requires_grad)
    b = make_tensor((n,), dtype, device, seed=5).requires_grad_(requires_grad)
    return a, b


def wide(*tensors: torch.Tensor):
    """Detached float64 copies: inputs of the reference the kernels are compared with."""
    return tuple(t.detach().double() for t in tensors)


def assert_close(actual: torch.Tensor, expected: torch.Tensor, dtype, *, scale=None) -> None:
    """|actual - expected| <= rtol * (|expected| + scale), scale defaulting to the largest |expected| entry, so
    sums with cancellation are judged against the size of their terms."""
    expected = expected.to(actual.dtype).double()
    actual = actual.detach().double()
    if scale is None:
        scale = expected.abs().max().item() if expected.numel() else 0.0
    torch.testing.assert_close(actual.cpu(), expected.cpu(), rtol=RTOL[dtype], atol=RTOL[dtype] * scale)


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)


__all__ = ["pykernels"]


# The routes a call can take: eagerly, through torch.compile (fullgraph, dynamic=True: numbers and sizes symbolic
# from the first call, so a check must hold as a guard) and through torch.export (numbers are constants).
ROUTES = ["eager", "compile", "export"]


class _Called(torch.nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, *args):
        return self.fn(*args)


def routed(route: str, fn):
    """fn as the route runs it: the same callable for repeated calls (a compiled one keeps its guards)."""
    if route == "eager":
        return fn
    if route == "compile":
        torch._dynamo.reset()
        return torch.compile(fn, fullgraph=True, dynamic=True, backend="aot_eager")
    assert route == "export"
    return lambda *args: torch.export.export(_Called(fn), args).module()(*args)


def markdown_report_problems(report: str) -> list[str]:
    """What keeps a Markdown report from rendering as written, read from markdown-it-py's token stream (CommonMark
    with GFM tables): a table block that parsed as something else (a header and delimiter row of different widths
    makes a paragraph), a row whose cells differ in number from its header's (GFM pads short rows and drops a long
    row's extra cells), and numbers in e-notation."""
    import re

    from markdown_it import MarkdownIt

    lines = report.splitlines()
    tokens = MarkdownIt("commonmark").enable("table").parse(report)
    problems, tables, header_cells, cells, written, line = [], 0, None, 0, 0, 0
    for token in tokens:
        if token.type == "table_open":
            tables += 1
            header_cells = None
        elif token.type == "tr_open":
            cells, line = 0, token.map[0]
            # the row as written: cells between unescaped pipes (GFM splits at them, in code spans too)
            written = len(re.split(r"(?<!\\)\|", lines[line].strip()[1:-1]))
        elif token.type in ("th_open", "td_open"):
            cells += 1
        elif token.type == "tr_close":
            header_cells = cells if header_cells is None else header_cells
            if cells != header_cells or written != header_cells:
                problems.append(
                    f"table {tables}, line {line + 1}: {written} cells written, {cells} parsed, "
                    f"{header_cells} in the header"
                )
    blocks = sum(
        1 for i, line in enumerate(lines) if line.startswith("|") and (i == 0 or not lines[i - 1].startswith("|"))
    )
    if tables != blocks:
        problems.append(f"{blocks} table blocks written, {tables} parsed as tables")
    problems += [f"e-notation: {match.group()!r}" for match in re.finditer(r"\S*\d[eE][+-]?\d\S*", report)]
    return problems
