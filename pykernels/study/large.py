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
import time
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

import pykernels

from ._common import SectionResult, Stopwatch, busy_note, include_row, median, plain, rows_progress, run_isolated

# The write-up's %%time of its torch-autograd loop: N = 10^7, 200 epochs, lr 1e-3, its machine (Colab CPU, Tesla K80)
WRITE_UP_N, WRITE_UP_EPOCHS = 10_000_000, 200
WRITE_UP_SECONDS = {"cpu": 32.3, "cuda": 1.34}
TRUE_WEIGHT = 3.0  # y = dot(3 * ones(N), x) - 2


def size_words(n: int) -> str:
    """10^7 for a power of ten, else the digits: the report's wording follows the N that ran."""
    exponent = round(math.log10(n)) if n > 0 else 0
    return f"10^{exponent}" if 10**exponent == n else f"{n:,}"


@dataclass(frozen=True)
class WeightErrorModel:
    """How SGD on one fresh sample per epoch moves the weights' error e = w - 3, for x ~ N(0, I_n).

    An epoch's update e' = e - 2 lr (e.x) x multiplies |e|^2 by 1 + a z^2, with z = e.x / |e| ~ N(0, 1) and
    a = 4 lr^2 (n + 2) - 4 lr (the bias's share of the residual ignored). Its mean, 1 + a, is the mean-square factor;
    a typical run follows the mean of the logarithm instead, m = E log(1 + a z^2), which is far smaller when a is
    large (at the write-up's lr and n = 10^7 the mean square grows 41x per epoch, a typical path ~16x). After E epochs
    the log of the RMS ratio is E m / 2, give or take sqrt(E v) / 2 (v the variance of log(1 + a z^2))."""

    lr: float
    n: int
    epochs: int

    @property
    def a(self) -> float:
        return 4 * self.lr**2 * (self.n + 2) - 4 * self.lr

    def _log_moments(self) -> tuple[float, float]:
        nodes, weights = np.polynomial.hermite_e.hermegauss(120)  # Gauss quadrature for E over z ~ N(0, 1)
        weights = weights / weights.sum()
        logs = np.log(np.maximum(1 + self.a * nodes**2, 1e-300))
        mean = float(weights @ logs)
        return mean, float(weights @ (logs - mean) ** 2)

    @property
    def mean_square_per_epoch(self) -> float:
        return 1 + self.a

    @property
    def typical_ratio(self) -> float:
        """A typical run's RMS error after all epochs over its start (inf where that overflows a float)."""
        return math.exp(min(700.0, self.epochs * self._log_moments()[0] / 2))

    @property
    def log_spread(self) -> float:
        """The standard deviation of log(RMS ratio) across runs."""
        return math.sqrt(self.epochs * self._log_moments()[1]) / 2

    def epochs_to_shrink(self, factor: float) -> float:
        """Epochs a typical run needs to bring its RMS error to ``factor`` of its start (inf if it does not shrink)."""
        mean = self._log_moments()[0]
        return 2 * math.log(factor) / mean if mean < 0 else math.inf


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
        "predicted_weight_error_ratio": WeightErrorModel(lr, n, config.epochs).typical_ratio,
        "predicted_log_spread": WeightErrorModel(lr, n, config.epochs).log_spread,
        "losses": losses,
        "note": trainer.note,
    }


def yardsticks(n: int, progress, repeats: int = 20) -> dict[str, float]:
    """Measured beside the rows: the read bandwidth (GB/s of torch.sum over 4 float32 vectors of n already in
    memory, the same traffic scale as an epoch) and the in-kernel generator alone (ms for philox_normal of n). Each
    is the best of ``repeats`` runs: what the machine can do, which a passing stall must not lower."""

    def best_seconds(call) -> float:
        call()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            call()
            times.append(time.perf_counter() - start)
        return min(times)

    data = torch.rand(4 * n)
    sample = pykernels.philox_normal(n, seed=1)
    read_seconds = best_seconds(data.sum)
    draw_seconds = best_seconds(lambda: pykernels.philox_normal(n, seed=1, stream=3, out=sample))
    progress(1.0)
    return {"read_bandwidth_gb_s": data.numel() * 4 / read_seconds / 1e9, "philox_normal_ms": draw_seconds * 1e3}


