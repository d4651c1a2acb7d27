"""An asv plugin (``"plugins": [".publish_plugin"]`` in asv.conf.json) that makes ``asv publish`` tell which way is
worse for rates and speedups, and leaves out of the dashboard what was never measured.

asv 0.6 takes every value as lower-is-better and has no setting to say otherwise: a speedup or GB/s that went *up*
lands on its Regressions page and in red in its list, and a real drop is never reported. This plugin, loaded by
asv itself (run asv from ``asv_bench/``), changes three things:

* regression detection runs on the reciprocal of a higher-is-better benchmark's values (seconds per GB, a time ratio
  instead of a speedup: lower is better there), and the values found are turned back, so the Regressions page lists
  drops of a speedup and never its rises; the Atom feed (``regressions.xml``) words them as drops: a speedup falling
  from 10x to 7x is a "30.00% regression (a drop: higher is better)", 30.00% worse than its best, where asv's
  wording from the values alone would say -30.00%;
* the published ``index.json`` marks those benchmarks ``"higher_is_better": true``, and the dashboard's scripts read
  it: the Regressions page's factor is best over last for them (above 1 is worse, as for times), the list colours a
  rise green and a drop red, and the graph's axis says "higher is better";
* benchmarks with no result on any machine (the suite has more than the tracked set the history measures) are left
  out of the published index, so the grid shows a tile, with its thumbnail, for each benchmark that has data.

The direction is decided by :func:`higher_is_better`, which ``tracked.py compare`` uses too.
"""

from __future__ import annotations

import json
import re
import types
from pathlib import Path

# A benchmark is higher-is-better when it is a rate (GB/s), a fraction of the machine's limit or a speedup; every
# other value (times, ns per step, ratios of a cost over a baseline such as track_ratio, track_recording_cost or
# track_fit_over_poly_mse_calls, errors) is lower-is-better, as asv assumes. The unit alone cannot tell: "x" is a
# speedup's unit and a cost ratio's too.
HIGHER_IS_BETTER_UNITS = {"GB/s", "fraction"}  # "fraction": of the machine's limit (FractionOfLimit)
HIGHER_IS_BETTER_NAME = re.compile(r"\.track_speedup\w*$")


def higher_is_better(name: str, unit: str | None) -> bool:
    """Whether a benchmark (its full name, e.g. ``bench_ops.Speedup.track_speedup``, and its unit) improves upward."""
    return unit in HIGHER_IS_BETTER_UNITS or bool(HIGHER_IS_BETTER_NAME.search(name.split("(", 1)[0]))


def _reciprocal_steps(steps):
    """asv's steps (left, right, value, min, error) of 1/value: the error keeps its relative size."""
    return [(left, right, 1 / value, 1 / value, err / value**2) for left, right, value, _, err in steps]


def _feed_entry_of_a_drop(title: str, summary: str, jump: tuple, last: float, best: float) -> tuple[str, str]:
    """The title and summary of a feed entry that asv worded for a rise, reworded for a higher-is-better benchmark's
    drop: asv's percentages, (new - old) / old and (last - best) / best, are negative for a drop, which reads as an
    improvement; ours are the drop's size, positive as a regression's is, and the entry says higher is better."""
    _, _, before, after = jump
    asv_jump, asv_best = f"{100 * (after - before) / before:.2f}%", f"{100 * (last - best) / best:.2f}%"
    drop, below_best = f"{100 * (before - after) / before:.2f}%", f"{100 * (best - last) / best:.2f}%"
    reworded = []
    for text, old, new in [
        (title, f"{asv_jump} ", f"{drop} "),
        (summary, f">{asv_jump} regression</a>", f">{drop} regression</a> (a drop: higher is better)"),
        (summary, f"({asv_best} worse", f"({below_best} worse"),
    ]:
        if text.count(old) != 1:  # asv's wording changed: fail loudly rather than publish the sign backwards
            raise RuntimeError(f"publish_plugin: a feed entry no longer has {old!r} once (another asv version?)")
        reworded.append((old, new))
    (title_old, title_new), *summary_changes = reworded
    for old, new in summary_changes:
        summary = summary.replace(old, new)
    return title.replace(title_old, title_new), summary


