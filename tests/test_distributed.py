"""pykernels ops inside DistributedDataParallel (gloo, 2 processes on loopback) train exactly like one process on
the full data, batched fits sharded across ranks equal one process fitting every series, and a fit of sharded data
from its all-reduced sufficient statistics equals one process's fit of all the data."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import pykernels
from pykernels import distributed

STEPS, LR, DEGREE = 40, 0.5, 4


def _rank_main(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
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
    context = mp.start_processes(
        _rank_main, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=False, start_method="spawn"
    )
    deadline = time.monotonic() + 300
    while not context.join(timeout=5):
        assert time.monotonic() < deadline, "DDP processes did not finish in 300 s"
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
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
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
    context = mp.start_processes(
        _gram_rank_main, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=False, start_method="spawn"
    )
    deadline = time.monotonic() + 300
    while not context.join(timeout=5):
        assert time.monotonic() < deadline, "the processes did not finish in 300 s"
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
        assert "batch of series (B, or -1 for one fit): 3 on rank 0, -1 on rank 1" in rank["errors"]["batch"]
        assert "float64 (1/0): 1 on rank 0, 0 on rank 1" in rank["errors"]["dtype"]
        assert rank["errors"]["empty"] == "ValueError: no rank holds any points: every shard of y is empty"
        for name, want in expected.items():
            for got, wanted in zip((rank[name]["coeffs"], rank[name]["trace"]), want, strict=True):
                rtol = 1e-12 if wanted.dtype == torch.float64 else 1e-6
                torch.testing.assert_close(torch.tensor(got, dtype=wanted.dtype), wanted, rtol=rtol, atol=rtol)
    failed = "ValueError: the shard of rank(s) [1] failed its checks (that rank's error says why)"
    assert ranks[0]["errors"]["bad_shard_on_rank_1"] == ranks[0]["errors"]["float16_on_rank_1"] == failed
    assert ranks[1]["errors"]["bad_shard_on_rank_1"].startswith("ValueError: y must be (N,) or (B, N) and x (N,)")
    assert ranks[1]["errors"]["float16_on_rank_1"].startswith("TypeError: x must be a floating-point tensor")