def run(config: LargeConfig) -> SectionResult:
    section = SectionResult("Large problem")
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
        yardstick_load = measured.pop("load")
        section.extra.update(measured, yardstick_load=yardstick_load)
        bandwidth = measured["read_bandwidth_gb_s"]
        under_load = " (measured under load: the ratio is unreliable)" if yardstick_load["busy"] else ""
        for row in (r for r in section.rows if r["device"] == "cpu"):  # the yardsticks are CPU measurements
            if row["name"].startswith("pykernels linear_sgd_step"):
                # the fused step moves 5 floats per weight: w, x read (pass 1); w, x read and w written (pass 2)
                floor_ms = 5 * 4 * config.n / (bandwidth * 1e9) * 1e3
                ratio = row["training_ms_per_epoch"] / floor_ms
                row["note"] = (
                    f"{ratio:.2f}x the time of moving its bytes at the read bandwidth measured here "
                    f"({bandwidth:.1f} GB/s, best of 20 torch.sum){under_load}"
                    + (": faster than that yardstick, which therefore under-reads the machine" if ratio < 1 else "")
                )
            elif row["sample_in_kernel"]:
                draws = 1 if "kept" in row["name"] else 2
                row["note"] = (
                    f"draws {draws} sample{'s' if draws > 1 else ''} per epoch; the generator alone: "
                    f"{measured['philox_normal_ms']:.2f} ms per sample (philox_normal of N, same threads, best of 20)"
                    f"{under_load}"
                )
    describe(section)
    return section


def describe(section: SectionResult) -> None:
    """The section's title and notes, from its rows and config (a saved run's report is written again with today's
    words)."""
    stored = section.extra["config"]
    config = LargeConfig(n=stored["n"], epochs=stored["epochs"], seed_lr=stored["seed_lr"])
    section.title = f"Large problem: {size_words(config.n)}-weight dot-product model (the speed write-up)"
    rows, notes = section.rows, []
    if any(r["sample_in_kernel"] for r in rows):
        notes.append(
            "The `linear_sgd_philox` rows draw their samples inside the kernel (Philox4x32-10 + Box-Muller, "
            "`pykernels.philox_normal`), so they train on other samples than the torch.randn rows: their losses "
            "agree in distribution, not value by value. Each call runs many epochs; an epoch is one pass over w "
            "(the previous epoch's update is applied in the next pass)."
        )
    base = next((r for r in rows if r["name"] == "torch-autograd"), None)
    thp = next((r for r in rows if r["name"].startswith("torch-autograd, THP")), None)
    if base and thp and all(math.isfinite(r["epoch_ms"]) for r in (base, thp)):  # no "nan ms" comparison
        notes.append(
            f"torch-autograd epoch with THP_MEM_ALLOC_ENABLE=1: {thp['epoch_ms']:.1f} ms "
            f"(randn {thp['generation_ms_per_epoch']:.1f} + training {thp['training_ms_per_epoch']:.1f}) vs plain "
            f"{base['epoch_ms']:.1f} ms (randn {base['generation_ms_per_epoch']:.1f} + training "
            f"{base['training_ms_per_epoch']:.1f}); speedups above are against the plain row."
        )
    notes += [note for note in (loss_note(rows, config),) if note]
    notes += learning_rate_notes(rows, config)
    section.notes = notes + [note for note in (busy_note(rows),) if note]


def loss_note(rows: list[dict], config: LargeConfig) -> str | None:
    """What the loss column measures, and why its first and last values say nothing about training: each is the
    squared error on one fresh sample, (e.x + b + 2)^2 for the weights' error e = w - 3, so a single draw of
    |e|^2 z^2 (z ~ N(0, 1), the bias aside), whose spread is as wide as its mean."""
    stable = next((r for r in rows if r["lr"] == config.stable_lr and r["diverged_at_epoch"] is None), None)
    if stable is None:
        return None
    mean_loss = config.n * stable["weight_error_last"] ** 2
    return (
        "'loss' is the write-up's (y_hat - y)^2 on the epoch's one fresh sample, before its step: with "
        "x ~ N(0, I_N) that is (|w - 3| z)^2 for z ~ N(0, 1) (the bias aside), one draw of a quantity with mean "
        f"N x (RMS error)^2 = {plain(mean_loss)} here and a spread as wide as its mean. The first and last losses "
        f"(`{stable['name']}` at lr = {plain(stable['lr'])}: {plain(stable['first_loss'])} → "
        f"{plain(stable['last_loss'])}) are two such draws, not a trend; the weights' RMS error is what measures "
        "training."
    )


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
        model = WeightErrorModel(lr, config.n, config.epochs)
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
                f"{len(finite)} of {len(at_lr)} rows ended with the weights' RMS error x{plain(min(finite), 6)} to "
                f"x{plain(max(finite), 6)} of its start"
            )
        typical = model.typical_ratio
        direction = "grows" if typical > 1 else "shrinks" if typical < 1 else "stays"
        sentence = (
            f"lr = {plain(lr)} ({label}): each step adds -2 lr (y_hat - y) x to w, so with x ~ N(0, I_N) the weights' "
            f"squared error |w - 3|^2 is multiplied each epoch by 1 + a z^2, z ~ N(0, 1), a = 4 lr^2 (N + 2) - 4 lr "
            f"= {plain(model.a, 6)} (mean square x{plain(model.mean_square_per_epoch, 8)} per epoch). A typical run's "
            f"RMS error {direction}: after {config.epochs} epochs x{_ratio(typical)} of its start (log spread across "
            f"runs {plain(model.log_spread, 2)}). Measured: {'; '.join(measured)}."
        )
        if abs(math.log(typical)) < 3 * model.log_spread + 1e-5:
            sentence += (
                " A change this small is within one run's spread (and float32's rounding): the measurement shows the "
                "iteration is stable, it cannot show the direction."
            )
        contradicted = [r["name"] for r in at_lr if _contradicts(r, model)]
        if contradicted:
            sentence += f" **Not as predicted: {', '.join(contradicted)}.**"
        needed = model.epochs_to_shrink(0.01)
        if typical < 1 and config.epochs < needed:
            sentence += (
                f" Bringing the error to 1% of its start would take ~{plain(needed)} epochs: {config.epochs} epochs of "
                f"one fresh sample each cannot fit {size_words(config.n)} weights; a finite loss here means the "
                "iteration is stable, not that the model converged."
            )
        notes.append(sentence)
    return notes


