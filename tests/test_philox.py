"""The in-kernel sample generator (philox_normal) and the large problem trained on it (linear_sgd_philox)."""

from __future__ import annotations

import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

import pykernels
from pykernels import reference

# Random123's known-answer vectors for Philox4x32-10: counter, key, output.
KNOWN_ANSWERS = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF, 0xFFFFFFFF), (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    (
        (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
        (0xA4093822, 0x299F31D0),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
    ),
]

ROOT = Path(__file__).resolve().parents[1]

# The scalar instance of csrc/common/philox.h (what a CUDA thread runs) against Random123's vectors and against the
# CPU's SIMD instance, compiled on the host as the extension is (-O3 -march=native).
HOST_PROGRAM = r"""
#include <cstdio>
#include <initializer_list>
#include "cpu/philox_cpu.h"
using namespace pykernels::philox;
int main() {
  const unsigned known[3][10] = {%s};
  int failures = 0;
  for (const auto& v : known) {
    uint32_t words[1][4] = {{v[0], v[1], v[2], v[3]}};
    philox4x32_10<1>(words, v[4], v[5]);
    for (int k = 0; k < 4; ++k) failures += words[0][k] != v[6 + k];
  }
  for (uint64_t stream : {0ull, 7ull, (1ull << 33) + 1}) {
    for (uint64_t block = 0; block < 300; ++block) {
      FloatLanes simd[1][4];
      normal_blocks<1>(42, stream, block, simd);
      for (int lane = 0; lane < kBlockLanes; ++lane) {
        float scalar[4];
        normals_of_counter(42, stream, block * kBlockLanes + lane, scalar);
        for (int k = 0; k < 4; ++k) failures += scalar[k] != simd[0][k][lane];
      }
    }
  }
  std::printf("%%d\n", failures);
  return 0;
}
"""


@pytest.mark.skipif(shutil.which("g++") is None, reason="g++ not on PATH")
def test_scalar_instance_matches_random123_and_the_simd_instance(tmp_path):
    vectors = ", ".join("{" + ", ".join(str(w) for w in (*c, *k, *e)) + "}" for c, k, e in KNOWN_ANSWERS)
    source = tmp_path / "philox_check.cpp"
    source.write_text(HOST_PROGRAM % vectors)
    binary = tmp_path / "philox_check"
    compile_ = subprocess.run(
        ["g++", "-std=c++17", "-O3", "-march=native", "-I", str(ROOT / "csrc"), str(source), "-o", str(binary)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert compile_.returncode == 0, compile_.stderr
    assert subprocess.run([str(binary)], capture_output=True, text=True, timeout=60).stdout.strip() == "0"


# lengths: partial and whole sample blocks (64) and tiles (192), several reduction chunks (~32K)
LENGTHS = [1, 63, 64, 193, 100_003]


@pytest.mark.parametrize("counter, key, expected", KNOWN_ANSWERS)
def test_reference_philox_matches_random123(counter, key, expected):
    words = reference.philox4x32_10_numpy(np.array([counter]), key)
    assert tuple(int(w) for w in words[0]) == expected


@pytest.mark.parametrize("n", LENGTHS)
@pytest.mark.parametrize("seed, stream", [(0, 0), (42, 7), (2**40 + 5, 2**33 + 1), (2**64 - 1, 2**63 - 1), (2**63, 0)])
def test_philox_normal_matches_the_reference(n, seed, stream):
    # the reference computes the same Box-Muller transform in float64 from the same words: float32 rounding apart
    sample = pykernels.philox_normal(n, seed=seed, stream=stream)
    assert sample.dtype == torch.float32 and sample.shape == (n,)
    np.testing.assert_allclose(
        sample.double().numpy(), reference.philox_normal_numpy(n, seed, stream), rtol=2e-6, atol=2e-6
    )


def test_philox_normal_is_a_function_of_the_index_only():
    # a prefix is the prefix of a longer sample, and the thread count changes no bit
    long = pykernels.philox_normal(100_003, seed=3, stream=1)
    torch.testing.assert_close(pykernels.philox_normal(1000, seed=3, stream=1), long[:1000], rtol=0, atol=0)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        serial = pykernels.philox_normal(100_003, seed=3, stream=1)
    finally:
        torch.set_num_threads(threads)
    torch.testing.assert_close(serial, long, rtol=0, atol=0)
    assert not torch.equal(pykernels.philox_normal(1000, seed=3, stream=2), long[:1000])
    assert not torch.equal(pykernels.philox_normal(1000, seed=4, stream=1), long[:1000])


def test_philox_normal_is_standard_normal():
    n = 1_000_000
    sample = pykernels.philox_normal(n, seed=11, stream=0).double()
    # moments within ~5 standard errors of N(0, 1)'s
    assert abs(sample.mean().item()) < 5 / math.sqrt(n)
    assert abs(sample.var().item() - 1) < 5 * math.sqrt(2 / n)
    assert abs((sample**4).mean().item() - 3) < 5 * math.sqrt(96 / n)
    # Kolmogorov-Smirnov distance to the normal CDF: the 0.1% critical value is 1.95 / sqrt(n)
    ordered = np.sort(sample.numpy())
    cdf = 0.5 * (1 + torch.erf(torch.from_numpy(ordered) / math.sqrt(2))).numpy()
    steps = np.arange(1, n + 1) / n
    assert max(np.max(steps - cdf), np.max(cdf - (steps - 1 / n))) < 1.95 / math.sqrt(n)
    # neighbours (Box-Muller partners, adjacent lanes) uncorrelated
    for lag in (1, 16):
        correlation = np.corrcoef(sample.numpy()[:-lag], sample.numpy()[lag:])[0, 1]
        assert abs(correlation) < 5 / math.sqrt(n)


def _reference_run(w, b, lr, epochs, seed, first_epoch):
    samples = [pykernels.philox_normal(w.numel(), seed=seed, stream=first_epoch + e) for e in range(epochs)]
    w64, b64 = w.double().clone(), b.double().clone()
    losses = reference.linear_sgd_philox_torch(w64, b64, samples, lr)
    return w64, b64, losses


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("n", LENGTHS)
@pytest.mark.parametrize("sample", ["keep", "regenerate"])
def test_linear_sgd_philox_matches_the_write_ups_loop(dtype, n, sample):
    generator = torch.Generator().manual_seed(n)
    w = torch.rand(n, dtype=dtype, generator=generator)
    b = torch.ones(1, dtype=dtype)
    lr, epochs = 0.5 / n, 4
    expected_w, expected_b, expected_losses = _reference_run(w, b, lr, epochs, seed=5, first_epoch=2)
    losses = pykernels.linear_sgd_philox(w, b, lr=lr, epochs=epochs, seed=5, first_epoch=2, sample=sample)
    rtol = 1e-10 if dtype == torch.float64 else 2e-5
    torch.testing.assert_close(losses.double(), expected_losses, rtol=rtol, atol=rtol)
    torch.testing.assert_close(w.double(), expected_w, rtol=rtol, atol=rtol)
    torch.testing.assert_close(b.double(), expected_b, rtol=rtol, atol=rtol)


def test_variants_and_calls_agree_bit_for_bit():
    # keeping or regenerating the sample, one call of 6 epochs or 6 calls of 1: the same arithmetic
    n = 100_003
    start = torch.rand(n, generator=torch.Generator().manual_seed(0))
    runs = []
    for sample, calls in [("keep", 1), ("regenerate", 1), ("keep", 6)]:
        w, b = start.clone(), torch.ones(1)
        losses = [
            pykernels.linear_sgd_philox(
                w, b, lr=1e-7, epochs=6 // calls, seed=9, first_epoch=c * (6 // calls), sample=sample
            )
            for c in range(calls)
        ]
        runs.append((w, b, torch.cat(losses)))
    for w, b, losses in runs[1:]:
        for got, expected in zip((w, b, losses), runs[0], strict=True):
            torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_keep_buffer_ends_holding_the_last_sample():
    w, b = torch.zeros(1000), torch.zeros(1)
    buffer = torch.empty(1000)
    pykernels.linear_sgd_philox(w, b, lr=1e-3, epochs=3, seed=1, first_epoch=10, buffer=buffer)
    torch.testing.assert_close(buffer, pykernels.philox_normal(1000, seed=1, stream=12), rtol=0, atol=0)


def test_bad_input_is_named():
    w, b = torch.ones(4), torch.ones(1)
    with pytest.raises(ValueError, match="epochs must be >= 1, got 0"):
        pykernels.linear_sgd_philox(w, b, lr=0.1, epochs=0, seed=0)
    with pytest.raises(ValueError, match=r"seed must be in \[0, 2\^64\), got -1"):
        pykernels.linear_sgd_philox(w, b, lr=0.1, epochs=1, seed=-1)
    with pytest.raises(ValueError, match=r"stream must be in \[0, 2\^63\), got -3"):
        pykernels.philox_normal(4, seed=0, stream=-3)
    with pytest.raises(ValueError, match="sample must be 'keep' or 'regenerate'"):
        pykernels.linear_sgd_philox(w, b, lr=0.1, epochs=1, seed=0, sample="store")
    with pytest.raises(ValueError, match="buffer is only used with sample='keep'"):
        pykernels.linear_sgd_philox(w, b, lr=0.1, epochs=1, seed=0, sample="regenerate", buffer=torch.empty(4))
    with pytest.raises(ValueError, match=r"buffer must have the shape of w \[4\], got \[5\]"):
        pykernels.linear_sgd_philox(w, b, lr=0.1, epochs=1, seed=0, buffer=torch.empty(5))
    with pytest.raises(TypeError, match=r"buffer must be a float32 tensor, got torch\.float64"):
        pykernels.linear_sgd_philox(w, b, lr=0.1, epochs=1, seed=0, buffer=torch.empty(4, dtype=torch.float64))
    with pytest.raises(TypeError, match="b must have the same dtype as w"):
        pykernels.linear_sgd_philox(w, b.double(), lr=0.1, epochs=1, seed=0)
    with pytest.raises(ValueError, match="w must not be empty"):
        pykernels.linear_sgd_philox(torch.ones(0), b, lr=0.1, epochs=1, seed=0)
    with pytest.raises(TypeError, match=r"out must be a float32 tensor, got torch\.float64"):
        pykernels.philox_normal(4, seed=0, out=torch.empty(4, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"out must have n = 4 elements, got shape \[5\]"):
        pykernels.philox_normal(4, seed=0, out=torch.empty(5))
    before = w.clone()
    with pytest.raises(ValueError):
        pykernels.linear_sgd_philox(w, b, lr=0.1, epochs=1, seed=0, buffer=torch.empty(5))
    torch.testing.assert_close(w, before, rtol=0, atol=0)  # checked before any kernel ran


def test_opcheck():
    w, b, keep = torch.rand(300), torch.ones(1), torch.empty(300)
    torch.library.opcheck(torch.ops.pykernels.linear_sgd_philox.default, (w, b, 1e-3, 2, 0, 0, 3.0, -2.0, keep))
    torch.library.opcheck(torch.ops.pykernels.linear_sgd_philox.default, (w, b, 1e-3, 2, 0, 0, 3.0, -2.0, None))
    torch.library.opcheck(torch.ops.pykernels.philox_normal_.default, (torch.empty(300), 1, 2))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("sample", ["keep", "regenerate"])
def test_cuda_draws_the_same_sample_and_trains_the_same(sample):
    n = 100_003
    expected = pykernels.philox_normal(n, seed=3, stream=2)
    torch.testing.assert_close(pykernels.philox_normal(n, seed=3, stream=2, device="cuda").cpu(), expected)
    w, b = torch.rand(n, generator=torch.Generator().manual_seed(1)), torch.ones(1)
    w_gpu, b_gpu = w.cuda(), b.cuda()
    losses = pykernels.linear_sgd_philox(w, b, lr=0.5 / n, epochs=3, seed=3, sample=sample)
    losses_gpu = pykernels.linear_sgd_philox(w_gpu, b_gpu, lr=0.5 / n, epochs=3, seed=3, sample=sample)
    torch.testing.assert_close(losses_gpu.cpu(), losses, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(w_gpu.cpu(), w, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(b_gpu.cpu(), b, rtol=1e-5, atol=1e-5)
