"""Section 3: the first write-up's large problem: a 10^7-weight linear model trained through a dot product.

Each epoch draws a fresh sample ``x = randn(N)``, sets ``y = dot(3 * ones(N), x) - 2``, predicts
``y_hat = dot(w, x) + b`` and takes one SGD step on ``(y_hat - y)^2``. Data generation and the training step are
timed apart. At the write-up's lr = 1e-3 the iteration diverges: the weights' error norm grows by about
``1 + 4 lr^2 N`` (~41x at N = 10^7) per epoch, so the loss overflows float32 within a few dozen epochs. It is run
anyway, as written, and reported as diverged; the stable rate ``0.5 / N`` is run beside it.

Rows: the write-up's autograd loop (plain, and with torch's allocator on huge pages), pykernels' dot with autograd,
the fused ``linear_sgd_step`` (both on the torch.randn sample), and ``linear_sgd_philox``, which draws its samples
inside the kernel (kept for one pass, or regenerated): those rows are compared by whole epochs, sample included.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

import pykernels

from ._common import SectionResult, Stopwatch, include_row, median, rows_progress, run_isolated

WRITE_UP_SECONDS = {"cpu": 32.3, "cuda": 1.34}  # 200 epochs, %%time, its machine (Colab CPU, Tesla K80)


@dataclass
class LargeConfig:
    n: int = 10_000_000
    epochs: int = 200
    seed_lr: float = 1e-3
    devices: tuple[str, ...] = ("cpu",)

    @property
    def stable_lr(self) -> float:
        return 0.5 / self.n


class LargeTrainer:
    """One implementation of the epoch's training step (the sample is generated outside it, unless
    ``draws_own_samples``: then ``run_epochs`` trains whole epochs, sample generation included)."""

    name = ""
    note = ""
    draws_own_samples = False
    env: ClassVar[dict[str, str]] = {}  # environment of the row's process

    def __init__(self, device: str) -> None:
        self.device = device

    def setup(self, n: int, lr: float) -> None:
        # not seed 0: the epochs draw x from the global seed 0, and w from the same stream would correlate with x
        generator = torch.Generator(device=self.device).manual_seed(12345)
        self.w = torch.rand([n], device=self.device, generator=generator).requires_grad_()
        self.b = torch.ones([1], device=self.device, requires_grad=True)
        self.lr = lr

    def step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class WriteUpAutograd(LargeTrainer):
    """The write-up's loop body: ``torch.dot``, ``torch.sum((y_hat - y)**2)``, ``w -= lr * w.grad``."""

    def __init__(self, device: str) -> None:
        super().__init__(device)
        self.name = "torch-autograd" + ("-gpu" if device == "cuda" else "")

    def step(self, x, y):
        w, b, lr = self.w, self.b, self.lr
        y_hat = torch.dot(w, x) + b
        loss = torch.sum((y_hat - y) ** 2)
        loss.backward()
        with torch.no_grad():
            w -= lr * w.grad
            b -= lr * b.grad
            w.grad.zero_()
            b.grad.zero_()
        return loss.detach()


class PykernelsDotAutograd(LargeTrainer):
    """``pykernels.dot`` (float64 accumulation, C++ autograd) and an in-place update without temporaries."""

    def __init__(self, device: str) -> None:
        super().__init__(device)
        self.name = "pykernels dot+backward" + ("-gpu" if device == "cuda" else "")

    def step(self, x, y):
        w, b, lr = self.w, self.b, self.lr
        loss = torch.sum((pykernels.dot(w, x) + b - y) ** 2)
        w.grad = b.grad = None
        loss.backward()
        with torch.no_grad():
            w.sub_(w.grad, alpha=lr)
            b.sub_(b.grad, alpha=lr)
        return loss.detach()


class PykernelsFusedStep(LargeTrainer):
    """``pykernels.linear_sgd_step``: the whole step in two passes over x and w, no gradient vector, no autograd
    (CPU kernel)."""

    def __init__(self, device: str) -> None:
        super().__init__(device)
        self.name = "pykernels linear_sgd_step (fused)" + ("-gpu" if device == "cuda" else "")

    def setup(self, n: int, lr: float) -> None:
        super().setup(n, lr)
        self.w, self.b = self.w.detach(), self.b.detach()

    def step(self, x, y):
        return pykernels.linear_sgd_step(self.w, self.b, x, y, self.lr)


class WriteUpAutogradTHP(WriteUpAutograd):
    """The write-up's loop with torch's CPU allocator on transparent huge pages (fewer page faults on its fresh
    10^7-element temporaries)."""

    env: ClassVar[dict[str, str]] = {"THP_MEM_ALLOC_ENABLE": "1"}

    def __init__(self, device: str) -> None:
        super().__init__(device)
        self.name = "torch-autograd, THP_MEM_ALLOC_ENABLE=1" + ("-gpu" if device == "cuda" else "")


