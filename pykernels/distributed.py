"""Training past one machine: pykernels ops under DistributedDataParallel, batched fits sharded across ranks, and
one fit of data sharded across ranks from its sufficient statistics (one collective for the whole fit).

Run the demo on one machine (2 processes, gloo) or several (NCCL where there are GPUs)::

    torchrun --nproc-per-node=2 -m pykernels.distributed [--method ddp|gram]
    torchrun --nnodes=2 --node-rank=<0|1> --nproc-per-node=1 --master-addr=<host of rank 0> \\
        --master-port=29500 -m pykernels.distributed

Every entry point first checks that the ranks agree (one all_gather of a small descriptor): the same call, the same
shared arguments, and no rank failing its own checks; otherwise every rank raises the same ValueError naming the
ranks and what differs, instead of a collective of mismatched sizes (gloo aborts the process) or a wait until the
process group's timeout. Two things cannot be checked that way, because they choose the collective itself: every
rank must pass the same ``group``, and the same ``check_layout`` (a rank that skips the check while another makes it
meets the other's next collective, and they wait or abort). A rank interrupted (KeyboardInterrupt, SystemExit)
while checking still joins the check, so the other ranks raise instead of waiting (it waits there for them first, as
any rank in a collective does); one interrupted later, inside a collective, leaves them waiting until the timeout, as
with any torch.distributed program.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import inspect
import itertools
import json
import math
import os
import time
from collections.abc import Callable
from typing import Any, TypeVar

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


# --- the ranks' agreement ------------------------------------------------------------------------------------------
#
# Every entry point runs this rank's own part first (its argument checks, and its share of the work where that needs
# no collective), then one all_gather of a fixed-size descriptor of the call: which function, the arguments every
# rank must share, and whether this rank's own part failed (with its error). Every rank then compares the same
# descriptors, so every rank either goes on or raises the same ValueError -- never a collective of mismatched sizes
# (gloo aborts the process), nor ranks left waiting in one until the process group's timeout (30 minutes by
# default), nor sums of different things added together. The descriptor's size is the same for every entry point,
# so even ranks that call different functions meet in one collective of one size.

_DESCRIPTOR_BYTES = 1024
_FIELD_CHARS = 48  # a longer value is compared by its digest


def _text(value: object) -> str:
    """A field's value as the text the ranks compare: exact for numbers (repr round-trips a float), a digest of the
    contents for a tensor."""
    if isinstance(value, torch.Tensor):
        data = value.detach().cpu().contiguous()
        digest = hashlib.sha256(f"{data.dtype} {list(data.shape)}".encode())
        digest.update(data.reshape(-1).view(torch.uint8).numpy().tobytes())
        return f"a tensor of shape {list(data.shape)} (sha256 {digest.hexdigest()[:12]})"
    text = repr(value) if isinstance(value, str) else str(value)
    if len(text) > _FIELD_CHARS:
        text = f"{text[: _FIELD_CHARS - 15]}... ({hashlib.sha256(text.encode()).hexdigest()[:10]})"
    return text


def _message(error: BaseException) -> str:
    """str(error), or what can be said of it where its __str__ fails (the other ranks must still hear of it)."""
    try:
        return str(error)
    except Exception:
        return f"<{type(error).__name__} whose message cannot be shown>"


def _descriptor(call: str, fields: dict[str, object], error: BaseException | None) -> bytes:
    """This rank's call, the arguments every rank must share, and its own error if it failed: UTF-8 JSON, padded to
    _DESCRIPTOR_BYTES, the error's message cut to the longest start of it that fits (in bytes: any script)."""
    shared = {name: _text(value) for name, value in fields.items()}
    message = None if error is None else f"{type(error).__name__}: {_message(error)}"

    def encoded(length: int) -> bytes:
        text = None if message is None else message[:length]
        description = {"call": call, "fields": shared, "error": text}
        return json.dumps(description, ensure_ascii=False).encode(errors="backslashreplace")

    fits, too_long = 0, 1 + (0 if message is None else len(message))  # encoded(fits) fits; encoded(too_long) does not
    if len(encoded(fits)) > _DESCRIPTOR_BYTES:
        raise AssertionError(f"the descriptor of {call} does not fit in {_DESCRIPTOR_BYTES} bytes")  # fields are few
    while too_long - fits > 1:
        middle = (fits + too_long) // 2
        fits, too_long = (middle, too_long) if len(encoded(middle)) <= _DESCRIPTOR_BYTES else (fits, middle)
    return encoded(fits).ljust(_DESCRIPTOR_BYTES)


