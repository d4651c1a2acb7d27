"""Whole training loops of both write-ups, per implementation, built from the study's own trainers.

- SeedPolynomialFit: 1,000 steps of the polynomial write-up's fit (x = linspace(0, 5, 100), degree 4, lr 1e-5,
  MSE recorded every step), continuing from the previous state.
- LargeProblemEpoch: one epoch of the 10^7-weight dot-product model (the sample drawn in setup, timed apart).
- LargeProblemWholeEpochs: ten epochs with their samples (torch.randn, or drawn in-kernel by linear_sgd_philox),
  and the in-kernel epoch's speedup over the write-up's, measured side by side.
- BatchedFits: 1,024 series x 100 points, 200 steps.
- FusedFitRecording: fit_poly on the seed problem recording its loss every step or rarely, and the ratio of the two,
  per method.
- SeedFitMethods: ns per step of the seed fit by fit_poly, stepping on the data or on the sufficient statistics.
- GramManyPoints: a 20,000-step gram fit of 10^6 points over 20 poly_mse calls on them (one data-pass step each).
- BatchedGramFits: BatchedFits' problem on the sufficient statistics (one shared A).
- FractionOfLimit: the fused rows' fraction of the machine's limit (pykernels.study.limits), the limit's rate
  measured in the same process: a regression reads as a lower fraction.
"""

from __future__ import annotations

import time

import numpy as np
import torch

import pykernels
from pykernels.study import batched, large, polyfit

from .common import Benchmark, SkipNotImplemented, require, synchronized

STEPS = 1000


def _trainers_by_name():
    return {t.name: t for t in polyfit.all_trainers()}


class SeedPolynomialFit(Benchmark):
    params = [
        [
            "numpy",
            "torch",
            "torch-autograd",
            "torch.compile",
            "numba fastmath loop, degree 4 unrolled",
            "PolyMSE.apply+backward (cpp)",
            "poly_mse+backward (cpp)",
            "manual poly_mse step (cpp)",
            "fit_poly, fused loop (cpp)",
            "PolyMSE.apply+backward (numba)",
            "manual poly_mse step (numba)",
            "fit_poly, fused loop (numba)",
            "floor: the same loop, empty autograd.Function",
        ]
    ]
    param_names = ["implementation"]

    def setup(self, implementation):
        trainer = _trainers_by_name()[implementation]
        if polyfit.unavailable_reason(trainer.requirements()):
            raise SkipNotImplemented(polyfit.unavailable_reason(trainer.requirements()))
        x, y = polyfit.seed_data()
        trainer.setup(polyfit.Problem(x, y, polyfit.SEED_DEGREE, polyfit.SEED_LR, STEPS))
        trainer.prepare()  # compiles (torch.compile, numba) outside the timing
        trainer.run(0, 10)
        self.trainer = trainer

    def time_1000_steps(self, implementation):
        self.trainer.run(0, STEPS)


class LargeProblemEpoch(Benchmark):
    params = [["torch-autograd", "pykernels dot+backward", "pykernels linear_sgd_step (fused)"], ["cpu", "cuda"]]
    param_names = ["implementation", "device"]
    n = 10_000_000

    def setup(self, implementation, device):
        require("torch", device)
        if device == "cuda" and "fused" in implementation:
            raise SkipNotImplemented("linear_sgd_step has a CPU kernel only")
        trainer = next(t(device) for t in large.all_trainers() if t(device).name.startswith(implementation))
        trainer.setup(self.n, 0.5 / self.n)
        generator = torch.Generator(device=device).manual_seed(0)
        self.x = torch.randn([self.n], device=device, generator=generator)
        self.y = torch.dot(3 * torch.ones([self.n], device=device), self.x) - 2
        self.step = synchronized(device, trainer.step)
        self.step(self.x, self.y)

    def time_epoch(self, implementation, device):
        self.step(self.x, self.y)

    def peakmem_epoch(self, implementation, device):
        self.step(self.x, self.y)


class LargeProblemSample(Benchmark):
    """The epoch's sample, as the write-up draws it (``randn(N)``): the part of its epoch pykernels cannot fuse."""

    params = [["cpu", "cuda"]]
    param_names = ["device"]

    def setup(self, device):
        require("torch", device)
        self.draw = synchronized(device, lambda: torch.randn([10_000_000], device=device))

    def time_randn(self, device):
        self.draw()


WHOLE_EPOCH_ROWS = [
    "torch-autograd",
    "pykernels linear_sgd_step (fused)",
    "pykernels linear_sgd_philox (sample in-kernel, kept for one pass)",
    "pykernels linear_sgd_philox (sample in-kernel, regenerated, never stored)",
]


def _ten_epochs(implementation: str, n: int):
    """A callable running ten epochs of the row, samples included, continuing where the last call stopped."""
    trainer = next(t("cpu") for t in large.all_trainers() if t("cpu").name == implementation)
    trainer.setup(n, 0.5 / n)
    epoch = 0
    if trainer.draws_own_samples:

        def run():
            nonlocal epoch
            trainer.run_epochs(epoch, 10)
            epoch += 10

        return run
    ones3 = 3 * torch.ones([n])

    def run():
        for _ in range(10):
            x = torch.randn([n])
            trainer.step(x, torch.dot(ones3, x) - 2)

    return run