def _ratio(value: float) -> str:
    return plain(value, 6) if math.isfinite(value) else "inf (beyond a float)"


def _contradicts(row: dict, model: WeightErrorModel) -> bool:
    """Whether a row's outcome falls outside what the model allows: it overflowed where a run's loss stays below
    float32's largest value even 3 spreads above the typical path (or stayed finite where it overflows even 3 below),
    or its RMS error ratio is more than 5 spreads (plus float32 rounding) from the typical one."""
    log_limit = math.log(float(np.finfo(np.float32).max))
    typical_log = math.log(model.typical_ratio) if math.isfinite(model.typical_ratio) else 700.0
    last_loss_log = math.log(max(row["first_loss"], 1e-300)) + 2 * typical_log
    band = 2 * 3 * model.log_spread  # the loss goes with the square of the error
    if row["diverged_at_epoch"] is not None:
        return last_loss_log + band < log_limit
    if last_loss_log - band > log_limit:
        return True
    measured = math.log(row["weight_error_ratio"]) if row["weight_error_ratio"] > 0 else -math.inf
    return abs(measured - typical_log) > 5 * model.log_spread + 1e-5


# What a row's training did, from its weights' RMS error (last over first): the loss on one fresh sample is too
# noisy to judge by, and "did not overflow" is not "stable" (a quick run's error can grow 40x without overflowing).
OVERFLOWED, DIVERGING, NOT_LEARNING, TRAINING = "overflowed", "diverging", "stable, not learning", "training"
STILL_RATIO = 0.1  # an error ratio within 10% of 1 is "not learning"; beyond it the error grew or shrank


def outcome(row: dict) -> str:
    """One row's outcome: OVERFLOWED (a non-finite loss), DIVERGING (the weights' error grew by more than
    STILL_RATIO), TRAINING (it shrank by more than that) or NOT_LEARNING (neither)."""
    ratio = row.get("weight_error_ratio")
    if row.get("diverged_at_epoch") is not None or ratio is None or not math.isfinite(ratio):
        return OVERFLOWED
    if ratio > 1 + STILL_RATIO:
        return DIVERGING
    return TRAINING if ratio < 1 - STILL_RATIO else NOT_LEARNING


def outcomes(rows: list[dict]) -> dict[str, list[dict]]:
    """The rows grouped by :func:`outcome`, in the order overflowed, diverging, not learning, training."""
    grouped = {
        kind: [r for r in rows if outcome(r) == kind] for kind in (OVERFLOWED, DIVERGING, NOT_LEARNING, TRAINING)
    }
    return {kind: members for kind, members in grouped.items() if members}


def outcome_words(rows: list[dict]) -> str:
    """The rows at one learning rate in a few words, for a plot's title: "overflows", "diverging: the error grows",
    "stable, not learning", "training", or the counts when the rows differ ("4 overflowed, 2 diverging")."""
    grouped = outcomes(rows)
    if len(grouped) == 1:
        kind = next(iter(grouped))
        return {OVERFLOWED: "overflows", DIVERGING: "diverging: the error grows"}.get(kind, kind)
    return ", ".join(f"{len(members)} {kind}" for kind, members in grouped.items())