def _exchange(descriptor: bytes, group: dist.ProcessGroup | None, data: object) -> list[dict[str, Any]]:
    """Every rank's descriptor: one all_gather of _DESCRIPTOR_BYTES bytes each. On the CPU, except under NCCL,
    which takes only GPU tensors: there on ``data``'s GPU (this rank's), or the current one where ``data`` is no
    CUDA tensor (a rank whose data failed its checks still joins)."""
    device = torch.device("cpu")
    if dist.get_backend(group) == "nccl":
        on_gpu = isinstance(data, torch.Tensor) and data.device.type == "cuda"
        device = data.device if on_gpu else torch.device("cuda", torch.cuda.current_device())
    mine = torch.frombuffer(bytearray(descriptor), dtype=torch.uint8).to(device)
    gathered = [torch.empty_like(mine) for _ in range(dist.get_world_size(group))]
    dist.all_gather(gathered, mine, group=group)
    return [json.loads(bytes(t.cpu().tolist())) for t in gathered]


def _disagreement(descriptors: list[dict[str, Any]]) -> str | None:
    """What every rank will say is wrong (the same text on every rank: it reads only the gathered descriptors), or
    None if every rank made the same call with the same shared arguments and none failed its own checks."""
    calls = [d["call"] for d in descriptors]
    if len(set(calls)) > 1:
        made = ", ".join(f"{call} on rank {rank}" for rank, call in enumerate(calls))
        return f"pykernels.distributed: the ranks made different calls ({made}); every rank must make the same one"
    call = f"pykernels.distributed.{calls[0]}"
    failed = [(rank, d["error"]) for rank, d in enumerate(descriptors) if d["error"] is not None]
    if failed:
        which = "; ".join(f"rank {rank}: {error}" for rank, error in failed)
        ranks = [rank for rank, _ in failed]
        return f"{call}: rank(s) {ranks} failed before the collective ({which}), so every rank stops"
    first = descriptors[0]["fields"]
    differ = []
    for name, value in first.items():
        others = [(rank, d["fields"][name]) for rank, d in enumerate(descriptors) if d["fields"][name] != value]
        if others:
            differ.append(f"{name}: {value} on rank 0, " + ", ".join(f"{v} on rank {rank}" for rank, v in others))
    if differ:
        return f"{call}: every rank must pass the same arguments; they differ in " + "; ".join(differ)
    return None


T = TypeVar("T")


def _agreed(
    call: str,
    local: Callable[[], tuple[T, dict[str, object]]],
    group: dist.ProcessGroup | None,
    data: object,
    check: bool = True,
) -> T:
    """``local()`` (this rank's checks and share of the work; returns its result and the fields every rank must
    share), then the ranks' agreement on them (one all_gather). A rank whose ``local()`` raises still joins, marked
    failed, and every rank raises the same ValueError naming it and its error (on that rank, chained to the error
    itself); every rank raises the same ValueError if the calls or fields differ. The same exception everywhere keeps
    the ranks in step: code that catches it goes the same way on every rank. ``check=False``: ``local()`` alone."""
    if not check:
        return local()[0]
    try:
        result, fields = local()
    except Exception as error:  # whatever stops this rank, the others must not wait for it in a collective
        raise ValueError(_disagreement(_exchange(_descriptor(call, {}, error), group, data))) from error
    except BaseException as interruption:  # (KeyboardInterrupt, SystemExit: this rank joins, then stops as asked)
        with contextlib.suppress(Exception):  # (the interruption is what this rank raises, whatever the check does)
            _exchange(_descriptor(call, {}, interruption), group, data)
        raise
    problem = _disagreement(_exchange(_descriptor(call, fields, None), group, data))
    if problem is not None:
        raise ValueError(problem)
    return result