class LargeProblemWholeEpochs(Benchmark):
    """Ten epochs of the 10^7-weight problem with their samples, as the write-up's %%time measures them."""

    params = [WHOLE_EPOCH_ROWS]
    param_names = ["implementation"]
    n = 10_000_000

    def setup(self, implementation):
        self.run = _ten_epochs(implementation, self.n)
        self.run()

    def time_ten_epochs(self, implementation):
        self.run()


class LargeProblemInKernelSpeedup(Benchmark):
    """Epoch time of the write-up's torch-autograd loop (its randn included) over linear_sgd_philox's (sample kept),
    best of 3 runs of ten epochs each, measured side by side in one process."""

    n = 10_000_000

    def track_speedup(self):
        runs = {name: _ten_epochs(name, self.n) for name in WHOLE_EPOCH_ROWS[::2]}
        best = {}
        for name, run in runs.items():
            run()
            times = []
            for _ in range(3):
                start = time.perf_counter()
                run()
                times.append(time.perf_counter() - start)
            best[name] = min(times)
        return best[WHOLE_EPOCH_ROWS[0]] / best[WHOLE_EPOCH_ROWS[2]]

    track_speedup.unit = "x"


class FusedFitRecording(Benchmark):
    """20,000 fused steps of the seed fit, the loss recorded every ``record_every`` steps: recording every step
    should cost next to nothing (track_recording_cost: time with record_every=1 over time with it off, best of 5
    runs each, side by side)."""

    params = [["cpp", "numba"], ["data", "gram"], [1, 100, 20_000]]
    param_names = ["backend", "method", "record_every"]
    steps = 20_000

    def setup(self, backend, method, record_every):
        require("pykernels-numba" if backend == "numba" else "pykernels", "cpu")
        x, y = polyfit.seed_data()
        self.x = torch.from_numpy(x.ravel()).float()
        self.y = torch.from_numpy(y.ravel()).float()
        self.fit(backend, method, record_every)

    def fit(self, backend, method, record_every):
        return pykernels.fit_poly(
            self.x, self.y, 4, lr=1e-5, steps=self.steps, record_every=record_every, method=method, backend=backend
        )

    def time_fit(self, backend, method, record_every):
        self.fit(backend, method, record_every)

    def track_recording_cost(self, backend, method, record_every):
        def best(every):
            times = []
            for _ in range(5):
                start = time.perf_counter()
                self.fit(backend, method, every)
                times.append(time.perf_counter() - start)
            return min(times)

        return best(record_every) / best(self.steps)

    track_recording_cost.unit = "x"


class BatchedFits(Benchmark):
    params = [
        [
            "numpy batched (matmul)",
            "torch batched, manual gradient",
            "fit_poly batched (cpp)",
            "fit_poly batched (numba)",
        ]
    ]
    param_names = ["implementation"]
    config = batched.BatchedConfig(series=1024, steps=200)

    def setup(self, implementation):
        self.x, self.y = batched.batched_data(self.config)
        batched.run_row(implementation, "cpu", batched.BatchedConfig(series=16, steps=2), lambda _: None)

    def time_fit(self, implementation):
        batched.run_row(implementation, "cpu", self.config, lambda _: None)

    def track_ns_per_series_step(self, implementation):
        return batched.run_row(implementation, "cpu", self.config, lambda _: None)["ns_per_series_step"]

    track_ns_per_series_step.unit = "ns"


