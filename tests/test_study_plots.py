"""The study's plots, drawn from the committed reference run's results.json: each writes its PNG, states the one
question it answers, closes its figure, keeps its text readable, keys every colour and says which rows did not run."""

from __future__ import annotations

import copy
from pathlib import Path

import matplotlib.pyplot as plt
import pytest
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.text import Text

from pykernels.study import plots
from pykernels.study._common import SectionResult, Skipped
from pykernels.study.report import read_results

COMMITTED = Path(__file__).resolve().parents[1] / "pykernels" / "study" / "results" / "cpu-2core"
FIGURES = [(key, name, draw) for key, files in plots.FIGURES.items() for name, draw in files.items()]


@pytest.fixture(scope="module")
def sections() -> dict[str, SectionResult]:
    return read_results(COMMITTED / "results.json").sections


def _drawn(draw, section: SectionResult) -> Figure:
    """The figure as it is saved (the study's style, laid out and drawn, so tick labels exist); close it after."""
    with plt.rc_context(plots.STYLE):
        fig = draw(section)
        assert fig is not None
        fig.canvas.draw()
    return fig


def _texts(fig: Figure) -> list[Text]:
    return [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]


@pytest.mark.parametrize(("key", "name", "draw"), FIGURES, ids=[name for _, name, _ in FIGURES])
def test_each_plot_writes_its_png_and_closes_its_figure(sections, tmp_path, key, name, draw):
    plt.close("all")
    assert plots.render(draw, sections[key], tmp_path / name)
    written = (tmp_path / name).read_bytes()
    assert written.startswith(b"\x89PNG") and len(written) > 10_000
    assert plt.get_fignums() == []  # a study draws many figures: each is closed once saved


@pytest.mark.parametrize(("key", "name", "draw"), FIGURES, ids=[name for _, name, _ in FIGURES])
def test_each_plot_states_one_question_and_keeps_its_text_readable(sections, key, name, draw):
    question = (draw.__doc__ or "").strip().splitlines()[0]
    assert question.endswith("?") and question.count("?") == 1, f"{draw.__name__}: {question!r}"
    fig = _drawn(draw, sections[key])
    try:
        texts = _texts(fig)
        small = [(t.get_text(), t.get_fontsize()) for t in texts if t.get_fontsize() < 9]
        assert not small, f"{name}: text below 9 pt: {small[:5]}"
        words = " ".join(t.get_text() for t in texts).lower()
        assert "write-up 1" not in words and "write-up 2" not in words  # the write-ups go by name
        legends = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
        assert len(legends) <= 1, f"{name}: {len(legends)} legends"  # one shared key at most
    finally:
        plt.close(fig)


def test_each_section_writes_its_files(sections, tmp_path):
    """draw_section, what report.py calls: the polynomial section's three files, the large problem's two."""
    for key, names in (("poly", list(plots.FIGURES["poly"])), ("large", ["large.png", "large_loss.png"])):
        (tmp_path / key).mkdir()
        assert plots.draw_section(key, sections[key], tmp_path / key) == []
        assert sorted(p.name for p in (tmp_path / key).iterdir()) == sorted(names)
    assert plt.get_fignums() == []


def test_skip_note_counts_the_rows_not_run_by_reason():
    section = SectionResult(
        "t",
        skipped=[
            Skipped("torch-gpu", "no CUDA GPU"),
            Skipped("fit_poly (cpp)-gpu", "no CUDA GPU"),
            Skipped("jax.jit(step)", "jax not installed (optional)"),
        ],
    )
    assert plots.skip_note(section) == "2 GPU rows not run: no CUDA GPU; 1 row not run: jax not installed (optional)"
    assert plots.skip_note(SectionResult("t")) is None


def test_the_speed_figure_says_its_gpu_rows_did_not_run(sections):
    section = sections["speed"]
    assert any("gpu" in s.name for s in section.skipped)  # the committed run had no GPU
    fig = _drawn(plots.figure_speed, section)
    try:
        words = [t.get_text() for t in _texts(fig)]
    finally:
        plt.close(fig)
    assert any("GPU rows not run: no CUDA GPU" in w for w in words), words

    everything_ran = copy.copy(section)
    everything_ran.skipped = []
    fig = _drawn(plots.figure_speed, everything_ran)
    try:
        assert not any("not run" in t.get_text() for t in _texts(fig))
    finally:
        plt.close(fig)


@pytest.mark.parametrize("extra_group", [None, "a group added later"])
def test_every_bar_colour_in_the_polynomial_times_is_keyed(sections, extra_group):
    section = copy.deepcopy(sections["poly"])
    if extra_group:
        section.rows[0]["group"] = extra_group
    fig = _drawn(plots.figure_poly_times, section)
    try:
        (ax,) = fig.axes
        bars = {to_rgba(p.get_facecolor()) for p in ax.patches}
        legend = ax.get_legend()
        keyed = {to_rgba(h.get_facecolor()) for h in legend.legend_handles}
        labels = [t.get_text() for t in legend.get_texts()]
    finally:
        plt.close(fig)
    assert bars <= keyed, "a bar colour with no key entry"
    assert len(keyed) == len(labels) == len({r["group"] for r in section.rows})
    if extra_group:
        assert extra_group in labels


def _poisoned(section: SectionResult, value: float) -> SectionResult:
    """The section with every float of its first rows (and of their traces and losses) set to ``value``."""
    poisoned = copy.deepcopy(section)
    for row in poisoned.rows[:2]:
        for key, field in row.items():
            if isinstance(field, float) and key not in ("lr",):
                row[key] = value
            elif isinstance(field, list) and field and isinstance(field[0], float):
                row[key] = [*field[: len(field) // 2], *[value] * (len(field) - len(field) // 2)]
    return poisoned


@pytest.mark.parametrize("value", [float("inf"), float("nan")], ids=["inf", "nan"])
@pytest.mark.parametrize(("key", "name", "draw"), FIGURES, ids=[name for _, name, _ in FIGURES])
def test_every_figure_draws_rows_whose_numbers_are_not_finite(sections, key, name, draw, value, tmp_path):
    """A diverging row (inf or NaN in its times, MSE, trace or losses) is drawn around, not a crash: the plot is
    saved and its figure closed."""
    before = plt.get_fignums()
    assert plots.draw_section(key, _poisoned(sections[key], value), tmp_path) == []
    assert (tmp_path / name).exists()
    assert plt.get_fignums() == before
