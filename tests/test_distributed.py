"""pykernels ops inside DistributedDataParallel (gloo, 2 processes on loopback) train exactly like one process on
the full data, batched fits sharded across ranks equal one process fitting every series, and a fit of sharded data
from its all-reduced sufficient statistics equals one process's fit of all the data."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import pykernels
from pykernels import distributed

STEPS, LR, DEGREE = 40, 0.5, 4
# far below the default process-group timeout (30 minutes): a rank left waiting in a collective fails the test fast
GROUP_TIMEOUT = datetime.timedelta(seconds=30)


def _init_process_group(rank: int, world: int, init_file: str) -> None:
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world, timeout=GROUP_TIMEOUT
    )


def _run_ranks(function, tmp_path, limit: float = 300) -> None:
    """``function(rank, 2, init_file, out_dir)`` in 2 spawned processes; fails if they do not finish in ``limit``
    seconds (a hang) or one fails (an abort: SIGABRT)."""
    context = mp.start_processes(
        function, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=False, start_method="spawn"
    )
    deadline = time.monotonic() + limit
    try:
        while not context.join(timeout=5):
            assert time.monotonic() < deadline, f"the processes did not finish in {limit} s"
    finally:
        for process in context.processes:
            if process.is_alive():
                process.kill()


def _rank_main(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    _init_process_group(rank, world, init_file)
    try:
        x, y = distributed.demo_data(400)
        start = time.perf_counter()
        losses = distributed.train_ddp(x[rank::world], y[rank::world], DEGREE, LR, STEPS)
        seconds = time.perf_counter() - start
        series = torch.stack([torch.sin(3 * x + phase) for phase in torch.linspace(0, 1, 7, dtype=x.dtype)])
        sharded = distributed.fit_poly_sharded(x, series, DEGREE, lr=LR, steps=STEPS)
        Path(out_dir, f"rank{rank}.json").write_text(
            json.dumps(
                {
                    "losses": losses,
                    "seconds": seconds,
                    "coeffs": sharded.coeffs.tolist(),
                    "trace": sharded.trace.tolist(),
                }
            )
        )
    finally:
        dist.destroy_process_group()


def test_ddp_training_and_sharded_fits_match_one_process(tmp_path):
    _run_ranks(_rank_main, tmp_path)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]

    x, y = distributed.demo_data(400)
    model = distributed.PolyFitModel(DEGREE)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    single = []
    start = time.perf_counter()
    for _ in range(STEPS):
        optimizer.zero_grad()
        loss = model(x, y)
        loss.backward()
        optimizer.step()
        single.append(loss.item())
    single_seconds = time.perf_counter() - start
    print(
        f"DDP 2 processes: {ranks[0]['seconds']:.3f} s, 1 process: {single_seconds:.3f} s; "
        f"loss {single[0]:.6f} -> {single[-1]:.6f} (1 process), {ranks[0]['losses'][-1]:.6f} (DDP)"
    )
    for rank in ranks:
        torch.testing.assert_close(torch.tensor(rank["losses"]), torch.tensor(single), rtol=1e-12, atol=1e-14)

    series = torch.stack([torch.sin(3 * x + phase) for phase in torch.linspace(0, 1, 7, dtype=x.dtype)])
    expected = pykernels.fit_poly(x, series, DEGREE, lr=LR, steps=STEPS)
    for rank in ranks:
        torch.testing.assert_close(torch.tensor(rank["coeffs"], dtype=x.dtype), expected.coeffs, rtol=0, atol=0)
        torch.testing.assert_close(torch.tensor(rank["trace"], dtype=x.dtype), expected.trace, rtol=0, atol=0)


def _gram_rank_main(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    _init_process_group(rank, world, init_file)
    try:
        x, y = distributed.demo_data(401)  # uneven shards: 201 and 200 points
        series = torch.stack([torch.sin(3 * x + phase) for phase in torch.linspace(0, 1, 3, dtype=x.dtype)])
        collectives = {}
        for check in (True, False):
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
                fit = distributed.fit_poly_distributed(
                    x[rank::world], y[rank::world], DEGREE, lr=LR, steps=STEPS, check_layout=check
                )
            collectives[str(check)] = sorted(e.name for e in profile.events() if e.name.startswith("gloo:"))
        errors = {}
        for name, shard in {  # layouts that differ between the ranks, and no point anywhere
            "degree": (x, y, DEGREE + rank),
            "batch": (x, y if rank else series, DEGREE),
            "dtype": (x.float() if rank else x, y.float() if rank else y, DEGREE),
            "empty": (x[:0], y[:0], DEGREE),
            "bad_shard_on_rank_1": (x[:-1] if rank else x, y, DEGREE),  # rank 0 must not wait for rank 1
            "float16_on_rank_1": (x.half() if rank else x, y.half() if rank else y, DEGREE),
        }.items():
            try:
                distributed.fit_poly_distributed(*shard, lr=LR, steps=STEPS)
                errors[name] = None
            except (TypeError, ValueError) as error:
                errors[name] = f"{type(error).__name__}: {error}"
        batched = distributed.fit_poly_distributed(
            x[rank::world].float(), series[:, rank::world].float(), DEGREE, lr=LR, steps=STEPS
        )
        empty = distributed.fit_poly_distributed(  # rank 1 holds no points: it adds zeros
            x[:0] if rank else x, y[:0] if rank else y, DEGREE, lr=LR, steps=STEPS
        )
        Path(out_dir, f"gram{rank}.json").write_text(
            json.dumps(
                {
                    "collectives": collectives,
                    "errors": errors,
                    **{
                        name: {"coeffs": result.coeffs.tolist(), "trace": result.trace.tolist()}
                        for name, result in (("single", fit), ("batched", batched), ("empty", empty))
                    },
                }
            )
        )
    finally:
        dist.destroy_process_group()


def test_a_fit_of_sharded_data_is_the_fit_of_all_the_data_after_one_collective(tmp_path):
    """fit_poly_distributed on 2 gloo processes, each holding every other point: one all_reduce for the whole fit
    (after a 4-integer layout check), and every rank gets one process's gram fit of all the points (the sums add in
    another order: to 1e-12); layouts that differ between ranks are a ValueError on every rank, not an abort."""
    _run_ranks(_gram_rank_main, tmp_path)
    ranks = [json.loads((tmp_path / f"gram{r}.json").read_text()) for r in range(2)]
    x, y = distributed.demo_data(401)
    series = torch.stack([torch.sin(3 * x + phase) for phase in torch.linspace(0, 1, 3, dtype=x.dtype)])
    expected = {
        "single": pykernels.fit_poly(x, y, DEGREE, lr=LR, steps=STEPS, method="gram"),
        "batched": pykernels.fit_poly(x.float(), series.float(), DEGREE, lr=LR, steps=STEPS, method="gram"),
        "empty": pykernels.fit_poly(x, y, DEGREE, lr=LR, steps=STEPS, method="gram"),
    }
    for rank in ranks:
        # the layout check's all_gather of 4 integers, then the sums' one all_reduce; without the check, that alone
        assert rank["collectives"] == {"True": ["gloo:all_gather", "gloo:all_reduce"], "False": ["gloo:all_reduce"]}
        assert "differ in degree: 4 on rank 0, 5 on rank 1" in rank["errors"]["degree"]
        assert "batch of series (B, or one fit): 3 on rank 0, 'one fit' on rank 1" in rank["errors"]["batch"]
        assert "dtype: torch.float64 on rank 0, torch.float32 on rank 1" in rank["errors"]["dtype"]
        assert rank["errors"]["empty"] == "ValueError: no rank holds any points: every shard of y is empty"
        for name, want in expected.items():
            for got, wanted in zip((rank[name]["coeffs"], rank[name]["trace"]), want, strict=True):
                rtol = 1e-12 if wanted.dtype == torch.float64 else 1e-6
                torch.testing.assert_close(torch.tensor(got, dtype=wanted.dtype), wanted, rtol=rtol, atol=rtol)
    failed = "ValueError: pykernels.distributed.fit_poly_distributed: rank(s) [1] failed before the collective"
    for case, own in (
        ("bad_shard_on_rank_1", "ValueError: y must be (N,) or (B, N) and x (N,)"),
        ("float16_on_rank_1", "TypeError: x must be a floating-point tensor"),
    ):
        assert ranks[0]["errors"][case] == ranks[1]["errors"][case], case
        assert ranks[0]["errors"][case].startswith(f"{failed} (rank 1: {own}"), ranks[0]["errors"][case]


def _attempt(call) -> str | None:
    """None if ``call()`` returns, else its error as "Type: message"."""
    try:
        call()
    except (Exception, KeyboardInterrupt) as error:
        return f"{type(error).__name__}: {error}"
    return None


class InterruptedLr(float):
    """A learning rate whose check is interrupted (as by Ctrl-C) on the rank that passes it."""

    def __float__(self) -> float:
        raise KeyboardInterrupt("interrupted while checking lr")


def _mismatch_rank_main(rank: int, world: int, init_file: str, out_dir: str) -> None:
    """Every entry point called with arguments that differ between the two ranks, or that fail one rank's own
    checks, one after the other in one process group: each must raise on both ranks at once (a rank left waiting
    would time out after GROUP_TIMEOUT, an abort would kill the process)."""
    torch.set_num_threads(1)
    _init_process_group(rank, world, init_file)
    try:
        x, y = distributed.demo_data(101)
        series = torch.stack([torch.sin(3 * x + phase) for phase in torch.linspace(0, 1, 5, dtype=x.dtype)])
        other = 1 if rank else 0  # 1 on rank 1 only
        fit = {"lr": LR, "steps": STEPS}
        cases = {
            "sharded degree": lambda: distributed.fit_poly_sharded(x, series, DEGREE + other, **fit),
            "sharded steps": lambda: distributed.fit_poly_sharded(x, series, DEGREE, lr=LR, steps=STEPS + other),
            "sharded lr": lambda: distributed.fit_poly_sharded(x, series, DEGREE, lr=LR * (1 + other), steps=STEPS),
            "sharded dtype": lambda: distributed.fit_poly_sharded(
                x.float() if rank else x, series.float() if rank else series, DEGREE, **fit
            ),
            "sharded batch": lambda: distributed.fit_poly_sharded(x, series[: 5 - other], DEGREE, **fit),
            "sharded contents": lambda: distributed.fit_poly_sharded(x, series + other, DEGREE, **fit),
            "sharded init": lambda: distributed.fit_poly_sharded(
                x, series, DEGREE, init=torch.full((DEGREE + 1,), 0.1 * other, dtype=x.dtype), **fit
            ),
            "sharded bad x on rank 1": lambda: distributed.fit_poly_sharded(
                x[:-1] if rank else x, series, DEGREE, **fit
            ),
            "sharded float16 on rank 1": lambda: distributed.fit_poly_sharded(
                x.half() if rank else x, series.half() if rank else series, DEGREE, **fit
            ),
            "ddp steps": lambda: distributed.train_ddp(x[rank::world], y[rank::world], DEGREE, LR, 3 + other),
            "ddp lr": lambda: distributed.train_ddp(x[rank::world], y[rank::world], DEGREE, LR * (1 + other), 3),
            "ddp degree": lambda: distributed.train_ddp(x[rank::world], y[rank::world], DEGREE + other, LR, 3),
            "ddp dtype": lambda: distributed.train_ddp(
                x[rank::world].float() if rank else x[rank::world],
                y[rank::world].float() if rank else y[rank::world],
                DEGREE,
                LR,
                3,
            ),
            "ddp bad y on rank 1": lambda: distributed.train_ddp(
                x[rank::world], y[rank::world][: -other or None], DEGREE, LR, 3
            ),
            "gram steps": lambda: distributed.fit_poly_distributed(
                x[rank::world], y[rank::world], DEGREE, lr=LR, steps=STEPS + other
            ),
            "gram lr": lambda: distributed.fit_poly_distributed(
                x[rank::world], y[rank::world], DEGREE, lr=LR * (1 + other), steps=STEPS
            ),
            "gram bad record_every on rank 1": lambda: distributed.fit_poly_distributed(
                x[rank::world], y[rank::world], DEGREE, lr=LR, steps=STEPS, record_every=1 - other
            ),
            "interrupted on rank 1": lambda: distributed.fit_poly_sharded(
                x, series, DEGREE, lr=InterruptedLr(LR) if rank else LR, steps=STEPS
            ),
            "moments degree": lambda: distributed.all_reduced_moments(x[rank::world], y[rank::world], DEGREE + other),
            "different calls": lambda: (
                distributed.train_ddp(x[rank::world], y[rank::world], DEGREE, LR, 3)
                if rank
                else distributed.fit_poly_sharded(x, series, DEGREE, **fit)
            ),
        }
        errors = {name: _attempt(call) for name, call in cases.items()}
        # afterwards the group still works, and a batch with fewer series than ranks (rank 1 holds none) fits
        one_series = distributed.fit_poly_sharded(x, series[:1], DEGREE, **fit)
        Path(out_dir, f"mismatch{rank}.json").write_text(
            json.dumps({"errors": errors, "one_series": [one_series.coeffs.tolist(), one_series.trace.tolist()]})
        )
    finally:
        dist.destroy_process_group()


MISMATCHES = {  # case: what both ranks' ValueError says
    "sharded degree": "fit_poly_sharded: every rank must pass the same arguments; they differ in degree: 4 on rank 0, "
    "5 on rank 1",
    "sharded steps": "they differ in steps: 40 on rank 0, 41 on rank 1",
    "sharded lr": "they differ in lr: 0.5 on rank 0, 1.0 on rank 1",
    "sharded dtype": "they differ in dtype: torch.float64 on rank 0, torch.float32 on rank 1",
    "sharded batch": "they differ in series (B): 5 on rank 0, 4 on rank 1",
    "sharded init": "they differ in init: a tensor of shape [5] (sha256 ",
    "sharded contents": "they differ in y (contents): a tensor of shape [5, 101] (sha256 ",
    "ddp steps": "train_ddp: every rank must pass the same arguments; they differ in steps: 3 on rank 0, 4 on rank 1",
    "ddp lr": "they differ in lr: 0.5 on rank 0, 1.0 on rank 1",
    "ddp degree": "they differ in degree: 4 on rank 0, 5 on rank 1",
    "ddp dtype": "they differ in dtype: torch.float64 on rank 0, torch.float32 on rank 1",
    "gram steps": "fit_poly_distributed: every rank must pass the same arguments; they differ in steps: 40 on rank 0, "
    "41 on rank 1",
    "gram lr": "they differ in lr: 0.5 on rank 0, 1.0 on rank 1",
    "moments degree": "all_reduced_moments: every rank must pass the same arguments; they differ in degree: 4 on rank "
    "0, 5 on rank 1",
    "different calls": "pykernels.distributed: the ranks made different calls (fit_poly_sharded on rank 0, "
    "train_ddp on rank 1); every rank must make the same one",
}
FAILED_ON_RANK_1 = {  # case: (the call, rank 1's own error)
    "sharded bad x on rank 1": ("fit_poly_sharded", "ValueError: x must be (N,) shared or y's shape"),
    "sharded float16 on rank 1": ("fit_poly_sharded", "TypeError: x must be a floating-point tensor"),
    "ddp bad y on rank 1": ("train_ddp", "ValueError: y must have the same shape as x"),
    "gram bad record_every on rank 1": ("fit_poly_distributed", "ValueError: record_every must be >= 1, got 0"),
}


def test_every_entry_point_raises_on_every_rank_when_the_ranks_disagree(tmp_path):
    """fit_poly_sharded, train_ddp, fit_poly_distributed and all_reduced_moments on 2 gloo processes, with a degree,
    step count, learning rate, dtype, batch or init that differs between the ranks, a rank whose own arguments
    fail their checks, or ranks calling different functions: every rank raises at once the same ValueError, naming
    what differs or the rank that failed and its error, instead of gloo aborting rank 0 (SIGABRT) or the other rank
    waiting in a collective until the timeout."""
    _run_ranks(_mismatch_rank_main, tmp_path, limit=240)
    ranks = [json.loads((tmp_path / f"mismatch{r}.json").read_text()) for r in range(2)]
    for case, expected in MISMATCHES.items():
        errors = [rank["errors"][case] for rank in ranks]
        assert errors[0] == errors[1], case
        assert errors[0].startswith("ValueError: pykernels.distributed") and expected in errors[0], (case, errors[0])
    for case, (call, own) in FAILED_ON_RANK_1.items():
        errors = [rank["errors"][case] for rank in ranks]
        assert errors[0] == errors[1], case  # rank 1's own error is that ValueError's cause there
        expected = f"ValueError: pykernels.distributed.{call}: rank(s) [1] failed before the collective (rank 1: {own}"
        assert errors[0].startswith(expected) and errors[0].endswith("), so every rank stops"), (case, errors[0])
    # a rank interrupted while checking joins the check, stops as asked, and the other rank raises instead of waiting
    interrupted = [rank["errors"]["interrupted on rank 1"] for rank in ranks]
    assert interrupted[1] == "KeyboardInterrupt: interrupted while checking lr"
    assert interrupted[0].startswith(
        "ValueError: pykernels.distributed.fit_poly_sharded: rank(s) [1] failed before the collective (rank 1: "
        "KeyboardInterrupt: interrupted while checking lr"
    )
    x, _ = distributed.demo_data(101)
    series = torch.stack([torch.sin(3 * x + phase) for phase in torch.linspace(0, 1, 5, dtype=x.dtype)])
    expected = pykernels.fit_poly(x, series[:1], DEGREE, lr=LR, steps=STEPS)
    for rank in ranks:
        torch.testing.assert_close(torch.tensor(rank["one_series"][0], dtype=x.dtype), expected.coeffs, rtol=0, atol=0)
        torch.testing.assert_close(torch.tensor(rank["one_series"][1], dtype=x.dtype), expected.trace, rtol=0, atol=0)


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--steps", "0"], {"first_loss": None, "last_loss": None, "steps": 0}),
        (["--steps", "0", "--method", "gram"], {"first_loss": None, "last_loss": None, "steps": 0}),
        (["--steps", "2", "--lr", "0"], {"steps": 2}),
        (["--steps", "60", "--lr", "1e6", "--method", "gram"], {"steps": 60}),  # diverges: JSON has no inf
    ],
)
def test_the_demo_runs_with_every_flag_value_it_accepts(tmp_path, flags, expected):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node=2",
            "-m",
            "pykernels.distributed",
            *flags,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["world_size"] == 2 and expected.items() <= report.items(), report
    if "1e6" in flags:
        assert report["last_loss"] in ("inf", "nan"), report


@pytest.mark.parametrize(
    ("flags", "refusal"),
    [
        (["--steps", "-1"], "--steps must be >= 0, got -1"),
        (["--lr", "-0.5"], "--lr must be finite and >= 0, got -0.5"),
        (["--lr", "nan"], "--lr must be finite and >= 0, got nan"),
        (["--lr", "inf"], "--lr must be finite and >= 0, got inf"),
        ([], "launch it with torchrun"),
    ],
)
def test_the_demo_refuses_flag_values_it_cannot_run_clearly(flags, refusal):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    result = subprocess.run(
        [sys.executable, "-c", f"from pykernels.distributed import main; main({flags!r})"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode == 2 and refusal in result.stderr, result.stderr[-2000:]


@pytest.mark.parametrize("script", ["ascii", "é", "日本", "\U0001f600", "\udc80 (a lone surrogate)"])
def test_an_error_in_any_script_keeps_as_much_of_its_message_as_the_descriptor_holds(script):
    """A rank's error travels to the others in a fixed-size descriptor: cut by bytes, not characters, so a message
    in any script keeps its longest start that fits, and every rank decodes it."""
    message = (script + " ") * 2000
    descriptor = distributed._descriptor("fit_poly_sharded", {"degree": 4, "lr": 0.01}, ValueError(message))
    assert len(descriptor) == distributed._DESCRIPTOR_BYTES
    decoded = json.loads(descriptor)
    error = decoded["error"]
    assert decoded["fields"] == {"degree": "4", "lr": "0.01"} and error.startswith("ValueError: " + script)
    assert message.startswith(error[len("ValueError: ") :])
    longer = dict(decoded, error=error + message[len(error) - len("ValueError: ")])  # one character more
    assert len(json.dumps(longer, ensure_ascii=False).encode(errors="backslashreplace")) > len(descriptor)


def test_an_error_whose_message_cannot_be_shown_still_travels():
    class Unprintable(ValueError):
        def __str__(self) -> str:
            raise RuntimeError("no message")

    decoded = json.loads(distributed._descriptor("fit_poly_sharded", {}, Unprintable()))
    assert decoded["error"] == "Unprintable: <Unprintable whose message cannot be shown>"