def _best_seconds(work, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return min(times)


class SeedFitMethods(Benchmark):
    """The seed fit (x = linspace(0, 5, 100), degree 4, lr 1e-5, float32, every loss recorded), 20,000 steps by
    fit_poly on the data or on the sufficient statistics (their pass included); ns per step, best of 5."""

    params = [["cpp", "numba"], ["data", "gram"]]
    param_names = ["backend", "method"]
    steps = 20_000

    def setup(self, backend, method):
        require("pykernels-numba" if backend == "numba" else "pykernels", "cpu")
        x, y = polyfit.seed_data()
        self.x, self.y = torch.from_numpy(x.ravel()).float(), torch.from_numpy(y.ravel()).float()
        self.fit(backend, method)

    def fit(self, backend, method):
        return pykernels.fit_poly(self.x, self.y, 4, lr=1e-5, steps=self.steps, method=method, backend=backend)

    def track_ns_per_step(self, backend, method):
        return _best_seconds(lambda: self.fit(backend, method)) / self.steps * 1e9

    track_ns_per_step.unit = "ns"


class GramManyPoints(Benchmark):
    """10^6 points of sin(3x) on [-1, 1], float32, degree 4: a whole 20,000-step fit on the statistics (their pass
    included) over 20 poly_mse calls on the same data, best of 5 each, side by side (goal: at most 1)."""

    params = [["cpp", "numba"]]
    param_names = ["backend"]
    points, steps = 1_000_000, 20_000

    def setup(self, backend):
        require("pykernels-numba" if backend == "numba" else "pykernels", "cpu")
        self.x = torch.linspace(-1, 1, self.points)
        self.y = torch.sin(3 * self.x)
        self.coeffs = torch.zeros(5)
        self.fit(backend)
        self.calls(backend)

    def fit(self, backend):
        return pykernels.fit_poly(self.x, self.y, 4, lr=0.1, steps=self.steps, method="gram", backend=backend)

    def calls(self, backend):
        for _ in range(self.steps // 1000):
            pykernels.poly_mse(self.x, self.y, self.coeffs, backend=backend)

    def track_fit_over_poly_mse_calls(self, backend):
        return _best_seconds(lambda: self.fit(backend)) / _best_seconds(lambda: self.calls(backend))

    track_fit_over_poly_mse_calls.unit = "x"


class BatchedGramFits(Benchmark):
    """BatchedFits' 1,024 series x 100 points, 200 steps, on the sufficient statistics (one shared A)."""

    params = [["fit_poly batched, gram (cpp)", "fit_poly batched, gram (numba)"]]
    param_names = ["implementation"]
    config = batched.BatchedConfig(series=1024, steps=200)

    def setup(self, implementation):
        batched.run_row(implementation, "cpu", batched.BatchedConfig(series=16, steps=2), lambda _: None)

    def track_ns_per_series_step(self, implementation):
        return batched.run_row(implementation, "cpu", self.config, lambda _: None)["ns_per_series_step"]

    track_ns_per_series_step.unit = "ns"


class FractionOfLimit(Benchmark):
    """Each fused row's time against the machine's limit for its work (pykernels.study.limits: the FMA rate of
    GEMM for the fits, the rates of a dot and an update pass for the large problem's SGD, Philox's for its
    in-kernel samples), the rates measured in setup, in the same process: 1 is the limit. The seed fit (200,000
    steps, float32, every loss recorded) on the statistics and on the data; 1,024 x 2,000 batched fits on the
    statistics; one linear_sgd_step and one linear_sgd_philox epoch (regenerated samples) at n = 10^7."""

    params = [["fit_poly gram, seed", "fit_poly data, seed", "fit_poly gram, batched", "linear_sgd_step", "philox"]]
    param_names = ["row"]
    timeout = 240
    n = 10_000_000
    study_rows = {  # the study's row each measures: its bound and work come from pykernels.study.limits.MODELS
        "fit_poly gram, seed": ("poly", "fit_poly (gram), fused loop (cpp)"),
        "fit_poly data, seed": ("poly", "fit_poly, fused loop (cpp)"),
        "fit_poly gram, batched": ("batched", "fit_poly batched, gram (cpp)"),
        "linear_sgd_step": ("large", "pykernels linear_sgd_step (fused)"),
        "philox": ("large", "pykernels linear_sgd_philox (sample in-kernel, regenerated, never stored)"),
    }

    def setup(self, row):
        require("pykernels", "cpu")
        try:  # imported here: the suite also runs on commits older than the module
            from pykernels.study import limits
        except ImportError:
            raise SkipNotImplemented("pykernels.study.limits is newer than this commit") from None
        self.limits = limits
        self.rates = limits.measure(limits.LimitsConfig(gemm_size=1024, stream_elements=self.n, repeat=3))
        _, _, self.bound, work = next(m for m in limits.MODELS if m[:2] == self.study_rows[row])
        degree, steps = polyfit.SEED_DEGREE, polyfit.SEED_STEPS
        if row.startswith("fit_poly"):
            method = "gram" if "gram" in row else "data"
            if row.endswith("batched"):
                x, y = (torch.from_numpy(a) for a in batched.batched_data(batched.BatchedConfig()))
                steps = 2000
            else:
                x, y = (torch.from_numpy(a.ravel()).float() for a in polyfit.seed_data())
            self.call = lambda: pykernels.fit_poly(x, y, degree, lr=1e-5, steps=steps, method=method)
            config = {"samples": x.shape[-1], "degree": degree, "steps": steps, "series": len(y) if y.dim() == 2 else 1}
        else:
            w, b = torch.zeros(self.n), torch.zeros(1)
            if row == "linear_sgd_step":
                sample, target = torch.randn(self.n), torch.tensor(1.0)
                self.call = lambda: pykernels.linear_sgd_step(w, b, sample, target, 1e-9)
            else:
                self.call = lambda: pykernels.linear_sgd_philox(w, b, lr=1e-9, epochs=1, seed=1, sample="regenerate")
            config = {"n": self.n}
        self.amount = work(config)[0]

    def track_fraction_of_limit(self, row):
        return self.limits.limit_seconds(self.bound, self.amount, self.rates) / _best_seconds(self.call)

    track_fraction_of_limit.unit = "fraction"


__all__ = ["np"]
