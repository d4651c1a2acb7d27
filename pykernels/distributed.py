"""Training past one machine: pykernels ops under DistributedDataParallel, batched fits sharded across ranks, and
one fit of data sharded across ranks from its sufficient statistics (one collective for the whole fit).

Run the demo on one machine (2 processes, gloo) or several (NCCL where there are GPUs)::

    torchrun --nproc-per-node=2 -m pykernels.distributed [--method ddp|gram]
    torchrun --nnodes=2 --node-rank=<0|1> --nproc-per-node=1 --master-addr=<host of rank 0> \\
        --master-port=29500 -m pykernels.distributed
"""

from __future__ import annotations

import argparse
import itertools
import json
import time

import torch
import torch.distributed as dist
from torch import nn

from . import _checks
from .ops import FitResult, PolyMoments, fit_poly, fit_poly_moments, poly_moments, poly_mse


class PolyFitModel(nn.Module):
    """p(x) with learnable coefficients; ``forward(x, y)`` is the fused MSE (its gradient comes from the forward)."""

    def __init__(self, degree: int, dtype: torch.dtype = torch.float64) -> None:
        super().__init__()
        degree = _checks.integer(degree, "degree", minimum=0)
        if dtype not in (torch.float32, torch.float64):
            raise TypeError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
        self.coeffs = nn.Parameter(torch.zeros(degree + 1, dtype=dtype))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return poly_mse(x, y, self.coeffs).loss


