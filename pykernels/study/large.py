"""Section 3: the first write-up's large problem: a 10^7-weight linear model trained through a dot product.

Each epoch draws a fresh sample ``x = randn(N)``, sets ``y = dot(3 * ones(N), x) - 2``, predicts
``y_hat = dot(w, x) + b`` and takes one SGD step on ``(y_hat - y)^2``. Data generation and the training step are
timed apart. At the write-up's lr = 1e-3 the iteration diverges: the weights' squared error grows by
``1 - 4 lr + 4 lr^2 (N + 2)`` (~41x at N = 10^7) per epoch, so the loss overflows float32 within a few dozen epochs.
It is run anyway, as written, and reported as diverged; the stable rate ``0.5 / N`` is run beside it, and the report
checks both against the weights' measured error.

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

from ._common import SectionResult, Stopwatch, busy_note, include_row, median, rows_progress, run_isolated

# The write-up's %%time of its torch-autograd loop: N = 10^7, 200 epochs, lr 1e-3, its machine (Colab CPU, Tesla K80)
WRITE_UP_N, WRITE_UP_EPOCHS = 10_000_000, 200
WRITE_UP_SECONDS = {"cpu": 32.3, "cuda": 1.34}
TRUE_WEIGHT = 3.0  # y = dot(3 * ones(N), x) - 2


def size_words(n: int) -> str:
    """10^7 for a power of ten, else the digits: the report's wording follows the N that ran."""
    exponent = round(math.log10(n)) if n > 0 else 0
    return f"10^{exponent}" if 10**exponent == n else f"{n:,}"


def predicted_weight_error_ratio(lr: float, n: int, epochs: int) -> float:
    """E|e'|^2 / |e|^2 per epoch for e = w - 3 and a fresh x ~ N(0, I_n): e' = e - 2 lr (e.x) x gives
    1 - 4 lr + 4 lr^2 (n + 2) (the bias's share of the residual ignored); the RMS error after ``epochs`` epochs is
    that to the power epochs / 2 (inf where it overflows)."""
    per_epoch = 1 - 4 * lr + 4 * lr**2 * (n + 2)
    try:
        return per_epoch ** (epochs / 2)
    except OverflowError:
        return math.inf


def weight_rms_error(w: torch.Tensor) -> float:
    """sqrt(mean((w - 3)^2)) in float64: how far the weights are from the model that made y."""
    return float((w.detach().double() - TRUE_WEIGHT).square().mean().sqrt())


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
    weight_error_first = weight_rms_error(trainer.w)
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
    weight_error_last = weight_rms_error(trainer.w)
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
        "weight_error_first": weight_error_first,
        "weight_error_last": weight_error_last,
        "weight_error_ratio": weight_error_last / weight_error_first if math.isfinite(weight_error_last) else math.inf,
        "predicted_weight_error_ratio": predicted_weight_error_ratio(lr, n, config.epochs),
        "losses": losses,
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
    section = SectionResult(f"Large problem: {size_words(config.n)}-weight dot-product model (write-up 1)")
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
        row["write_up_ms_per_epoch"] = write_up_ms_per_epoch(row, config)
    section.extra["config"] = {
        "n": config.n,
        "epochs": config.epochs,
        "seed_lr": config.seed_lr,
        "stable_lr": config.stable_lr,
    }
    if "cpu" in config.devices:
        measured = run_isolated(yardsticks, (config.n,), lambda _: None)
        measured.pop("load")
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
    section.notes += learning_rate_notes(section.rows, config)
    section.notes += [note for note in (busy_note(section.rows),) if note]
    return section


def write_up_ms_per_epoch(row: dict, config: LargeConfig) -> float | None:
    """The write-up's own figure, in the one row it measured (its torch-autograd loop at its lr, on the device it
    ran), and only where this run has its N and epochs."""
    same_problem = (config.n, config.epochs) == (WRITE_UP_N, WRITE_UP_EPOCHS) and row["lr"] == config.seed_lr
    if not same_problem or row["name"] != "torch-autograd" + ("-gpu" if row["device"] == "cuda" else ""):
        return None
    return WRITE_UP_SECONDS[row["device"]] / WRITE_UP_EPOCHS * 1e3


def learning_rate_notes(rows: list[dict], config: LargeConfig) -> list[str]:
    """What each lr did to the weights, predicted from (lr, N, epochs) and checked against the rows that ran."""
    notes = []
    for lr, label in ((config.seed_lr, "the write-up's"), (config.stable_lr, "0.5/N")):
        at_lr = [r for r in rows if r["lr"] == lr]
        if not at_lr:
            continue
        per_epoch = predicted_weight_error_ratio(lr, config.n, 2)
        predicted = predicted_weight_error_ratio(lr, config.n, config.epochs)
        diverged = [r for r in at_lr if r["diverged_at_epoch"] is not None]
        finite = [r["weight_error_ratio"] for r in at_lr if r["diverged_at_epoch"] is None]
        measured = []
        if diverged:
            epochs = sorted({r["diverged_at_epoch"] for r in diverged})
            measured.append(
                f"{len(diverged)} of {len(at_lr)} rows overflowed (non-finite loss at epoch "
                f"{', '.join(map(str, epochs))})"
            )
        if finite:
            measured.append(
                f"{len(finite)} of {len(at_lr)} rows ended with the weights' RMS error x{min(finite):.6g} to "
                f"x{max(finite):.6g} of its start"
            )
        direction = "grows" if per_epoch > 1 else "shrinks"
        sentence = (
            f"lr = {lr:.3g} ({label}): each step adds -2 lr (y_hat - y) x to w, so with x ~ N(0, I_N) the weights' "
            f"squared error |w - 3|^2 {direction} by a factor 1 - 4 lr + 4 lr^2 (N + 2) = {per_epoch:.8g} per epoch; "
            f"after {config.epochs} epochs their RMS error is expected (in mean square) at x{predicted:.6g} of its "
            "start; one run's sample path spreads around that. Measured: "
            f"{'; '.join(measured)}."
        )
        contradicted = [r["name"] for r in at_lr if _contradicts(r, predicted)]
        if contradicted:
            sentence += f" **Not as predicted: {', '.join(contradicted)}.**"
        if per_epoch < 1:
            epochs_to_fit = math.log(0.01) / math.log(per_epoch) * 2  # RMS error down to 1% of its start
            sentence += (
                f" Even at this rate, bringing the error to 1% of its start takes ~{epochs_to_fit:.3g} epochs: "
                f"{config.epochs} epochs of one fresh sample each cannot fit {size_words(config.n)} weights; a "
                "finite loss here means the iteration is stable, not that the model converged."
            )
        notes.append(sentence)
    return notes


def _contradicts(row: dict, predicted: float) -> bool:
    """Whether a row's outcome disagrees with the prediction: it overflowed where the predicted loss stays below
    float32's largest value (or the reverse), or its error moved the other way than predicted (beyond 1% of the
    predicted change plus float32 rounding)."""
    predicted_last_loss_log = math.log(max(row["first_loss"], 1e-300)) + 2 * math.log(predicted)
    overflow_expected = predicted_last_loss_log > math.log(float(np.finfo(np.float32).max))
    if row["diverged_at_epoch"] is not None or overflow_expected:
        return (row["diverged_at_epoch"] is not None) != overflow_expected
    measured = row["weight_error_ratio"]
    tolerance = 1e-5 + 0.01 * abs(1 - predicted)
    return (measured - 1) * (predicted - 1) < 0 and abs(measured - 1) > tolerance
