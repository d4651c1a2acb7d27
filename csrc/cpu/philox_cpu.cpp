// CPU kernels that draw the large problem's samples in-kernel (common/philox.h) instead of reading them:
// philox_normal_ materializes a sample; linear_sgd_philox trains the write-up's 10^7-weight model for many
// epochs, each sample drawn inside its pass and either kept for the next pass or drawn again there.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <optional>

#include "../checks.h"
#include "philox_cpu.h"
#include "reduce_cpu.h"

namespace pykernels {
namespace {

using philox::FloatLanes;
using philox::kBlockSize;

constexpr int kTileBlocks = 3;  // blocks generated per call (enough independent multiplies in flight)
constexpr int kTile = kTileBlocks * kBlockSize;
constexpr int64_t kPassChunk = (kReduceChunk / kTile) * kTile;  // reduction chunks of whole tiles

// Elements [tile kTile, tile kTile + kTile) of sample (seed, stream), in memory order.
inline void sample_tile(uint64_t seed, uint64_t stream, int64_t tile, float out[kTile]) {
  FloatLanes lanes[kTileBlocks][4];
  philox::normal_blocks<kTileBlocks>(seed, stream, static_cast<uint64_t>(tile) * kTileBlocks, lanes);
  std::memcpy(out, lanes, sizeof(lanes));
}

void philox_normal_cpu(at::Tensor& out, int64_t seed, int64_t stream) {
  check_philox_normal_inputs(out, stream);
  float* data = out.mutable_data_ptr<float>();
  const int64_t n = out.numel();
  const int64_t num_tiles = (n + kTile - 1) / kTile;
  at::parallel_for(0, num_tiles, kElementwiseGrain / kTile, [&](int64_t first, int64_t last) {
    alignas(64) float tile[kTile];
    for (int64_t t = first; t < last; ++t) {
      sample_tile(seed, stream, t, tile);
      std::memcpy(data + t * kTile, tile, sizeof(float) * std::min<int64_t>(kTile, n - t * kTile));
    }
  });
}

// dot_lanes += w . x and sum_lanes += sum x over one tile: summed in scalar_t lanes within the tile (12 terms per
// lane for float32), in float64 across tiles.
template <typename scalar_t>
inline void accumulate_tile(const scalar_t* w, const float* x, LaneVector& dot_lanes, LaneVector& sum_lanes) {
  constexpr int kWidth = 64 / sizeof(scalar_t);  // one 512-bit register of scalar_t
  typedef scalar_t Lanes __attribute__((vector_size(kWidth * sizeof(scalar_t))));
  typedef float InputLanes __attribute__((vector_size(kWidth * sizeof(float))));
  Lanes dot{}, sum{};
  for (int i = 0; i < kTile; i += kWidth) {
    Lanes wv, xv;
    InputLanes xf;
    std::memcpy(&wv, w + i, sizeof(wv));
    std::memcpy(&xf, x + i, sizeof(xf));
    xv = __builtin_convertvector(xf, Lanes);
    dot += wv * xv;
    sum += xv;
  }
  for (int half = 0; half < kWidth; half += kLanes) {
    LaneVector dot_half, sum_half;
    for (int lane = 0; lane < kLanes; ++lane) {
      dot_half[lane] = static_cast<double>(dot[half + lane]);
      sum_half[lane] = static_cast<double>(sum[half + lane]);
    }
    dot_lanes += dot_half;
    sum_lanes += sum_half;
  }
}

// Where an epoch pass finds its samples: regenerated from their counters, or kept in a buffer of N floats
// (written by the epoch that draws a sample, read back by the next pass, which overwrites it with its own).
struct SampleSource {
  uint64_t seed;
  float* buffer;  // nullptr: regenerate
};

// One epoch's pass over the tiles [tile_begin, tile_end): first w -= pending_step * x_previous (the previous
// epoch's update, deferred to here so w is read and written once per epoch), then sums[0] += w . x and
// sums[1] += sum x for this epoch's sample x. The update is the eager one, elementwise in scalar_t, so deferring
// it changes no bit. previous_stream / stream < 0: no such sample in this pass.
template <typename scalar_t>
void epoch_pass(scalar_t* w, int64_t n, int64_t tile_begin, int64_t tile_end, const SampleSource& source,
                int64_t previous_stream, scalar_t pending_step, int64_t stream, double* sums) {
  LaneVector dot_lanes{}, sum_lanes{};
  alignas(64) float x[kTile];
  alignas(64) scalar_t w_tile[kTile];
  for (int64_t t = tile_begin; t < tile_end; ++t) {
    const int64_t begin = t * kTile;
    const int64_t count = std::min<int64_t>(kTile, n - begin);
    float* stored = source.buffer == nullptr ? nullptr : source.buffer + begin;
    // a partial last tile works on padded copies: w = x = 0 there, so it adds nothing
    scalar_t* wt = count == kTile ? w + begin : w_tile;
    if (count < kTile) {
      std::fill(w_tile, w_tile + kTile, scalar_t(0));
      std::copy(w + begin, w + begin + count, w_tile);
    }
    if (previous_stream >= 0) {
      const float* x_previous = stored;
      if (stored == nullptr || count < kTile) {  // (the buffer holds only `count` values of a partial tile)
        sample_tile(source.seed, previous_stream, t, x);
        x_previous = x;
      }
      for (int i = 0; i < kTile; ++i) wt[i] -= pending_step * static_cast<scalar_t>(x_previous[i]);
    }
    if (stream >= 0) {
      sample_tile(source.seed, stream, t, x);
      if (count < kTile) std::fill(x + count, x + kTile, 0.0f);
      if (stored != nullptr) std::memcpy(stored, x, sizeof(float) * count);
      accumulate_tile(wt, x, dot_lanes, sum_lanes);
    }
    if (count < kTile) std::copy(w_tile, w_tile + count, w + begin);
  }
  fold_lanes(&dot_lanes, 1, sums);
  fold_lanes(&sum_lanes, 1, sums + 1);
}

at::Tensor linear_sgd_philox_cpu(at::Tensor& w, at::Tensor& b, double lr, int64_t epochs, int64_t seed,
                                 int64_t first_epoch, double target_weight, double target_bias,
                                 const std::optional<at::Tensor>& keep) {
  check_linear_sgd_philox_inputs(w, b, epochs, first_epoch, keep);
  at::Tensor losses = at::empty({epochs}, w.options());
  AT_DISPATCH_FLOATING_TYPES(w.scalar_type(), "linear_sgd_philox_cpu", [&] {
    scalar_t* w_data = w.mutable_data_ptr<scalar_t>();
    scalar_t* b_data = b.mutable_data_ptr<scalar_t>();
    scalar_t* loss_data = losses.mutable_data_ptr<scalar_t>();
    const int64_t n = w.numel();
    const SampleSource source{static_cast<uint64_t>(seed),
                              keep.has_value() ? keep->mutable_data_ptr<float>() : nullptr};
    // one pass per epoch; the pass after the last applies its update only
    scalar_t pending_step = 0;
    for (int64_t epoch = 0; epoch <= epochs; ++epoch) {
      const int64_t stream = epoch < epochs ? first_epoch + epoch : -1;
      const int64_t previous_stream = epoch > 0 ? first_epoch + epoch - 1 : -1;
      double sums[2];
      reduce_in_chunks(n, 2, sums, [&](int64_t begin, int64_t end, double* out) {
        epoch_pass(w_data, n, begin / kTile, (end + kTile - 1) / kTile, source, previous_stream, pending_step,
                   stream, out);
      }, kPassChunk);
      if (stream < 0) break;
      const double target = target_weight * sums[1] + target_bias;
      const double error = sums[0] + static_cast<double>(*b_data) - target;
      loss_data[epoch] = static_cast<scalar_t>(error * error);
      pending_step = static_cast<scalar_t>(lr * 2.0 * error);
      *b_data -= pending_step;
    }
  });
  return losses;
}

}  // namespace

TORCH_LIBRARY_IMPL(pykernels, CPU, m) {
  m.impl("philox_normal_", &philox_normal_cpu);
  m.impl("linear_sgd_philox", &linear_sgd_philox_cpu);
}

}  // namespace pykernels