def train_ddp(x: torch.Tensor, y: torch.Tensor, degree: int, lr: float, steps: int) -> list[float]:
    """SGD on this rank's shard (x, y) inside DistributedDataParallel; returns the global loss per step (the mean
    of the ranks' losses, which for equal shards is the full data's MSE)."""
    x, y = _checks.tensor(x, "x"), _checks.tensor(y, "y")
    lr, steps = _checks.real(lr, "lr", minimum=0.0), _checks.integer(steps, "steps", minimum=0)
    model = PolyFitModel(degree, x.dtype).to(x.device)
    ddp = nn.parallel.DistributedDataParallel(model)
    optimizer = torch.optim.SGD(ddp.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = ddp(x, y)
        loss.backward()  # DDP all-reduces (averages) the coefficient gradient across ranks here
        optimizer.step()
        global_loss = loss.detach().clone()
        dist.all_reduce(global_loss)
        losses.append(global_loss.item() / dist.get_world_size())
    return losses


def fit_poly_sharded(x: torch.Tensor, y: torch.Tensor, degree: int, **fit_kwargs) -> FitResult:
    """``fit_poly`` of a (B, N) batch of series, each rank fitting a contiguous slice of the series; every rank
    returns the whole result (all_gather). x: (N,) shared or (B, N)."""
    x, y = _checks.tensor(x, "x"), _checks.tensor(y, "y")
    if y.dim() != 2:
        raise ValueError(f"y must be 2-D (B, N): a batch of series to shard, got shape {_checks.shape_text(y)}")
    rank, world = dist.get_rank(), dist.get_world_size()
    bounds = [len(y) * r // world for r in range(world + 1)]
    mine = slice(bounds[rank], bounds[rank + 1])
    local = fit_poly(x if x.dim() == 1 else x[mine], y[mine], degree, **fit_kwargs)
    largest = max(b - a for a, b in itertools.pairwise(bounds))

    def gather(t: torch.Tensor) -> torch.Tensor:
        padded = torch.zeros((largest, *t.shape[1:]), dtype=t.dtype, device=t.device)
        padded[: len(t)] = t
        parts = [torch.empty_like(padded) for _ in range(world)]
        dist.all_gather(parts, padded)
        return torch.cat([p[: b - a] for p, a, b in zip(parts, bounds[:-1], bounds[1:], strict=True)])

    return FitResult(gather(local.coeffs), gather(local.trace))


def _layout(x: torch.Tensor, y: torch.Tensor, degree: int) -> tuple[int, ...]:
    """What every rank's shard must share for the sums to add: the degree, y's batch (-1 for one fit), whether x is
    shared by a batch, and the dtype."""
    return (degree, y.shape[0] if y.dim() == 2 else -1, int(x.dim() == 2), int(y.dtype == torch.float64))


_INVALID = (-2, -2, -2, -2)  # the layout a rank whose own shard failed its checks sends


def _gather_layouts(layout: tuple[int, ...], device: torch.device, group: dist.ProcessGroup | None) -> list:
    mine = torch.tensor(layout, dtype=torch.int64, device=device)
    layouts = [torch.empty_like(mine) for _ in range(dist.get_world_size(group))]
    dist.all_gather(layouts, mine, group=group)
    return layouts


def _check_layouts(layout: tuple[int, ...], device: torch.device, group: dist.ProcessGroup | None) -> None:
    """All ranks' layouts gathered (one collective of 4 integers each) and compared, so that a mismatch -- or a rank
    whose shard failed its own checks -- is a ValueError on every rank, never a collective of mismatched sizes (gloo
    aborts the process), ranks left waiting in one, nor sums of different things added together (silent garbage)."""
    layouts = _gather_layouts(layout, device, group)
    invalid = [rank for rank, other in enumerate(layouts) if tuple(other.tolist()) == _INVALID]
    if invalid:
        raise ValueError(f"the shard of rank(s) {invalid} failed its checks (that rank's error says why)")
    names = ("degree", "batch of series (B, or -1 for one fit)", "x per series (1) or shared (0)", "float64 (1/0)")
    for rank, other in enumerate(layouts):
        differ = [
            f"{name}: {first} on rank 0, {value} on rank {rank}"
            for name, first, value in zip(names, layouts[0].tolist(), other.tolist(), strict=True)
            if first != value
        ]
        if differ:
            raise ValueError("every rank's shard must have the same layout; they differ in " + "; ".join(differ))


def _checked_shard(x: object, y: object, degree: object) -> tuple[torch.Tensor, torch.Tensor, int]:
    """This rank's shard, checked before any collective."""
    x, y = _checks.tensor(x, "x"), _checks.tensor(y, "y")
    degree = _checks.integer(degree, "degree", maximum=_checks.MAX_MOMENTS_DEGREE)
    _checks.check_floating(x, "x")
    _checks.check_same_dtype_and_device((x, "x"), (y, "y"))
    if y.dim() not in (1, 2) or not (x.dim() == 1 or x.shape == y.shape) or x.shape[-1] != y.shape[-1]:
        raise ValueError(
            f"y must be (N,) or (B, N) and x (N,) or y's shape, got x {_checks.shape_text(x)} and y "
            f"{_checks.shape_text(y)}"
        )
    return x, y, degree


def all_reduced_moments(
    x: torch.Tensor,
    y: torch.Tensor,
    degree: int,
    *,
    group: dist.ProcessGroup | None = None,
    check_layout: bool = True,
    backend: str = "cpp",
) -> PolyMoments:
    """The sufficient statistics of the data of every rank of ``group``: this rank's shard's :func:`poly_moments`,
    summed over the ranks by one all_reduce of their ``(2D+1) + (D+1) + 1`` float64 numbers per fit (15 for a
    degree-4 fit). A rank whose shard is empty (y with no points) adds zeros; no point on any rank is a
    ValueError. ``check_layout`` first gathers each rank's degree, batch, x layout and dtype (4 integers) and raises
    a ValueError on every rank if they differ or a rank's shard failed its own checks; without it a mismatch aborts
    the collective or adds unlike sums, and a bad shard leaves the other ranks waiting in the all_reduce."""
    try:
        x, y, degree = _checked_shard(x, y, degree)
    except (TypeError, ValueError):
        if check_layout:  # the other ranks must not wait for this one in the collectives: they raise too
            device = y.device if isinstance(y, torch.Tensor) else torch.device("cpu")
            _gather_layouts(_INVALID, device, group)
        raise
    if check_layout:
        _check_layouts(_layout(x, y, degree), y.device, group)
    if y.shape[-1] == 0:
        wide = {"dtype": torch.float64, "device": y.device}
        local = PolyMoments(
            torch.zeros((*x.shape[:-1], 2 * degree + 1), **wide),
            torch.zeros((*y.shape[:-1], degree + 1), **wide),
            torch.zeros(y.shape[:-1], **wide),
        )
    else:
        local = poly_moments(x, y, degree, backend=backend)
    flat = torch.cat([t.reshape(-1) for t in local])
    dist.all_reduce(flat, group=group)
    sizes = [t.numel() for t in local]
    total = PolyMoments(*(part.view(t.shape) for part, t in zip(flat.split(sizes), local, strict=True)))
    if not bool((total.power_sums[..., 0] > 0).all()):
        raise ValueError("no rank holds any points: every shard of y is empty")
    return total


def fit_poly_distributed(
    x: torch.Tensor,
    y: torch.Tensor,
    degree: int,
    *,
    lr: float,
    steps: int,
    record_every: int = 1,
    init: torch.Tensor | None = None,
    group: dist.ProcessGroup | None = None,
    check_layout: bool = True,
    backend: str = "cpp",
) -> FitResult:
    """``fit_poly(method="gram")`` of the data split across the ranks of ``group``, each rank holding a shard of
    the points (x, y as :func:`fit_poly` takes them; (B, N_rank) shards for B fits): the shards' sufficient
    statistics are all-reduced once (:func:`all_reduced_moments`) and every rank then runs the same float64 steps
    on them, so every rank returns the same result, the fit of all the data, after one all_reduce (and the layout
    check's all_gather of 4 integers, unless ``check_layout=False``) -- where data parallel training
    (:func:`train_ddp`) all-reduces a gradient at every step. Results in y's dtype."""
    moments = all_reduced_moments(x, y, degree, group=group, check_layout=check_layout, backend=backend)
    dtype = y.dtype if init is None else None
    return fit_poly_moments(
        moments, lr=lr, steps=steps, record_every=record_every, init=init, dtype=dtype, backend=backend
    )


def demo_data(samples: int = 2000, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """``samples`` points of sin(3x) on [0, 1]."""
    samples = _checks.integer(samples, "samples", minimum=1)
    x = torch.linspace(0, 1, samples, dtype=dtype)
    return x, torch.sin(3 * x)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="DDP polynomial fit with pykernels (launch with torchrun)")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--lr", type=float, default=0.5)
    parser.add_argument(
        "--method",
        choices=("ddp", "gram"),
        default="ddp",
        help="ddp: DistributedDataParallel, a gradient all-reduce per step; gram: the shards' sufficient "
        "statistics all-reduced once (fit_poly_distributed)",
    )
    args = parser.parse_args(argv)
    use_cuda = torch.cuda.is_available()
    dist.init_process_group("nccl" if use_cuda else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device("cuda", rank % torch.cuda.device_count()) if use_cuda else torch.device("cpu")
    x, y = (t.to(device) for t in demo_data())
    start = time.perf_counter()
    if args.method == "ddp":
        losses = train_ddp(x[rank::world], y[rank::world], degree=4, lr=args.lr, steps=args.steps)
    else:
        losses = fit_poly_distributed(x[rank::world], y[rank::world], 4, lr=args.lr, steps=args.steps).trace.tolist()
    seconds = time.perf_counter() - start
    if rank == 0:
        print(
            json.dumps(
                {
                    "world_size": world,
                    "method": args.method,
                    "seconds": seconds,
                    "first_loss": losses[0],
                    "last_loss": losses[-1],
                }
            )
        )
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