def _data_fields(y: torch.Tensor) -> dict[str, object]:
    return {"dtype": y.dtype, "device type": y.device.type}


# --- the entry points -----------------------------------------------------------------------------------------------


def train_ddp(x: torch.Tensor, y: torch.Tensor, degree: int, lr: float, steps: int) -> list[float]:
    """SGD on this rank's shard (x, y) inside DistributedDataParallel; returns the global loss per step (the mean
    of the ranks' losses, which for equal shards is the full data's MSE). Every rank must pass the same degree, lr,
    steps, dtype, device type and batch layout (checked first: :func:`_agreed`); shards may differ in length."""

    def local() -> tuple[PolyFitModel, dict[str, object]]:
        checked_x, checked_y = _checks.tensor(x, "x"), _checks.tensor(y, "y")
        checked = (_checks.real(lr, "lr", minimum=0.0), _checks.integer(steps, "steps", minimum=0))
        model = PolyFitModel(degree, checked_x.dtype).to(checked_x.device)
        _checks.check_poly_mse_inputs(checked_x, checked_y, model.coeffs.detach())  # as the first step would
        layout = tuple(checked_y.shape[:-1])
        fields = {"degree": model.coeffs.numel() - 1, "lr": checked[0], "steps": checked[1], "batch shape": layout}
        return model, {**fields, **_data_fields(checked_y)}

    model = _agreed("train_ddp", local, None, y)
    lr, steps = float(lr), int(steps)
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


_FIT_DEFAULTS = {
    name: parameter.default
    for name, parameter in inspect.signature(fit_poly).parameters.items()
    if parameter.kind == inspect.Parameter.KEYWORD_ONLY
}


