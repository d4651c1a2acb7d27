"""pykernels ops inside DistributedDataParallel (gloo, 2 processes on loopback) train exactly like one process on
the full data, and batched fits sharded across ranks equal one process fitting every series."""

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