class PykernelsPhilox(LargeTrainer):
    """``pykernels.linear_sgd_philox``: whole epochs in one call, each sample drawn inside the kernel by Philox
    (``sample``: kept in a float32 buffer until the next pass, or regenerated and never stored)."""

    draws_own_samples = True
    sample = "keep"

    def __init__(self, device: str) -> None:
        super().__init__(device)
        stored = "kept for one pass" if self.sample == "keep" else "regenerated, never stored"
        self.name = f"pykernels linear_sgd_philox (sample in-kernel, {stored})" + ("-gpu" if device == "cuda" else "")

    def setup(self, n: int, lr: float) -> None:
        super().setup(n, lr)
        self.w, self.b = self.w.detach(), self.b.detach()
        self.buffer = torch.empty(n, device=self.device) if self.sample == "keep" else None
        # warm-up on a copy: threads started, code and the buffer's pages touched before the clock starts
        pykernels.linear_sgd_philox(
            self.w.clone(), self.b.clone(), lr=lr, epochs=1, seed=1, sample=self.sample, buffer=self.buffer
        )

    def run_epochs(self, first_epoch: int, epochs: int) -> torch.Tensor:
        return pykernels.linear_sgd_philox(
            self.w,
            self.b,
            lr=self.lr,
            epochs=epochs,
            seed=0,
            first_epoch=first_epoch,
            sample=self.sample,
            buffer=self.buffer,
        )


class PykernelsPhiloxRegenerate(PykernelsPhilox):
    sample = "regenerate"


def all_trainers() -> list[type[LargeTrainer]]:
    return [
        WriteUpAutograd,
        WriteUpAutogradTHP,
        PykernelsDotAutograd,
        PykernelsFusedStep,
        PykernelsPhilox,
        PykernelsPhiloxRegenerate,
    ]