def fit_poly_sharded(x: torch.Tensor, y: torch.Tensor, degree: int, **fit_kwargs) -> FitResult:
    """``fit_poly`` of a (B, N) batch of series, each rank fitting a contiguous slice of the series; every rank
    returns the whole result (all_gather). x: (N,) shared or (B, N); a (B, D+1) ``init`` is sliced as y is. Every
    rank must hold the same batch and pass the same arguments (checked first: :func:`_agreed`); with fewer series
    than ranks, the ranks past the last series fit none."""
    world = dist.get_world_size()
    rank = dist.get_rank()

    def local() -> tuple[FitResult, dict[str, object]]:
        checked_x, checked_y = _checks.tensor(x, "x"), _checks.tensor(y, "y")
        if checked_y.dim() != 2:
            raise ValueError(
                f"y must be 2-D (B, N): a batch of series to shard, got shape {_checks.shape_text(checked_y)}"
            )
        if checked_x.shape not in (checked_y.shape[1:], checked_y.shape):
            raise ValueError(
                f"x must be (N,) shared or y's shape {_checks.shape_text(checked_y)}, got "
                f"{_checks.shape_text(checked_x)}"
            )
        bounds = [len(checked_y) * r // world for r in range(world + 1)]
        mine = slice(bounds[rank], bounds[rank + 1])
        if mine.start == mine.stop and len(checked_y):  # no series here: the shapes of a fit of one, and no rows
            mine = slice(0, 1)
        kwargs = dict(fit_kwargs)
        if isinstance(kwargs.get("init"), torch.Tensor) and kwargs["init"].dim() == 2:
            kwargs["init"] = kwargs["init"][mine]
        fit = fit_poly(checked_x if checked_x.dim() == 1 else checked_x[mine], checked_y[mine], degree, **kwargs)
        if bounds[rank] == bounds[rank + 1]:
            fit = FitResult(fit.coeffs[:0], fit.trace[:0])
        fields = {
            "degree": degree,
            "series (B)": checked_y.shape[0],
            "points (N)": checked_y.shape[1],
            "x": "shared (N,)" if checked_x.dim() == 1 else "per series (B, N)",
            **{name: fit_kwargs.get(name, default) for name, default in _FIT_DEFAULTS.items()},
            "lr": float(fit_kwargs["lr"]),  # (checked by fit_poly: a real number) 1 and 1.0 are the same rate
        }
        # Last, the batch itself: every rank must hold the same one (per-rank random data without a shared seed would
        # otherwise fit each rank's rows of its own batch, silently); one pass over it, small beside the fit.
        contents = {"y (contents)": checked_y, "x (contents)": checked_x}
        return fit, {**fields, **_data_fields(checked_y), **contents}

    local_fit = _agreed("fit_poly_sharded", local, None, y)
    bounds = [len(y) * r // world for r in range(world + 1)]
    largest = max(b - a for a, b in itertools.pairwise(bounds))

    def gather(t: torch.Tensor) -> torch.Tensor:
        padded = torch.zeros((largest, *t.shape[1:]), dtype=t.dtype, device=t.device)
        padded[: len(t)] = t
        parts = [torch.empty_like(padded) for _ in range(world)]
        dist.all_gather(parts, padded)
        return torch.cat([p[: b - a] for p, a, b in zip(parts, bounds[:-1], bounds[1:], strict=True)])

    return FitResult(gather(local_fit.coeffs), gather(local_fit.trace))


def _local_moments(x: object, y: object, degree: object, backend: str) -> tuple[PolyMoments, dict[str, object]]:
    """This rank's shard checked, its sufficient statistics (zeros for a shard with no points), and what every
    rank's shard must share for the sums to add: the degree, y's batch, whether x is shared by a batch, the dtype."""
    x, y = _checks.tensor(x, "x"), _checks.tensor(y, "y")
    degree = _checks.integer(degree, "degree", maximum=_checks.MAX_MOMENTS_DEGREE)
    _checks.check_floating(x, "x")
    _checks.check_same_dtype_and_device((x, "x"), (y, "y"))
    if y.dim() not in (1, 2) or not (x.dim() == 1 or x.shape == y.shape) or x.shape[-1] != y.shape[-1]:
        raise ValueError(
            f"y must be (N,) or (B, N) and x (N,) or y's shape, got x {_checks.shape_text(x)} and y "
            f"{_checks.shape_text(y)}"
        )
    if y.shape[-1] == 0:
        wide = {"dtype": torch.float64, "device": y.device}
        moments = PolyMoments(
            torch.zeros((*x.shape[:-1], 2 * degree + 1), **wide),
            torch.zeros((*y.shape[:-1], degree + 1), **wide),
            torch.zeros(y.shape[:-1], **wide),
        )
    else:
        moments = poly_moments(x, y, degree, backend=backend)
    fields = {
        "degree": degree,
        "batch of series (B, or one fit)": y.shape[0] if y.dim() == 2 else "one fit",
        "x": "per series (B, N)" if x.dim() == 2 else "shared (N,)",
        "backend": backend,
    }
    return moments, {**fields, **_data_fields(y)}


def _summed(local: PolyMoments, group: dist.ProcessGroup | None) -> PolyMoments:
    """The ranks' moments summed: one all_reduce of all of them at once."""
    flat = torch.cat([t.reshape(-1) for t in local])
    dist.all_reduce(flat, group=group)
    sizes = [t.numel() for t in local]
    total = PolyMoments(*(part.view(t.shape) for part, t in zip(flat.split(sizes), local, strict=True)))
    if not bool((total.power_sums[..., 0] > 0).all()):
        raise ValueError("no rank holds any points: every shard of y is empty")
    return total


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
    ValueError. ``check_layout`` first gathers each rank's degree, batch, x layout, dtype, device type and backend
    (:func:`_agreed`) and raises a ValueError on every rank if they differ or a rank's shard failed its own checks;
    without it a mismatch aborts the collective or adds unlike sums, and a bad shard leaves the other ranks waiting
    in the all_reduce."""
    local = _agreed("all_reduced_moments", lambda: _local_moments(x, y, degree, backend), group, y, check=check_layout)
    return _summed(local, group)


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
    on them, so every rank returns the same result, the fit of all the data, after one all_reduce (and the ranks'
    agreement on the layout and on lr, steps, record_every and init, one all_gather, unless
    ``check_layout=False``) -- where data parallel training (:func:`train_ddp`) all-reduces a gradient at every
    step. Results in y's dtype."""

    def local() -> tuple[PolyMoments, dict[str, object]]:
        moments, fields = _local_moments(x, y, degree, backend)
        # the steps' own checks (lr, steps, record_every, init's shape and dtype), here, before any collective: a
        # run of 0 steps on this rank's moments
        _checks.integer(steps, "steps")
        dtype = y.dtype if init is None else None
        fit_poly_moments(moments, lr=lr, steps=0, record_every=record_every, init=init, dtype=dtype, backend=backend)
        return moments, {**fields, "lr": float(lr), "steps": steps, "record_every": record_every, "init": init}

    moments = _summed(_agreed("fit_poly_distributed", local, group, y, check=check_layout), group)
    dtype = y.dtype if init is None else None
    return fit_poly_moments(
        moments, lr=lr, steps=steps, record_every=record_every, init=init, dtype=dtype, backend=backend
    )


def demo_data(samples: int = 2000, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """``samples`` points of sin(3x) on [0, 1]."""
    samples = _checks.integer(samples, "samples", minimum=1)
    x = torch.linspace(0, 1, samples, dtype=dtype)
    return x, torch.sin(3 * x)


def _loss_value(loss: float | None) -> float | str | None:
    """A loss as JSON takes it: a diverged fit's inf or nan as the strings "inf" / "nan" (strict JSON has none)."""
    return loss if loss is None or math.isfinite(loss) else str(loss)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="DDP polynomial fit with pykernels (launch with torchrun)")
    parser.add_argument("--steps", type=int, default=200, help="gradient-descent steps (>= 0)")
    parser.add_argument("--lr", type=float, default=0.5, help="learning rate (finite, >= 0)")
    parser.add_argument(
        "--method",
        choices=("ddp", "gram"),
        default="ddp",
        help="ddp: DistributedDataParallel, a gradient all-reduce per step; gram: the shards' sufficient "
        "statistics all-reduced once (fit_poly_distributed)",
    )
    args = parser.parse_args(argv)
    # every rank parses the same command line: a flag refused here is refused on every rank, before any collective
    if args.steps < 0:
        parser.error(f"--steps must be >= 0, got {args.steps}")
    if not (math.isfinite(args.lr) and args.lr >= 0):
        parser.error(f"--lr must be finite and >= 0, got {args.lr}")
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        parser.error("launch it with torchrun (e.g. torchrun --nproc-per-node=2 -m pykernels.distributed)")
    use_cuda = torch.cuda.is_available()
    dist.init_process_group("nccl" if use_cuda else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device("cuda", rank % torch.cuda.device_count()) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)  # NCCL's collectives run on the current device: this rank's own
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
                    "steps": args.steps,
                    "seconds": seconds,
                    # no step, no loss: --steps 0 reports none (null)
                    "first_loss": _loss_value(losses[0] if losses else None),
                    "last_loss": _loss_value(losses[-1] if losses else None),
                }
            )
        )
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