def setup() -> None:
    """asv's plugin hook, run when asv imports the plugin: wrap the publishing of regressions and of the whole
    dashboard (asv is pinned, 0.6.6; the wrapped functions are checked to exist)."""
    from asv.commands.publish import Publish
    from asv.plugins import regressions as regressions_module
    from asv.plugins.regressions import Regressions

    if getattr(Publish.run, "_pykernels", False):
        return
    higher: set[str] = set()
    publish_regressions = Regressions.publish.__func__
    process_regression = Regressions._process_regression.__func__
    save_feed = Regressions._save_feed.__func__
    publish_run = Publish.run.__func__

    def publish(cls, conf, repo, benchmarks, graphs, revisions):
        higher.clear()
        higher.update(name for name, entry in benchmarks.items() if higher_is_better(name, entry.get("unit")))
        return publish_regressions(cls, conf, repo, benchmarks, graphs, revisions)

    def _process(cls, regressions, revision_to_hash, repo, all_params, graph_data, graph):
        j, entry_name, steps, threshold = graph_data
        if graph.benchmark_name not in higher:
            return process_regression(cls, regressions, revision_to_hash, repo, all_params, graph_data, graph)
        steps = [step for step in steps if step[2] is not None and step[2] > 0]
        first = len(regressions)
        graph_data = (j, entry_name, _reciprocal_steps(steps), threshold)
        process_regression(cls, regressions, revision_to_hash, repo, all_params, graph_data, graph)
        for entry in regressions[first:]:  # back to the benchmark's own values: [.., last, best, jumps]
            entry[4], entry[5] = 1 / entry[4], 1 / entry[5]
            entry[6] = [(a, b, 1 / before, 1 / after) for a, b, before, after in entry[6]]

    def _save_feed(cls, conf, benchmarks, data, revisions, revision_to_hash):
        # asv words each entry of regressions.xml from the (restored) values alone: a speedup falling from 10x to 7x
        # would read "-30.00% regression". It makes one FeedEntry per jump, in the order of ``data``: a stand-in
        # FeedEntry, given asv's feed module's place while it runs, rewords those of higher-is-better benchmarks.
        jumps = iter([(name, jump, last, best) for name, _, _, _, last, best, found in data for jump in found])
        feed = regressions_module.feed

        def entry(title, updated, link=None, content=None, id_context=None, id_date=None):
            name, jump, last, best = next(jumps)
            if id_context[0] != name:
                raise RuntimeError(f"publish_plugin: the feed's entries are not in regressions' order ({name})")
            if name.split("(", 1)[0] in higher:
                title, content = _feed_entry_of_a_drop(title, content, jump, last, best)
            return feed.FeedEntry(title, updated, link, content, id_context, id_date)

        regressions_module.feed = types.SimpleNamespace(FeedEntry=entry, write_atom=feed.write_atom)
        try:
            return save_feed(cls, conf, benchmarks, data, revisions, revision_to_hash)
        finally:
            regressions_module.feed = feed

    def run(cls, conf, *args, **kwargs):
        result = publish_run(cls, conf, *args, **kwargs)
        finish(Path(conf.html_dir))
        return result

    run._pykernels = True
    Regressions.publish = classmethod(publish)
    Regressions._process_regression = classmethod(_process)
    Regressions._save_feed = classmethod(_save_feed)
    Publish.run = classmethod(run)


# (file, asv 0.6.6's text, ours): each must match exactly once, or publishing fails loudly
_SCRIPT_PATCHES = [
    (
        "regressions.js",
        "var factor = new_value / old_value;",
        "var factor = benchmark.higher_is_better ? old_value / new_value : new_value / old_value;",
    ),
    (
        "regressions.js",
        "var factor = last_value / best_value;",
        "var factor = benchmark.higher_is_better ? best_value / last_value : last_value / best_value;",
    ),
    (
        "summarylist.js",
        "if (change > 5) {",
        "var worse = $.asv.main_json.benchmarks[row.name].higher_is_better ? -change : change;\n"
        "                if (worse > 5) {",
    ),
    ("summarylist.js", "else if (change < -5) {", "else if (worse < -5) {"),
    (
        "graphdisplay.js",
        "options.yaxis.axisLabel = $.asv.main_json.benchmarks[current_benchmark].unit;",
        "options.yaxis.axisLabel = $.asv.main_json.benchmarks[current_benchmark].unit +"
        " ($.asv.main_json.benchmarks[current_benchmark].higher_is_better ? ' (higher is better)' : '');",
    ),
    (
        "graphdisplay.js",
        "options.yaxis.axisLabel = unit_name;",
        "options.yaxis.axisLabel = unit_name +"
        " ($.asv.main_json.benchmarks[current_benchmark].higher_is_better ? ' (higher is better)' : '');",
    ),
]


def finish(html: Path) -> None:
    """After asv publish wrote ``html``: mark the higher-is-better benchmarks in index.json, drop the benchmarks with
    no data, and patch the scripts that read the direction."""
    index = json.loads((html / "index.json").read_text())
    measured = {path.stem for path in (html / "graphs").glob("**/*.json") if path.stem != "summary"}
    index["benchmarks"] = {name: entry for name, entry in index["benchmarks"].items() if name in measured}
    for name, entry in index["benchmarks"].items():
        entry["higher_is_better"] = higher_is_better(name, entry.get("unit"))
    (html / "index.json").write_text(json.dumps(index, separators=(",", ":")))
    for summary in (html / "graphs").glob("**/summary.json"):  # the list's rows, per machine and environment
        rows = json.loads(summary.read_text())
        summary.write_text(json.dumps([row for row in rows if row["name"] in index["benchmarks"]]))
    for name, old, new in _SCRIPT_PATCHES:
        script = html / name
        text = script.read_text()
        if text.count(old) != 1:
            raise RuntimeError(f"publish_plugin: {name} no longer has {old!r} once (another asv version?)")
        script.write_text(text.replace(old, new))
