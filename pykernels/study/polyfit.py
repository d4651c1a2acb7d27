"""Section 1: the polynomial write-up's fit, every way it can be trained, timed honestly.

The problem (the write-up's): x = linspace(0, 5, 100), y = sin x, degree 4, zeros init, 200,000 steps of
gradient descent at lr 1e-5, float32, the MSE recorded at every step. Each row is a real training run; all
rows must end at the MSE of exact gradient descent (the float64 reference row) within ``MSE_RTOL``, or the row is
flagged.
"""

from __future__ import annotations

import importlib.util
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

import pykernels

from ._common import (
    SectionResult,
    Stopwatch,
    busy_note,
    cuda_available,
    include_row,
    median,
    mse_reference_row,
    ratio,
    rows_progress,
    run_isolated,
    speedup,
    unavailable_reason,
)

SEED_STEPS = 200_000
SEED_LR = 1e-5
SEED_DEGREE = 4
# A float32 row ends ~1e-3 above exact gradient descent: its updates lr * grad fall below half an ulp of some
# coefficients (they stall) long before 200,000 steps; rows iterating in float64 end on it.
MSE_RTOL = 2e-3
PROGRESS_BLOCKS = 50


def seed_data(num_samples: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """The write-up's data: ``x = np.linspace(0, 5, 100).reshape((-1, 1)); y = np.sin(x)``."""
    x = np.linspace(0, 5, num_samples).reshape((-1, 1))
    return x, np.sin(x)


@dataclass
class Problem:
    x: np.ndarray
    y: np.ndarray
    degree: int
    lr: float
    steps: int


class Trainer:
    """One way of training the fit. ``setup`` allocates the state, ``run(start, stop)`` does those steps
    (timed; called in blocks so a progress bar can move between them), ``result`` returns
    (coefficients, MSE trace) as NumPy arrays."""

    name: str = ""
    group: str = ""
    device: str = "cpu"
    note: str = ""
    progress_blocks: int = PROGRESS_BLOCKS  # whole-loop rows run in one call: a block boundary would cost them

    def requirements(self) -> list[tuple[Callable[[], bool], str]]:
        return [(cuda_available, "no CUDA GPU")] if self.device == "cuda" else []

    def setup(self, problem: Problem) -> None:
        raise NotImplementedError

    def prepare(self) -> float:
        """One-off cost paid before the timed steps (compilation); returns its seconds."""
        return 0.0

    def run(self, start: int, stop: int) -> None:
        raise NotImplementedError

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError


# --- the write-up's own rows: its train(use_torch, use_autograd, use_gpu), in today's torch -----------------


class WriteUpNumpy(Trainer):
    """``train(use_torch=False)``: float64 data, float32 weights, powers recomputed in poly and dpoly_dw."""

    name, group = "numpy", "write-up"

    def setup(self, p: Problem) -> None:
        self.p = p
        self.w = np.zeros((p.degree + 1, 1), dtype=np.float32)
        self.trace = np.zeros(p.steps, dtype=np.float32)

    def run(self, start: int, stop: int) -> None:
        x, y, w, lr, n = self.p.x, self.p.y, self.w, self.p.lr, self.p.x.shape[0]
        exponents = np.arange(w.shape[0], dtype=x.dtype)
        for step in range(start, stop):
            y_model = (x**exponents) @ w  # poly(x, w)
            mse = ((y - y_model) ** 2).mean()
            grad = -2 / n * (x**exponents).T @ (y - y_model)  # dpoly_dw(x, w).T @ (y - yModel)
            w -= lr * grad
            self.trace[step] = mse

    def result(self):
        return self.w.ravel().astype(np.float64), self.trace


class ExactGradientDescent(WriteUpNumpy):
    """The write-up's NumPy loop with float64 weights: gradient descent without float32's rounding, the row every
    other row's final MSE is compared with."""

    name, group = "numpy, float64 weights (exact gradient descent)", "reference"

    def setup(self, p: Problem) -> None:
        super().setup(p)
        self.w = self.w.astype(np.float64)
        self.trace = self.trace.astype(np.float64)


class WriteUpTorch(Trainer):
    """``train(use_torch=True, use_autograd=..., use_gpu=...)``: float32 tensors, the power matrix built anew
    in every call of poly (``x ** torch.arange(0.0, D)``), ``mseTrace[step] = mse``."""

    group = "write-up"

    def __init__(self, use_autograd: bool, device: str) -> None:
        self.use_autograd, self.device = use_autograd, device
        self.name = "torch" + ("-autograd" if use_autograd else "") + ("-gpu" if device == "cuda" else "")

    def setup(self, p: Problem) -> None:
        self.p = p
        self.x = torch.from_numpy(p.x).float().to(self.device)
        self.y = torch.from_numpy(p.y).float().to(self.device)
        self.w = torch.zeros((p.degree + 1, 1), device=self.device, requires_grad=self.use_autograd)
        self.trace = torch.zeros(p.steps, device=self.device)

    def _poly(self, w):
        return self.x ** torch.arange(0.0, w.shape[0], device=self.device) @ w

    def _dpoly_dw(self, w):
        return self.x ** torch.arange(0.0, w.shape[0], device=self.device)

    def run(self, start: int, stop: int) -> None:
        y, w, lr, n = self.y, self.w, self.p.lr, self.x.shape[0]
        for step in range(start, stop):
            y_model = self._poly(w)
            mse = ((y - y_model) ** 2).mean()
            if self.use_autograd:
                if step > 0:
                    w.grad.data.zero_()
                mse.backward()
                w.data -= lr * w.grad.data
                self.trace[step] = mse.data
            else:
                grad = -2 / n * self._dpoly_dw(w).t().mm(y - y_model)
                w -= lr * grad
                self.trace[step] = mse

    def result(self):
        return self.w.detach().cpu().double().numpy().ravel(), self.trace.cpu().numpy()


# --- what a user reaches for today ---------------------------------------------------------------------------


def _write_up_step(x, y, w, exponents, lr: float):
    """The write-up's manual-gradient step as one function (power matrix, mm), for the compilers."""
    powers = x**exponents
    residual = y - powers.mm(w)
    grad = -2 / x.shape[0] * powers.t().mm(residual)
    return w - lr * grad, (residual**2).mean()


class TorchCompile(Trainer):
    """``torch.compile`` of the write-up's step; compile time reported apart; recompiles counted."""

    group = "today"

    def __init__(self, device: str, mode: str | None = None) -> None:
        self.device, self.mode = device, mode
        self.name = "torch.compile" + (f"({mode})" if mode else "") + ("-gpu" if device == "cuda" else "")

    def setup(self, p: Problem) -> None:
        self.p = p
        self.x = torch.from_numpy(p.x).float().to(self.device)
        self.y = torch.from_numpy(p.y).float().to(self.device)
        self.exponents = torch.arange(0.0, p.degree + 1, device=self.device)
        self.w = torch.zeros((p.degree + 1, 1), device=self.device)
        self.blocks: list[torch.Tensor] = []
        torch._dynamo.reset()
        self.step = torch.compile(_write_up_step, fullgraph=True, mode=self.mode)

    def prepare(self) -> float:
        watch = Stopwatch(self.device)
        with watch.timed():
            self.step(self.x, self.y, self.w.clone(), self.exponents, self.p.lr)
            self.step(self.x, self.y, self.w.clone(), self.exponents, self.p.lr)  # reduce-overhead records on call 2
        from torch._dynamo.utils import counters

        self.graphs_after_warmup = counters["stats"]["unique_graphs"]
        return watch.seconds

    def run(self, start: int, stop: int) -> None:
        step, x, y, exponents, lr = self.step, self.x, self.y, self.exponents, self.p.lr
        w, losses = self.w, []
        for _ in range(start, stop):
            w, mse = step(x, y, w, exponents, lr)
            losses.append(mse.clone() if self.mode else mse)  # cudagraph outputs are overwritten on replay
        self.w = w
        self.blocks.append(torch.stack(losses))

    def result(self):
        from torch._dynamo.utils import counters

        recompiles = counters["stats"]["unique_graphs"] - self.graphs_after_warmup
        self.note = f"recompiles after warm-up: {recompiles}"
        return self.w.cpu().double().numpy().ravel(), torch.cat(self.blocks).cpu().numpy()


class JaxTrainer(Trainer):
    """``jax.jit`` of the write-up's step, or of the whole loop with ``lax.fori_loop`` (float32)."""

    group = "today"

    def __init__(self, whole_loop: bool) -> None:
        self.whole_loop = whole_loop
        self.progress_blocks = 1 if whole_loop else PROGRESS_BLOCKS
        self.name = "jax.jit(fori_loop)" if whole_loop else "jax.jit(step)"

    def requirements(self):
        return [(lambda: importlib.util.find_spec("jax") is not None, "jax not installed (optional)")]

    def setup(self, p: Problem) -> None:
        import jax
        import jax.numpy as jnp

        self.jax, self.jnp, self.p = jax, jnp, p
        self.x, self.y = jnp.asarray(p.x, jnp.float32), jnp.asarray(p.y, jnp.float32)
        self.w = jnp.zeros((p.degree + 1, 1), jnp.float32)
        self.trace = jnp.zeros(p.steps, jnp.float32)
        exponents = jnp.arange(p.degree + 1, dtype=jnp.float32)

        def step(w, x, y):
            powers = x**exponents
            residual = y - powers @ w
            return w - p.lr * (-2 / x.shape[0] * powers.T @ residual), jnp.mean(residual**2)

        def loop(start, stop, w, trace, x, y):
            def body(i, carry):
                w, trace = carry
                w, mse = step(w, x, y)
                return w, trace.at[i].set(mse)

            return jax.lax.fori_loop(start, stop, body, (w, trace))

        self.step = jax.jit(step)
        self.loop = jax.jit(loop)

    def prepare(self) -> float:
        watch = Stopwatch()
        with watch.timed():
            if self.whole_loop:
                self.loop(0, 1, self.w, self.trace, self.x, self.y)[0].block_until_ready()
            else:
                self.step(self.w, self.x, self.y)[0].block_until_ready()
        return watch.seconds

    def run(self, start: int, stop: int) -> None:
        if self.whole_loop:
            self.w, self.trace = self.loop(start, stop, self.w, self.trace, self.x, self.y)
            self.w.block_until_ready()
            return
        w, losses = self.w, []
        for _ in range(start, stop):
            w, mse = self.step(w, self.x, self.y)
            losses.append(mse)
        w.block_until_ready()
        self.w = w
        self.trace = self.trace.at[start:stop].set(self.jnp.stack(losses))

    def result(self):
        return np.asarray(self.w, dtype=np.float64).ravel(), np.asarray(self.trace)


# --- pykernels ---------------------------------------------------------------------------------------------


class PykernelsTrainer(Trainer):
    """Shared state of the pykernels rows: float32 x, y of shape (100, 1) as in the write-up, w of shape (D+1,).
    Each step's loss is kept as a 0-d tensor and a block's are stacked at its end (inside the timing): recording
    copies nothing per step, and the list never holds more than a block (200,000 live tensors would make Python's
    garbage collector rescan them all, a cost that grows with the run)."""

    group = "pykernels"

    def __init__(self, backend: str, device: str) -> None:
        self.backend, self.device = backend, device

    def requirements(self):
        checks = super().requirements()
        if self.backend == "numba":
            checks.append((lambda: importlib.util.find_spec("numba") is not None, "numba not installed"))
        return checks

    def setup(self, p: Problem) -> None:
        self.p = p
        self.x = torch.from_numpy(p.x).float().to(self.device)
        self.y = torch.from_numpy(p.y).float().to(self.device)
        self.w = torch.zeros(p.degree + 1, device=self.device)
        self.blocks: list[torch.Tensor] = []

    def prepare(self) -> float:
        watch = Stopwatch(self.device)
        with watch.timed():  # numba compiles (or loads its cache) on the first call
            pykernels.poly_mse(self.x, self.y, self.w, backend=self.backend)
        return watch.seconds

    def result(self):
        return self.w.detach().cpu().double().numpy(), torch.cat(self.blocks).cpu().numpy()


class PykernelsAutograd(PykernelsTrainer):
    """``loss = poly_mse(...)`` (or ``PolyMSE.apply``), ``loss.backward()``, ``w -= lr * w.grad``."""

    def __init__(self, backend: str, device: str, function_class: bool) -> None:
        super().__init__(backend, device)
        self.function_class = function_class
        suffix = "-gpu" if device == "cuda" else ""
        self.name = (
            f"PolyMSE.apply+backward ({backend}){suffix}"
            if function_class
            else f"poly_mse+backward ({backend}){suffix}"
        )

    def setup(self, p: Problem) -> None:
        super().setup(p)
        self.w.requires_grad_(True)

    def loss_fn(self):
        """The step's loss function: (x, y, w) -> 0-d loss that backward() differentiates."""
        backend = self.backend
        if self.function_class:
            return lambda x, y, w: pykernels.PolyMSE.apply(x, y, w, backend)[0]
        return lambda x, y, w: pykernels.poly_mse(x, y, w, backend=backend)[0]

    def run(self, start: int, stop: int) -> None:
        x, y, w, lr, losses, loss_fn = self.x, self.y, self.w, self.p.lr, [], self.loss_fn()
        for _ in range(start, stop):
            loss = loss_fn(x, y, w)
            w.grad = None
            loss.backward()
            with torch.no_grad():
                w.sub_(w.grad, alpha=lr)
            losses.append(loss.detach())
        self.blocks.append(torch.stack(losses))


class PykernelsManual(PykernelsTrainer):
    """No autograd: ``loss, grad = poly_mse(x, y, w)`` (one pass), ``w -= lr * grad``."""

    def __init__(self, backend: str, device: str) -> None:
        super().__init__(backend, device)
        self.name = f"manual poly_mse step ({backend})" + ("-gpu" if device == "cuda" else "")

    def run(self, start: int, stop: int) -> None:
        op = pykernels.get_backend(self.backend).poly_mse
        x, y, w, lr, losses = self.x, self.y, self.w, self.p.lr, []
        for _ in range(start, stop):
            loss, grad = op(x, y, w)
            w.sub_(grad, alpha=lr)
            losses.append(loss)
        self.blocks.append(torch.stack(losses))


class PykernelsCudaGraph(PykernelsTrainer):
    """The manual step captured ``GRAPH_STEPS`` times in one CUDA graph, then replayed: no launch overhead."""

    GRAPH_STEPS = 1000

    def __init__(self) -> None:
        super().__init__("cpp", "cuda")
        self.name = "manual poly_mse step, CUDA graph (cpp)-gpu"

    def setup(self, p: Problem) -> None:
        super().setup(p)
        self.trace = torch.zeros(p.steps, device="cuda")
        self.chunk = torch.zeros(self.GRAPH_STEPS, device="cuda")
        op, x, y, w = pykernels.get_backend("cpp").poly_mse, self.x, self.y, self.w
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm up outside the capture, as torch.cuda.graph's docs ask
            op(x, y, w.clone())
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            for k in range(self.GRAPH_STEPS):
                loss, grad = op(x, y, w)
                w.sub_(grad, alpha=p.lr)
                self.chunk[k].copy_(loss)

    def prepare(self) -> float:
        return 0.0

    def run(self, start: int, stop: int) -> None:
        step = start
        while step < stop:
            if stop - step < self.GRAPH_STEPS:  # the remainder, eagerly
                op = pykernels.get_backend("cpp").poly_mse
                for s in range(step, stop):
                    loss, grad = op(self.x, self.y, self.w)
                    self.w.sub_(grad, alpha=self.p.lr)
                    self.trace[s].copy_(loss)
                return
            self.graph.replay()
            self.trace[step : step + self.GRAPH_STEPS].copy_(self.chunk)
            step += self.GRAPH_STEPS

    def result(self):
        return self.w.cpu().double().numpy(), self.trace.cpu().numpy()


class NumbaFastmathLoop(Trainer):
    """The yardstick: a hand-unrolled degree-4 numba ``@njit(fastmath=True)`` whole loop with scalar float32
    accumulators (what a numba user would write by hand for this one problem)."""

    name, group = "numba fastmath loop, degree 4 unrolled", "today"
    progress_blocks = 1

    def requirements(self):
        return [(lambda: importlib.util.find_spec("numba") is not None, "numba not installed")]

    def setup(self, p: Problem) -> None:
        from ._yardstick import fit_degree4_fastmath

        if p.degree != 4:
            raise ValueError("the yardstick loop is written for degree 4")
        self.fit, self.p = fit_degree4_fastmath, p
        self.x, self.y = p.x.ravel().astype(np.float32), p.y.ravel().astype(np.float32)
        self.w = np.zeros(5, np.float32)
        self.trace = np.zeros(p.steps, np.float32)

    def prepare(self) -> float:
        watch = Stopwatch()
        with watch.timed():
            self.fit(self.x, self.y, self.w.copy(), np.float32(self.p.lr), np.zeros(1, np.float32))
        return watch.seconds

    def run(self, start: int, stop: int) -> None:
        self.fit(self.x, self.y, self.w, np.float32(self.p.lr), self.trace[start:stop])

    def result(self):
        return self.w.astype(np.float64), self.trace


class PykernelsFusedFit(PykernelsTrainer):
    """``pykernels.fit_poly``: the whole loop in one call, stepping on the data (a pass over the points per step,
    float32) or on its sufficient statistics (``method="gram"``: (D+1)^2 work per step, float64)."""

    progress_blocks = 1

    def __init__(self, backend: str, device: str, method: str) -> None:
        super().__init__(backend, device)
        self.method = method
        # the data rows keep their names: the asv history tracks them by name
        label = "fit_poly, fused loop" if method == "data" else f"fit_poly ({method}), fused loop"
        self.name = f"{label} ({backend})" + ("-gpu" if device == "cuda" else "")
        self.note = {
            "data": "steps on the data (method='data')",
            "gram": "steps on the sufficient statistics in float64 (method='gram'); the time includes their pass",
        }[method]

    def prepare(self) -> float:
        watch = Stopwatch(self.device)
        with watch.timed():
            pykernels.fit_poly(
                self.x.ravel(),
                self.y.ravel(),
                self.p.degree,
                lr=self.p.lr,
                steps=1,
                method=self.method,
                backend=self.backend,
            )
        return watch.seconds

    def run(self, start: int, stop: int) -> None:
        fit = pykernels.fit_poly(
            self.x.ravel(),
            self.y.ravel(),
            self.p.degree,
            lr=self.p.lr,
            steps=stop - start,
            init=self.w,
            method=self.method,
            backend=self.backend,
        )
        self.w = fit.coeffs
        self.blocks.append(fit.trace)

    def result(self):
        return self.w.cpu().double().numpy(), torch.cat(self.blocks).cpu().numpy()


class EmptyFunction(torch.autograd.Function):
    """Does no work: what any autograd.Function step costs before its kernels run."""

    @staticmethod
    def forward(ctx, x, y, w):
        loss, grad = w.new_zeros(()), w.new_zeros(w.shape)
        ctx.mark_non_differentiable(grad)
        return loss, grad

    @staticmethod
    def backward(ctx, grad_loss, _):
        return None, None, grad_loss.expand(5)


class EmptyFunctionFloor(PykernelsAutograd):
    """The floor: the PolyMSE loop around an autograd.Function that does no work (not a fit)."""

    group = "floor"

    def __init__(self) -> None:
        super().__init__("cpp", "cpu", function_class=True)
        self.name = "floor: the same loop, empty autograd.Function"

    def prepare(self) -> float:
        return 0.0

    def loss_fn(self):
        return lambda x, y, w: EmptyFunction.apply(x, y, w)[0]  # the floor runs PykernelsAutograd's own loop


def all_trainers() -> list[Trainer]:
    """Every row, in report order; new backends add rows here."""
    rows: list[Trainer] = [
        WriteUpNumpy(),
        ExactGradientDescent(),
        WriteUpTorch(use_autograd=False, device="cpu"),
        WriteUpTorch(use_autograd=True, device="cpu"),
        WriteUpTorch(use_autograd=False, device="cuda"),
        WriteUpTorch(use_autograd=True, device="cuda"),
        TorchCompile("cpu"),
        TorchCompile("cuda"),
        TorchCompile("cuda", mode="reduce-overhead"),
        JaxTrainer(whole_loop=False),
        JaxTrainer(whole_loop=True),
        NumbaFastmathLoop(),
    ]
    for device in ("cpu", "cuda"):
        for backend in ("cpp", "numba"):
            rows += [
                PykernelsAutograd(backend, device, function_class=True),
                PykernelsAutograd(backend, device, function_class=False),
                PykernelsManual(backend, device),
                PykernelsFusedFit(backend, device, "data"),
                PykernelsFusedFit(backend, device, "gram"),
            ]
    rows += [PykernelsCudaGraph(), EmptyFunctionFloor()]
    return rows


@dataclass
class FitConfig:
    steps: int = SEED_STEPS
    lr: float = SEED_LR
    degree: int = SEED_DEGREE
    repeat: int = 1
    devices: tuple[str, ...] = ("cpu",)
    # a tenth of the run: the first seconds of a row ran up to 1.5x slower here (clock ramp, allocator and GC warm-up)
    warmup_steps: int = 20_000
    only_rows: list[str] = field(default_factory=list)


def time_trainer(name: str, problem: Problem, repeat: int, warmup_steps: int, progress) -> dict[str, Any]:
    """Warm up on a short run, then time ``repeat`` full runs (median). Runs in the row's own process;
    ``progress`` receives the fraction done after each timed block (the clock stops around it)."""
    trainer = next(t for t in all_trainers() if t.name == name)
    trainer.setup(Problem(problem.x, problem.y, problem.degree, problem.lr, warmup_steps))
    first_call = trainer.prepare()
    trainer.run(0, warmup_steps)
    seconds = []
    blocks = np.linspace(0, problem.steps, max(1, min(trainer.progress_blocks, problem.steps)) + 1).astype(int)
    for _ in range(repeat):
        trainer.setup(problem)
        trainer.prepare()
        watch = Stopwatch(trainer.device)
        for start, stop in itertools.pairwise(blocks):
            with watch.timed():
                trainer.run(int(start), int(stop))
            progress((stop - start) / repeat / problem.steps)
        seconds.append(watch.seconds)
    coeffs, trace = trainer.result()
    return {
        "name": trainer.name,
        "group": trainer.group,
        "device": trainer.device,
        "seconds": median(seconds),
        "seconds_all": seconds,
        "us_per_step": median(seconds) / problem.steps * 1e6,
        "first_call_seconds": first_call,
        "final_mse": float(trace[-1]),
        "coeffs": coeffs.tolist(),
        "trace": trace,
        "note": trainer.note,
    }


def least_squares_optimum(x: np.ndarray, y: np.ndarray, degree: int, lr: float) -> dict[str, Any]:
    """The best fit of that degree (what gradient descent would converge to), and why it is far away:
    the power matrix's conditioning."""
    coeffs = np.polynomial.polynomial.polyfit(x.ravel(), y.ravel(), degree)
    mse = float(np.mean((np.polynomial.polynomial.polyval(x.ravel(), coeffs) - y.ravel()) ** 2))
    powers = x.reshape(-1, 1) ** np.arange(degree + 1)
    eigenvalues = np.linalg.eigvalsh(2 / x.size * powers.T @ powers)  # the MSE's Hessian
    return {
        "coeffs": coeffs.tolist(),
        "mse": mse,
        "hessian_condition_number": float(eigenvalues[-1] / eigenvalues[0]),
        "largest_stable_lr": float(2 / eigenvalues[-1]),
        "slowest_mode_steps_at_lr": float(1 / (lr * eigenvalues[0])),
    }


def run(config: FitConfig) -> SectionResult:
    section = SectionResult(TITLE)
    x, y = seed_data()
    problem = Problem(x, y, config.degree, config.lr, config.steps)
    trainers = [t for t in all_trainers() if not config.only_rows or t.name in config.only_rows]
    runnable = [
        t
        for t in trainers
        if include_row(section, t.name, t.device, config.devices, unavailable_reason(t.requirements()))
    ]
    with rows_progress("polynomial fit", len(runnable)) as progress:
        for trainer in runnable:
            progress.set_postfix_str(trainer.name)
            section.rows.append(
                run_isolated(time_trainer, (trainer.name, problem, config.repeat, config.warmup_steps), progress.update)
            )

    # the write-up's numpy loop; where it did not run (--device cuda), the first row that did, named as such
    reference = next((r for r in section.rows if r["name"] == "numpy"), section.rows[0] if section.rows else None)
    section.extra["reference_row"] = reference["name"] if reference else None
    # the MSE every row must reach: exact gradient descent's, where that row ran
    exact = next((r for r in section.rows if r["group"] == "reference"), reference)
    section.extra["mse_reference_row"] = exact["name"] if exact else None
    for row in section.rows:
        row["speedup"] = reference["seconds"] / row["seconds"]
        if row["group"] == "floor":  # trains nothing: it measures overhead, it is not a fit and agrees with nothing
            row["mse_deviation"] = row["converged_same"] = None
            continue
        deviation = abs(row["final_mse"] - exact["final_mse"]) / abs(exact["final_mse"])
        row["mse_deviation"] = deviation
        row["converged_same"] = bool(np.isfinite(row["final_mse"]) and deviation <= MSE_RTOL)
    section.extra["optimum"] = least_squares_optimum(x, y, config.degree, config.lr)
    section.extra["config"] = {
        "steps": config.steps,
        "lr": config.lr,
        "degree": config.degree,
        "repeat": config.repeat,
        "mse_rtol": MSE_RTOL,
        "warmup_steps": config.warmup_steps,
        "samples": x.size,
    }
    section.extra["data"] = {"x": x.ravel().tolist(), "y": y.ravel().tolist()}
    describe(section)
    return section


TITLE = "Polynomial fit (the polynomial write-up)"


def describe(section: SectionResult) -> None:
    """The section's title and notes, from its rows (a saved run's report is written again with today's words)."""
    section.title = TITLE
    if not section.rows:
        section.notes = []
        return
    flagged = [f"`{r['name']}`" for r in section.rows if r["converged_same"] is False]
    notes = []
    if flagged:
        notes.append(
            f"FLAGGED: {', '.join(flagged)} did not reach the `{mse_reference_row(section)['name']}` row's final MSE "
            f"within {MSE_RTOL:.1%} (relative)"
        )
    section.notes = notes + [note for note in (write_up_figure_note(section.rows), busy_note(section.rows)) if note]


# The polynomial write-up's only published timing figure (its notebook's printed seconds are not in its text).
WRITE_UP_AUTOGRAD_OVER_TORCH = 8.0


def write_up_says(row: dict[str, Any]) -> str:
    """The table's write-up column: what the write-up published for this row."""
    if row["group"] != "write-up":
        return ""
    if row["name"] == "torch-autograd":
        return f"about {WRITE_UP_AUTOGRAD_OVER_TORCH:.0f}x the torch row's time"
    return "no time published"


def write_up_figure_note(rows: list[dict[str, Any]]) -> str | None:
    """The write-up's one figure (autograd ~8x manual torch) beside the same ratio measured here, per device."""
    by_name = {r["name"]: r for r in rows}
    ratios = [
        f"{speedup(ratio(by_name['torch-autograd' + suffix]['seconds'], by_name['torch' + suffix]['seconds']))} "
        f"on the {device}"
        for suffix, device in (("", "CPU"), ("-gpu", "GPU"))
        if "torch" + suffix in by_name and "torch-autograd" + suffix in by_name
    ]
    if not ratios:
        return None
    return (
        "The polynomial write-up's text keeps none of its printed timings (the notebook's outputs are not part of "
        "it), so its CPU and GPU rows have no published seconds to stand beside; its one figure is that autograd "
        f"'increases execution time about {WRITE_UP_AUTOGRAD_OVER_TORCH:.0f} times'. The same ratio measured here, "
        f"torch-autograd over torch: {' and '.join(ratios)}."
    )