def train(name: str, device: str, config: LargeConfig, lr: float, progress) -> dict:
    """One row, in its own process: ``progress`` gets the fraction of epochs done."""
    trainer = next(t(device) for t in all_trainers() if t(device).name == name)
    torch.manual_seed(0)  # every row sees the same samples
    n = config.n
    trainer.setup(n, lr)
    generation, training = Stopwatch(device), Stopwatch(device)
    losses = []
    if trainer.draws_own_samples:
        # a few calls of many epochs each (a call ends with one extra pass that applies its last update)
        calls = min(4, config.epochs)
        for call in range(calls):
            first, last = call * config.epochs // calls, (call + 1) * config.epochs // calls
            with training.timed():
                losses.append(trainer.run_epochs(first, last - first))
            progress((last - first) / config.epochs)
    else:
        ones3 = 3 * torch.ones([n], device=device)
        for _ in range(config.epochs):
            with generation.timed():
                x = torch.randn([n], device=device)
                y = torch.dot(ones3, x) - 2
            with training.timed():
                loss = trainer.step(x, y)
            losses.append(loss.reshape(1))
            progress(1 / config.epochs)
    losses = torch.cat(losses).double().cpu().numpy().ravel()
    finite = np.isfinite(losses)
    diverged_at = None if finite.all() else int(np.argmin(finite))
    tenth = max(1, len(losses) // 10)
    growth = float(np.median(losses[-tenth:]) / np.median(losses[:tenth])) if finite.all() else math.inf
    stable = bool(finite.all() and growth <= 10)
    return {
        "name": trainer.name,
        "device": device,
        "lr": lr,
        "epochs": config.epochs,
        "n": n,
        "sample_in_kernel": trainer.draws_own_samples,
        "env": trainer.env,
        "generation_seconds": generation.seconds,
        "training_seconds": training.seconds,
        "total_seconds": generation.seconds + training.seconds,
        "training_ms_per_epoch": training.seconds / config.epochs * 1e3,
        "epoch_ms": (generation.seconds + training.seconds) / config.epochs * 1e3,
        "generation_ms_per_epoch": generation.seconds / config.epochs * 1e3,
        "first_loss": float(losses[0]),
        "last_loss": float(losses[-1]),
        "median_loss": float(median([v for v in losses if math.isfinite(v)] or [math.nan])),
        "diverged_at_epoch": diverged_at,
        "stable": stable,
        "loss_growth": growth,
        "losses": losses,
        "write_up_seconds": WRITE_UP_SECONDS.get(device),
        "note": trainer.note,
    }


def yardsticks(n: int, progress) -> dict[str, float]:
    """Measured beside the rows: the read bandwidth (GB/s of torch.sum over 4 float32 vectors of n already in
    memory, the same traffic scale as an epoch) and the in-kernel generator alone (ms for philox_normal of n)."""
    data = torch.rand(4 * n)
    data.sum()
    sums, draws = Stopwatch("cpu"), Stopwatch("cpu")
    for _ in range(5):
        with sums.timed():
            data.sum()
    sample = pykernels.philox_normal(n, seed=1)
    for stream in range(5):
        with draws.timed():
            pykernels.philox_normal(n, seed=1, stream=stream, out=sample)
    progress(1.0)
    return {"read_bandwidth_gb_s": 5 * data.numel() * 4 / sums.seconds / 1e9, "philox_normal_ms": draws.seconds / 5e-3}


def run(config: LargeConfig) -> SectionResult:
    section = SectionResult("Large problem: 10^7-weight dot-product model (write-up 1)")
    plan = []
    for device in ("cpu", "cuda"):
        for trainer_class in all_trainers():
            trainer = trainer_class(device)
            for lr in (config.seed_lr, config.stable_lr):
                if include_row(section, f"{trainer.name} lr={lr:.3g}", device, config.devices):
                    plan.append((trainer, lr))
    with rows_progress("large problem", len(plan)) as progress:
        for trainer, lr in plan:
            progress.set_postfix_str(f"{trainer.name} lr={lr:.3g}")
            row = run_isolated(train, (trainer.name, trainer.device, config, lr), progress.update, env=trainer.env)
            section.rows.append(row)
    baselines = {(r["device"], r["lr"]): r for r in section.rows if r["name"].split("-gpu")[0] == "torch-autograd"}
    for row in section.rows:
        base = baselines.get((row["device"], row["lr"]))
        in_kernel = row["sample_in_kernel"]
        # rows that draw their own samples have no separate training time: compare whole epochs only
        row["training_speedup_vs_autograd"] = (
            base["training_seconds"] / row["training_seconds"] if base and not in_kernel else None
        )
        row["epoch_speedup_vs_autograd"] = base["epoch_ms"] / row["epoch_ms"] if base else None
    section.extra["config"] = {
        "n": config.n,
        "epochs": config.epochs,
        "seed_lr": config.seed_lr,
        "stable_lr": config.stable_lr,
    }
    if "cpu" in config.devices:
        measured = run_isolated(yardsticks, (config.n,), lambda _: None)
        section.extra.update(measured)
        bandwidth = measured["read_bandwidth_gb_s"]
        for row in section.rows:
            if row["name"].startswith("pykernels linear_sgd_step"):
                # the fused step moves 5 floats per weight: w, x read (pass 1); w, x read and w written (pass 2)
                floor_ms = 5 * 4 * config.n / (bandwidth * 1e9) * 1e3
                row["note"] = (
                    f"{row['training_ms_per_epoch'] / floor_ms:.2f}x the time of moving its bytes at the "
                    f"read bandwidth measured here ({bandwidth:.1f} GB/s)"
                )
            elif row["sample_in_kernel"]:
                draws = 1 if "kept" in row["name"] else 2
                row["note"] = (
                    f"draws {draws} sample{'s' if draws > 1 else ''} per epoch; the generator alone: "
                    f"{measured['philox_normal_ms']:.2f} ms per sample (philox_normal of N, same threads)"
                )
        section.notes.append(
            "The `linear_sgd_philox` rows draw their samples inside the kernel (Philox4x32-10 + Box-Muller, "
            "`pykernels.philox_normal`), so they train on other samples than the torch.randn rows: their losses "
            "agree in distribution, not value by value. Each call runs many epochs; an epoch is one pass over w "
            "(the previous epoch's update is applied in the next pass)."
        )
    base = next((r for r in section.rows if r["name"] == "torch-autograd"), None)
    thp = next((r for r in section.rows if r["name"].startswith("torch-autograd, THP")), None)
    if base and thp:
        section.notes.append(
            f"torch-autograd epoch with THP_MEM_ALLOC_ENABLE=1: {thp['epoch_ms']:.1f} ms "
            f"(randn {thp['generation_ms_per_epoch']:.1f} + training {thp['training_ms_per_epoch']:.1f}) vs plain "
            f"{base['epoch_ms']:.1f} ms (randn {base['generation_ms_per_epoch']:.1f} + training "
            f"{base['training_ms_per_epoch']:.1f}); speedups above are against the plain row."
        )
    growth = 1 + 4 * config.seed_lr**2 * config.n
    section.notes.append(
        f"lr = {config.seed_lr:g} (the write-up's) diverges: each step adds -2 lr (y_hat - y) x to w, and with "
        f"|x|^2 ~ N the weights' error norm grows by about 1 + 4 lr^2 N = {growth:.3g}x per epoch. lr = 0.5/N = "
        f"{config.stable_lr:.3g} shrinks it instead. With 10^7 weights and one fresh sample per epoch, 200 epochs "
        "cannot fit w ~ 3: 'stable' means the loss does not grow, not that the model converged."
    )
    return section
